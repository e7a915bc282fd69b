"""The istio preset tells a shadow phase's mirrored requests apart, on a real Prometheus.

The backfilled series are shaped as Istio reports a mirror: the canary's own proxy
(``reporter="destination"``) counts the mirrored copies and the testers' header-route requests,
the sending proxy (``reporter="source"``) only the testers' (it never reports the copy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from canaryd.metrics.openmetrics import TickSample, write_openmetrics
from canaryd.metrics.presets import PresetOptions
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource
from canaryd.metrics.source import FetchRequest
from canaryd.policy.model import Source

from .conftest import PrometheusServer, data_origin

pytestmark = pytest.mark.integration

T0 = data_origin()
TICK, INTERVAL, N = 15.0, 60.0, 8
BOUNDS = (100.0, 250.0, math.inf)
NS, STABLE, CANARY = "shadow", "sent-v1-predictor", "sent-v2-predictor"


def _series() -> tuple[list[TickSample], list[dict[str, float]]]:
    """Per-tick cumulative samples, and the true per-interval canary split."""
    rng = np.random.default_rng(13)
    cum = {v: np.zeros(4 + len(BOUNDS)) for v in (STABLE, CANARY)}
    # [requests, errors, mirrored requests, mirrored errors, buckets...]
    samples = [TickSample(T0, v, 0, 0, BOUNDS, (0.0,) * len(BOUNDS)) for v in cum]
    truth: list[dict[str, float]] = []
    per_interval = int(INTERVAL / TICK)
    for k in range(N * per_interval):
        if k % per_interval == 0:
            truth.append(dict.fromkeys(("requests", "errors", "mirrored", "mirrored_errors"), 0.0))
        users = int(rng.poisson(20 * TICK))
        copies = int(rng.binomial(users, 0.1))  # 10 % mirrored to the canary
        testers = int(rng.poisson(0.3 * TICK))  # a header route sends testers to the canary
        for v, req, mirrored in ((STABLE, users, 0), (CANARY, copies + testers, copies)):
            err_m = int(rng.binomial(mirrored, 0.05))
            err = err_m + int(rng.binomial(req - mirrored, 0.05))
            below = rng.multinomial(req, [0.5, 0.3, 0.2]).cumsum()
            cum[v] += [req, err, mirrored, err_m, *below]
            c = cum[v]
            samples.append(
                TickSample(T0 + (k + 1) * TICK, v, c[0], c[1], BOUNDS, tuple(c[4:]), c[2], c[3])
            )
            if v == CANARY:
                t = truth[-1]
                t["requests"] += req
                t["errors"] += err
                t["mirrored"] += mirrored
                t["mirrored_errors"] += err_m
    return samples, truth


SAMPLES, TRUTH = _series()


@pytest.fixture(scope="module")
def prom(
    prometheus_factory: Callable[[Sequence[Path]], PrometheusServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> PrometheusServer:
    path = tmp_path_factory.mktemp("mirror") / "istio.om"
    with path.open("w") as f:
        write_openmetrics(f, SAMPLES, preset="istio", namespace=NS, source_reports=True)
    return prometheus_factory([path])


def _request(shadow: bool, need_latency: bool = True) -> FetchRequest:
    return FetchRequest(
        "r", NS, STABLE, CANARY, Source(preset="istio"), need_latency=need_latency, shadow=shadow
    )


def test_mirrored_requests_are_told_apart_in_shadow(prom: PrometheusServer) -> None:
    with PrometheusSource(PrometheusConfig(url=prom.url)) as src:
        for k, truth in enumerate(TRUTH):
            start = T0 + k * INTERVAL
            got = src.fetch_one(_request(shadow=True), start, start + INTERVAL)
            assert got.no_data_reason is None, got.no_data_reason
            assert got.canary is not None and got.stable is not None
            assert got.canary.requests == truth["requests"]
            assert got.canary.errors == truth["errors"]
            assert got.canary.mirrored_requests == truth["mirrored"]
            assert got.canary.mirrored_errors == truth["mirrored_errors"]
            assert 0 < got.canary.mirrored_requests < got.canary.requests  # testers are users
            assert got.stable.mirrored_requests is None  # mirrors only ever go to the canary
            assert src.last_stats.queries["live_requests"] == 1
            assert src.last_stats.queries["live_errors"] == 1


def test_outside_shadow_nothing_more_is_queried(prom: PrometheusServer) -> None:
    with PrometheusSource(PrometheusConfig(url=prom.url)) as src:
        got = src.fetch_one(_request(shadow=False), T0, T0 + INTERVAL)
        assert got.canary is not None and got.canary.mirrored_requests is None
        assert "live_requests" not in src.last_stats.queries
        assert got.canary.requests == TRUTH[0]["requests"]


def test_without_destination_reports_the_split_is_unknown(prom: PrometheusServer) -> None:
    """With reporter="source" the mirrored copies are not even in the data: no split."""
    cfg = PrometheusConfig(url=prom.url, presets=PresetOptions(istio_reporter="source"))
    with PrometheusSource(cfg) as src:
        # (only requests are written as source reports here: no histogram to need)
        got = src.fetch_one(_request(shadow=True, need_latency=False), T0, T0 + INTERVAL)
        assert "live_requests" not in src.last_stats.queries
        assert got.canary is not None and got.canary.mirrored_requests is None
        assert got.canary.requests == TRUTH[0]["requests"] - TRUTH[0]["mirrored"]
