"""Notifications and the promotion gate against real HTTP receivers on 127.0.0.1.

The receivers (``tests/integration/http_stubs.py``) answer 200, 500, hang, drip and redirect;
the Notifier and the PromotionGate are the real ones with their real outbound HTTP. Times are
asserted with wide margins: what matters is that the caller never waits for the network.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from canaryd.controller import Action, Decision, Phase, RolloutState
from canaryd.notify import (
    SCHEMA,
    Backoff,
    EndpointResolver,
    GateRequest,
    GateStatus,
    Notifier,
    PromotionGate,
    confirm_request,
    decision_notice,
)
from canaryd.notify.payload import Notice
from canaryd.policy.model import CanaryPolicy
from canaryd.reasons import Reason
from canaryd.stats.verdict import Status, Verdict
from tests.integration.http_stubs import Reply, Seen, http_stub

pytestmark = pytest.mark.integration

QUICK = Backoff(attempts=3, first_s=0.05, max_s=0.1)


def policy(*webhooks: dict[str, object], confirm: dict[str, object] | None = None) -> CanaryPolicy:
    spec: dict[str, object] = {
        "target": {"namespace": "models", "inferenceService": "iris"},
        "notifications": {"webhooks": list(webhooks)},
    }
    if confirm is not None:
        spec["promotion"] = {"confirm": confirm}
    return CanaryPolicy.model_validate(
        {
            "apiVersion": "canaryd.io/v1alpha1",
            "kind": "CanaryPolicy",
            "metadata": {"name": "iris-policy"},
            "spec": spec,
        }
    )


def notice(event: Reason = Reason.ROLLED_BACK, t: float = 1_767_600_000.0) -> Notice:
    verdict = Verdict(
        "errors", "sequential", Status.FAIL, "canary worse", estimate=2.5,
        interval=(1.6, float("inf")), e_value=143.0,
    )  # fmt: skip
    decision = Decision(Action.ROLLBACK, "canary is worse: errors", t, 0, event, (verdict,))
    state = RolloutState("iris-00002", "iris-00001", Phase.ROLLED_BACK, 1, 0)
    return decision_notice("models", "iris", "iris-policy", decision, state)


def counts(registry: CollectorRegistry) -> dict[str, float]:
    out = {}
    for r in ("delivered", "retried", "failed", "dropped"):
        v = registry.get_sample_value("canaryd_notifications_total", {"result": r})
        out[r] = v or 0.0
    return out


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_a_decision_is_posted_as_the_versioned_json(registry: CollectorRegistry) -> None:
    with http_stub(Reply(200, b"ok")) as stub:
        n = Notifier(registry, backoff=QUICK)
        assert n.notify(policy({"url": stub.url + "/hook"}), notice()) == 1
        assert n.flush(5.0)
        n.close()
    (seen,) = stub.seen
    assert (seen.method, seen.path) == ("POST", "/hook")
    assert seen.headers["content-type"] == "application/json"
    doc = json.loads(seen.body)
    assert doc["schema"] == SCHEMA == "canaryd.io/notification/v1"
    assert doc["kind"] == "Decision"
    assert doc["id"] == "models/iris/iris-00002/1767600000.000/Decision"
    assert doc["time"] == "2026-01-05T08:00:00Z"
    assert doc["rollout"] == {
        "namespace": "models",
        "name": "iris",
        "policy": "iris-policy",
        "stableRevision": "iris-00001",
        "canaryRevision": "iris-00002",
        "labels": {},
        "annotations": {},
    }
    assert doc["decision"] == {
        "action": "rollback",
        "reason": "RolledBack",
        "severity": "Warning",
        "message": "canary is worse: errors",
        "weight": 0,
        "phase": "rolled_back",
        "step": 1,
    }
    (v,) = doc["verdicts"]
    assert v["interval"] == [1.6, "+Inf"] and v["eValue"] == 143.0 and v["status"] == "fail"
    assert counts(registry) == {"delivered": 1, "retried": 0, "failed": 0, "dropped": 0}


def test_slack_and_teams_bodies(registry: CollectorRegistry) -> None:
    with http_stub(Reply(200)) as stub:
        n = Notifier(registry, backoff=QUICK)
        hooks = (
            {"url": stub.url + "/slack", "format": "slack"},
            {"url": stub.url + "/teams", "format": "teams"},
        )
        n.notify(policy(*hooks), notice())
        assert n.flush(5.0)
        n.close()
    bodies = {s.path: json.loads(s.body) for s in stub.seen}
    slack, teams = bodies["/slack"], bodies["/teams"]
    assert slack["text"].startswith("RolledBack: models/iris iris-00002 at 0%\ncanary is worse")
    assert slack["blocks"][0]["type"] == "header"
    assert teams["@type"] == "MessageCard" and teams["themeColor"] == "D00000"
    assert "errors: fail" in teams["text"]


def test_a_500_is_retried_with_backoff_then_counted_failed(registry: CollectorRegistry) -> None:
    with http_stub(Reply(500, b"<html>oops</html>", headers={"Content-Type": "text/html"})) as stub:
        n = Notifier(registry, backoff=QUICK)
        n.notify(policy({"url": stub.url}), notice())
        assert n.flush(5.0)
        n.close()
    assert len(stub.seen) == 3
    assert counts(registry) == {"delivered": 0, "retried": 2, "failed": 1, "dropped": 0}


def test_a_500_then_200_is_delivered(registry: CollectorRegistry) -> None:
    answers = iter([Reply(503), Reply(200)])
    with http_stub(lambda _s: next(answers)) as stub:
        n = Notifier(registry, backoff=QUICK)
        n.notify(policy({"url": stub.url}), notice())
        assert n.flush(5.0)
        n.close()
    assert len(stub.seen) == 2
    assert counts(registry) == {"delivered": 1, "retried": 1, "failed": 0, "dropped": 0}


def test_a_hanging_receiver_never_slows_the_caller_and_the_oldest_is_dropped(
    registry: CollectorRegistry,
) -> None:
    with http_stub(Reply(200, hang_s=30.0)) as stub:
        n = Notifier(registry, queue_size=2, backoff=Backoff(attempts=1))
        p = policy({"url": stub.url, "timeout": "1s"})
        n.notify(p, notice(t=1_767_600_000.0))
        deadline = time.monotonic() + 5
        while not stub.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(stub.seen) == 1  # the first is in flight, hanging
        t = time.monotonic()
        for k in range(1, 5):
            n.notify(p, notice(t=1_767_600_000.0 + 60 * k))
        assert time.monotonic() - t < 0.05  # five notify() calls, no waiting at all
        assert counts(registry)["dropped"] == 2  # +60 and +120 pushed out by +180 and +240
        assert n.flush(6.0)  # each attempt ends at its 1 s deadline
        n.close()
    ids = [json.loads(s.body)["id"].split("/")[3] for s in stub.seen]
    assert ids == ["1767600000.000", "1767600180.000", "1767600240.000"]
    assert counts(registry) == {"delivered": 0, "retried": 0, "failed": 3, "dropped": 2}


def test_a_slow_receiver_delays_only_itself(registry: CollectorRegistry) -> None:
    with http_stub(Reply(200, hang_s=30.0)) as slow, http_stub(Reply(200)) as fast:
        n = Notifier(registry, backoff=Backoff(attempts=1))
        n.notify(policy({"url": slow.url, "timeout": "3s"}, {"url": fast.url}), notice())
        deadline = time.monotonic() + 2
        while not fast.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fast.seen) == 1  # delivered while the slow one still hangs
        n.close(timeout_s=0.1)


def test_a_redirect_to_another_host_is_not_followed(registry: CollectorRegistry) -> None:
    with (
        http_stub(Reply(200)) as other,
        http_stub(Reply(307, b"", headers={"Location": other.url + "/steal"})) as stub,
    ):
        n = Notifier(registry, backoff=QUICK)
        n.notify(policy({"url": stub.url}), notice())
        assert n.flush(5.0)
        n.close()
    assert other.seen == []
    assert len(stub.seen) == 1  # refused at once, not retried
    assert counts(registry)["failed"] == 1


def test_urls_with_secrets_come_from_a_file_or_env_and_stay_out_of_logs(
    registry: CollectorRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    creds = tmp_path / "credentials"
    (creds / "slack").mkdir(parents=True)
    with http_stub(Reply(500)) as stub:
        (creds / "slack" / "url").write_text(stub.url + "/services/T000/B000/s3cr3tT0ken\n")
        resolver = EndpointResolver(creds, {"CANARYD_WEBHOOK_OPS": stub.url + "/ops?token=abc"})
        n = Notifier(registry, resolver=resolver, backoff=Backoff(attempts=1))
        p = policy(
            {"urlFrom": {"file": "slack/url"}},
            {"urlFrom": {"env": "CANARYD_WEBHOOK_OPS"}},
            {"urlFrom": {"env": "CANARYD_WEBHOOK_UNSET"}},
        )
        with caplog.at_level(logging.DEBUG):
            n.notify(p, notice())
            assert n.flush(5.0)
            n.close()
    assert sorted(s.path for s in stub.seen) == [
        "/ops?token=abc",
        "/services/T000/B000/s3cr3tT0ken",
    ]
    text = caplog.text + json.dumps([r.__dict__.get("fields") for r in caplog.records])
    assert "s3cr3tT0ken" not in text and "token=abc" not in text
    assert (
        "urlFrom file 'slack/url'" in text and "the URL in $CANARYD_WEBHOOK_UNSET is empty" in text
    )
    assert counts(registry)["failed"] == 3


def test_events_filter_and_quiet_holds(registry: CollectorRegistry) -> None:
    with http_stub(Reply(200)) as stub:
        n = Notifier(registry)
        p = policy({"url": stub.url, "events": ["Promoted"]})
        assert n.notify(p, notice(Reason.ROLLED_BACK)) == 0
        assert n.notify(p, notice(Reason.PROMOTED)) == 1
        quiet = Decision(Action.HOLD, "holding", 1.0)
        state = RolloutState("c", "s", Phase.PROGRESSING, 0, 10)
        assert (
            n.notify(policy({"url": stub.url}), decision_notice("m", "i", "p", quiet, state)) == 0
        )
        assert n.flush(5.0)
        n.close()
    assert [json.loads(s.body)["decision"]["reason"] for s in stub.seen] == ["Promoted"]


# -- the promotion gate ------------------------------------------------------------------------


def gate_request(url: str, recheck_s: float = 60.0, timeout: str = "2s") -> GateRequest:
    p = policy(confirm={"url": url, "timeout": timeout})
    state = RolloutState("iris-00002", "iris-00001", Phase.PROGRESSING, 2, 50)
    req = confirm_request("models", "iris", p, state, 1_767_600_000.0)
    assert req is not None and req.recheck_s == 60.0  # the policy's analysis interval
    return replace(req, recheck_s=recheck_s)


def wait_answer(gate: PromotionGate, req: GateRequest) -> GateStatus:
    assert gate.wait_idle(10.0)
    return gate.approved(req).status


def gate_counts(registry: CollectorRegistry) -> dict[str, float]:
    return {
        r: registry.get_sample_value("canaryd_promotion_gate_checks_total", {"result": r}) or 0.0
        for r in ("approved", "denied", "error")
    }


def test_a_2xx_approves_and_the_gate_receives_the_rollout(registry: CollectorRegistry) -> None:
    with http_stub(Reply(204, b"")) as stub:
        gate = PromotionGate(registry)
        req = gate_request(stub.url + "/confirm")
        first = gate.approved(req)
        assert first.status is GateStatus.WAITING and not first.approved
        assert wait_answer(gate, req) is GateStatus.APPROVED
        answer = gate.approved(req)
        assert answer.approved and answer.message.endswith("(HTTP 204)")
        gate.close()
    (seen,) = stub.seen  # a fresh approval is not asked again
    doc = json.loads(seen.body)
    assert doc["kind"] == "ConfirmPromotion" and doc["rollout"]["canaryRevision"] == "iris-00002"
    assert doc["decision"]["action"] == "promote" and doc["decision"]["weight"] == 50
    assert doc["decision"]["reason"] == "AwaitingConfirmation"
    assert gate_counts(registry) == {"approved": 1, "denied": 0, "error": 0}


def test_a_500_does_not_approve_and_is_asked_again_after_the_interval(
    registry: CollectorRegistry,
) -> None:
    answers = iter([Reply(500, b'{"error": "change freeze"}'), Reply(200)])
    now = [0.0]
    with http_stub(lambda _s: next(answers)) as stub:
        gate = PromotionGate(registry, clock=lambda: now[0])
        req = gate_request(stub.url, recheck_s=60.0)
        gate.approved(req)
        assert wait_answer(gate, req) is GateStatus.DENIED
        denied = gate.approved(req)
        assert denied.message == (
            f"promotion not confirmed: {stub.url} answered HTTP 500 (change freeze)"
        )
        assert len(stub.seen) == 1  # within the interval: the denial stands, no new ask
        now[0] = 61.0
        assert gate.approved(req).status is GateStatus.DENIED  # asking again in the background
        assert wait_answer(gate, req) is GateStatus.APPROVED
        gate.close()
    assert len(stub.seen) == 2
    assert gate_counts(registry) == {"approved": 1, "denied": 1, "error": 0}


def test_a_hanging_gate_never_blocks_and_times_out_unapproved(registry: CollectorRegistry) -> None:
    with http_stub(Reply(200, hang_s=30.0)) as stub:
        gate = PromotionGate(registry)
        req = gate_request(stub.url, timeout="1s")
        t = time.monotonic()
        for _ in range(20):  # twenty ticks' worth of calls while the ask hangs
            assert not gate.approved(req).approved
        assert time.monotonic() - t < 0.05
        assert wait_answer(gate, req) is GateStatus.DENIED
        answer = gate.approved(req)
        assert "did not answer (timeout after 1s)" in answer.message
        gate.close()
    assert len(stub.seen) == 1  # one ask in flight at a time
    assert gate_counts(registry)["error"] == 1


def test_a_gate_redirecting_elsewhere_does_not_approve(registry: CollectorRegistry) -> None:
    with http_stub(Reply(200)) as approver:
        redirect = Reply(302, b"", headers={"Location": approver.url})
        with http_stub(redirect) as stub:
            gate = PromotionGate(registry)
            answer = gate.ask(gate_request(stub.url))
            gate.close()
    assert answer.status is GateStatus.DENIED
    assert "redirect" in answer.message and approver.seen == []


def test_the_blocking_ask_is_bounded(registry: CollectorRegistry) -> None:
    def slow(_seen: Seen) -> Reply:
        return Reply(200, hang_s=30.0)

    with http_stub(slow) as stub:
        gate = PromotionGate(registry)
        t = time.monotonic()
        answer = gate.ask(gate_request(stub.url, timeout="1s"))
        took = time.monotonic() - t
        gate.close()
    assert answer.status is GateStatus.DENIED and took < 1.5
