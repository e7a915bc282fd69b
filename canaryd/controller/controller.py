"""The rollout controller: one pure decision loop for the daemon and the simulator.

``RolloutController.step`` takes the current state, the time, the newest observation and an
optional manual command, and returns a decision and the next state. It never touches the network
or a clock: the daemon and the simulator call it the same way, so a policy tuned in simulation
behaves the same in the cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from canaryd.controller.state import (
    Action,
    Manual,
    Phase,
    RolloutState,
    StepRecord,
    UserImpact,
)
from canaryd.durations import format_duration
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.model import HISTOGRAM_KINDS, CanaryPolicy, Metric, Step
from canaryd.reasons import Reason
from canaryd.stats.bounds import interval_information
from canaryd.stats.panel import Assessment, JudgePanel, assess
from canaryd.stats.verdict import Status, Verdict


@dataclass(frozen=True)
class Decision:
    """What to do now, and why. ``event`` is the Event reason to record (None: a quiet hold).

    ``mirror_percent``: the share of requests to mirror to the canary (0 turns mirroring off),
    or None to leave mirroring as it is; only policies with a shadow phase ever set it.
    ``impact``: the user requests the canary served (and failed) up to this decision, and the
    mirrored ones, which affected no user.
    """

    action: Action
    reason: str
    t: float
    weight: int | None = None
    event: Reason | None = None
    verdicts: tuple[Verdict, ...] = ()
    mirror_percent: float | None = None
    impact: UserImpact = field(default_factory=UserImpact)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "reason": self.reason,
            "t": self.t,
            "weight": self.weight,
            "mirror_percent": self.mirror_percent,
            "event": None if self.event is None else self.event.value,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "impact": self.impact.to_dict(),
        }


@dataclass(frozen=True)
class Confirmation:
    """The promotion gate's answer (``spec.promotion.confirm``) for this step.

    The daemon asks the gate and passes its answer; without one (``None``: the simulator,
    replay) a promotion is taken as confirmed at once.
    """

    approved: bool
    why: str = ""


WINDOW_CLOSED = "outside the rollout window"
"""How a window-closed hold's reason begins (``canaryd status`` and the history show it)."""


def _window_closed(state: RolloutState) -> str:
    """The reason of the window-closed record that the history ends with, or ``""``."""
    if state.history and state.history[-1].reason.startswith(WINDOW_CLOSED):
        return state.history[-1].reason
    return ""


def _standing(a: Assessment) -> tuple[str, str]:
    """How the critical metrics stand when a phase's minimums (not their evidence) move the
    rollout on; failing and inconclusive ones have stopped it before. Returns the claim and
    the metrics still undecided (``continue``: "not yet shown either way" in their verdicts),
    counted and named ("" when none is), so a reason never claims more than its verdicts."""
    critical = [v for v in a.verdicts if v.critical]
    undecided = [v.metric for v in critical if v.status is Status.CONTINUE]
    if not undecided:
        return "no failing or inconclusive critical metric", ""
    return (
        "no critical metric failing or short of data",
        f"{len(undecided)} of {len(critical)} not yet shown either way ({', '.join(undecided)})",
    )


ASSUMED_EVENT_RATE = 1e-3
"""Stable's event rate the evidence check assumes before stable has been seen: a rare event,
which asks for more evidence rather than less."""


def evidence_requests(
    policy: CanaryPolicy, metric: Metric, mde: float, weight: int, p_s: float
) -> float:
    """Canary requests (or labelled predictions) needed to detect ``metric`` x``mde`` at the
    final split ``weight``: the two-sample floor at stable's event rate ``p_s`` (clipped so
    that the canary's ``p_s * mde`` stays a rate), against ``1 + tolerance`` at the metric's
    alpha. The controller's evidence check and ``canaryd plan`` both ask this."""
    if p_s * mde >= 1.0:
        p_s = 0.99 / mde
    alpha = policy.spec.analysis.alpha_for(metric)
    return constant_split_floor(p_s, mde, 1.0 + metric.tolerance, weight, alpha)


class RolloutWindow:
    """Minutes in which a rollout may advance, from an APScheduler crontab expression."""

    def __init__(self, schedule: str, timezone: str, epoch: datetime) -> None:
        self._trigger = CronTrigger.from_crontab(schedule, timezone=ZoneInfo(timezone))
        self._epoch = epoch

    def is_open(self, t: float) -> bool:
        when = (self._epoch + timedelta(seconds=t)).replace(second=0, microsecond=0)
        nxt = self._trigger.get_next_fire_time(None, when)
        return nxt is not None and nxt == when


def constant_split_floor(
    p_stable: float, rho1: float, rho0: float, weight: int, alpha: float
) -> float:
    """Canary requests a level-alpha test needs to detect ``rho1`` at a constant split."""
    w = weight / 100.0
    if not 0 < w < 1:
        return math.inf
    per_canary = interval_information(1.0 - w, w, p_stable, rho1, rho0) / w
    return math.inf if per_canary <= 0 else math.log(1.0 / alpha) / per_canary


class RolloutController:
    """Drives one rollout of one policy. Holds the judges; the state holds their evidence."""

    def __init__(self, policy: CanaryPolicy, epoch: datetime | None = None) -> None:
        self.policy = policy
        spec = policy.spec
        self.steps: list[Step] = spec.steps.resolved()
        self.shadow = spec.steps.shadow
        self.mirror_percent = spec.steps.mirror_percent()
        self._mirror_off: float | None = 0.0 if self.shadow is not None else None
        """What every non-shadow action does to the mirror: 0 (off) with a shadow phase."""
        self.epoch = epoch or datetime(1970, 1, 1, tzinfo=UTC)
        self.window = (
            RolloutWindow(spec.window.schedule, spec.window.timezone, self.epoch)
            if spec.window is not None
            else None
        )
        self._panel = JudgePanel(policy)
        self._synced: RolloutState | None = None
        self._confirmation: Confirmation | None = None

    # --- public ------------------------------------------------------------------------
    def new_state(self, stable_revision: str = "", canary_revision: str = "") -> RolloutState:
        return RolloutState(
            stable_revision=stable_revision,
            canary_revision=canary_revision,
            judges=self._fresh_panel_state(),
        )

    @staticmethod
    def changes(state: RolloutState, manual: Manual) -> bool:
        """Whether ``manual`` would change ``state`` (the rules ``step`` applies to it).

        Promote and rollback end any rollout that has not ended; pause acts unless paused;
        resume only on a paused rollout. Nothing changes an ended rollout.
        """
        if state.phase.terminal:
            return False
        if manual in (Manual.PROMOTE, Manual.ROLLBACK):
            return True
        if manual is Manual.PAUSE:
            return state.phase is not Phase.PAUSED
        return state.phase is Phase.PAUSED

    def step(
        self,
        state: RolloutState,
        now: float,
        observation: Observation | None = None,
        manual: Manual | None = None,
        confirmation: Confirmation | None = None,
    ) -> tuple[Decision, RolloutState]:
        """Decide what to do at ``now``. Pure: equal inputs give equal outputs.

        ``confirmation``: the promotion gate's answer, for a policy with
        ``promotion.confirm``; a promotion it has not approved holds (and still rolls back on a
        failing metric). A manual promotion needs no confirmation.
        """
        self._confirmation = confirmation
        try:
            decision, state = self._step(state, now, observation, manual)
        finally:
            self._confirmation = None
        return replace(decision, impact=state.impact), state

    def _step(
        self,
        state: RolloutState,
        now: float,
        observation: Observation | None,
        manual: Manual | None,
    ) -> tuple[Decision, RolloutState]:
        if state.phase.terminal:
            return Decision(Action.HOLD, f"rollout already {state.phase.value}", now), state
        if manual is not None:
            handled = self._manual(state, now, manual)
            if handled is not None:
                return handled
        if state.phase is Phase.PENDING:
            return self._start(state, now)
        if observation is not None:
            observation = observation.validated()  # once: the checks walk every count
        self._sync(state)
        state = self._ingest(state, observation)
        verdicts = tuple(self._panel.verdicts())
        state = state.with_(judges=self._panel.state())
        self._synced = state
        decision, state = self._decide(state, now, observation, assess(verdicts))
        self._synced = state
        return decision, state

    def prime(
        self, state: RolloutState, stable: VersionCounts | None, missing: str = ""
    ) -> RolloutState:
        """``state`` with its judges primed by stable's counts from before the canary.

        ``stable``: stable's counts over the history window that ends where the judges' first
        interval starts (``spec.analysis.history`` long), or None with ``missing`` saying why
        there are none. Done once per evidence (``state.pre_canary_requests`` is set; a state
        that has it is returned as it is). Counts with a problem (a counter reset, NaN) are not
        used, and the note says so: the judges then learn everything from the canary's time.
        """
        if state.pre_canary_requests is not None:
            return state
        why = missing or "none was read"
        if stable is not None:
            why = stable.problem() or ""
        self._sync(state)
        if stable is not None and not why:
            note = self._panel.prime(stable)
            n = stable.requests
        else:
            note, n = f"no stable history before the canary ({why})", 0.0
        new = state.with_(judges=self._panel.state(), pre_canary_requests=n, pre_canary_note=note)
        self._synced = new
        return new

    # --- when the policy or the stored state changes under a running rollout -----------
    def restart_evidence(self, state: RolloutState, now: float, why: str) -> RolloutState:
        """``state`` with fresh judges (the analysis changed): same phase, step and weight.

        The old evidence was gathered under other judges, tolerances or quantiles and means
        nothing under these; the new e-processes start from nothing, at this step.
        """
        new = state.with_(
            judges=self._fresh_panel_state(),
            step_started_at=now,
            step_canary_requests=0.0,
            reason=why,
            pre_canary_requests=None,
            pre_canary_note="",
        )
        self._synced = None
        return new

    def nearest_step(self, weight: int) -> int:
        """The index of the largest step whose weight is at most ``weight`` (0 if none)."""
        best = 0
        for i, s in enumerate(self.steps):
            if s.weight <= weight:
                best = i
        return best

    def adopt_steps(self, state: RolloutState, now: float) -> RolloutState:
        """``state`` moved onto this policy's steps (the steps changed mid-rollout).

        A rollout keeps its step when that step still has its weight; otherwise it goes to the
        largest step at or below its current weight, so traffic never rises because of an
        edit. The caller applies a weight that changed.
        """
        if state.phase not in (Phase.PROGRESSING, Phase.PAUSED) or state.in_shadow:
            return state  # a shadow phase has no step yet: the new steps start after it
        if 0 <= state.step < len(self.steps) and self.steps[state.step].weight == state.weight:
            return state
        i = self.nearest_step(state.weight)
        w = self.steps[i].weight
        reason = f"the policy's steps changed: now step {i + 1} of {len(self.steps)} at {w}%"
        new = state.with_(step=i, step_started_at=now, step_canary_requests=0.0, reason=reason)
        if w != state.weight:
            new = self._record(new, now, w, reason)
        self._synced = None
        return new

    def paused_state(
        self, stable: str, canary: str, weight: int, now: float, reason: str
    ) -> RolloutState:
        """A fresh rollout paused at the step nearest ``weight`` (its stored state was lost)."""
        i = self.nearest_step(weight)
        return self.new_state(stable, canary).with_(
            phase=Phase.PAUSED,
            paused_from=Phase.PROGRESSING,
            step=i,
            weight=self.steps[i].weight,
            started_at=now,
            step_started_at=now,
            last_data_at=now,
            reason=reason,
        )

    # --- internals ---------------------------------------------------------------------
    def _fresh_panel_state(self) -> dict[str, Any]:
        return JudgePanel(self.policy).state()

    def _sync(self, state: RolloutState) -> None:
        if self._synced is not state:
            self._panel = JudgePanel(self.policy)
            self._panel.load_state(state.judges)
            self._synced = state

    def _record(self, state: RolloutState, now: float, weight: int, reason: str) -> RolloutState:
        return state.with_(weight=weight, history=(*state.history, StepRecord(now, weight, reason)))

    def _manual(
        self, state: RolloutState, now: float, manual: Manual
    ) -> tuple[Decision, RolloutState] | None:
        if not self.changes(state, manual):
            return None
        if manual is Manual.ROLLBACK:
            return self._finish(state, now, Phase.ROLLED_BACK, "manual rollback", ())
        if manual is Manual.PROMOTE:
            return self._finish(state, now, Phase.PROMOTED, "manual promotion", ())
        if manual is Manual.PAUSE:
            return self._pause(state, now, "paused by a human", ())
        if manual is Manual.RESUME:
            back = state.paused_from or Phase.PROGRESSING
            new = state.with_(
                phase=back,
                paused_from=None,
                reason="resumed by a human",
                last_data_at=now if state.last_data_at is not None else None,
                step_started_at=now,
            )
            new = self._record(new, now, state.weight, "resumed by a human")
            self._synced = new if self._synced is state else self._synced
            return Decision(Action.HOLD, "resumed by a human", now, event=Reason.RESUMED), new
        return None

    def _start(self, state: RolloutState, now: float) -> tuple[Decision, RolloutState]:
        if self.window is not None and not self.window.is_open(now):
            return Decision(Action.HOLD, "waiting for the rollout window", now), state
        rev = f" (revision {state.canary_revision})" if state.canary_revision else ""
        if self.shadow is not None:
            return self._start_shadow(state, now, rev)
        w = self.steps[0].weight
        reason = f"started the canary at {w}%{rev}"
        new = state.with_(
            phase=Phase.PROGRESSING,
            step=0,
            started_at=now,
            step_started_at=now,
            last_data_at=now,
            step_canary_requests=0.0,
            reason=reason,
        )
        new = self._record(new, now, w, reason)
        return Decision(Action.SET_WEIGHT, reason, now, weight=w, event=Reason.CANARY_STARTED), new

    def _start_shadow(
        self, state: RolloutState, now: float, rev: str
    ) -> tuple[Decision, RolloutState]:
        assert self.shadow is not None
        reason = (
            f"started the shadow phase{rev}: {self.mirror_percent:g}% of requests mirrored to "
            "the canary, its responses discarded, no user traffic"
        )
        new = state.with_(
            phase=Phase.SHADOW,
            step=-1,
            started_at=now,
            step_started_at=now,
            last_data_at=now,
            step_canary_requests=0.0,
            reason=reason,
        )
        new = self._record(new, now, 0, reason)
        return Decision(
            Action.SET_MIRROR,
            reason,
            now,
            weight=0,
            event=Reason.SHADOW_STARTED,
            mirror_percent=self.mirror_percent,
        ), new

    def _ingest(self, state: RolloutState, obs: Observation | None) -> RolloutState:
        if obs is None:
            return state
        why = self._panel.observe(obs)
        if why is not None:
            return state.with_(
                intervals=state.intervals + 1, no_data_intervals=state.no_data_intervals + 1
            )
        assert obs.canary is not None
        c = obs.canary
        if state.in_shadow:
            # Mirrored unless the source shows otherwise (a header route to the canary).
            shadow_req = c.requests if c.mirrored_requests is None else c.mirrored_requests
            shadow_err = c.errors if c.mirrored_errors is None else c.mirrored_errors
        else:
            shadow_req = shadow_err = 0.0  # nothing is mirrored outside the shadow phase
        impact = state.impact.add(
            c.requests - shadow_req, c.errors - shadow_err, shadow_req, shadow_err
        )
        return state.with_(
            intervals=state.intervals + 1,
            last_data_at=obs.end_s,
            canary_requests=state.canary_requests + c.requests,
            canary_errors=state.canary_errors + c.errors,
            step_canary_requests=state.step_canary_requests + c.requests,
            impact=impact,
        )

    def _finish(
        self,
        state: RolloutState,
        now: float,
        phase: Phase,
        reason: str,
        verdicts: tuple[Verdict, ...],
    ) -> tuple[Decision, RolloutState]:
        if phase is Phase.PROMOTED:
            action, weight, event = Action.PROMOTE, 100, Reason.PROMOTED
        else:
            action, weight, event = Action.ROLLBACK, 0, Reason.ROLLED_BACK
        if state.in_shadow and phase is Phase.ROLLED_BACK:
            if state.impact.user_requests == 0:
                reason += "; no user was exposed (shadow: the canary only saw mirrored requests)"
            else:
                reason += (
                    "; in shadow no user was sent to the canary by weight, but "
                    f"{state.impact.user_requests:.0f} user requests reached it by another "
                    "route (a header match?)"
                )
        new = state.with_(phase=phase, reason=reason, decided_at=now, paused_from=None)
        new = self._record(new, now, weight, reason)
        return Decision(
            action,
            reason,
            now,
            weight=weight,
            event=event,
            verdicts=verdicts,
            mirror_percent=self._mirror_off,
        ), new

    def _pause(
        self, state: RolloutState, now: float, reason: str, verdicts: tuple[Verdict, ...]
    ) -> tuple[Decision, RolloutState]:
        """Pause at the current weight; the pause and its reason go into the history."""
        new = state.with_(phase=Phase.PAUSED, paused_from=state.phase, reason=reason)
        shown = reason if reason.startswith("paused") else f"paused: {reason}"
        new = self._record(new, now, state.weight, shown)
        return Decision(Action.PAUSE, reason, now, event=Reason.PAUSED, verdicts=verdicts), new

    def _decide(
        self, state: RolloutState, now: float, obs: Observation | None, a: Assessment
    ) -> tuple[Decision, RolloutState]:
        spec = self.policy.spec
        v = a.verdicts
        # 1. A failing critical metric acts at once, inside or outside the window, paused or not.
        if a.failing:
            where = " in shadow" if state.in_shadow else ""
            reason = f"canary is worse{where}: " + "; ".join(f.summary() for f in a.failing)
            if spec.on_failure == "rollback":
                return self._finish(state, now, Phase.ROLLED_BACK, reason, v)
            if state.phase is not Phase.PAUSED:
                return self._pause(state, now, reason, v)
        if state.phase is Phase.PAUSED:
            return Decision(Action.HOLD, f"paused: {state.reason}", now, verdicts=v), state
        # 2. Missing data is inconclusive; after the timeout the policy decides.
        usable = obs is not None and obs.usable
        since = state.last_data_at if state.last_data_at is not None else state.started_at
        if not usable and since is not None and now - since >= spec.no_data.timeout:
            why = (obs.no_data_reason if obs is not None else None) or "no observation"
            reason = (
                f"no usable metrics for {format_duration(now - since)} "
                f"(noData.timeout {format_duration(spec.no_data.timeout)}): {why}"
            )
            if spec.no_data.action == "rollback":
                return self._finish(state, now, Phase.ROLLED_BACK, reason, v)
            return self._pause(state, now, reason, v)
        if not usable:
            why = (obs.no_data_reason if obs is not None else None) or "no observation"
            return Decision(
                Action.HOLD,
                f"no data this interval: {why}",
                now,
                event=Reason.ANALYSIS_INCONCLUSIVE,
                verdicts=v,
            ), state
        # 3. Bounded duration.
        assert state.started_at is not None
        if now - state.started_at >= spec.promotion.max_duration:
            return self._pause(
                state,
                now,
                f"maxDuration {format_duration(spec.promotion.max_duration)} reached without "
                "promotion",
                v,
            )
        # 4. Outside the window nothing advances (a rollback above still could). The hold that
        # starts a closed window is recorded in the history, with an Event; so is the reopening.
        if self.window is not None:
            closed = _window_closed(state)
            if not self.window.is_open(now):
                if closed:
                    return Decision(Action.HOLD, closed, now, verdicts=v), state
                w = self.policy.spec.window
                assert w is not None
                reason = (
                    f"{WINDOW_CLOSED} ({w.schedule!r}, {w.timezone}): holding at "
                    f"{state.weight}% until it opens"
                )
                state = self._record(state, now, state.weight, reason)
                return Decision(
                    Action.HOLD, reason, now, event=Reason.WINDOW_CLOSED, verdicts=v
                ), state
            if closed:
                state = self._record(
                    state, now, state.weight, f"the rollout window opened; at {state.weight}%"
                )
        if a.inconclusive:
            names = ", ".join(f"{x.metric} ({x.reason})" for x in a.inconclusive)
            return Decision(
                Action.HOLD,
                f"inconclusive: {names}",
                now,
                event=Reason.ANALYSIS_INCONCLUSIVE,
                verdicts=v,
            ), state
        return self._progress(state, now, a)

    def _progress(
        self, state: RolloutState, now: float, a: Assessment
    ) -> tuple[Decision, RolloutState]:
        if state.phase is Phase.SHADOW:
            return self._shadow_progress(state, now, a)
        spec = self.policy.spec
        v = a.verdicts
        cur = self.steps[state.step]
        dwell = now - state.step_started_at
        assert cur.min_dwell is not None and cur.min_canary_requests is not None
        dwell_ok = dwell >= cur.min_dwell
        met = dwell_ok and state.step_canary_requests >= cur.min_canary_requests
        early = dwell_ok and a.all_pass
        last = state.step == len(self.steps) - 1
        if not last:
            if not (met or early):
                return Decision(
                    Action.HOLD, self._waiting(cur, dwell, state), now, verdicts=v
                ), state
            nxt = self.steps[state.step + 1].weight
            why = (
                "non-inferiority shown"
                if early and not met
                else f"step {state.step + 1} met ({format_duration(dwell)}, "
                f"{state.step_canary_requests:.0f} canary requests)"
            )
            reason = f"{why}; canary {cur.weight}% -> {nxt}%"
            new = state.with_(
                step=state.step + 1, step_started_at=now, step_canary_requests=0.0, reason=reason
            )
            new = self._record(new, now, nxt, reason)
            return Decision(
                Action.SET_WEIGHT,
                reason,
                now,
                weight=nxt,
                event=Reason.WEIGHT_CHANGED,
                verdicts=v,
                mirror_percent=self._mirror_off,
            ), new
        if spec.promotion.criterion == "nonInferiority":
            if early:
                return self._promote(
                    state, now, "every critical metric shown no worse than tolerated", v
                )
            return Decision(
                Action.HOLD, "waiting for non-inferiority on every critical metric", now, verdicts=v
            ), state
        if not (met or early):
            return Decision(Action.HOLD, self._waiting(cur, dwell, state), now, verdicts=v), state
        short = self._evidence_shortfall(state, a)
        if short and not early:
            if spec.promotion.on_insufficient_evidence == "pause":
                return self._pause(state, now, short, v)
            return Decision(
                Action.HOLD, short, now, event=Reason.ANALYSIS_INCONCLUSIVE, verdicts=v
            ), state
        if early and not met:
            reason = "every critical metric shown no worse than tolerated"
        else:
            standing, undecided = _standing(a)
            reason = f"all steps completed with {standing}"
            if undecided:
                reason += f"; {undecided}, which promotion.criterion afterSteps does not wait for"
        return self._promote(state, now, reason, v)

    def _promote(
        self, state: RolloutState, now: float, reason: str, verdicts: tuple[Verdict, ...]
    ) -> tuple[Decision, RolloutState]:
        """Promote, unless the policy's gate has not confirmed it: then hold at this step."""
        gate = self._confirmation
        if (
            self.policy.spec.promotion.confirm is not None
            and gate is not None
            and not gate.approved
        ):
            return Decision(
                Action.HOLD,
                f"ready to promote ({reason}); waiting for confirmation: {gate.why}",
                now,
                event=Reason.AWAITING_CONFIRMATION,
                verdicts=verdicts,
            ), state
        return self._finish(state, now, Phase.PROMOTED, reason, verdicts)

    def _shadow_progress(
        self, state: RolloutState, now: float, a: Assessment
    ) -> tuple[Decision, RolloutState]:
        """In shadow: hold until its duration and mirrored requests are met, then step 1.

        The same rule as a step's: the duration must pass, and then either the minimum of
        (mirrored) canary requests is met or every critical metric has shown non-inferiority.
        Failing and inconclusive metrics were handled before (rollback, hold).
        """
        assert self.shadow is not None
        v = a.verdicts
        dwell = now - state.step_started_at
        dwell_ok = dwell >= self.shadow.duration
        met = dwell_ok and state.step_canary_requests >= self.shadow.min_canary_requests
        early = dwell_ok and a.all_pass
        if not (met or early):
            return Decision(
                Action.HOLD,
                f"in shadow: {format_duration(dwell)} of {format_duration(self.shadow.duration)}, "
                f"{state.step_canary_requests:.0f} of {self.shadow.min_canary_requests} mirrored "
                "canary requests",
                now,
                verdicts=v,
            ), state
        w = self.steps[0].weight
        rev = f" (revision {state.canary_revision})" if state.canary_revision else ""
        standing, undecided = _standing(a)
        reason = (
            f"shadow passed ({format_duration(dwell)}, {state.step_canary_requests:.0f} "
            f"mirrored canary requests, {standing}{', ' + undecided if undecided else ''}); "
            f"mirroring off, started the canary at {w}%{rev}"
        )
        new = state.with_(
            phase=Phase.PROGRESSING,
            step=0,
            step_started_at=now,
            step_canary_requests=0.0,
            reason=reason,
        )
        new = self._record(new, now, w, reason)
        return Decision(
            Action.SET_WEIGHT,
            reason,
            now,
            weight=w,
            event=Reason.CANARY_STARTED,
            verdicts=v,
            mirror_percent=0.0,
        ), new

    def _waiting(self, cur: Step, dwell: float, state: RolloutState) -> str:
        assert cur.min_dwell is not None and cur.min_canary_requests is not None
        return (
            f"at {cur.weight}%: {format_duration(dwell)} of "
            f"{format_duration(cur.min_dwell)}, {state.step_canary_requests:.0f} of "
            f"{cur.min_canary_requests} canary requests"
        )

    def _evidence_shortfall(self, state: RolloutState, a: Assessment) -> str:
        """Why the rollout has not seen enough canary requests to detect the policy's MDE."""
        spec = self.policy.spec
        for name, mde in spec.promotion.min_detectable_effect.items():
            metric = next(m for m in spec.analysis.metrics if m.name == name)
            verdict = next((x for x in a.verdicts if x.metric == name), None)
            need = self.required_requests(metric, mde, verdict, self.steps[-1].weight)
            if metric.kind == "quality":
                # Evidence about quality is the labelled predictions, which trail the requests.
                seen = verdict.canary_samples if verdict is not None else 0.0
                if seen < need:
                    return (
                        f"not enough evidence: detecting {name} x{mde:g} needs about "
                        f"{need:.0f} labelled canary predictions, seen {seen:.0f}"
                        f"{self.event_rate_text(metric, verdict)}"
                    )
                continue
            if state.canary_requests < need:
                return (
                    f"not enough evidence: detecting {name} x{mde:g} needs about "
                    f"{need:.0f} canary requests, seen {state.canary_requests:.0f}"
                    f"{self.event_rate_text(metric, verdict)}"
                )
        return ""

    def required_requests(
        self, metric: Metric, mde: float, verdict: Verdict | None, weight: int
    ) -> float:
        """Canary requests needed to detect ``mde`` (the two-sample floor at the final split),
        at the stable event rate ``stable_event_rate`` reads off ``verdict``."""
        p_s = self.stable_event_rate(metric, verdict)
        return evidence_requests(self.policy, metric, mde, weight, p_s)

    @staticmethod
    def stable_event_rate(metric: Metric, verdict: Verdict | None) -> float:
        """Stable's event rate the evidence check assumes: a latency boundary's share (one
        minus the highest quantile), else stable's rate so far with half an event added, or
        ``ASSUMED_EVENT_RATE`` before stable has been seen."""
        if metric.kind in HISTOGRAM_KINDS:
            return 1.0 - max(metric.quantiles)
        if verdict is None:
            return ASSUMED_EVENT_RATE
        errors = verdict.stable_events or 0.0
        return (errors + 0.5) / (verdict.stable_samples + 1.0)

    @staticmethod
    def event_rate_text(metric: Metric, verdict: Verdict | None) -> str:
        """The rate behind ``required_requests``, for a reason (" (stable's error rate so far
        0.093 %)"); "" for a latency boundary, whose share is fixed by its quantile. A run
        whose stable shows fewer events than expected is asked for more requests, so the
        figure is only comparable with ``plan``'s beside the rate it used."""
        if metric.kind in HISTOGRAM_KINDS:
            return ""
        rate = 100.0 * RolloutController.stable_event_rate(metric, verdict)
        if verdict is None:
            return f" (assuming an event rate of {rate:.3g} % until stable is seen)"
        noun = "error rate" if metric.kind == "errors" else "event rate"
        return f" (stable's {noun} so far {rate:.2g} %)"
