"""How a window is counted, against a real Prometheus: edge-sample deltas, exact at any phase.

The data is the model server's own exposition, scraped the way a cluster scrapes it: kserve's
``request_predict_seconds`` histogram plus an errors counter, one series per *pod* (the pod
label a relabelling adds), scraped every 5 s at a phase (2.3 s) that no window is aligned with.
Each pod's counters are the number of seeded request events at or before each scrape, so the
exact answer for a window ``[a, b)`` is known: the events after the last scrape at or before
``a`` and up to the last scrape at or before ``b``.

Covered: windows at arbitrary phases, a pod that starts inside a window (its series is new and
counts from 0), a pod that stops, an error series whose first sample lies inside the window
(what ``increase()`` never counts), a counter reset (no-data in the windows that contain it,
exact right after), and consecutive windows partitioning the samples exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from canaryd.metrics.presets import PresetOptions
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource
from canaryd.metrics.source import FetchRequest
from canaryd.observation import VersionCounts
from canaryd.policy.model import Source

from .conftest import PrometheusServer, data_origin

pytestmark = pytest.mark.integration

T0 = data_origin()
SCRAPE, PHASE, HORIZON = 5.0, 2.3, 200.0
LE_S = (0.005, 0.05, math.inf)
NS = "models"
ERRORS = "request_predict_errors_total"


@dataclass(frozen=True)
class Pod:
    name: str
    revision: str
    first_scrape: float
    last_scrape: float
    rate: float
    error_share: float
    reset_at: float | None = None
    """The process restarts (same pod, counters back to 0) at this time."""


PODS = (
    Pod("s-a", "stable", 0, HORIZON, 6.0, 0.0),
    Pod("c-a", "canary", 0, HORIZON, 2.0, 0.03),
    Pod("c-b", "canary", 40.0, HORIZON, 2.0, 0.03),  # scaled up inside [35, 45)
    Pod("c-c", "canary", 0, 70.0, 2.0, 0.03),  # scaled down
    Pod("r-s", "reset-stable", 0, HORIZON, 3.0, 0.0),
    Pod("r-c", "reset-canary", 0, HORIZON, 3.0, 0.05, reset_at=101.0),
)


@dataclass(frozen=True)
class Events:
    t: np.ndarray
    error: np.ndarray
    latency_s: np.ndarray


def events_of(pod: Pod, seed: int) -> Events:
    rng = np.random.default_rng(seed)
    n = rng.poisson(pod.rate * HORIZON)
    t = np.sort(rng.uniform(0, HORIZON, n))
    return Events(t, rng.random(n) < pod.error_share, rng.lognormal(math.log(0.004), 0.8, n))


EVENTS = {p.name: events_of(p, i) for i, p in enumerate(PODS)}


def scrapes(pod: Pod) -> list[float]:
    return [
        x
        for x in np.arange(PHASE, HORIZON, SCRAPE).tolist()
        if pod.first_scrape <= x <= pod.last_scrape
    ]


def cumulative(pod: Pod, at: float) -> tuple[int, int, tuple[int, ...]]:
    """(requests, errors, buckets) the pod's process reports when scraped at ``at``."""
    ev = EVENTS[pod.name]
    since = pod.reset_at if pod.reset_at is not None and at >= pod.reset_at else -math.inf
    sel = (ev.t > since) & (ev.t <= at)
    lat = ev.latency_s[sel]
    return int(sel.sum()), int(ev.error[sel].sum()), tuple(int((lat <= b).sum()) for b in LE_S)


def openmetrics(path: Path) -> Path:
    lines = ["# TYPE request_predict_seconds histogram"]
    for pod in PODS:
        lab = f'namespace="{NS}",serving_knative_dev_revision="{pod.revision}",pod="{pod.name}"'
        for x in scrapes(pod):
            req, _, bkt = cumulative(pod, x)
            ts = f"{T0 + x:.3f}"
            for b, c in zip(LE_S, bkt, strict=True):
                le = "+Inf" if math.isinf(b) else repr(b)
                lines.append(f'request_predict_seconds_bucket{{{lab},le="{le}"}} {c} {ts}')
            lines.append(f"request_predict_seconds_count{{{lab}}} {req} {ts}")
    lines.append("# TYPE request_predict_errors counter")
    for pod in PODS:
        lab = f'namespace="{NS}",serving_knative_dev_revision="{pod.revision}",pod="{pod.name}"'
        # Like prometheus_client's labelled counters: the series appears with its first error.
        for x in scrapes(pod):
            _, err, _ = cumulative(pod, x)
            if err or any(cumulative(pod, y)[1] for y in scrapes(pod) if y < x):
                lines.append(f"{ERRORS}{{{lab}}} {err} {T0 + x:.3f}")
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")
    return path


def expected(revision: str, a: float, b: float) -> tuple[int, int, tuple[int, ...]]:
    """Exact counts of ``revision`` for [T0+a, T0+b): each pod's events between its edge scrapes."""
    req = err = 0
    bkt = [0] * len(LE_S)
    for pod in PODS:
        if pod.revision != revision:
            continue
        xs = scrapes(pod)
        at_b = [x for x in xs if x <= b]
        if not at_b or at_b[-1] <= a:
            continue  # no sample inside the window
        at_a = [x for x in xs if x <= a]
        end = cumulative(pod, at_b[-1])
        start = cumulative(pod, at_a[-1]) if at_a else (0, 0, (0,) * len(LE_S))
        req += end[0] - start[0]
        err += end[1] - start[1]
        bkt = [x + e - s for x, e, s in zip(bkt, end[2], start[2], strict=True)]
    return req, err, tuple(bkt)


@pytest.fixture(scope="module")
def prom(
    prometheus_factory: Callable[[Sequence[Path]], PrometheusServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> PrometheusServer:
    return prometheus_factory([openmetrics(tmp_path_factory.mktemp("pods") / "pods.om")])


def src(url: str) -> PrometheusSource:
    return PrometheusSource(
        PrometheusConfig(
            url=url, round_counts=False, presets=PresetOptions(kserve_errors_metric=ERRORS)
        )
    )


def request(stable: str = "stable", canary: str = "canary") -> FetchRequest:
    return FetchRequest("k", NS, stable, canary, Source(preset="kserve"))


def counts(got: VersionCounts | None) -> tuple[int, int, tuple[int, ...]]:
    assert got is not None
    return int(got.requests), int(got.errors), tuple(int(c) for c in got.bucket_counts)


# Windows of 10 s at a phase of 3.7 s: never on a scrape (2.3 + 5k). [33.7, 43.7) holds the
# first scrape of pod c-b (42.3); [63.7, 73.7) the last of c-c (67.3).
WINDOWS = [(3.7 + 10 * k, 13.7 + 10 * k) for k in range(9)]


@pytest.mark.parametrize(("a", "b"), WINDOWS)
def test_each_window_counts_exactly_the_samples_between_its_edges(
    prom: PrometheusServer, a: float, b: float
) -> None:
    with src(prom.url) as s:
        got = s.fetch_one(request(), T0 + a, T0 + b)
    assert got.no_data_reason is None, got.no_data_reason
    assert counts(got.stable) == expected("stable", a, b)
    assert counts(got.canary) == expected("canary", a, b)
    assert got.canary is not None and got.canary.bounds_ms == (5.0, 50.0, math.inf)


def test_a_new_pod_and_a_first_error_count_from_zero(prom: PrometheusServer) -> None:
    """The pod c-b's first scrape (42.3) holds everything it served since it started at 40."""
    a, b = 33.7, 43.7
    with src(prom.url) as s:
        got = s.fetch_one(request(), T0 + a, T0 + b)
    c_b = next(p for p in PODS if p.name == "c-b")
    assert cumulative(c_b, 42.3)[0] > 0
    req, _, _ = expected("canary", a, b)
    without_new_pod = req - cumulative(c_b, 42.3)[0]
    assert got.canary is not None and got.canary.requests == req > without_new_pod


def test_consecutive_windows_partition_the_samples(prom: PrometheusServer) -> None:
    """Windows at any phase add up to the window over their union: nothing counted twice."""
    with src(prom.url) as s:
        parts = [s.fetch_one(request(), T0 + a, T0 + b) for a, b in WINDOWS]
        whole = s.fetch_one(request(), T0 + WINDOWS[0][0], T0 + WINDOWS[-1][1])
    for v in ("stable", "canary"):
        req, err, bkt = 0, 0, np.zeros(len(LE_S), dtype=int)
        for p in parts:
            r, e, b = counts(getattr(p, v))
            req, err, bkt = req + r, err + e, bkt + np.array(b)
        assert (req, err, tuple(int(x) for x in bkt)) == counts(getattr(whole, v))


def test_a_counter_reset_is_no_data_only_where_it_falls(prom: PrometheusServer) -> None:
    """r-c restarts at 101: its samples drop between the scrapes 97.3 and 102.3."""
    req = request("reset-stable", "reset-canary")
    with src(prom.url) as s:
        before = s.fetch_one(req, T0 + 90.0, T0 + 100.0)  # edges 87.3 .. 97.3
        across = s.fetch_one(req, T0 + 98.0, T0 + 103.0)  # edges 97.3 .. 102.3: the drop
        inside = s.fetch_one(req, T0 + 90.0, T0 + 110.0)
        after = s.fetch_one(req, T0 + 103.0, T0 + 113.0)  # edges 102.3 .. 112.3
    assert before.usable and counts(before.canary) == expected("reset-canary", 90.0, 100.0)
    for got in (across, inside):
        assert got.no_data_reason is not None
        assert "counter reset" in got.no_data_reason and "canary" in got.no_data_reason
    # Right after: the reset is inside the start edge's lookback but before the start edge.
    assert after.usable, after.no_data_reason
    assert counts(after.canary) == expected("reset-canary", 103.0, 113.0)
    assert counts(after.stable) == expected("reset-stable", 103.0, 113.0)
