"""The shadow phase and user-impact accounting in the controller."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from canaryd.controller import Action, Manual, Phase, RolloutController, RolloutState, UserImpact
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.model import CanaryPolicy

BOUNDS = (50.0, 100.0, 250.0, math.inf)
ISTIO = {"virtualService": "vs", "stableHost": "s.svc", "canaryHost": "c.svc"}


def policy(shadow: dict[str, Any] | None = None, **spec: Any) -> CanaryPolicy:
    steps: dict[str, Any] = {"weights": [10, 50], "minDwell": "2m", "minCanaryRequests": 100}
    if shadow is not None:
        steps["shadow"] = shadow
    doc: dict[str, Any] = {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "CanaryPolicy",
        "metadata": {"name": "t"},
        "spec": {
            "target": {"namespace": "ns", "inferenceService": "m"},
            "router": {"type": "istio", "istio": ISTIO},
            "steps": steps,
            "analysis": {"interval": "1m", "metrics": [{"name": "errors", "kind": "errors"}]},
            **spec,
        },
    }
    return CanaryPolicy.model_validate(doc)


SHADOW = {"duration": "3m", "minCanaryRequests": 200, "mirrorPercent": 20}


def obs(
    t: float,
    s_err: int = 5,
    c_err: int = 1,
    n: int = 1000,
    nc: int = 200,
    mirrored: tuple[float, float] | None = None,
) -> Observation:
    def counts(req: int, err: int, m: tuple[float, float] | None = None) -> VersionCounts:
        hist = (req * 0.4, req * 0.8, req * 0.95, float(req))
        return VersionCounts(
            req,
            err,
            BOUNDS,
            hist,
            mirrored_requests=None if m is None else m[0],
            mirrored_errors=None if m is None else m[1],
        )

    return Observation(t - 60, t, counts(n, s_err), counts(nc, c_err, mirrored))


def drive(
    ctrl: RolloutController, st: RolloutState, start: float, until: float, **kw: Any
) -> tuple[list[Any], RolloutState]:
    out = []
    t = start
    while t <= until and not st.phase.terminal:
        d, st = ctrl.step(st, t, obs(t, **kw))
        out.append(d)
        t += 60
    return out, st


def test_starts_in_shadow_passes_then_steps() -> None:
    ctrl = RolloutController(policy(SHADOW))
    d, st = ctrl.step(ctrl.new_state("s", "c"), 0.0)
    assert (d.action, d.weight, d.mirror_percent, d.event) == (
        Action.SET_MIRROR,
        0,
        20.0,
        "ShadowStarted",
    )
    assert st.phase is Phase.SHADOW and st.in_shadow and st.step == -1
    assert "20% of requests mirrored" in d.reason and "no user traffic" in d.reason

    decisions, st = drive(ctrl, st, 60, 180)
    holds = [d for d in decisions if d.action is Action.HOLD]
    assert holds[0].reason == "in shadow: 1m of 3m, 200 of 200 mirrored canary requests"
    passed = decisions[-1]
    assert passed.t == 180.0  # 3 minutes, 600 mirrored requests
    assert (passed.action, passed.weight, passed.mirror_percent, passed.event) == (
        Action.SET_WEIGHT,
        10,
        0.0,
        "CanaryStarted",
    )
    assert passed.reason.startswith("shadow passed (3m, 600 mirrored canary requests")
    # Its errors verdict is still "continue": the reason counts it, claiming no more.
    assert [v.status.value for v in passed.verdicts] == ["continue"]
    assert "1 of 1 not yet shown either way (errors)" in passed.reason
    assert "no failing or inconclusive" not in passed.reason
    assert "started the canary at 10% (revision c)" in passed.reason
    assert st.phase is Phase.PROGRESSING and st.step == 0 and st.step_canary_requests == 0
    # Shadow traffic counts zero: no user request reached the canary so far.
    assert passed.impact == UserImpact(0, 0, 600, 3)

    decisions, st = drive(ctrl, st, 240, 1200)
    acts = [
        (d.action, d.weight, d.mirror_percent) for d in decisions if d.action is not Action.HOLD
    ]
    assert acts == [(Action.SET_WEIGHT, 50, 0.0), (Action.PROMOTE, 100, 0.0)]
    assert [h.weight for h in st.history] == [0, 10, 50, 100]
    # Every canary request after the shadow phase was a user's.
    assert st.impact.shadow_requests == 600
    assert st.impact.user_requests == st.canary_requests - 600
    assert decisions[-1].impact == st.impact


def test_a_shadow_failure_rolls_back_with_zero_user_exposure() -> None:
    ctrl = RolloutController(policy(SHADOW))
    _, st = ctrl.step(ctrl.new_state("s", "c"), 0.0)
    decisions, st = drive(ctrl, st, 60, 600, s_err=2, c_err=60)
    last = decisions[-1]
    assert (last.action, last.weight, last.mirror_percent, last.event) == (
        Action.ROLLBACK,
        0,
        0.0,
        "RolledBack",
    )
    assert last.reason.startswith("canary is worse in shadow: errors")
    assert last.reason.endswith(
        "no user was exposed (shadow: the canary only saw mirrored requests)"
    )
    assert last.impact.user_requests == 0 and last.impact.user_errors == 0
    assert last.impact.shadow_requests == st.canary_requests > 0
    assert "the canary served 0 user requests (0 failed)" in last.impact.summary()
    assert "mirrored requests" in last.impact.summary()
    assert st.phase is Phase.ROLLED_BACK and [h.weight for h in st.history] == [0, 0]


def test_a_header_route_to_the_canary_counts_as_users_in_shadow() -> None:
    """When the source tells mirrored requests apart, the rest are real users."""
    ctrl = RolloutController(policy(SHADOW))
    _, st = ctrl.step(ctrl.new_state("s", "c"), 0.0)
    d, st = ctrl.step(st, 60.0, obs(60.0, nc=200, c_err=5, mirrored=(190.0, 4.0)))
    assert d.impact == UserImpact(10, 1, 190, 4)
    decisions, st = drive(ctrl, st, 120, 600, s_err=2, c_err=60, mirrored=(190.0, 55.0))
    last = decisions[-1]
    assert last.action is Action.ROLLBACK
    assert "user requests reached it by another route" in last.reason
    assert last.impact.user_requests > 0 and last.impact.user_errors > 0


def test_without_a_split_every_weighted_request_is_a_user_request() -> None:
    ctrl = RolloutController(policy(None))
    d, st = ctrl.step(ctrl.new_state(), 0.0)
    assert d.mirror_percent is None  # no shadow phase: the mirror is never touched
    decisions, st = drive(ctrl, st, 60, 600, s_err=2, c_err=60)
    last = decisions[-1]
    assert last.action is Action.ROLLBACK and last.mirror_percent is None
    assert last.impact == UserImpact(st.canary_requests, st.canary_errors, 0, 0)
    assert "no user was exposed" not in last.reason


def test_paused_in_shadow_keeps_mirroring_and_resumes_there() -> None:
    ctrl = RolloutController(policy(SHADOW))
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    d, st = ctrl.step(st, 60.0, obs(60.0), Manual.PAUSE)
    assert d.action is Action.PAUSE and d.mirror_percent is None
    assert st.in_shadow
    d, st = ctrl.step(st, 120.0, obs(120.0))
    assert d.action is Action.HOLD and st.impact.user_requests == 0
    d, st = ctrl.step(st, 180.0, None, Manual.RESUME)
    assert st.phase is Phase.SHADOW
    d, st = ctrl.step(st, 240.0, None, Manual.ROLLBACK)
    assert d.action is Action.ROLLBACK and d.mirror_percent == 0.0
    assert "manual rollback; no user was exposed" in d.reason


def test_a_manual_promotion_in_shadow_turns_the_mirror_off() -> None:
    ctrl = RolloutController(policy(SHADOW))
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    d, _ = ctrl.step(st, 60.0, None, Manual.PROMOTE)
    assert (d.action, d.weight, d.mirror_percent) == (Action.PROMOTE, 100, 0.0)


def test_inconclusive_in_shadow_holds() -> None:
    ctrl = RolloutController(policy(SHADOW))
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    decisions, st = drive(ctrl, st, 60, 600, nc=0, c_err=0)  # the mirror never arrives
    assert st.phase is Phase.SHADOW
    assert all(d.action is Action.HOLD for d in decisions)


def test_shadow_state_survives_a_json_round_trip() -> None:
    ctrl = RolloutController(policy(SHADOW))
    _, st = ctrl.step(ctrl.new_state("s", "c"), 0.0)
    _, st = ctrl.step(st, 60.0, obs(60.0, mirrored=(200.0, 5.0)))
    restored = RolloutState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert restored == st
    d1, _ = ctrl.step(st, 120.0, obs(120.0))
    d2, _ = RolloutController(policy(SHADOW)).step(restored, 120.0, obs(120.0))
    assert d1 == d2


def test_documents_from_before_impact_accounting_count_every_request_as_a_user() -> None:
    ctrl = RolloutController(policy(None))
    _, st = ctrl.step(ctrl.new_state(), 0.0)
    _, st = ctrl.step(st, 60.0, obs(60.0))
    old = st.to_dict()
    del old["impact"]
    restored = RolloutState.from_dict(old)
    assert restored.impact == UserImpact(st.canary_requests, st.canary_errors)
    assert replace(restored, impact=st.impact) == st


def test_decisions_serialize_their_impact_and_mirror() -> None:
    ctrl = RolloutController(policy(SHADOW))
    d, _ = ctrl.step(ctrl.new_state(), 0.0)
    doc = d.to_dict()
    assert doc["mirror_percent"] == 20.0
    assert doc["impact"] == {
        "user_requests": 0.0,
        "user_errors": 0.0,
        "shadow_requests": 0.0,
        "shadow_errors": 0.0,
    }
