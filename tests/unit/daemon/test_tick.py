"""The daemon's tick, with the cluster behind the Objects protocol (MemoryObjects).

Every behaviour here is also exercised against a real kube-apiserver in
tests/integration/kube; these run in milliseconds and cover the paths that are awkward to
reach there: hostile state documents, policy edits, duplicate policies, cross-namespace routes,
fenced writes, catch-up after a restart, and the write budget.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from typing import Any

import pytest

from canaryd.daemon.manual import ACTION_ANNOTATION
from canaryd.daemon.reconciler import Reconciler
from canaryd.identity import RolloutKey
from canaryd.kube import CONFIG_MAP, INFERENCE_SERVICE, JSON
from canaryd.kube.events import MemoryEventSink
from canaryd.kube.memory import MemoryObjects
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.loader import LoadedPolicy, load_policies_text
from canaryd.policy.model import CanaryPolicy
from canaryd.reasons import Reason
from canaryd.state.kubernetes import KubernetesStateStore

NS = "models"
KEY = RolloutKey(NS, "m")


def policy_yaml(
    name: str = "m",
    *,
    weights: str = "[10, 25, 50]",
    tolerance: float = 0.2,
    interval: str = "60s",
    router: str = "{type: kserve}",
    policy_name: str | None = None,
) -> str:
    return f"""\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata:
  name: {policy_name or name + "-policy"}
spec:
  target: {{namespace: {NS}, inferenceService: {name}}}
  router: {router}
  steps: {{weights: {weights}, minDwell: 60s, minCanaryRequests: 50}}
  analysis:
    interval: {interval}
    metrics:
      - {{name: errors, kind: errors, judge: sequential, maxRelativeIncrease: {tolerance}}}
"""


def loaded(text: str, file: str = "p.yaml") -> LoadedPolicy:
    return load_policies_text(text, file)[0]


def isvc(name: str = "m", stable: str = "m-00001", canary: str = "m-00002") -> JSON:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {
                "predictor": {
                    "latestReadyRevision": canary,
                    "latestRolledoutRevision": stable,
                }
            },
        },
    }


class Source:
    """Stable 1 % errors; canary at ``rate``. Records every window it is asked for."""

    def __init__(self, rate: float = 0.01) -> None:
        self.rate = rate
        self.windows: list[tuple[float, float]] = []

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        self.windows.append((start_s, end_s))
        scale = (end_s - start_s) / 60.0
        out: dict[Hashable, Observation] = {}
        for r in requests:
            stable = VersionCounts(round(1800 * scale), round(18 * scale))
            canary = VersionCounts(round(200 * scale), round(200 * scale * self.rate))
            out[r.key] = Observation(start_s, end_s, stable, canary).validated()
        return out


class World:
    def __init__(self, *policies: LoadedPolicy, rate: float = 0.01, **kw: Any) -> None:
        self.objects = MemoryObjects()
        self.events = MemoryEventSink()
        self.source = Source(rate)
        self.policies = list(policies) or [loaded(policy_yaml())]
        self.kw = kw
        for lp in self.policies:
            self.objects.put(INFERENCE_SERVICE, NS, isvc(lp.policy.spec.target.inference_service))
        self.rec = self.restart()

    def restart(self, **kw: Any) -> Reconciler:
        """A new daemon on the same cluster (its memory is gone, the objects stay)."""
        self.rec = Reconciler(
            self.policies, self.objects, self.source, self.events, **{**self.kw, **kw}
        )
        return self.rec

    def percent(self, name: str = "m") -> int | None:
        obj = self.objects.get(INFERENCE_SERVICE, NS, name)
        value = obj["spec"]["predictor"].get("canaryTrafficPercent")
        return value if isinstance(value, int) else None

    def doc(self, name: str = "m") -> JSON:
        stored = KubernetesStateStore(self.objects).load(RolloutKey(NS, name))
        assert stored is not None
        return stored.data

    def annotate(self, value: str, name: str = "m") -> None:
        self.objects.patch(
            INFERENCE_SERVICE, NS, name, {"metadata": {"annotations": {ACTION_ANNOTATION: value}}}
        )

    def reasons(self) -> list[str]:
        return self.events.reasons()


# -- the happy path and the write budget ---------------------------------------------------


def test_steps_then_promotes_with_two_writes_per_decision_and_none_per_hold() -> None:
    w = World()
    seen = []
    for t in (0.0, 30.0, 60.0, 120.0, 180.0):
        w.rec.tick(t)
        seen.append(w.percent())
    assert seen == [10, 10, 25, 50, None]
    assert w.reasons() == ["CanaryStarted", "WeightChanged", "WeightChanged", "Promoted"]
    # stable's 2h of history before the first window (read once), then the windows
    assert w.source.windows == [(-7200.0, 0.0), (0.0, 60.0), (60.0, 120.0), (120.0, 180.0)]
    # start, two steps, promote: saved before acting and once after (pending cleared)
    assert w.objects.calls["create"] + w.objects.calls["patch"] - _router_patches(w) == 8
    assert w.doc()["pending"] is None and w.doc()["state"]["phase"] == "promoted"


def _router_patches(w: World) -> int:
    return 4  # canaryTrafficPercent 10, 25, 50, removed


def test_holds_write_nothing_but_a_checkpoint_every_k_windows() -> None:
    text = policy_yaml(weights="[10, 25]").replace("minDwell: 60s", "minDwell: 1h")
    w = World(loaded(text), checkpoint_every=5)
    w.rec.tick(0.0)
    start_writes = w.objects.calls["patch"] + w.objects.calls["create"]
    for k in range(1, 21):
        w.rec.tick(60.0 * k)
    state_writes = w.objects.calls["patch"] + w.objects.calls["create"] - start_writes
    assert w.percent() == 10  # 20 minutes of holds at the first step
    assert state_writes == 4  # 20 windows, a checkpoint every 5
    stored = w.doc()
    assert 1200.0 - stored["window_end"] < 5 * 60.0  # at most K windows behind
    assert stored["state"]["intervals"] == round(stored["window_end"] / 60.0)


def test_evidence_is_checkpointed_every_k_windows_and_restored_by_rejudging() -> None:
    # A slow canary policy: the last step needs many windows (minCanaryRequests large).
    text = policy_yaml(weights="[50]").replace("minCanaryRequests: 50", "minCanaryRequests: 100000")
    w = World(loaded(text), checkpoint_every=4)
    w.rec.tick(0.0)
    for k in range(1, 11):
        w.rec.tick(60.0 * k)
    stored = w.doc()
    assert stored["window_end"] <= 600.0
    assert 600.0 - stored["window_end"] < 4 * 60.0  # at most K windows behind
    live = w.rec._rollouts[KEY].doc
    assert live is not None and live.window_end == 600.0

    # kill -9: a new daemon re-judges the windows after the stored end, from the source,
    # and reaches exactly the evidence the uninterrupted one had.
    uninterrupted = json.dumps(live.state.judges, sort_keys=True)
    w.source.windows.clear()
    w.restart(checkpoint_every=4)
    w.rec.tick(600.0)
    after = w.rec._rollouts[KEY].doc
    assert after is not None and after.window_end == 600.0
    assert json.dumps(after.state.judges, sort_keys=True) == uninterrupted
    assert sorted(w.source.windows) == [  # fetched newest first, judged oldest first
        (stored["window_end"] + 60.0 * i, stored["window_end"] + 60.0 * (i + 1))
        for i in range(round((600.0 - stored["window_end"]) / 60.0))
    ]


def test_a_decision_is_written_before_it_is_acted_on() -> None:
    w = World(rate=0.2)
    w.rec.tick(0.0)
    original = w.objects.patch
    seen: list[Any] = []

    def spy(resource: Any, namespace: str, name: str, patch: JSON) -> JSON:
        seen.append((resource.kind, json.dumps(patch, sort_keys=True)[:80]))
        return original(resource, namespace, name, patch)

    w.objects.patch = spy  # type: ignore[method-assign]
    w.rec.tick(60.0)
    kinds = [k for k, _ in seen]
    assert kinds[0] == "ConfigMap"  # the rollback is committed first
    assert "InferenceService" in kinds[1:]
    assert w.percent() == 0 and w.reasons()[-1] == "RolledBack"


# -- restarts: pending, Events exactly once --------------------------------------------------


def test_a_kill_between_commit_and_apply_applies_once_with_one_event() -> None:
    w = World(rate=0.2)
    w.rec.tick(0.0)
    router = w.rec._rollouts[KEY].router

    def die(*_: Any) -> None:
        raise SystemExit("kill -9")

    router.rollback = die  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        w.rec.tick(60.0)
    assert w.doc()["pending"]["action"] == "rollback"  # committed, not applied
    assert w.percent() == 10

    w.restart()
    w.rec.tick(65.0)
    assert w.percent() == 0
    assert w.reasons().count("RolledBack") == 1
    assert w.doc()["pending"] is None

    # and once more (a restart after the Event, before the pending was cleared)
    stored = w.doc()
    stored["pending"] = {
        "action": "rollback",
        "weight": 0,
        "key": f"{stored['target_uid'][:13]}/m-00002#2",
        "reason": "RolledBack",
        "message": "canary is worse",
    }
    _overwrite(w, stored)
    w.restart()
    w.rec.tick(70.0)
    assert w.reasons().count("RolledBack") == 1


def _overwrite(w: World, doc: JSON) -> None:
    cm = w.objects.get(CONFIG_MAP, NS, "canaryd-m")
    w.objects.patch(CONFIG_MAP, NS, "canaryd-m", {"data": {"state.json": json.dumps(doc)}})
    assert cm


# -- hostile or broken state -----------------------------------------------------------------


def test_a_pending_weight_outside_the_policy_never_moves_traffic() -> None:
    w = World()
    w.rec.tick(0.0)
    doc = w.doc()
    doc["pending"] = {"action": "set_weight", "weight": 77}
    _overwrite(w, doc)
    w.rec.tick(10.0)
    w.rec.tick(60.0)
    assert w.percent() == 10
    assert w.reasons()[-1] == "StateInvalid"
    assert "77%" in w.events.events[-1].message


def test_a_corrupt_document_holds_with_one_warning_then_a_delete_pauses() -> None:
    w = World()
    w.rec.tick(0.0)
    w.rec.tick(60.0)
    assert w.percent() == 25
    w.objects.patch(CONFIG_MAP, NS, "canaryd-m", {"data": {"state.json": "{not json"}})
    for t in (120.0, 180.0, 240.0):
        w.rec.tick(t)
    assert w.percent() == 25
    assert w.reasons().count("StateInvalid") == 1  # once per stored version, not per tick

    w.objects.delete(CONFIG_MAP, NS, "canaryd-m")
    w.rec.tick(300.0)
    assert w.percent() == 25  # never back to 10 %: paused at the cluster's weight
    assert w.doc()["state"]["phase"] == "paused"
    assert w.doc()["state"]["step"] == 1
    assert w.reasons()[-1] == "StateLost"


# -- policy edits ------------------------------------------------------------------------------


def test_a_tolerance_edit_restarts_the_evidence_with_an_event() -> None:
    w = World()
    w.rec.tick(0.0)
    w.rec.tick(60.0)
    assert w.percent() == 25
    w.policies = [loaded(policy_yaml(tolerance=0.5))]
    w.rec.set_policies(w.policies)
    w.rec.tick(120.0)
    assert w.reasons()[-1] == "PolicyChanged"
    assert w.percent() == 25  # same step, fresh evidence
    changed = next(e for e in w.events.events if e.reason is Reason.POLICY_CHANGED)
    assert "evidence restarted" in changed.message
    assert w.doc()["state"]["phase"] == "progressing"


def test_shortened_steps_move_down_never_up_and_never_wedge() -> None:
    w = World()
    for t in (0.0, 60.0, 120.0):
        w.rec.tick(t)
    assert w.percent() == 50
    w.policies = [loaded(policy_yaml(weights="[10, 25]"))]
    w.rec.set_policies(w.policies)
    report = w.rec.tick(150.0)
    assert report.errors == {}
    assert w.percent() == 25
    assert w.doc()["state"]["step"] == 1
    assert "steps changed" in w.events.events[-1].message


# -- refusals ---------------------------------------------------------------------------------


def test_a_second_policy_for_the_same_target_stops_both() -> None:
    w = World()
    w.rec.tick(0.0)
    assert w.percent() == 10
    hijack = loaded(policy_yaml(weights="[90]", policy_name="hijack"), "00-hijack.yaml")
    w.policies = [hijack, *w.policies]
    w.rec.set_policies(w.policies)
    for t in (60.0, 120.0, 180.0):
        report = w.rec.tick(t)
        assert KEY in report.refused
    assert w.percent() == 10
    assert w.reasons().count("ConflictingPolicies") == 1
    assert "00-hijack.yaml" in w.events.events[-1].message


def test_a_route_in_another_namespace_is_refused_unless_allowed() -> None:
    router = "{type: istio, istio: {virtualService: vs, namespace: team-b, stableHost: a, canaryHost: b}}"
    lp = loaded(policy_yaml(router=router))
    w = World(lp)
    assert KEY in w.rec.refused
    w.rec.tick(0.0)
    assert w.reasons() == ["PolicyRefused"]
    allowed = World(lp, cross_namespace=[(NS, "team-b")])
    assert KEY not in allowed.rec.refused


def test_a_policy_that_cannot_read_prometheus_is_refused_on_reload_not_left_on_no_data() -> None:
    from canaryd.metrics.connection import PrometheusDefaults

    defaults = PrometheusDefaults(url=None)  # the daemon was started without --prometheus

    def source_problem(policy: CanaryPolicy) -> str | None:
        return defaults.policy_problems([policy]).get(policy.name)

    w = World(source_problem=source_problem)
    assert KEY in w.rec.refused and w.rec.refused[KEY].kind == "source"
    w.rec.tick(0.0)
    assert w.reasons() == ["PolicyRefused"]
    assert "no Prometheus to read" in w.events.events[-1].message
    assert w.percent() is None  # never started: no traffic moved on no data
    # The policy is fixed on disk (a URL of its own) and reloaded: it is served.
    fixed = policy_yaml().replace(
        "  analysis:\n", "  analysis:\n    source: {prometheus: 'http://127.0.0.1:9'}\n", 1
    )
    w.rec.set_policies([loaded(fixed)])
    assert KEY not in w.rec.refused


def test_manual_action_acts_only_when_it_changes_something() -> None:
    w = World()
    w.rec.tick(0.0)
    w.annotate("resume")  # not paused: no effect, removed
    w.rec.tick(5.0)
    ann = w.objects.get(INFERENCE_SERVICE, NS, "m")["metadata"].get("annotations") or {}
    assert ACTION_ANNOTATION not in ann
    assert w.reasons() == ["CanaryStarted"]
    w.annotate("pause")
    w.rec.tick(10.0)
    assert w.doc()["state"]["phase"] == "paused" and w.reasons()[-1] == "Paused"


def test_writes_stop_when_the_lease_is_lost() -> None:
    leader = [True]
    w = World(may_write=lambda: leader[0])
    w.rec.tick(0.0)
    leader[0] = False
    before = dict(w.objects.calls)
    w.rec.tick(60.0)
    assert w.objects.calls.get("patch", 0) == before.get("patch", 0)
    assert w.percent() == 10


def test_a_rollout_catching_up_on_a_slow_source_never_starves_the_others() -> None:
    import time as _time

    class Slow(Source):
        def fetch(
            self, requests: Sequence[FetchRequest], start_s: float, end_s: float
        ) -> dict[Hashable, Observation]:
            _time.sleep(0.2)
            return super().fetch(requests, start_s, end_s)

    a = loaded(policy_yaml("a", weights="[10]").replace("minDwell: 60s", "minDwell: 1h"))
    b = loaded(policy_yaml("b", weights="[10]").replace("minDwell: 60s", "minDwell: 1h"))
    w = World(a, b, fetch_budget_s=0.3)
    w.rec.tick(0.0)
    for k in range(1, 10):
        w.rec.tick(60.0 * k)
    w.source = Slow()
    w.rec.metric_source = w.source
    # a's daemon memory is gone and its document is behind; b is up to date.
    ka, kb = RolloutKey(NS, "a"), RolloutKey(NS, "b")
    ra = w.rec._rollouts[ka]
    assert ra.doc is not None
    w.rec._rollouts[ka].doc = ra.with_doc(window_end=0.0)
    report = w.rec.tick(600.0)
    judged_b = [d.t for d in report.history[kb]]
    assert judged_b[-1] == 600.0  # the newest window came first: b is current
    assert w.rec._rollouts[kb].doc.window_end == 600.0  # type: ignore[union-attr]
    behind = w.rec._rollouts[ka].doc.window_end  # type: ignore[union-attr]
    assert 0.0 < behind < 600.0  # a caught up part of the way, in order
    for k in range(1, 12):
        w.rec.tick(600.0 + k)
    assert w.rec._rollouts[ka].doc.window_end == 600.0  # type: ignore[union-attr]
