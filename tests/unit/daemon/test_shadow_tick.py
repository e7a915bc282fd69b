"""The daemon's tick through a shadow phase, on MemoryObjects (an HTTPRoute, gateway-api).

The real-apiserver version of the shadow rollback is tests/e2e/test_shadow_loop.py; these cover
what is awkward there: the order of the router writes, a kill between commit and apply, and a
hostile pending mirror.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Hashable, Sequence
from typing import Any

import pytest

from canaryd.daemon.reconciler import Reconciler
from canaryd.identity import RolloutKey
from canaryd.kube import CONFIG_MAP, HTTP_ROUTE, INFERENCE_SERVICE, JSON
from canaryd.kube.events import MemoryEventSink
from canaryd.kube.memory import MemoryObjects
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.loader import load_policies_text
from canaryd.state.kubernetes import KubernetesStateStore

from .test_tick import isvc

NS = "models"
KEY = RolloutKey(NS, "m")
POLICY = f"""\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: m-shadow}}
spec:
  target: {{namespace: {NS}, inferenceService: m}}
  router:
    type: gateway-api
    gatewayApi:
      httpRoute: m
      ruleName: main
      stableBackend: {{name: m-v1, port: 80}}
      canaryBackend: {{name: m-v2, port: 80}}
  steps:
    shadow: {{duration: 2m, minCanaryRequests: 100, mirrorPercent: 10}}
    weights: [10, 50]
    minDwell: 60s
    minCanaryRequests: 50
  analysis:
    interval: 60s
    metrics:
      - {{name: errors, kind: errors, judge: sequential, maxRelativeIncrease: 0.2}}
"""
ROUTE: JSON = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "m"},
    "spec": {
        "rules": [
            {
                "name": "main",
                "backendRefs": [
                    {"name": "m-v1", "port": 80, "weight": 90},
                    {"name": "m-v2", "port": 80, "weight": 10},
                ],
            }
        ]
    },
    "status": {
        "parents": [
            {
                "parentRef": {"name": "gw"},
                "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 1}],
            }
        ]
    },
}


class Source:
    """Stable 1 % errors; the canary at ``rate``, all of its requests mirrored when in shadow."""

    def __init__(self, rate: float = 0.01) -> None:
        self.rate = rate
        self.requests: list[FetchRequest] = []

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        out: dict[Hashable, Observation] = {}
        for r in requests:
            self.requests.append(r)
            n, e = 200.0, round(200 * self.rate)
            canary = VersionCounts(
                n,
                e,
                mirrored_requests=n if r.shadow else None,
                mirrored_errors=e if r.shadow else None,
            )
            out[r.key] = Observation(start_s, end_s, VersionCounts(1800, 18), canary).validated()
        return out


class World:
    def __init__(self, rate: float = 0.01) -> None:
        self.objects = MemoryObjects()
        self.events = MemoryEventSink()
        self.source = Source(rate)
        self.policy = load_policies_text(POLICY, "p.yaml")[0]
        self.objects.put(INFERENCE_SERVICE, NS, isvc())
        self.objects.put(HTTP_ROUTE, NS, copy.deepcopy(ROUTE))
        self.restart()

    def restart(self) -> Reconciler:
        self.rec = Reconciler([self.policy], self.objects, self.source, self.events)
        return self.rec

    def rule(self) -> JSON:
        return self.objects.get(HTTP_ROUTE, NS, "m")["spec"]["rules"][0]

    def weights(self) -> list[int]:
        return [b["weight"] for b in self.rule()["backendRefs"]]

    def mirrors(self) -> list[float]:
        return [
            f["requestMirror"]["percent"]
            for f in self.rule().get("filters", [])
            if f["type"] == "RequestMirror"
        ]

    def doc(self) -> JSON:
        stored = KubernetesStateStore(self.objects).load(KEY)
        assert stored is not None
        return stored.data


def test_the_shadow_phase_mirrors_then_hands_over_to_step_one() -> None:
    w = World()
    w.rec.tick(0.0)
    assert w.doc()["state"]["phase"] == "shadow"
    assert (w.weights(), w.mirrors()) == ([100, 0], [10])  # the shipped 90/10 users are moved off
    assert w.events.reasons() == ["ShadowStarted"]
    w.rec.tick(60.0)
    # the judged window (mirrored copies counted apart), after stable's history (not shadow)
    assert [(r.shadow, r.stable_only) for r in w.source.requests] == [(False, True), (True, False)]

    original = w.objects.patch
    writes: list[str] = []

    def spy(resource: Any, namespace: str, name: str, patch: JSON) -> JSON:
        if resource.kind == "HTTPRoute":
            rule = patch["spec"]["rules"][0]
            writes.append("mirror" if "filters" not in rule else f"filters={len(rule['filters'])}")
            writes[-1] += f" weights={[b['weight'] for b in rule['backendRefs']]}"
        return original(resource, namespace, name, patch)

    w.objects.patch = spy  # type: ignore[method-assign]
    w.rec.tick(120.0)  # 2 minutes, 400 mirrored requests, no failure: shadow passed
    # The mirror goes off first (its own write), then the canary gets users.
    assert writes == ["mirror weights=[100, 0]", "mirror weights=[90, 10]"]
    assert (w.weights(), w.mirrors()) == ([90, 10], [])
    assert w.events.reasons()[-1] == "CanaryStarted"
    assert "shadow passed" in w.events.events[-1].message
    assert (
        "the canary served 0 user requests (0 failed); 400 mirrored" in w.events.events[-1].message
    )
    w.rec.tick(180.0)
    assert w.source.requests[-1].shadow is False
    assert w.doc()["state"]["impact"]["user_requests"] == 200


def test_a_shadow_failure_rolls_back_and_says_no_user_was_affected() -> None:
    w = World(rate=0.2)
    w.rec.tick(0.0)
    w.rec.tick(60.0)
    assert (w.weights(), w.mirrors()) == ([100, 0], [])
    assert w.events.reasons() == ["ShadowStarted", "RolledBack"]
    note = w.events.events[-1].message
    assert "no user was exposed" in note
    assert "user impact: the canary served 0 user requests (0 failed); 200 mirrored" in note
    assert w.doc()["last_decision"]["impact"]["user_requests"] == 0


def test_a_kill_between_commit_and_apply_sets_the_mirror_once() -> None:
    w = World()
    router = w.rec._rollouts[KEY].router

    def die(*_: Any) -> None:
        raise SystemExit("kill -9")

    router.set_mirror_percent = die  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        w.rec.tick(0.0)
    pending = w.doc()["pending"]
    assert (pending["action"], pending["weight"], pending["mirror"]) == ("set_mirror", 0, 10.0)
    assert (w.weights(), w.mirrors()) == ([100, 0], [])  # the weight went first
    w.restart()
    w.rec.tick(5.0)
    assert (w.weights(), w.mirrors()) == ([100, 0], [10])
    assert w.events.reasons().count("ShadowStarted") == 1
    assert w.doc()["pending"] is None


def test_a_pending_mirror_the_policy_does_not_allow_never_mirrors() -> None:
    w = World()
    w.rec.tick(0.0)
    w.rec.tick(60.0)
    doc = w.doc()
    doc["pending"] = {"action": "set_mirror", "weight": 0, "mirror": 100.0}
    w.objects.patch(CONFIG_MAP, NS, "canaryd-m", {"data": {"state.json": json.dumps(doc)}})
    w.rec.tick(70.0)
    assert w.mirrors() == [10]
    assert w.events.reasons()[-1] == "StateInvalid"
    assert "pending mirror of 100%" in w.events.events[-1].message
