"""Rollout controller semantics (DESIGN.md §3), driven with hand-made observations."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from canaryd.controller import Action, Manual, Phase, RolloutController, RolloutState
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.model import CanaryPolicy

BOUNDS = (50.0, 100.0, 250.0, math.inf)


def policy(**spec: Any) -> CanaryPolicy:
    doc: dict[str, Any] = {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "CanaryPolicy",
        "metadata": {"name": "t"},
        "spec": {
            "target": {"namespace": "ns", "inferenceService": "m"},
            "steps": {"weights": [10, 50], "minDwell": "2m", "minCanaryRequests": 100},
            "analysis": {"interval": "1m", "metrics": [{"name": "errors", "kind": "errors"}]},
            **spec,
        },
    }
    return CanaryPolicy.model_validate(doc)


def obs(t: float, s_err: int = 5, c_err: int = 5, n: int = 1000) -> Observation:
    hist = (n * 0.4, n * 0.8, n * 0.95, float(n))
    return Observation(
        t - 60, t, VersionCounts(n, s_err, BOUNDS, hist), VersionCounts(n, c_err, BOUNDS, hist)
    )


def run(ctrl: RolloutController, state: RolloutState, until: float, **kw: int):  # type: ignore[no-untyped-def]
    decisions = []
    t = 60.0
    while t <= until and not state.phase.terminal:
        d, state = ctrl.step(state, t, obs(t, **kw))
        decisions.append(d)
        t += 60
    return decisions, state


def test_starts_steps_and_promotes_after_steps() -> None:
    ctrl = RolloutController(policy())
    d, st = ctrl.step(ctrl.new_state("s", "c"), 0.0)
    assert (d.action, d.weight, d.event) == (Action.SET_WEIGHT, 10, "CanaryStarted")
    decisions, st = run(ctrl, st, 600)
    acts = [(d.t, d.action, d.weight) for d in decisions if d.action is not Action.HOLD]
    assert acts == [(120.0, Action.SET_WEIGHT, 50), (240.0, Action.PROMOTE, 100)]
    assert st.phase is Phase.PROMOTED
    assert [h.weight for h in st.history] == [10, 50, 100]


def test_the_promotion_reason_counts_metrics_not_yet_shown_either_way() -> None:
    # Equal error rates: after the steps the errors verdict is still "continue", and the
    # promotion reason says so instead of claiming nothing is inconclusive.
    ctrl = RolloutController(policy())
    _, st = ctrl.step(ctrl.new_state("s", "c"), 0.0)
    decisions, st = run(ctrl, st, 600)
    last = decisions[-1]
    assert last.action is Action.PROMOTE
    assert [v.status.value for v in last.verdicts] == ["continue"]
    assert "no failing or inconclusive" not in last.reason
    assert last.reason == (
        "all steps completed with no critical metric failing or short of data; 1 of 1 not yet "
        "shown either way (errors), which promotion.criterion afterSteps does not wait for"
    )
    # A canary whose every critical metric has passed keeps the short claim.
    ctrl = RolloutController(policy())
    _, st = ctrl.step(ctrl.new_state("s", "c"), 0.0)
    decisions, st = run(ctrl, st, 600, c_err=0)
    assert [v.status.value for v in decisions[-1].verdicts] == ["pass"]
    assert decisions[-1].reason == (
        "all steps completed with no failing or inconclusive critical metric"
    )


def test_rolls_back_at_once_on_critical_failure() -> None:
    ctrl = RolloutController(policy())
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    decisions, st = run(ctrl, st, 600, s_err=2, c_err=60)
    last = decisions[-1]
    assert last.action is Action.ROLLBACK and last.weight == 0 and last.event == "RolledBack"
    assert st.phase is Phase.ROLLED_BACK
    assert any(v.status.value == "fail" for v in last.verdicts)
    assert "canary is worse" in last.reason
    # A rolled-back revision is never retried automatically.
    d, st2 = ctrl.step(st, 10_000.0, obs(10_000.0))
    assert d.action is Action.HOLD and st2.phase is Phase.ROLLED_BACK


def test_on_failure_pause() -> None:
    ctrl = RolloutController(policy(onFailure="pause"))
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    decisions, st = run(ctrl, st, 300, s_err=2, c_err=60)
    assert st.phase is Phase.PAUSED
    assert any(d.action is Action.PAUSE for d in decisions)


def test_no_data_never_promotes_and_times_out_to_policy_action() -> None:
    ctrl = RolloutController(policy(noData={"timeout": "5m", "action": "rollback"}))
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    for t in range(60, 6 * 60, 60):
        d, st = ctrl.step(st, float(t), Observation(t - 60, t, no_data_reason="prometheus down"))
        if t < 300:
            assert d.action is Action.HOLD and d.event == "AnalysisInconclusive"
    assert st.phase is Phase.ROLLED_BACK
    assert "no usable metrics" in st.reason


def test_counter_reset_interval_is_no_data() -> None:
    ctrl = RolloutController(policy())
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    bad = Observation(0, 60, VersionCounts(-5, 0), VersionCounts(100, 1))
    d, st = ctrl.step(st, 60.0, bad)
    assert d.action is Action.HOLD and "counter reset" in d.reason
    assert st.no_data_intervals == 1


def test_manual_controls() -> None:
    ctrl = RolloutController(policy())
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    d, st = ctrl.step(st, 60.0, obs(60.0), Manual.PAUSE)
    assert d.action is Action.PAUSE and st.phase is Phase.PAUSED
    d, st = ctrl.step(st, 120.0, obs(120.0))
    assert d.action is Action.HOLD and st.phase is Phase.PAUSED
    d, st = ctrl.step(st, 180.0, None, Manual.RESUME)
    assert d.event == "Resumed" and st.phase is Phase.PROGRESSING
    d, st = ctrl.step(st, 240.0, None, Manual.PROMOTE)
    assert d.action is Action.PROMOTE and st.phase is Phase.PROMOTED
    ctrl2 = RolloutController(policy())
    _, s2 = ctrl2.step(ctrl2.new_state(), 0.0)
    d, s2 = ctrl2.step(s2, 30.0, None, Manual.ROLLBACK)
    assert d.action is Action.ROLLBACK and d.weight == 0


def test_rollout_window_holds_outside_but_still_rolls_back() -> None:
    # Epoch is a Monday 08:00 UTC; the window opens at 09:00 on weekdays.
    epoch = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    pol = policy(window={"schedule": "* 9-16 * * mon-fri", "timezone": "UTC"})
    ctrl = RolloutController(pol, epoch=epoch)
    d, st = ctrl.step(ctrl.new_state(), 0.0)
    assert d.action is Action.HOLD and "window" in d.reason
    d, st = ctrl.step(st, 3600.0)
    assert d.action is Action.SET_WEIGHT
    # Friday evening: outside the window, steps hold but a failure still rolls back.
    late = RolloutController(pol, epoch=datetime(2026, 1, 9, 16, 58, tzinfo=UTC))
    _, s = late.step(late.new_state(), 0.0)
    decisions, s = run(late, s, 1200)
    assert all(d.action is Action.HOLD for d in decisions)
    assert any("outside the rollout window" in d.reason for d in decisions)
    _, s = late.step(late.new_state(), 0.0)
    decisions, s = run(late, s, 1200, s_err=2, c_err=80)
    assert s.phase is Phase.ROLLED_BACK


def test_non_inferiority_criterion_and_max_duration() -> None:
    pol = policy(
        promotion={"criterion": "nonInferiority", "maxDuration": "30m"},
        analysis={
            "interval": "1m",
            "metrics": [{"name": "errors", "kind": "errors", "maxRelativeIncrease": 0.5}],
        },
    )
    ctrl = RolloutController(pol)
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    _, st = run(ctrl, st, 7200, s_err=20, c_err=20, n=1000)
    assert st.phase is Phase.PROMOTED
    assert "shown no worse" in st.reason
    # Too little information to show it before maxDuration: pause for a human.
    ctrl = RolloutController(pol)
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    _decisions, st = run(ctrl, st, 3600, s_err=1, c_err=1, n=100)
    assert st.phase is Phase.PAUSED and "maxDuration" in st.reason


def test_minimum_detectable_effect_holds_or_pauses() -> None:
    pol = policy(
        promotion={"minDetectableEffect": {"errors": 2.0}, "onInsufficientEvidence": "pause"}
    )
    ctrl = RolloutController(pol)
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    _decisions, st = run(ctrl, st, 1200, s_err=0, c_err=0, n=200)
    assert st.phase is Phase.PAUSED and "not enough evidence" in st.reason
    need = ctrl.required_requests(pol.spec.analysis.metrics[0], 2.0, None, 50)
    assert 1_000 < need < math.inf


def test_restore_mid_rollout_gives_identical_decisions() -> None:
    ctrl = RolloutController(policy(steps={"weights": [5, 10, 20, 40], "minDwell": "3m"}))
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    ref: list[Any] = []
    restored: list[Any] = []
    st_a = st
    st_b = st
    other = RolloutController(ctrl.policy)
    for i, t in enumerate(range(60, 1500, 60)):
        o = obs(float(t), s_err=5, c_err=5 + (t // 400))
        da, st_a = ctrl.step(st_a, float(t), o)
        if i % 4 == 0:  # destroy and restore from JSON
            other = RolloutController(ctrl.policy)
            st_b = RolloutState.from_dict(json.loads(json.dumps(st_b.to_dict())))
        db, st_b = other.step(st_b, float(t), o)
        ref.append(da.to_dict())
        restored.append(db.to_dict())
    assert ref == restored
    assert st_a == st_b


def test_state_round_trip() -> None:
    ctrl = RolloutController(policy())
    _, st = ctrl.step(ctrl.new_state("a", "b"), 0.0)
    _, st = ctrl.step(st, 60.0, obs(60.0))
    again = RolloutState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert again == st
    with pytest.raises(ValueError, match="version"):
        RolloutState.from_dict({**st.to_dict(), "version": 99})


def test_unmeasured_errors_are_inconclusive_not_evidence() -> None:
    """A source without an error counter reports zeros; they must never help a promotion."""
    ctrl = RolloutController(policy())
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    for t in range(60, 900, 60):
        o = obs(float(t), s_err=0, c_err=0)
        blind = Observation(o.start_s, o.end_s, o.stable, o.canary, errors_measured=False)
        d, st = ctrl.step(st, float(t), blind)
    assert st.phase is Phase.PROGRESSING
    assert d.action is Action.HOLD and "does not measure errors" in d.reason
    again = RolloutState.from_dict(json.loads(json.dumps(st.to_dict())))
    d2, _ = RolloutController(ctrl.policy).step(again, 960.0, None)
    assert any("does not measure errors" in v.reason for v in d2.verdicts)
