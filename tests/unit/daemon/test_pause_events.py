"""A pause's reason reaches the cluster: the Event's message, the stored history, ``status``."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pytest

from canaryd.daemon.commands import _detail
from canaryd.daemon.status import RolloutView
from canaryd.kube.events import MemoryEventSink
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation
from canaryd.reasons import Reason
from canaryd.state.document import StateDoc
from tests.unit.daemon.test_tick import KEY, Source, World, loaded, policy_yaml

MDE = """\
  promotion:
    minDetectableEffect: {errors: 3.0}
    onInsufficientEvidence: pause
"""


def events_of(sink: MemoryEventSink, reason: Reason) -> list[str]:
    return [e.message for e in sink.events if e.reason is reason]


def test_not_enough_evidence_is_a_paused_event_in_history_and_status() -> None:
    w = World(loaded(policy_yaml() + MDE))
    for t in range(0, 8 * 60, 60):
        w.rec.tick(float(t))
    assert w.doc()["state"]["phase"] == "paused"
    (message,) = events_of(w.events, Reason.PAUSED)
    reason = message.split(" | ")[0]
    # 200 canary requests a minute at stable's 1 % errors: three steps bring 600.
    assert (
        reason
        == "not enough evidence: detecting errors x3 needs about 1276 canary requests, seen 600 "
        "(stable's error rate so far 1 %)"
    )
    history = w.doc()["state"]["history"]
    assert history[-1]["reason"] == f"paused: {reason}" and history[-1]["weight"] == 50
    # canaryd status: the reason in full (JSON and the detail view) and in the history.
    doc = StateDoc.from_dict(w.doc())
    info = RolloutView(KEY, "canaryd-m", doc, None, {"type": "kserve"}, 1000.0).to_dict()
    assert reason in info["state"]["reason"]
    assert info["state"]["history"][-1] == {
        "t": history[-1]["t"],
        "weight": 50,
        "reason": f"paused: {reason}",
    }
    detail = _detail(info)
    assert f"paused: {reason}" in detail


def test_a_closing_rollout_window_is_one_event_and_in_the_history() -> None:
    window = '  window: {schedule: "* 9-16 * * *", timezone: UTC}\n'
    text = policy_yaml().replace("minDwell: 60s", "minDwell: 1h") + window
    w = World(loaded(text))
    start = 16 * 3600 + 55 * 60  # 16:55 UTC on the daemon's clock
    for t in range(start, start + 11 * 60, 60):
        w.rec.tick(float(t))
    (message,) = events_of(w.events, Reason.WINDOW_CLOSED)
    assert message.startswith(
        "outside the rollout window ('* 9-16 * * *', UTC): holding at 10% until it opens"
    )
    # Held windows are checkpointed, not written each tick: the history reaches the store at
    # the next write; in memory it is there at once.
    live = w.rec._rollouts[KEY].doc
    assert live is not None
    assert live.state.history[-1].reason.startswith("outside the rollout window")


class NoData(Source):
    """Prometheus answers, but with nothing for the rollout."""

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        self.windows.append((start_s, end_s))
        return {
            r.key: Observation(start_s, end_s, no_data_reason="no series for the canary")
            for r in requests
        }


@pytest.mark.parametrize(
    ("extra", "no_data", "expected"),
    [
        (
            "  noData: {timeout: 3m, action: pause}\n",
            True,
            "no usable metrics for 3m (noData.timeout 3m): no series for the canary",
        ),
        (
            "  promotion: {criterion: nonInferiority, maxDuration: 4m}\n",
            False,
            "maxDuration 4m reached without promotion",
        ),
    ],
    ids=["no-data-timeout", "max-duration"],
)
def test_every_pause_reason_is_the_paused_events_message(
    extra: str, no_data: bool, expected: str
) -> None:
    text = policy_yaml(tolerance=0.01) + extra
    w = World(loaded(text))
    if no_data:
        w.source = NoData()
        w.rec = w.restart()
    for t in range(0, 10 * 60, 60):
        w.rec.tick(float(t))
    assert w.doc()["state"]["phase"] == "paused", w.reasons()
    (message,) = events_of(w.events, Reason.PAUSED)
    assert message.split(" | ")[0] == expected
    assert w.doc()["state"]["history"][-1]["reason"] == f"paused: {expected}"
