"""Metric sources: per-interval counts for stable and canary (Prometheus, trace replay).

Names are imported lazily (PEP 562) so that ``canaryd --help`` does not pay for pandas and the
Prometheus client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canaryd.metrics.openmetrics import (
        TickSample,
        tick_samples_from_observations,
        write_openmetrics,
    )
    from canaryd.metrics.presets import PresetOptions, build_queries, render_template
    from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource, RetryPolicy
    from canaryd.metrics.replay import TraceSource, read_trace, write_trace
    from canaryd.metrics.source import FetchRequest, MetricSource, fetch_one, fetch_request_for

_WHERE = {
    "TickSample": "openmetrics",
    "tick_samples_from_observations": "openmetrics",
    "write_openmetrics": "openmetrics",
    "PresetOptions": "presets",
    "build_queries": "presets",
    "render_template": "presets",
    "PrometheusConfig": "prometheus",
    "PrometheusSource": "prometheus",
    "RetryPolicy": "prometheus",
    "TraceSource": "replay",
    "read_trace": "replay",
    "write_trace": "replay",
    "FetchRequest": "source",
    "MetricSource": "source",
    "fetch_one": "source",
    "fetch_request_for": "source",
}

__all__ = [
    "FetchRequest",
    "MetricSource",
    "PresetOptions",
    "PrometheusConfig",
    "PrometheusSource",
    "RetryPolicy",
    "TickSample",
    "TraceSource",
    "build_queries",
    "fetch_one",
    "fetch_request_for",
    "read_trace",
    "render_template",
    "tick_samples_from_observations",
    "write_openmetrics",
    "write_trace",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"canaryd.metrics.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'canaryd.metrics' has no attribute {name!r}")
