"""A shadow-phase rollback made in simulation is the one made in the cluster, with no user hurt.

The pattern of ``test_full_loop.py``, through the Gateway API router: ``canaryd simulate
simulations/shadow-fail.yaml --openmetrics`` writes run 0's counters, including the
source-reported requests that leave the mirrored copies out (as Istio's proxies report a
mirror); promtool backfills them into a real Prometheus; the daemon's ``Reconciler`` reads them
through the real ``PrometheusSource`` (``PrometheusPool``, as ``canaryd run`` wires it) and drives a real HTTPRoute on a real kube-apiserver.
The shadow phase mirrors 10 % of the requests to the canary (a RequestMirror filter, weight 0),
the canary fails on those copies, and the rollback's Event says that no user request was
affected. The istio preset's split of the canary's requests into mirrored and live ones must be
the simulator's, to the request.

It runs with ``history: 0s`` and with ``history: 30m``: then the simulator's 30 min warm-up is
backfilled as stable's counters before t=0 (its source-reported requests too), the daemon's
first fetch is stable's history over it, and the primed state must be the simulator's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.daemon.reconciler import Reconciler
from canaryd.kube import JSON, KubeObjects, raw_request
from canaryd.kube.events import EventRecorder
from canaryd.metrics.pool import PrometheusPool
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation
from canaryd.policy.loader import load_policies_text
from canaryd.simulation.engine import simulate
from canaryd.simulation.scenario import load_scenario
from canaryd.state.base import RolloutKey
from canaryd.state.kubernetes import KubernetesStateStore
from tests.integration.kube.conftest import REPO, KubeEnv, as_json, create_isvc, sample_predictor
from tests.integration.kube.test_gateway_router import set_accepted
from tests.integration.prometheus.conftest import PrometheusServer, start_prometheus

pytestmark = pytest.mark.integration

SCENARIO = REPO / "simulations" / "shadow-fail.yaml"
SEED = 3
NAME = "m"
INTERVAL = 60.0
GW = ("gateway.networking.k8s.io", "v1", "httproutes")


def policy_yaml(namespace: str, history: str = "0s") -> str:
    # history 0s: the simulator draws no warm-up and the backfill has no series before t=0, so
    # neither side reads stable's history. Otherwise the simulator's warm-up (default: the
    # policy's history) is backfilled before t=0 and both sides prime the judges with it.
    return f"""\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: {NAME}-shadow}}
spec:
  target: {{namespace: {namespace}, inferenceService: {NAME}}}
  router:
    type: gateway-api
    gatewayApi:
      httpRoute: {NAME}
      ruleName: main
      stableBackend: {{name: stable, port: 80}}
      canaryBackend: {{name: canary, port: 80}}
  steps:
    shadow: {{duration: 10m, minCanaryRequests: 500, mirrorPercent: 10}}
    weights: [10, 50]
    minDwell: 10m
  analysis:
    interval: 1m
    history: {history}
    source: {{preset: istio}}
    metrics:
      - {{name: errors, kind: errors, judge: sequential, maxRelativeIncrease: 0.2}}
      - {{name: latency, kind: latency, judge: sequential, maxRelativeIncrease: 0.1}}
"""


def route(namespace: str) -> JSON:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "kserve"}],
            "rules": [
                {
                    "name": "testers",
                    "matches": [{"headers": [{"name": "version", "value": "v2"}]}],
                    "backendRefs": [{"name": "canary", "port": 80}],
                },
                {
                    # Ships at 90/10: the shadow phase takes those users off the canary first.
                    "name": "main",
                    "backendRefs": [
                        {"name": "stable", "port": 80, "weight": 90},
                        {"name": "canary", "port": 80, "weight": 10},
                    ],
                },
            ],
        },
    }


class Recording:
    """The daemon's MetricSource, unchanged; remembers what it was asked and what it returned."""

    def __init__(self, inner: PrometheusPool) -> None:
        self.inner = inner
        self.seen: list[tuple[FetchRequest, Observation]] = []

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        got = self.inner.fetch(requests, start_s, end_s)
        self.seen.extend((r, got[r.key]) for r in requests)
        return got


@pytest.fixture
def prometheus() -> Iterator[list[PrometheusServer]]:
    servers: list[PrometheusServer] = []
    yield servers
    for s in servers:
        s.stop()


def http_route(kube: KubeEnv, namespace: str) -> JSON:
    return as_json(kube.custom.get_namespaced_custom_object(GW[0], GW[1], namespace, GW[2], NAME))


def events(kube: KubeEnv, namespace: str) -> list[JSON]:
    got = raw_request(
        kube.api_client, "GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    )
    items = [e for e in got.get("items", []) if e["regarding"]["name"] == NAME]
    return sorted(items, key=lambda e: (e["eventTime"], e["metadata"]["name"]))


@pytest.mark.parametrize("history_s", [0.0, 1800.0], ids=["history-0s", "history-30m"])
def test_a_shadow_rollback_affects_no_user(
    kube: KubeEnv,
    namespace: str,
    tmp_path: Path,
    prometheus: list[PrometheusServer],
    history_s: float,
) -> None:
    sc, base = load_scenario(SCENARIO)
    assert sc.warmup is None  # the simulator's warm-up is the policy's history
    epoch = sc.start.timestamp()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_yaml(namespace, f"{history_s:g}s"))
    policy = load_policies_text(policy_file.read_text(), str(policy_file))[0].policy

    # 1. The simulation: its decisions, its series for Prometheus, its mirrored counts.
    om = tmp_path / "run0.om"
    res = CliRunner().invoke(
        main,
        [
            *("simulate", str(SCENARIO), "--policy", str(policy_file), "--seed", str(SEED)),
            *("--json", "--openmetrics", str(om)),
        ],
    )
    assert res.exit_code == 1, res.output  # simulate --runs 1 exits 1: rolled back
    sim = json.loads(res.output)["results"][0]
    assert sim["outcome"] == "rolled_back"
    decided = sim["decided_at_s"]
    assert [(s["t"], s["weight"]) for s in sim["steps"]] == [(0.0, 0), (decided, 0)]
    assert sim["impact"]["user_requests"] == 0 and sim["impact"]["shadow_requests"] > 0
    assert 'reporter="source"' in om.read_text()
    cum_mirrored: dict[float, Any] = {}
    run0 = simulate(
        sc,
        policy,
        base,
        seed=SEED,
        tick_sink=lambda *a: None,
        mirror_sink=cum_mirrored.__setitem__,
    ).runs[0]
    assert run0.to_dict() == sim
    if history_s:  # the history matters: the judges were primed with the warm-up's counts
        assert run0.warmup is not None and run0.warmup.requests > 0
        assert sim["history"]["stable_requests"] == run0.warmup.requests
    else:
        assert run0.warmup is None and sim["history"]["stable_requests"] is None

    # 2. Backfill and serve.
    (tmp_path / "prometheus").mkdir()
    prometheus.append(start_prometheus([om], tmp_path / "prometheus"))

    # 3. The cluster: the InferenceService rolled out, and the user's HTTPRoute, Accepted.
    create_isvc(kube, namespace, NAME, {"predictor": sample_predictor("v2")})
    kube.custom.create_namespaced_custom_object(GW[0], GW[1], namespace, GW[2], route(namespace))
    set_accepted(kube.custom, namespace, NAME, "True")
    original = http_route(kube, namespace)
    client = kube.new_client()
    source = Recording(PrometheusPool(prometheus[0].url))
    rec = Reconciler([policy], KubeObjects(client), source, EventRecorder(client, "canaryd-e2e"))
    key = RolloutKey(namespace, NAME)

    # 4. Tick at the simulator's interval ends until the daemon decides, and a little past.
    t = 0.0
    while t <= decided + 2 * INTERVAL:
        report = rec.tick(epoch + t)
        assert report.errors == {} and report.conflicts == [], report
        main_rule = http_route(kube, namespace)["spec"]["rules"][1]
        weights = [b["weight"] for b in main_rule["backendRefs"]]
        mirrors = [f for f in main_rule.get("filters", []) if f["type"] == "RequestMirror"]
        if t < decided:  # in shadow: no user on the canary, 10 % of requests copied to it
            assert weights == [100, 0]
            assert [m["requestMirror"]["percent"] for m in mirrors] == [10]
            assert mirrors[0]["requestMirror"]["backendRef"]["name"] == "canary"
        else:  # rolled back: the mirror is gone, stable keeps everything
            assert weights == [100, 0] and mirrors == []
        t += INTERVAL
    source.inner.close()

    # Stable's history first (once, stable only), when the policy reads one: the warm-up's
    # counts, exactly.
    seen = list(source.seen)
    if history_s:
        r, h = seen.pop(0)
        assert r.stable_only and not r.shadow
        assert (h.start_s - epoch, h.end_s - epoch) == (-history_s, 0.0)
        assert h.no_data_reason is None, h.no_data_reason
        assert h.stable == run0.warmup and h.canary == run0.warmup
    # Every window was fetched as a shadow window, and Prometheus told the copies apart exactly.
    assert [(r.shadow, o.start_s - epoch) for r, o in seen] == [
        (True, INTERVAL * k) for k in range(int(decided // INTERVAL))
    ]
    for _, o in seen:
        assert o.no_data_reason is None, o.no_data_reason
        assert o.canary is not None and o.stable is not None
        end = o.end_s - epoch
        before = cum_mirrored.get(end - INTERVAL, np.zeros(2))
        mirrored = cum_mirrored[end] - before
        assert o.canary.mirrored_requests == mirrored[0] == o.canary.requests
        assert o.canary.mirrored_errors == mirrored[1] == o.canary.errors
        assert o.stable.mirrored_requests is None

    # The same decisions at the same times, with the same evidence and the same impact.
    stored = KubernetesStateStore(kube.api_client).load(key)
    assert stored is not None
    state = stored.data["state"]
    assert [{**h, "t": h["t"] - epoch} for h in state["history"]] == sim["steps"]
    assert state["phase"] == "rolled_back"
    assert state["impact"] == sim["impact"]
    assert state["pre_canary_requests"] == sim["history"]["stable_requests"]
    assert state["pre_canary_note"] == sim["history"]["note"]
    last = stored.data["last_decision"]
    assert last["action"] == "rollback"
    assert last["evidence"] == {v["metric"]: v["e_value"] for v in sim["verdicts"]}
    assert last["impact"]["user_requests"] == 0

    # The route is as the user wrote it, but for the two weights canaryd set to 100/0.
    after = http_route(kube, namespace)
    expected = copy.deepcopy(original)
    for b, w in zip(expected["spec"]["rules"][1]["backendRefs"], (100, 0), strict=True):
        b["weight"] = w
    for o in (after, expected):
        for k in ("resourceVersion", "generation", "managedFields"):
            o["metadata"].pop(k, None)
        o.pop("status", None)
    assert after == expected

    # The Events tell the owners what happened, and that no user request was affected.
    evs = events(kube, namespace)
    reasons = [e["reason"] for e in evs]
    assert reasons[0] == "ShadowStarted" and reasons[-1] == "RolledBack"
    assert set(reasons[1:-1]) <= {"AnalysisInconclusive"}
    rolled = evs[-1]
    assert rolled["type"] == "Warning"
    assert rolled["note"].startswith(sim["steps"][-1]["reason"])
    assert "canary is worse in shadow" in rolled["note"]
    assert "no user was exposed" in rolled["note"]
    assert "user impact: the canary served 0 user requests (0 failed)" in rolled["note"]
    assert f"{sim['impact']['shadow_requests']:.0f} mirrored requests" in rolled["note"]
    assert "10% of requests mirrored" in evs[0]["note"]
