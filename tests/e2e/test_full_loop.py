"""A decision made in simulation is the decision made in the cluster.

Every component is real: ``canaryd simulate`` writes run 0's counters as OpenMetrics, promtool
backfills them into a real Prometheus, the daemon's ``Reconciler`` reads them through the real
``PrometheusSource`` (``PrometheusPool``, as ``canaryd run`` wires it) and drives a real
InferenceService on a real kube-apiserver (state ConfigMap, Events, canaryTrafficPercent).
The daemon ticks on a virtual clock at the simulator's interval ends (scenario ``start`` + 60k s),
so its windows are the simulator's intervals, and it must see the same counts, take the same
decisions at the same times and hold the same evidence, to the last bit.

The exporter writes every counter's 0 where its series starts. With ``increase()`` that sample
was what made the first interval exact (without it, seed 1's first interval read 1106 stable
requests instead of 1107 and the errors e-value at the rollback was 719 instead of 647); windows
are now counted between edge samples, where a series without a start edge counts from 0 anyway.

The test runs twice: with ``history: 0s`` (neither side reads stable's history), and with
``history: 2h``, where the simulator primes the judges with a 2 h warm-up that the exporter
writes as stable's counters before t=0 (0 at ``start - 2h``, the warm-up's totals at ``start``);
the daemon's first fetch is then that history window, and it must prime the judges with the
same counts (the primed request count and note, the latency boundaries' origin).
"""

from __future__ import annotations

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
from canaryd.metrics.openmetrics import format_value
from canaryd.metrics.pool import PrometheusPool
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.loader import load_policies_text
from canaryd.policy.model import CanaryPolicy
from canaryd.simulation.engine import RunResult, simulate
from canaryd.simulation.scenario import load_scenario
from canaryd.state.base import RolloutKey
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

SCENARIO = REPO / "simulations" / "error-regression.yaml"
SEED = 1
NAME = "m"
INTERVAL = 60.0
INCONCLUSIVE = "AnalysisInconclusive"


def policy_yaml(namespace: str, history: str = "0s") -> str:
    # 10% for 10 minutes, then 50%: the canary's error rate quadruples at 10m, so the rollback
    # comes a few minutes into the 50% step, well before promotion.
    # history 0s: the simulator draws no warm-up and the backfill has no series before t=0, so
    # neither side reads stable's history. Otherwise the simulator's warm-up (default: the
    # policy's history) is backfilled before t=0 and both sides prime the judges with it.
    return f"""\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: {NAME}-policy}}
spec:
  target: {{namespace: {namespace}, inferenceService: {NAME}}}
  router: {{type: kserve}}
  steps: {{weights: [10, 50], minDwell: 10m}}
  analysis:
    interval: 1m
    history: {history}
    source: {{preset: istio}}
    metrics:
      - {{name: errors, kind: errors, judge: sequential, maxRelativeIncrease: 0.2}}
      - {{name: latency, kind: latency, judge: sequential, maxRelativeIncrease: 0.1,
          quantiles: [0.5, 0.99]}}
"""


class Recording:
    """The daemon's MetricSource, unchanged; remembers what each fetch returned."""

    def __init__(self, inner: PrometheusPool) -> None:
        self.inner = inner
        self.seen: list[Observation] = []

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        got = self.inner.fetch(requests, start_s, end_s)
        self.seen.extend(got.values())
        return got


def simulated_intervals(
    policy: CanaryPolicy, bounds: tuple[float, ...]
) -> tuple[RunResult, dict[float, Observation]]:
    """Run 0 as ``canaryd simulate`` computes it, and its per-interval counts (from tick_sink)."""
    sc, base = load_scenario(SCENARIO)
    cum: dict[float, tuple[np.ndarray, ...]] = {}

    def sink(t: float, req: Any, err: Any, hs: Any, hc: Any) -> None:
        cum[t] = (req, err, hs, hc)

    result = simulate(sc, policy, base, seed=SEED, tick_sink=sink)
    k = len(bounds)
    zero = (np.zeros(2), np.zeros(2), np.zeros(k), np.zeros(k))
    out: dict[float, Observation] = {}
    end = INTERVAL
    while end in cum:
        a, b = cum.get(end - INTERVAL, zero), cum[end]
        counts = [
            VersionCounts(
                float(b[0][v] - a[0][v]),
                float(b[1][v] - a[1][v]),
                bounds,
                tuple(float(x) for x in b[2 + v] - a[2 + v]),
            )
            for v in (0, 1)
        ]
        out[end] = Observation(end - INTERVAL, end, counts[0], counts[1])
        end += INTERVAL
    return result.runs[0], out


@pytest.fixture
def prometheus() -> Iterator[list[PrometheusServer]]:
    servers: list[PrometheusServer] = []
    yield servers
    for s in servers:
        s.stop()


def percent(kube: KubeEnv, namespace: str) -> int | None:
    value = get_isvc(kube, namespace, NAME)["spec"]["predictor"].get("canaryTrafficPercent")
    return value if isinstance(value, int) else None


def events(kube: KubeEnv, namespace: str) -> list[JSON]:
    got = raw_request(
        kube.api_client, "GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    )
    items = [e for e in got.get("items", []) if e["regarding"]["name"] == NAME]
    return sorted(items, key=lambda e: (e["eventTime"], e["metadata"]["name"]))


@pytest.mark.parametrize("history_s", [0.0, 7200.0], ids=["history-0s", "history-2h"])
def test_simulated_decisions_are_the_clusters(
    kube: KubeEnv,
    namespace: str,
    tmp_path: Path,
    prometheus: list[PrometheusServer],
    history_s: float,
) -> None:
    sc, _ = load_scenario(SCENARIO)
    assert sc.warmup is None  # the simulator's warm-up is the policy's history
    epoch = sc.start.timestamp()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_yaml(namespace, f"{history_s:g}s"))
    policy = load_policies_text(policy_file.read_text(), str(policy_file))[0].policy

    # 1. The simulation: its decisions, and its series for Prometheus.
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
    assert [(s["t"], s["weight"]) for s in sim["steps"]] == [(0.0, 10), (600.0, 50), (decided, 0)]
    run0, intervals = simulated_intervals(policy, sc.bounds_ms())
    # The engine with a tick_sink is the CLI's run: `intervals` are the counts it decided on.
    assert run0.to_dict() == sim
    first = next(line for line in om.read_text().splitlines() if not line.startswith("#"))
    # Counters start at 0: at t=0, or stable's where its warm-up starts.
    assert first.endswith(f" 0 {format_value(epoch - history_s)}"), first
    if history_s:
        # The history matters: the judges were primed with the warm-up's (non-zero) counts.
        assert run0.warmup is not None and run0.warmup.requests > 0
        assert sim["history"]["stable_requests"] == run0.warmup.requests
        assert "latency boundaries from stable's" in sim["history"]["note"]
    else:
        assert run0.warmup is None and sim["history"]["stable_requests"] is None

    # 2. Backfill and serve.
    (tmp_path / "prometheus").mkdir()
    prometheus.append(start_prometheus([om], tmp_path / "prometheus"))
    url = prometheus[0].url

    # 3. The cluster: an InferenceService whose latest ready revision is the canary.
    create_isvc(kube, namespace, NAME, {"predictor": sample_predictor("v2")})
    set_isvc_status(
        kube,
        namespace,
        NAME,
        serverless_status("stable", "canary", ready_since="2026-01-05T10:00:00Z"),
    )
    client = kube.new_client()
    source = Recording(PrometheusPool(url))
    rec = Reconciler([policy], KubeObjects(client), source, EventRecorder(client, "canaryd-e2e"))
    key = RolloutKey(namespace, NAME)
    store = KubernetesStateStore(kube.api_client)

    # 4. Tick at the simulator's interval ends until the daemon decides, and a little past.
    weights: list[tuple[float, int | None]] = []
    decisions = []
    t = 0.0
    while t <= decided + 2 * INTERVAL:
        report = rec.tick(epoch + t)
        assert report.errors == {} and report.conflicts == [], report
        decisions += report.history.get(key, [])
        weights.append((t, percent(kube, namespace)))
        t += INTERVAL
    source.inner.close()

    # The premise: every window the daemon fetched is a simulator interval, with its counts,
    # after stable's history window (once, before the first interval) when it has one.
    seen = list(source.seen)
    if history_s:
        h = seen.pop(0)
        assert (h.start_s - epoch, h.end_s - epoch) == (-history_s, 0.0)
        assert h.no_data_reason is None, h.no_data_reason
        assert h.stable == run0.warmup  # the warm-up's totals, bucket for bucket
        assert h.canary == run0.warmup  # stable-only: stable's counts under both names
    windows = [(o.start_s - epoch, o.end_s - epoch) for o in seen]
    assert windows == [(INTERVAL * (k - 1), INTERVAL * k) for k in range(1, int(decided // 60) + 1)]
    for o in seen:
        simulated = intervals[o.end_s - epoch]
        assert o.no_data_reason is None, o.no_data_reason
        assert o.stable == simulated.stable, (o.start_s - epoch, "stable")
        assert o.canary == simulated.canary, (o.start_s - epoch, "canary")

    # The same decisions at the same times: the step history, to the reason text.
    doc = store.load(key)
    assert doc is not None
    state = doc.data["state"]
    history = [{**h, "t": h["t"] - epoch} for h in state["history"]]
    assert history == sim["steps"]
    assert state["phase"] == "rolled_back"
    assert state["decided_at"] - epoch == decided
    assert state["canary_requests"] == sim["canary_requests"]
    assert state["canary_errors"] == sim["canary_errors"]
    # The primed state: the same history read, the same note (None and "" without history).
    assert state["pre_canary_requests"] == sim["history"]["stable_requests"]
    assert state["pre_canary_note"] == sim["history"]["note"]

    # canaryTrafficPercent after each tick follows the simulated weights.
    def sim_weight(at: float) -> int:
        return [s["weight"] for s in sim["steps"] if s["t"] <= at][-1]

    assert weights == [(at, sim_weight(at)) for at, _ in weights]
    assert get_isvc(kube, namespace, NAME)["spec"]["predictor"]["canaryTrafficPercent"] == 0

    # The evidence: the daemon's last decision holds the simulator's e-values, exactly.
    last = doc.data["last_decision"]
    assert last["action"] == "rollback"
    assert last["t"] - epoch == decided
    sim_e = {v["metric"]: v["e_value"] for v in sim["verdicts"]}
    assert last["evidence"] == sim_e
    assert last["verdicts"] == [v.summary() for v in run0.verdicts]
    # ... and the same verdicts to their details (where the latency boundaries came from).
    assert decisions[-1].action.value == "rollback"
    daemon_verdicts = [v.to_dict() for v in decisions[-1].verdicts]
    assert daemon_verdicts == [v.to_dict() for v in run0.verdicts]
    chosen = {v.metric: v.details.get("boundaries_chosen_from") for v in run0.verdicts}
    if history_s:
        assert run0.warmup is not None
        assert (
            chosen["latency"] == f"stable's {run0.warmup.requests:.0f} requests before the canary"
        )
    else:
        assert str(chosen["latency"]).endswith("requests during the canary")

    # The explanation reaches the people who own the model.
    # The simulator keeps every decision with an Event; the daemon records a run of
    # inconclusive intervals once.
    expected: list[tuple[str, str]] = []
    for d in run0.decisions:
        if d.event and not (expected and expected[-1][0] == d.event == INCONCLUSIVE):
            expected.append((d.event, d.reason))
    # t=60 without history: "no canary latency samples yet" in both (the latency judge chooses
    # its boundaries from the first interval's stable requests, so it has no canary samples
    # yet). With history the boundaries come from it, and the first interval is judged.
    assert [e for e, _ in expected] == [
        "CanaryStarted",
        *([] if history_s else [INCONCLUSIVE]),
        "WeightChanged",
        "RolledBack",
    ]
    evs = events(kube, namespace)
    assert [e["reason"] for e in evs] == [e for e, _ in expected]
    for ev, (_, reason) in zip(evs, expected, strict=True):
        assert ev["note"].startswith(reason), (ev["note"], reason)
    assert evs[-1]["type"] == "Warning"
