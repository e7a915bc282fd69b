"""The daemon's tick notifies every decision and waits for the promotion gate.

The tick (``Reconciler``) runs with the cluster behind ``MemoryObjects``; the ``Notifier`` and
the ``PromotionGate`` are the real ones posting to real HTTP receivers on 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable, Sequence

import pytest
from prometheus_client import CollectorRegistry

from canaryd.daemon.reconciler import Reconciler
from canaryd.kube import INFERENCE_SERVICE, JSON
from canaryd.kube.events import MemoryEventSink
from canaryd.kube.memory import MemoryObjects
from canaryd.metrics.source import FetchRequest
from canaryd.notify import Backoff, Notifier, PromotionGate
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.loader import load_policies_text
from tests.integration.http_stubs import Reply, Seen, http_stub

pytestmark = pytest.mark.integration

POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata:
  name: iris
  labels: {{team: vision}}
  annotations: {{runbook: "https://runbooks.example/iris"}}
spec:
  target: {{namespace: models, inferenceService: iris}}
  steps: {{weights: [10, 50], minDwell: 60s, minCanaryRequests: 10}}
  analysis:
    interval: 60s
    metrics: [{{name: errors, kind: errors}}]
  promotion:
    confirm: {{url: "{gate}/confirm"}}
  notifications:
    webhooks: [{{url: "{hook}/hook"}}]
"""


class Source:
    def __init__(self) -> None:
        self.canary_errors = 1

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        return {
            r.key: Observation(
                start_s, end_s, VersionCounts(900, 9), VersionCounts(100, self.canary_errors)
            ).validated()
            for r in requests
        }


def isvc() -> JSON:
    return {
        "metadata": {"name": "iris"},
        "spec": {"predictor": {"model": {}}},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {
                "predictor": {"latestReadyRevision": "iris-2", "latestRolledoutRevision": "iris-1"}
            },
        },
    }


def _wait(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail("timed out")


def test_decisions_are_notified_and_promotion_waits_for_the_gate() -> None:
    approve = [False]

    def gate_reply(seen: Seen) -> Reply:
        return Reply(200 if approve[0] else 403, b"{}")

    with http_stub(Reply(200, b"ok")) as hook, http_stub(gate_reply) as gate_server:
        text = POLICY.format(gate=gate_server.url, hook=hook.url)
        policy = load_policies_text(text, "iris.yaml")[0]
        objects = MemoryObjects()
        objects.put(INFERENCE_SERVICE, "models", isvc())
        registry = CollectorRegistry()
        notifier = Notifier(registry, backoff=Backoff(attempts=2, first_s=0.05, max_s=0.1))
        gate = PromotionGate(registry)
        events = MemoryEventSink()
        # Blocking asks (as --once does): the virtual clock runs faster than the gate's
        # once-per-interval re-ask on the wall clock.
        rec = Reconciler(
            [policy],
            objects,
            Source(),
            events,
            registry=registry,
            notifier=notifier,
            gate=gate,
            gate_blocking=True,
        )

        def percent() -> object:
            spec = objects.get(INFERENCE_SERVICE, "models", "iris")["spec"]["predictor"]
            return spec.get("canaryTrafficPercent", "promoted")

        try:
            rec.tick(0.0)
            rec.tick(60.0)
            assert percent() == 50  # the last step
            for t in (120.0, 180.0):
                rec.tick(t)
                gate.wait_idle(5.0)
            assert percent() == 50  # ready, but the gate says 403: holds
            assert events.reasons()[-1] == "AwaitingConfirmation"
            asks = [s for s in gate_server.seen if s.path == "/confirm"]
            assert asks and json.loads(asks[0].body)["kind"] == "ConfirmPromotion"
            approve[0] = True
            for t in (240.0, 300.0, 360.0):
                rec.tick(t)
                gate.wait_idle(5.0)
                if percent() == "promoted":
                    break
            assert percent() == "promoted"
            assert events.reasons()[-1] == "Promoted"
            assert notifier.flush(10.0)
            _wait(lambda: len(hook.seen) >= 4)
            docs = [json.loads(s.body) for s in hook.seen]
            reasons = [d["decision"]["reason"] for d in docs]
            assert reasons[:2] == ["CanaryStarted", "WeightChanged"]
            assert "AwaitingConfirmation" in reasons and reasons[-1] == "Promoted"
            assert docs[0]["rollout"]["labels"] == {"team": "vision"}
            assert docs[0]["rollout"]["annotations"]["runbook"].startswith("https://")
            assert len({d["id"] for d in docs}) == len(docs)
        finally:
            notifier.close(2.0)
            gate.close()


def test_a_failing_canary_rolls_back_while_waiting_for_the_gate() -> None:
    with http_stub(Reply(200, b"ok")) as hook, http_stub(Reply(403, b"{}")) as gate_server:
        policy = load_policies_text(POLICY.format(gate=gate_server.url, hook=hook.url), "p.yaml")[0]
        objects = MemoryObjects()
        objects.put(INFERENCE_SERVICE, "models", isvc())
        registry = CollectorRegistry()
        notifier = Notifier(registry)
        gate = PromotionGate(registry)
        source = Source()
        events = MemoryEventSink()
        rec = Reconciler(
            [policy], objects, source, events, registry=registry, notifier=notifier, gate=gate
        )
        try:
            for t in (0.0, 60.0, 120.0):
                rec.tick(t)
                gate.wait_idle(5.0)
            assert events.reasons()[-1] == "AwaitingConfirmation"
            source.canary_errors = 40
            rec.tick(180.0)
            spec = objects.get(INFERENCE_SERVICE, "models", "iris")["spec"]["predictor"]
            assert spec["canaryTrafficPercent"] == 0
            assert events.reasons()[-1] == "RolledBack"
            assert notifier.flush(10.0)
            assert json.loads(hook.seen[-1].body)["decision"]["reason"] == "RolledBack"
        finally:
            notifier.close(2.0)
            gate.close()
