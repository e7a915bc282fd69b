"""A live canary against real kserve model servers: the daemon decides on real scrapes, and what
it counted agrees with what the load generator sent (see ``harness`` for every piece).

Three rollouts, each about two minutes: a healthy canary is promoted; a canary that
answers 5 % of its requests with HTTP 500 is rolled back on errors; a canary that sleeps 60 ms
in 30 % of its predictions is rolled back on latency. In every one, each analysis window's
requests, errors and latency buckets per version equal the truth up to the requests in flight
when a scrape ran at one of the window's edges (``harness.Bound``).

Each version runs on one pod, which the kserve preset's pod label tells apart, so the judges
assume pods differ by less than x4 (one stable pod shows no spread: ``stats.pods``) and need
more of the canary's errors than if requests were exchangeable: the steps dwell 60 s, not 40.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest

from canaryd.controller import Phase
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource
from canaryd.metrics.source import FetchRequest
from canaryd.policy.model import Source
from tests.integration.kube.conftest import KubeEnv
from tests.live.harness import (
    CANARY_REV,
    STABLE_REV,
    Fault,
    compare_counts,
    live_run,
    policy_yaml,
    summary,
)

pytestmark = pytest.mark.integration

CASES = {
    "healthy": (Fault(), Phase.PROMOTED, None),
    "errors-5pct": (Fault(error_share=0.05), Phase.ROLLED_BACK, "errors"),
    "latency-30pct": (Fault(slow_share=0.3, slow_ms=60), Phase.ROLLED_BACK, "latency"),
}


def request_of(namespace: str) -> FetchRequest:
    return FetchRequest("m", namespace, STABLE_REV, CANARY_REV, Source(preset="kserve"))


@pytest.mark.parametrize("case", list(CASES))
def test_live_rollout_decides_on_counts_that_match_the_truth(
    kube: KubeEnv, tmp_path: Path, case: str
) -> None:
    fault, outcome, failing_metric = CASES[case]
    namespace = f"live-{uuid.uuid4().hex[:8]}"
    with live_run(
        kube.api_client,
        kube.kubeconfig,
        namespace,
        fault,
        policy=policy_yaml(namespace),
        workdir=tmp_path,
        seed=len(case),
    ) as run:
        daemon = run.daemon
        assert daemon is not None
        finished = run.wait_for(lambda: (daemon.phase() or Phase.PENDING).terminal, 240)
        doc = daemon.document()
        percent = run.cluster.canary_percent()
        events = run.cluster.events()
        checks = compare_counts(run)
        sent = list(run.load.sent)
        windows = list(daemon.source.windows)
        pod_names = dict(run.pods)
        # The same windows without the model's own error counter: kserve exports none, so
        # the failed predictions are in request_predict_seconds_count but cannot be told apart.
        with PrometheusSource(PrometheusConfig(url=run.prometheus.url)) as bare:
            unmeasured = [
                (w, bare.fetch_one(request_of(namespace), w.start_s, w.end_s))
                for w in windows
                if w.observation.usable
            ]

    assert finished, f"no decision within 4 minutes: {doc and doc.state.phase}"
    assert daemon.errors == []
    assert run.load.failures == []
    assert doc is not None and doc.state.phase is outcome
    last = doc.last_decision
    assert last is not None
    reasons = [e["reason"] for e in events]
    assert reasons[0] == "CanaryStarted"
    if outcome is Phase.PROMOTED:
        assert percent is None  # canaryTrafficPercent removed: the latest revision takes all
        assert reasons[-1] == "Promoted"
        assert "WeightChanged" in reasons
    else:
        assert percent == 0
        assert reasons[-1] == "RolledBack"
        failing = [v for v in last["verdicts"] if v.startswith(f"{failing_metric}:")]
        assert failing and "fail" in failing[0], last["verdicts"]

    # The truth: the canary did what it was built to do.
    canary = [s for s in sent if s.version == "canary"]
    stable = [s for s in sent if s.version == "stable"]
    assert len(canary) >= 50 and len(stable) >= 300
    assert not any(s.error for s in stable)
    if fault.error_share:
        assert 0.02 < sum(s.error for s in canary) / len(canary) < 0.10

    # Every window canaryd used, per version, against the truth.
    usable = [w for w in windows if w.observation.usable]
    assert len(usable) >= 2
    assert all(w.observation.errors_measured for w in usable)
    assert {c.version for c in checks} == {"stable", "canary"}
    assert len(checks) == 2 * len(usable)
    problems = [
        f"[{c.start_s - run.started_at:.1f}, {c.end_s - run.started_at:.1f}) {c.version} {f}"
        for c in checks
        for f in c.failures()
    ]
    assert problems == []
    # In flight at the edges' scrapes: a few requests per window at 30 rps.
    in_flight = sum(c.bounds["requests"].in_flight for c in checks)
    assert in_flight <= 0.05 * sum(c.counted["requests"] for c in checks), summary(checks)
    # The usual relabelling's `pod` label gives each version's counts per pod (one pod each
    # here) in the same queries: the pod's counts are the version's.
    for w in usable:
        for v in ("stable", "canary"):
            vc = w.observation.stable if v == "stable" else w.observation.canary
            assert vc is not None
            if vc.requests == 0:  # a pod that served nothing in the window is left out
                assert vc.pods == ()
                continue
            assert [p.pod for p in vc.pods] == [pod_names[v]], (v, vc.pods)
            (pod,) = vc.pods
            assert (pod.requests, pod.errors, pod.bucket_counts) == (
                vc.requests,
                vc.errors,
                vc.bucket_counts,
            )
    # Without an errors counter the kserve preset measures no errors, and says so.
    for w, o in unmeasured:
        assert o.usable and not o.errors_measured
        assert o.canary is not None and w.observation.canary is not None
        assert o.canary.errors == 0
        assert o.canary.requests == w.observation.canary.requests  # failures are requests too
        assert o.canary.bucket_counts == w.observation.canary.bucket_counts
    # Consecutive windows: each starts where the previous ended (nothing counted twice).
    for a, b in itertools.pairwise(windows):
        assert b.start_s == a.end_s
