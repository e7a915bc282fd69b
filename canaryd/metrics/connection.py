"""How canaryd reaches a Prometheus: its URL, the HTTP method, headers, TLS and retry budget.

``PrometheusConfig`` is everything a ``PrometheusSource`` needs to know about one server and
how hard to try; ``RetryPolicy`` bounds the time one tick may spend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from canaryd.metrics.presets import PresetOptions


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries. Worst case per tick: ``min(budget_s, budget_fraction * window)``."""

    attempts: int = 3
    timeout_s: float = 5.0
    """Per-request connect and read timeout (requests' read timeout is per socket read)."""
    backoff_s: float = 0.2
    backoff_max_s: float = 2.0
    budget_s: float = 20.0
    budget_fraction: float = 0.5
    """Of the window: a tick never runs longer than this share of the analysis interval."""


@dataclass(frozen=True)
class PrometheusConfig:
    """How to reach Prometheus and how to batch."""

    url: str
    method: Literal["GET", "POST"] = "POST"
    max_query_bytes: int | None = None
    """URL-encoded query size limit per request; default 128 KiB for POST, 6 KiB for GET."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    round_counts: bool = True
    require_same_layout: bool = True
    """Built-in presets: stable and canary must have the same ``le`` set (else a bucket is
    missing, a partial set). The custom preset allows different layouts."""
    presets: PresetOptions = field(default_factory=PresetOptions)
    headers: dict[str, str] | None = None
    verify_tls: bool = True

    def query_limit(self) -> int:
        if self.max_query_bytes is not None:
            return self.max_query_bytes
        return 128 * 1024 if self.method == "POST" else 6 * 1024
