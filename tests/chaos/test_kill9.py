"""kill -9 drills: a live daemon killed at random points decides exactly as an uninterrupted one.

Everything is real: a scenario's traffic is simulated and its counters backfilled into a real
Prometheus twice (for two namespaces), two real InferenceServices on the real kube-apiserver
read it, and two ``canaryd run`` processes act on them on a clock shifted to the data
(``--clock-offset``): one runs undisturbed, the other is killed with SIGKILL at random moments
(during start-up, mid-tick, between ticks) at least 30 times and restarted each time. The
canary revision appears on both InferenceServices at the same moment, mid-way through an
analysis window, so both daemons start their rollouts on the same window.

Asserted, per scenario (healthy: promotes; regressed: rolls back):

- the same outcome, the same step history (times, weights, reasons) and the same evidence as
  the uninterrupted daemon (and as the simulator);
- evidence continuity: every analysis window since the start was judged exactly once
  (``state.intervals`` equals the windows between the start and the decision);
- exactly one Event per applied decision, none lost and none repeated;
- no canary weight outside the policy's steps (0 and 100 included), polled every 20 ms.

``CANARYD_SOAK=1`` runs the longer soak variant (more kills, both scenarios, longer rollouts).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from canaryd.identity import RolloutKey
from canaryd.kube import JSON, raw_request
from canaryd.metrics.openmetrics import TickSample, write_openmetrics
from canaryd.policy.loader import load_policies_text
from canaryd.simulation.engine import simulate
from canaryd.simulation.scenario import load_scenario
from canaryd.state.kubernetes import KubernetesStateStore
from tests.integration.kube.conftest import (
    REPO,
    KubeEnv,
    create_isvc,
    get_isvc,
    sample_predictor,
    serverless_status,
    set_isvc_status,
)
from tests.integration.prometheus.conftest import PrometheusServer, start_prometheus

pytestmark = pytest.mark.integration

SOAK = os.environ.get("CANARYD_SOAK") == "1"
KILLS = int(os.environ.get("CANARYD_DRILL_KILLS", "100" if SOAK else "30"))
INTERVAL = 5.0
STEPS = [10, 20, 30, 40, 50]
DWELL = "60s" if SOAK else "40s"

SCENARIO = """\
name: {name}
duration: {duration}
tick: 1s
start: 2026-06-01T12:00:00Z
traffic: {{rps: 60}}
buckets: istio
stable:
  errorRate: 0.01
  latency: {{lognormal: {{medianMs: 80, sigma: 0.4}}}}
{canary}
"""
HEALTHY = "canary: {}"
REGRESSED = "canary:\n  changes:\n    - {at: 130s, errorRate: 0.04}"

POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: drill-{ns}}}
spec:
  target: {{namespace: {ns}, inferenceService: m}}
  router: {{type: kserve}}
  steps: {{weights: {steps}, minDwell: {dwell}, minCanaryRequests: 50}}
  analysis:
    interval: 5s
    source: {{preset: istio}}
    metrics:
      - {{name: errors, kind: errors, maxRelativeIncrease: 0.2}}
      - {{name: latency, kind: latency, maxRelativeIncrease: 0.1, quantiles: [0.5, 0.9]}}
"""


@dataclass
class Drill:
    namespace: str
    policy_dir: Path
    weights: set[object] = field(default_factory=set)


def _policy(ns: str) -> str:
    return POLICY.format(ns=ns, steps=json.dumps(STEPS), dwell=DWELL)


def _backfill(
    tmp: Path, name: str, canary: str, namespaces: list[str]
) -> tuple[PrometheusServer, float]:
    duration = "10m"
    sc_file = tmp / f"{name}.yaml"
    sc_file.write_text(SCENARIO.format(name=name, duration=duration, canary=canary))
    sc, base = load_scenario(sc_file)
    samples: list[TickSample] = []
    bounds = sc.bounds_ms()
    t0 = sc.start.timestamp()

    def sink(t: float, req: np.ndarray, err: np.ndarray, hs: np.ndarray, hc: np.ndarray) -> None:
        for v, rev, hist in ((0, "stable", hs), (1, "canary", hc)):
            samples.append(
                TickSample(t0 + t, rev, float(req[v]), float(err[v]), bounds, tuple(hist.tolist()))
            )

    # The traffic: the canary at 50 % throughout (a policy that never moves). The daemons judge
    # these counts; the drill is about what a kill changes, so the split need not follow them.
    data_text = (
        _policy(namespaces[0])
        .replace(json.dumps(STEPS), "[50]")
        .replace(DWELL, "1h")
        .replace("maxRelativeIncrease: 0.2", "maxRelativeIncrease: 10")
        .replace("maxRelativeIncrease: 0.1", "maxRelativeIncrease: 10")
    )
    data_policy = load_policies_text(data_text, "d.yaml")[0].policy
    result = simulate(sc, data_policy, base, seed=3, tick_sink=sink)
    zero = [
        TickSample(t0, r, 0.0, 0.0, bounds, tuple([0.0] * len(bounds)))
        for r in ("stable", "canary")
    ]
    files = []
    for ns in namespaces:
        f = tmp / f"{name}-{ns}.om"
        with f.open("w") as out:
            write_openmetrics(
                out, [*zero, *samples], preset="istio", namespace=ns, workload_suffix="-deployment"
            )
        files.append(f)
    (tmp / f"prom-{name}").mkdir()
    assert result.runs[0].outcome == "in_progress"
    return start_prometheus(files, tmp / f"prom-{name}"), t0


def _daemon(
    kube: KubeEnv, drill: Drill, url: str, offset: float, log: Path
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "canaryd.cli",
        "run",
        *("--policies", str(drill.policy_dir), "--kubeconfig", str(kube.kubeconfig)),
        *("--prometheus", url, "--namespaces", drill.namespace),
        *("--port", "0", "--host", "127.0.0.1", "--tick", "1", "--settle", "0"),
        *("--checkpoint-every", "3", "--clock-offset", f"{offset:.3f}", "--log-level", "INFO"),
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(log.parent)}
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def _weight(kube: KubeEnv, ns: str) -> object:
    spec = get_isvc(kube, ns, "m")["spec"]["predictor"]
    return spec.get("canaryTrafficPercent", "unset")


def _stored(kube: KubeEnv, ns: str) -> JSON | None:
    got = KubernetesStateStore(kube.api_client).load(RolloutKey(ns, "m"))
    return None if got is None else got.data


def _events(kube: KubeEnv, ns: str) -> list[JSON]:
    got = raw_request(kube.api_client, "GET", f"/apis/events.k8s.io/v1/namespaces/{ns}/events")
    return sorted(got.get("items", []), key=lambda e: e["eventTime"])


def _terminal(kube: KubeEnv, ns: str) -> bool:
    doc = _stored(kube, ns)
    return doc is not None and doc["state"]["phase"] in ("promoted", "rolled_back", "paused")


@pytest.fixture
def make_ns(kube: KubeEnv) -> Iterator[object]:
    import uuid

    def make() -> str:
        name = f"d-{uuid.uuid4().hex[:8]}"
        raw_request(
            kube.api_client, "POST", "/api/v1/namespaces", body={"metadata": {"name": name}}
        )
        return name

    yield make


SCENARIOS = [("healthy", HEALTHY), ("regressed", REGRESSED)]


@pytest.mark.parametrize(("name", "canary"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_kill9_changes_nothing(
    kube: KubeEnv, make_ns: object, tmp_path: Path, name: str, canary: str
) -> None:
    calm, chaos = Drill(make_ns(), tmp_path / "calm"), Drill(make_ns(), tmp_path / "chaos")  # type: ignore[operator]
    prom, t0 = _backfill(tmp_path, name, canary, [calm.namespace, chaos.namespace])
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    try:
        for d in (calm, chaos):
            d.policy_dir.mkdir()
            (d.policy_dir / "p.yaml").write_text(_policy(d.namespace))
            create_isvc(kube, d.namespace, "m", {"predictor": sample_predictor("v2")})
            set_isvc_status(kube, d.namespace, "m", serverless_status("stable", "stable"))

        def watch_weights() -> None:
            while not stop.is_set():
                for d in (calm, chaos):
                    d.weights.add(_weight(kube, d.namespace))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch_weights, daemon=True)
        watcher.start()
        # Both daemons live on the data's clock, 25 s before it starts; no canary yet.
        offset = time.time() - (t0 - 25.0)
        procs.append(_daemon(kube, calm, prom.url, offset, tmp_path / "calm.log"))
        current = _daemon(kube, chaos, prom.url, offset, tmp_path / "chaos.log")
        # The canary appears on both 1 s into the data's first window.
        time.sleep(max(0.0, t0 + 1.0 - (time.time() - offset)))
        for d in (calm, chaos):
            set_isvc_status(kube, d.namespace, "m", serverless_status("stable", "canary"))
        rng = random.Random(name)
        kills = 0
        deadline = time.monotonic() + (900 if SOAK else 420)
        while time.monotonic() < deadline and not _terminal(kube, chaos.namespace):
            if kills < KILLS:
                time.sleep(rng.uniform(0.3, 6.0))
                current.send_signal(signal.SIGKILL)
                current.wait(timeout=30)
                kills += 1
                current = _daemon(kube, chaos, prom.url, offset, tmp_path / "chaos.log")
            else:
                time.sleep(0.5)
        procs.append(current)
        while time.monotonic() < deadline and not _terminal(kube, calm.namespace):
            time.sleep(0.5)
        time.sleep(2.0)  # the post-apply write and the Event land
    finally:
        stop.set()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        prom.stop()

    assert kills >= KILLS, f"the rollout ended after {kills} kills"
    a, b = _stored(kube, calm.namespace), _stored(kube, chaos.namespace)
    assert a is not None and b is not None
    sa, sb = a["state"], b["state"]
    assert sa["phase"] == sb["phase"]
    assert sa["phase"] == {"healthy": "promoted", "regressed": "rolled_back"}[name]
    assert sa["history"] == sb["history"]
    assert a["last_decision"]["evidence"] == b["last_decision"]["evidence"]
    assert a["last_decision"]["verdicts"] == b["last_decision"]["verdicts"]
    # Continuity: every window from the start to the decision judged once.
    windows = round((sb["decided_at"] - sb["started_at"]) / INTERVAL)
    start_grid = INTERVAL * (sb["started_at"] // INTERVAL)
    assert (
        sb["intervals"] == round((sb["decided_at"] - start_grid) / INTERVAL)
        or sb["intervals"] == windows
    )
    assert sa["intervals"] == sb["intervals"]
    # Exactly one Event per applied decision.
    applied = Counter(
        e["reason"] for e in _events(kube, chaos.namespace) if e["reason"] != "AnalysisInconclusive"
    )
    calm_applied = Counter(
        e["reason"] for e in _events(kube, calm.namespace) if e["reason"] != "AnalysisInconclusive"
    )
    assert applied == calm_applied
    assert applied["CanaryStarted"] == 1
    assert applied["WeightChanged"] == len(sb["history"]) - 1 - (
        sa["phase"] in ("promoted", "rolled_back")
    )
    assert sum(applied[r] for r in ("Promoted", "RolledBack")) == 1
    allowed = {"unset", 0, *STEPS}
    for d in (calm, chaos):
        assert d.weights <= allowed, (d.namespace, d.weights - allowed)
    print(
        f"{name}: {kills} kills, outcome {sb['phase']}, {sb['intervals']} windows, "
        f"events {dict(applied)}, weights seen {sorted(map(str, chaos.weights))}"
    )
