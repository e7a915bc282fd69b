"""Per-pod counts from a real Prometheus: the same batched queries, grouped by the pod label.

Stable runs on 3 pods with different rates, error rates and latencies, the canary on 1 pod (and
a second canary pod that scales up halfway, a series new inside a window). Samples land on the
interval boundaries (a scrape every 15 s, intervals of 60 s), so every pod's counts must equal
the simulated ones exactly, with ``round_counts=False`` to prove it is not rounding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canaryd.metrics.openmetrics import (
    TickSample,
    tick_samples_from_observations,
    write_openmetrics,
)
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource
from canaryd.metrics.source import FetchRequest
from canaryd.metrics.transport import HttpTransport
from canaryd.observation import Observation, PodCounts, VersionCounts
from canaryd.policy.model import Source

from .conftest import PrometheusServer, data_origin

pytestmark = pytest.mark.integration

T0 = data_origin()
INTERVAL = 60.0
TICK = 15.0
N = 10
SCALE_UP = 5
"""The interval from which the canary's second pod serves (its series starts inside it)."""
BOUNDS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, math.inf)

# (name, requests/s, error rate, log-latency mean): the pods differ as real replicas do.
STABLE_PODS = (("s-0", 10.0, 0.01, 3.4), ("s-1", 5.0, 0.03, 3.6), ("s-2", 2.0, 0.0, 3.9))
CANARY_PODS = (("c-0", 4.0, 0.02, 3.5), ("c-1", 3.0, 0.05, 3.7))


def simulate(seed: int) -> list[Observation]:
    rng = np.random.default_rng(seed)
    finite = np.array(BOUNDS_MS[:-1])

    def pod(name: str, rps: float, err: float, mu: float) -> PodCounts:
        reqs = int(rng.poisson(rps * INTERVAL))
        lat = rng.lognormal(mu, 0.6, reqs)
        cum = [float(np.count_nonzero(lat <= b)) for b in finite] + [float(reqs)]
        return PodCounts(name, float(reqs), float(rng.binomial(reqs, err)), tuple(cum))

    def version(pods: Sequence[PodCounts]) -> VersionCounts:
        return VersionCounts(
            sum(p.requests for p in pods),
            sum(p.errors for p in pods),
            BOUNDS_MS,
            tuple(sum(p.bucket_counts[k] for p in pods) for k in range(len(BOUNDS_MS))),
            pods=tuple(pods),
        )

    out = []
    for k in range(N):
        stable = [pod(*p) for p in STABLE_PODS]
        canary = [pod(*p) for p in CANARY_PODS[: 2 if k >= SCALE_UP else 1]]
        out.append(
            Observation(
                T0 + k * INTERVAL, T0 + (k + 1) * INTERVAL, version(stable), version(canary)
            )
        )
    return out


@dataclass(frozen=True)
class Rollout:
    key: str
    namespace: str
    stable: str
    canary: str
    source: Source
    observations: tuple[Observation, ...] = field(default=(), repr=False)

    def request(self) -> FetchRequest:
        return FetchRequest(self.key, self.namespace, self.stable, self.canary, self.source)


ISTIO = Source(preset="istio")
A = Rollout("a", "pods-a", "iris-00001", "iris-00002", ISTIO, tuple(simulate(11)))
B = Rollout("b", "pods-b", "digits-00001", "digits-00002", ISTIO, tuple(simulate(12)))
FLAT = Rollout("flat", "flat", "flat-00001", "flat-00002", ISTIO, tuple(simulate(13)))
"""Written without a pod label (a scrape without the relabelling): totals only."""
KNATIVE = Rollout(
    "kn", "serving", "kn-00001", "kn-00002", Source(preset="knative"), tuple(simulate(14))
)
KSERVE = Rollout(
    "ks",
    "kserve-ns",
    "ks-00001",
    "ks-00002",
    Source(
        preset="kserve",
        errors_metric="request_predict_seconds_errors_total",
        pod_label="kubernetes_pod_name",  # an older scrape config's spelling
    ),
    tuple(simulate(15)),
)


def _samples(r: Rollout) -> list[TickSample]:
    samples = tick_samples_from_observations(r.observations, TICK, r.stable, r.canary)
    if r is FLAT:
        return [replace(s, pod="") for s in _flat(samples)]
    # The canary's second pod has no series before it scales up: it is new in that window.
    start = T0 + SCALE_UP * INTERVAL
    return [s for s in samples if not (s.pod == "c-1" and s.t_seconds <= start)]


def _flat(samples: list[TickSample]) -> list[TickSample]:
    """One series set per revision: the pods' cumulative counts added up at each tick."""
    acc: dict[tuple[str, float], TickSample] = {}
    for s in samples:
        key = (s.revision, s.t_seconds)
        if key not in acc:
            acc[key] = replace(s, pod="")
        else:
            a = acc[key]
            acc[key] = replace(
                a,
                requests_cum=a.requests_cum + s.requests_cum,
                errors_cum=a.errors_cum + s.errors_cum,
                buckets_cum=tuple(x + y for x, y in zip(a.buckets_cum, s.buckets_cum, strict=True)),
            )
    return list(acc.values())


@pytest.fixture(scope="module")
def prom(prometheus_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> PrometheusServer:
    d = tmp_path_factory.mktemp("openmetrics-pods")
    files: list[Path] = []
    for r, preset, kw in (
        (A, "istio", {"workload_suffix": "-deployment"}),
        (B, "istio", {}),
        (FLAT, "istio", {}),
        (KNATIVE, "knative", {}),
        (KSERVE, "kserve", {"pod_label": "kubernetes_pod_name"}),
    ):
        path = d / f"{r.key}.om"
        with path.open("w") as f:
            write_openmetrics(f, _samples(r), preset=preset, namespace=r.namespace, **kw)  # type: ignore[arg-type]
        files.append(path)
    return prometheus_factory(files)  # type: ignore[no-any-return]


class CountingTransport:
    """The real HTTP transport, counting requests and the size of the answers' JSON."""

    def __init__(self, config: PrometheusConfig) -> None:
        self.inner = HttpTransport(config)
        self.requests = 0
        self.rows: list[list[dict[str, Any]]] = []

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
        self.requests += 1
        rows = self.inner.query(promql, time_s, timeout_s)
        self.rows.append(rows)
        return rows

    def close(self) -> None:
        self.inner.close()

    @property
    def answer_bytes(self) -> int:
        return sum(len(json.dumps(r)) for r in self.rows)


def fetch(
    url: str, rollouts: Sequence[Rollout], start_s: float, end_s: float
) -> tuple[dict[Any, Observation], PrometheusSource, CountingTransport]:
    config = PrometheusConfig(url=url, round_counts=False)
    transport = CountingTransport(config)
    with PrometheusSource(config, transport=transport) as src:
        out = src.fetch([r.request() for r in rollouts], start_s, end_s)
    return out, src, transport


def summed(obs: Sequence[Observation], version: str) -> VersionCounts:
    """The observations' counts of one version added up, per pod too (pods sorted)."""
    parts = [o.stable if version == "stable" else o.canary for o in obs]
    pods: dict[str, list[float]] = {}
    for vc in parts:
        assert vc is not None
        for p in vc.pods:
            a = pods.setdefault(p.pod, [0.0] * (2 + len(BOUNDS_MS)))
            for k, x in enumerate((p.requests, p.errors, *p.bucket_counts)):
                a[k] += x
    return VersionCounts(
        sum(vc.requests for vc in parts if vc),
        sum(vc.errors for vc in parts if vc),
        BOUNDS_MS,
        tuple(sum(vc.bucket_counts[k] for vc in parts if vc) for k in range(len(BOUNDS_MS))),
        pods=tuple(PodCounts(n, a[0], a[1], tuple(a[2:])) for n, a in sorted(pods.items())),
    )


def test_every_pods_counts_come_back_exactly_in_four_queries(prom: PrometheusServer) -> None:
    for k in (0, SCALE_UP - 1, SCALE_UP, N - 1):
        obs = A.observations[k]
        out, src, transport = fetch(prom.url, [A, B, FLAT], obs.start_s, obs.end_s)
        for r in (A, B):
            got, want = out[r.key], r.observations[k]
            assert got.no_data_reason is None
            assert got.stable == want.stable and got.canary == want.canary
            assert got.stable is not None and [p.pod for p in got.stable.pods] == [
                "s-0",
                "s-1",
                "s-2",
            ]
        # Requests, errors, buckets and resets, once each, for the three rollouts.
        assert src.last_stats.queries == {"requests": 1, "errors": 1, "buckets": 1, "resets": 1}
        assert transport.requests == 4


def test_a_pod_that_scales_up_inside_the_window_counts_from_zero(prom: PrometheusServer) -> None:
    obs = B.observations[SCALE_UP]
    out, _, _ = fetch(prom.url, [B], obs.start_s, obs.end_s)
    canary = out["b"].canary
    assert canary is not None and obs.canary is not None
    assert [p.pod for p in canary.pods] == ["c-0", "c-1"]
    assert canary.pods == obs.canary.pods and canary.requests == obs.canary.requests


def test_a_longer_window_adds_every_pods_intervals(prom: PrometheusServer) -> None:
    obs = A.observations[2 : SCALE_UP + 3]
    out, _, _ = fetch(prom.url, [A, B], obs[0].start_s, obs[-1].end_s)
    got = out["a"]
    assert got.stable == summed(obs, "stable")
    assert got.canary == summed(obs, "canary")


def test_series_without_the_pod_label_give_totals_and_no_pods(prom: PrometheusServer) -> None:
    obs = FLAT.observations[3]
    out, _, _ = fetch(prom.url, [A, FLAT], obs.start_s, obs.end_s)
    got = out["flat"]
    assert got.usable and got.stable is not None and got.canary is not None
    assert obs.stable is not None and obs.canary is not None
    assert (got.stable.requests, got.stable.errors, got.stable.bucket_counts) == (
        obs.stable.requests,
        obs.stable.errors,
        obs.stable.bucket_counts,
    )
    assert got.canary.requests == obs.canary.requests
    assert got.stable.pods == () and got.canary.pods == ()
    assert out["a"].stable is not None and len(out["a"].stable.pods) == 3  # same queries


@pytest.mark.parametrize("rollout", [KNATIVE, KSERVE], ids=["knative-pod_name", "kserve-renamed"])
def test_other_presets_pod_labels(prom: PrometheusServer, rollout: Rollout) -> None:
    obs = rollout.observations[SCALE_UP + 1]
    out, src, _ = fetch(prom.url, [rollout], obs.start_s, obs.end_s)
    got = out[rollout.key]
    assert got.no_data_reason is None
    assert got.stable == obs.stable and got.canary == obs.canary
    assert sum(src.last_stats.queries.values()) == 4


def test_the_answers_grow_by_one_series_per_pod(prom: PrometheusServer) -> None:
    obs = A.observations[SCALE_UP]
    _, _, with_pods = fetch(prom.url, [A, B], obs.start_s, obs.end_s)
    flat = [replace(r, source=Source(preset="istio", pod_label="")) for r in (A, B)]
    out, _, without = fetch(prom.url, flat, obs.start_s, obs.end_s)
    assert out["a"].stable is not None and out["a"].stable.pods == ()
    assert out["a"].stable == replace(summed([obs], "stable"), pods=())
    # Rows per query: requests, errors, buckets, resets. 2 rollouts, 3 stable + 2 canary pods
    # each; every pod of this seed failed at least once in the window.
    pods, versions, bounds = 2 * (3 + 2), 4, len(BOUNDS_MS)
    assert [len(r) for r in with_pods.rows] == [pods, pods, pods * bounds, versions]
    assert [len(r) for r in without.rows] == [versions, versions, versions * bounds, versions]
    assert with_pods.answer_bytes > without.answer_bytes


def test_stable_history_comes_back_per_pod_in_the_same_batched_queries(
    prom: PrometheusServer,
) -> None:
    # The daemon reads stable's history before a rollout's first window (history_request):
    # stable's counts only, per pod, for many rollouts in one batch.
    from canaryd.metrics.source import history_request

    obs = A.observations[1:SCALE_UP]
    config = PrometheusConfig(url=prom.url, round_counts=False)
    with PrometheusSource(config) as src:
        out = src.fetch(
            [history_request(r.request()) for r in (A, B)], obs[0].start_s, obs[-1].end_s
        )
        assert sum(src.last_stats.queries.values()) == 4
    for r in (A, B):
        got = out[r.key]
        assert got.usable and got.stable is not None
        want = summed(r.observations[1:SCALE_UP], "stable")
        assert got.stable == want and got.canary == want  # stable's, under both names
        assert [p.pod for p in got.stable.pods] == ["s-0", "s-1", "s-2"]
