"""Every pause is a decision in the history, with its reason; so is a closing rollout window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from canaryd.controller import Action, Manual, Phase, RolloutController, RolloutState
from canaryd.observation import Observation
from canaryd.reasons import Reason
from tests.unit.controller.test_controller import obs, policy, run


def last(st: RolloutState) -> tuple[float, int, str]:
    h = st.history[-1]
    return h.t, h.weight, h.reason


def test_not_enough_evidence_pauses_into_the_history() -> None:
    pol = policy(
        promotion={"minDetectableEffect": {"errors": 2.0}, "onInsufficientEvidence": "pause"}
    )
    ctrl = RolloutController(pol)
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    decisions, st = run(ctrl, st, 1200, s_err=0, c_err=0, n=200)
    pause = next(d for d in decisions if d.action is Action.PAUSE)
    assert st.phase is Phase.PAUSED and pause.event is Reason.PAUSED
    assert last(st) == (pause.t, 50, f"paused: {pause.reason}")
    assert pause.reason.startswith("not enough evidence: detecting errors x2 needs about ")
    assert ", seen " in pause.reason


def test_no_data_timeout_pauses_into_the_history() -> None:
    ctrl = RolloutController(policy(noData={"timeout": "3m", "action": "pause"}))
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    for t in (60.0, 120.0, 180.0):
        d, st = ctrl.step(st, t, Observation(t - 60, t, no_data_reason="prometheus down"))
    assert d.action is Action.PAUSE and st.phase is Phase.PAUSED
    t, w, reason = last(st)
    assert (t, w) == (180.0, 10)
    assert reason == "paused: no usable metrics for 3m (noData.timeout 3m): prometheus down"


def test_max_duration_pauses_into_the_history() -> None:
    pol = policy(promotion={"criterion": "nonInferiority", "maxDuration": "30m"})
    ctrl = RolloutController(pol)
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    _, st = run(ctrl, st, 3600, s_err=1, c_err=1, n=100)
    assert st.phase is Phase.PAUSED
    assert last(st)[2] == "paused: maxDuration 30m reached without promotion"
    assert last(st)[0] == 1800.0


def test_a_manual_pause_and_resume_are_in_the_history() -> None:
    ctrl = RolloutController(policy())
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    _, st = ctrl.step(st, 60.0, obs(60.0), Manual.PAUSE)
    assert last(st) == (60.0, 10, "paused by a human")
    _, st = ctrl.step(st, 120.0, None, Manual.RESUME)
    assert last(st) == (120.0, 10, "resumed by a human")
    assert [h.weight for h in st.history] == [10, 10, 10]


@pytest.mark.parametrize("restore", [False, True])
def test_a_closing_window_is_recorded_once_with_an_event_and_its_opening_too(
    restore: bool,
) -> None:
    # Friday 16:55 UTC; the window is weekdays 09:00-16:59.
    pol = policy(
        window={"schedule": "* 9-16 * * mon-fri", "timezone": "UTC"},
        steps={"weights": [10, 50], "minDwell": "30m", "minCanaryRequests": 100},
        promotion={"maxDuration": "7d"},
    )
    ctrl = RolloutController(pol, epoch=datetime(2026, 1, 9, 16, 55, tzinfo=UTC))
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    events = []
    for t in range(60, 601, 60):
        if restore:  # a restarted daemon decides the same from the stored state
            ctrl = RolloutController(pol, epoch=datetime(2026, 1, 9, 16, 55, tzinfo=UTC))
            st = RolloutState.from_dict(st.to_dict())
        d, st = ctrl.step(st, float(t), obs(float(t)))
        assert d.action is Action.HOLD
        events.append(d.event)
    assert events.count(Reason.WINDOW_CLOSED) == 1
    closed = [h for h in st.history if h.reason.startswith("outside the rollout window")]
    assert len(closed) == 1 and closed[0].t == 300.0 and closed[0].weight == 10
    assert closed[0].reason == (
        "outside the rollout window ('* 9-16 * * mon-fri', UTC): holding at 10% until it opens"
    )
    # Monday 09:00: the window opens; that is recorded too, and the steps go on.
    monday = datetime(2026, 1, 12, 9, 0, tzinfo=UTC) - datetime(2026, 1, 9, 16, 55, tzinfo=UTC)
    t0 = monday.total_seconds()
    d, st = ctrl.step(st, t0, obs(t0))
    assert st.history[-2].reason == "the rollout window opened; at 10%"
    assert d.action is Action.SET_WEIGHT and st.weight == 50
