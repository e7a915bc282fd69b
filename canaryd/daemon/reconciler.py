"""The reconciler: each tick drives every rollout through its due analysis windows.

Per tick, for each rollout its policy asks for (every read comes from the watch cache):

1. **The model.** The InferenceService (status, ``canaryd.io/action``, uid). ApiGoneError: one
   ``Aborted`` Event, the state is kept.
2. **Own state.** When the stored document's version is not the one this daemon last wrote or
   read (another daemon, a human edit, a deleted ConfigMap, a recreated model), it is adopted
   again: decoded, checked against the policy (``StateDoc.problems_against``), and moved onto an
   edited policy (``_reconcile_policy``). An unusable document is never acted on (Warning Event,
   hold); a document lost while the canary had traffic pauses for a human.
3. **Pending.** A committed router change not yet applied (the daemon died in between) is
   applied again: routers are idempotent and the Event is named by the decision, so it is
   recorded once.
4. **Manual controls.** An annotation acts through the controller when it changes anything
   (``RolloutController.changes``), and is removed either way.
5. **Windows.** The rollout's due windows on the analysis grid (``canaryd.daemon.rollout``) are
   fetched in one batched call per distinct window for all rollouts, and judged in order.

**Durability.** The document is written (with its resourceVersion: a 409 drops the live state
and re-adopts the stored one next tick, nothing is actuated) when, and only when:

- a decision changes the rollout (phase, step or weight, or any router action): **before**
  acting, with the router change as ``pending``; then once more after applying it, clearing
  ``pending`` (so a human's later edit of the weight is never reverted by a stale pending);
- the evidence has not been written for ``checkpoint_every`` windows (a *checkpoint*).

A kill -9 therefore loses at most the evidence of ``checkpoint_every`` windows, and loses
nothing that matters: the restarted daemon judges the windows after the stored ``window_end``
again, from Prometheus, and reaches the same evidence (the windows are the same grid windows,
so the counts are the same). A decision it had taken but not written was never acted on, and is
taken again. At 1,000 rollouts with the default K = 10 that is 100 checkpoint writes per
interval, spread evenly, plus two writes per decision.

Faults are isolated per rollout: an exception is logged with the rollout's key and counted in
``canaryd_reconcile_errors_total``; the other rollouts of the tick proceed.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from canaryd.controller import (
    Action,
    Confirmation,
    Decision,
    Manual,
    Phase,
    RolloutController,
    RolloutState,
)
from canaryd.daemon.manual import ACTION_ANNOTATION, clear_action, parse_manual, requested_action
from canaryd.daemon.metrics import DaemonMetrics
from canaryd.daemon.policies import Refusal, key_of, resolve
from canaryd.daemon.rollout import Rollout, Window, grid_floor
from canaryd.errors import CanarydError, ConflictError, NotFoundError
from canaryd.identity import RolloutKey
from canaryd.kube import CONFIG_MAP, INFERENCE_SERVICE, Objects
from canaryd.kube.events import EventSink
from canaryd.kube.watching import Collection
from canaryd.metrics.source import (
    FetchRequest,
    MetricSource,
    fetch_request_for,
    history_request,
)
from canaryd.notify import Notice, Notifier, PromotionGate, confirm_request, decision_notice
from canaryd.observation import Observation
from canaryd.policy.loader import LoadedPolicy
from canaryd.policy.model import CanaryPolicy
from canaryd.reasons import Reason
from canaryd.routing import TrafficRouter
from canaryd.routing.factory import router_for_policy
from canaryd.state.base import StateStore
from canaryd.state.document import Fingerprint, Pending, StateDoc, decision_key
from canaryd.state.kubernetes import MANAGED_SELECTOR, KubernetesStateStore
from canaryd.stats.verdict import Verdict

log = logging.getLogger("canaryd.daemon")

RouterFactory = Callable[[CanaryPolicy, Objects], TrafficRouter]
_ROUTER_ACTIONS = (Action.SET_WEIGHT, Action.SET_MIRROR, Action.PROMOTE, Action.ROLLBACK)


@dataclass
class TickReport:
    """What one tick did (for tests, ``--once`` and the log)."""

    now: float
    decisions: dict[RolloutKey, Decision] = field(default_factory=dict)
    """The last decision taken for each rollout this tick."""
    history: dict[RolloutKey, list[Decision]] = field(default_factory=dict)
    """Every decision taken for each rollout this tick, in order (catch-up judges several)."""
    errors: dict[RolloutKey, str] = field(default_factory=dict)
    conflicts: list[RolloutKey] = field(default_factory=list)
    skipped: list[RolloutKey] = field(default_factory=list)
    refused: dict[RolloutKey, str] = field(default_factory=dict)
    writes: int = 0

    def add(self, key: RolloutKey, decision: Decision) -> None:
        self.decisions[key] = decision
        self.history.setdefault(key, []).append(decision)


class NotLeaderError(CanarydError):
    """The Lease was lost mid-tick: the tick stops before its next write."""


@dataclass
class _Due:
    rollout: Rollout
    stable: str
    canary: str
    windows: list[Window]
    request: FetchRequest
    history: Window | None = None
    """Stable's history window to read first (``spec.analysis.history`` before the judges'
    first window), while the judges have not been primed."""


def decision_summary(decision: Decision) -> dict[str, Any]:
    return {
        "action": decision.action.value,
        "reason": decision.reason,
        "t": decision.t,
        "weight": decision.weight,
        "event": None if decision.event is None else decision.event.value,
        "verdicts": [v.summary() for v in decision.verdicts],
        "verdict_details": [_compact(v) for v in decision.verdicts],
        "evidence": {
            v.metric: v.e_value
            for v in decision.verdicts
            if v.e_value is not None and math.isfinite(v.e_value)
        },
        "impact": decision.impact.to_dict(),
    }


def _compact(v: Verdict) -> dict[str, Any]:
    """A verdict's structured fields for ``canaryd status -o json`` (the details dict, which
    can hold per-boundary tables, stays out of the stored document)."""
    d = v.to_dict()
    return {k: d[k] for k in _VERDICT_FIELDS if k in d}


_VERDICT_FIELDS = (
    "metric",
    "judge",
    "status",
    "reason",
    "estimate",
    "interval",
    "e_value",
    "p_value",
    "threshold",
    "canary_samples",
    "stable_samples",
    "canary_events",
    "stable_events",
    "critical",
)


def limits_of(policy: CanaryPolicy, settle_s: float) -> dict[str, Any]:
    """The policy's clocks a reader of the document needs (``canaryd status``)."""
    spec = policy.spec
    return {
        "interval": spec.analysis.interval,
        "settle": settle_s,
        "steps": [s.weight for s in spec.steps.resolved()],
        "no_data_timeout": spec.no_data.timeout,
        "no_data_action": spec.no_data.action,
        "max_duration": spec.promotion.max_duration,
    }


def _as_loaded(policies: Iterable[LoadedPolicy | CanaryPolicy]) -> list[LoadedPolicy]:
    return [
        p if isinstance(p, LoadedPolicy) else LoadedPolicy(p, f"<{p.name}>", 0) for p in policies
    ]


class Reconciler:
    """Drives every policy's rollout; see the module docstring."""

    def __init__(
        self,
        policies: Iterable[LoadedPolicy | CanaryPolicy],
        objects: Objects,
        metric_source: MetricSource,
        events: EventSink,
        *,
        store: StateStore | None = None,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
        namespaces: Iterable[str] | None = None,
        cross_namespace: Iterable[tuple[str, str]] = (),
        router_factory: RouterFactory = router_for_policy,
        epoch: datetime | None = None,
        settle_s: float = 0.0,
        max_catchup: int = 20,
        checkpoint_every: int = 10,
        fetch_budget_s: float = 20.0,
        may_write: Callable[[], bool] | None = None,
        notifier: Notifier | None = None,
        gate: PromotionGate | None = None,
        gate_blocking: bool = False,
        source_problem: Callable[[CanaryPolicy], str | None] | None = None,
    ) -> None:
        self.objects = objects
        self.metric_source = metric_source
        self.events = events
        self.store: StateStore = store if store is not None else KubernetesStateStore(objects)
        self.clock = clock
        self.metrics = DaemonMetrics(registry)
        self.namespaces = frozenset(namespaces) if namespaces is not None else None
        self.cross_namespace = frozenset(cross_namespace)
        self._router_factory = router_factory
        self._epoch = epoch
        self.settle_s = settle_s
        self.max_catchup = max(1, max_catchup)
        self.checkpoint_every = max(1, checkpoint_every)
        self.fetch_budget_s = fetch_budget_s
        """Wall time a tick may spend fetching windows beyond the first (see ``_fetch``)."""
        self._may_write = may_write
        self._source_problem = source_problem
        """Why a policy cannot read any Prometheus (such a policy is refused, see ``resolve``)."""
        self.notifier = notifier
        self.gate = gate
        self.gate_blocking = gate_blocking
        """Ask the gate and wait for its answer (``--once``: no later tick would see it)."""
        self._rollouts: dict[RolloutKey, Rollout] = {}
        self._refused: dict[RolloutKey, Refusal] = {}
        self._superseded: dict[RolloutKey, set[str | None]] = {}
        self.last_tick_at: float | None = None
        """``time.monotonic()`` at the end of the last tick (for /healthz)."""
        self.set_policies(policies)

    # -- policies ------------------------------------------------------------------------

    @property
    def policies(self) -> list[CanaryPolicy]:
        return [r.policy for r in self._rollouts.values()]

    @property
    def refused(self) -> dict[RolloutKey, Refusal]:
        return dict(self._refused)

    def set_policies(self, policies: Iterable[LoadedPolicy | CanaryPolicy]) -> None:
        """Replace the policy set. Rollouts whose policy is unchanged keep their live state;
        a changed policy is adopted at the rollout's next tick (``_reconcile_policy``)."""
        res = resolve(
            _as_loaded(policies),
            namespaces=self.namespaces,
            cross_namespace=self.cross_namespace,
            source_problem=self._source_problem,
        )
        rollouts: dict[RolloutKey, Rollout] = {}
        for key, lp in res.active.items():
            old = self._rollouts.get(key)
            if old is not None and old.policy == lp.policy:
                old.loaded = lp
                rollouts[key] = old
                continue
            fresh = Rollout(
                key=key,
                loaded=lp,
                controller=RolloutController(lp.policy, self._epoch),
                router=self._router_factory(lp.policy, self.objects),
                fingerprint=Fingerprint.of(lp.policy),
            )
            if old is not None:  # edited: keep the live state; the next tick adopts the edit
                fresh.doc, fresh.version, fresh.uid = old.doc, old.version, old.uid
                fresh.trusted, fresh.dirty, fresh.pending_done = (
                    old.trusted,
                    old.dirty,
                    old.pending_done,
                )
            rollouts[key] = fresh
        for key in set(self._rollouts) - set(rollouts):
            self.metrics.forget(key)
        self._rollouts = rollouts
        for key in set(self.metrics_refused()) - set(res.refused):
            self.metrics.refused.labels(key.namespace, key.name, self._refused[key].kind).set(0)
        self._refused = res.refused
        for key, refusal in res.refused.items():
            log.error("policy refused", extra={"fields": {"rollout": str(key), "why": refusal.why}})
            self.metrics.refused.labels(key.namespace, key.name, refusal.kind).set(1)

    def metrics_refused(self) -> list[RolloutKey]:
        return list(self._refused)

    def collections(self) -> list[Collection]:
        """What the watch cache must mirror for these policies."""
        out: set[Collection] = set()
        keys = set(self._rollouts) | set(self._refused)
        for key in keys:
            out.add(Collection(INFERENCE_SERVICE, key.namespace))
            out.add(Collection(CONFIG_MAP, key.namespace, MANAGED_SELECTOR, drop_data=True))
        for r in self._rollouts.values():
            try:
                reads = r.router.reads()
            except CanarydError as exc:
                log.warning(
                    "router cannot say what it reads",
                    extra={"fields": {"rollout": str(r.key), "error": str(exc)}},
                )
                continue
            for resource, ns in reads:
                out.add(Collection(resource, ns))
        return sorted(out, key=str)

    def min_interval(self) -> float:
        return min((r.interval for r in self._rollouts.values()), default=60.0)

    # -- the tick ------------------------------------------------------------------------

    def tick(self, now_s: float | None = None) -> TickReport:
        """Advance every rollout through its due windows; act on manual annotations."""
        started = time.monotonic()
        now = self.clock() if now_s is None else now_s
        report = TickReport(now=now)
        self._refuse(report)
        due: list[_Due] = []
        try:
            for key, r in list(self._rollouts.items()):
                try:
                    item = self._prepare(r, now, report)
                except NotLeaderError:
                    raise
                except Exception as exc:
                    self._fault(report, key, exc, "preparing the rollout")
                    continue
                if item is not None:
                    due.append(item)
            histories = self._fetch_histories(due)
            observations = self._fetch(due)
            for item in due:
                key = item.rollout.key
                try:
                    if item.history is not None:
                        self._prime(item.rollout, histories.get(key))
                    self._judge(item, observations, now, report)
                except NotLeaderError:
                    raise
                except Exception as exc:
                    self._fault(report, key, exc, "deciding")
        except NotLeaderError:
            log.warning("lost the Lease mid-tick; stopped before the next write")
        finally:
            elapsed = time.monotonic() - started
            self.metrics.ticks.inc()
            self.metrics.tick_seconds.set(elapsed)
            self.metrics.tick_duration.observe(elapsed)
            self._count_phases()
            self.last_tick_at = time.monotonic()
        return report

    def checkpoint_all(self) -> TickReport:
        """Write every rollout whose evidence is newer than its document (``--once``, and a
        graceful shutdown: nothing judged is lost when the daemon stops on purpose)."""
        report = TickReport(now=self.clock())
        for key, r in list(self._rollouts.items()):
            if r.doc is None or r.dirty == 0 or not r.trusted or r.version == "<conflict>":
                continue
            try:
                self._write(r, "checkpoint", report)
            except NotLeaderError:
                break
            except Exception as exc:
                self._fault(report, key, exc, "writing a checkpoint")
        return report

    def _refuse(self, report: TickReport) -> None:
        for key, refusal in self._refused.items():
            report.refused[key] = refusal.why
            self._event(
                key,
                Reason.POLICY_CONFLICT if refusal.kind == "conflict" else Reason.POLICY_REFUSED,
                refusal.why,
                once=f"refused/{zlib.crc32(refusal.why.encode()):08x}",
            )

    # -- 1-4: prepare ----------------------------------------------------------------------

    def _prepare(self, r: Rollout, now: float, report: TickReport) -> _Due | None:
        key = r.key
        try:
            isvc = self.objects.get(INFERENCE_SERVICE, key.namespace, key.name)
        except NotFoundError as exc:
            self._abort(r, exc)
            self._fault(report, key, exc, "reading the InferenceService")
            return None
        if r.aborted:
            r.aborted = False
            log.info("InferenceService is back", extra={"fields": {"rollout": str(key)}})
        meta = isvc.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        manual_raw = requested_action(isvc)
        # Fast path: nothing moved since a tick that found nothing to do (the common case at
        # 1,000 rollouts and a 5 s tick): the same object, the same stored document, no
        # annotation, and no window due yet.
        seen = (str(meta.get("resourceVersion")), self.store.version(key), r.version)
        if (
            r.quiet == seen
            and manual_raw is None
            and (r.doc is None or not r.due(now, self.settle_s))
        ):
            return None
        r.quiet = None
        self._own_state(r, uid, now)
        if not r.trusted:
            if manual_raw is not None:
                self._ignore(r, manual_raw, "its stored state is not trusted (see StateInvalid)")
            report.skipped.append(key)
            return None
        if r.doc is not None and r.doc.pending is not None and not r.pending_done:
            self._apply_pending(r, report)
        status = r.router.status()
        stable, canary = status.stable_revision, status.canary_revision
        if not stable or not canary or stable == canary:
            if manual_raw is not None:
                self._ignore(r, manual_raw, "no canary revision is rolling out")
            else:
                r.quiet = seen
            report.skipped.append(key)
            return None
        self._ensure_rollout(r, uid, stable, canary, status.canary_percent, now, report)
        if r.doc is None:
            return None
        if r.doc.fingerprint is not None and r.doc.fingerprint != r.fingerprint:
            self._reconcile_policy(r, now, report)
        state = r.doc.state
        if state.phase.terminal:
            self.metrics.observe_state(key, state)
            if manual_raw is not None:
                self._ignore(
                    r,
                    manual_raw,
                    f"the rollout of {canary} is already {state.phase.value}; delete the state "
                    f"ConfigMap {self._state_name(key)} to start it over",
                )
            elif r.doc.pending is None:
                r.quiet = (seen[0], seen[1], r.version)
            report.skipped.append(key)
            return None
        if manual_raw is not None:
            self._manual(r, manual_raw, now, report)
            return None  # the windows are judged at the next tick
        if state.phase is Phase.PENDING:
            self._step(r, None, grid_floor(now, r.interval), None, report)
            return None
        windows = r.due_windows(now, self.settle_s, self.max_catchup)
        if not windows:
            if r.doc.pending is None:
                r.quiet = (seen[0], seen[1], r.version)
            return None
        request = fetch_request_for(
            r.policy, key, stable, canary, key.namespace, shadow=state.in_shadow
        )
        history = None
        lookback = r.policy.spec.analysis.history
        if state.pre_canary_requests is None and lookback > 0:
            history = Window(windows[0].start - lookback, windows[0].start)
        return _Due(r, stable, canary, windows, request, history)

    def _own_state(self, r: Rollout, uid: str, now: float) -> None:
        """Make ``r`` hold the stored document (adopting it again when someone else wrote)."""
        key = r.key
        stored_version = self.store.version(key)
        if r.uid == uid and r.version == stored_version and (r.doc is not None or not r.trusted):
            self._superseded.pop(key, None)
            return
        if r.uid == uid and stored_version in self._superseded.get(key, set()):
            return  # the cache has not caught up with our own write yet
        self._superseded.pop(key, None)
        r.uid, r.version, r.pending_done, r.dirty = uid, stored_version, False, 0
        if stored_version is None:
            r.doc, r.trusted = None, True
            return
        try:
            stored = self.store.load(key)
            if stored is None:
                r.doc, r.version, r.trusted = None, None, True
                return
            doc = StateDoc.from_dict(stored.data)
        except CanarydError as exc:
            self._distrust(r, stored_version, f"cannot be read: {exc}")
            return
        if doc.target_uid and uid and doc.target_uid != uid:
            # The state of a deleted InferenceService of the same name: start over.
            log.info(
                "stored state belongs to an earlier InferenceService of this name",
                extra={"fields": {"rollout": str(key), "stored_uid": doc.target_uid}},
            )
            r.doc, r.trusted = None, True
            return
        problems = doc.problems_against(r.policy)
        if problems:
            self._distrust(r, stored_version, "does not fit the policy: " + "; ".join(problems))
            return
        r.doc, r.trusted = doc, True

    def _distrust(self, r: Rollout, version: str | None, why: str) -> None:
        r.doc, r.trusted = None, False
        message = (
            f"state ConfigMap {r.key.namespace}/{self._state_name(r.key)} {why}. canaryd holds "
            "the canary at its current weight and acts on nothing until the ConfigMap is fixed "
            "or deleted (after a delete it pauses at the cluster's weight for a human)"
        )
        self._event(r.key, Reason.STATE_INVALID, message, once=f"state-invalid/{version}")
        self.metrics.refused.labels(r.key.namespace, r.key.name, "state").set(1)
        log.error("untrusted state", extra={"fields": {"rollout": str(r.key), "why": why}})

    def _ensure_rollout(
        self,
        r: Rollout,
        uid: str,
        stable: str,
        canary: str,
        cluster_percent: int | None,
        now: float,
        report: TickReport,
    ) -> None:
        """A document for the rollout of ``canary``: the stored one, a fresh one, or paused."""
        self.metrics.refused.labels(r.key.namespace, r.key.name, "state").set(0)
        if r.doc is not None and r.doc.state.canary_revision == canary:
            return
        if r.doc is not None:
            log.info(
                "new canary revision: starting a fresh rollout",
                extra={
                    "fields": {
                        "rollout": str(r.key),
                        "previous": r.doc.state.canary_revision,
                        "canary": canary,
                    }
                },
            )
        policy = r.policy
        if self.gate is not None:
            self.gate.forget(r.key.namespace, r.key.name)  # a new revision asks anew
        base = StateDoc(
            state=r.controller.new_state(stable, canary),
            policy=policy.name,
            fingerprint=r.fingerprint,
            target_uid=uid,
            router=policy.spec.router.model_dump(mode="json", by_alias=True, exclude_none=True),
            component=policy.spec.target.component,
        )
        first = r.controller.steps[0].weight
        if r.doc is None and cluster_percent is not None and cluster_percent > first:
            t = grid_floor(now, r.interval)
            why = (
                f"no stored state while canary {canary} has {cluster_percent}% of the traffic "
                "(the state ConfigMap was deleted or lost): paused for a human; resume to go on "
                "with fresh evidence, or roll back"
            )
            state = r.controller.paused_state(stable, canary, cluster_percent, t, why)
            r.doc = replace(base, state=state, window_end=t)
            self._write(r, "adopt", report)
            self._event(r.key, Reason.STATE_LOST, why, once=f"lost/{uid}/{canary}/{r.version}")
            return
        r.doc = base

    def _reconcile_policy(self, r: Rollout, now: float, report: TickReport) -> None:
        """Move a rollout onto its edited policy (defined semantics per changed part)."""
        assert r.doc is not None and r.doc.fingerprint is not None
        changed = r.doc.fingerprint.changes(r.fingerprint)
        state = r.doc.state
        t = grid_floor(now, r.interval)
        if state.phase.terminal or state.phase is Phase.PENDING:
            r.doc = r.with_doc(fingerprint=r.fingerprint, policy=r.policy.name)
            return
        done: list[str] = []
        if "routing" in changed:
            state = state.with_(
                phase=Phase.PAUSED,
                paused_from=state.paused_from or state.phase,
                reason="the policy's router settings changed mid-rollout: paused for a human",
            )
            done.append("router settings changed: paused for a human (resume or roll back)")
        if "judges" in changed:
            state = r.controller.restart_evidence(
                state, t, "the policy's analysis changed: evidence restarted"
            )
            done.append(
                f"analysis (metrics, judges, tolerances or alpha) changed: evidence restarted at "
                f"step {state.step + 1} ({state.weight}%)"
            )
        old_weight = state.weight
        if "steps" in changed:
            state = r.controller.adopt_steps(state, t)
            done.append(
                f"steps changed: at step {state.step + 1} of {len(r.controller.steps)} "
                f"({state.weight}%)"
            )
        message = "policy edited mid-rollout: " + "; ".join(done)
        decision = Decision(
            Action.SET_WEIGHT if state.weight != old_weight else Action.HOLD,
            message,
            t,
            weight=state.weight if state.weight != old_weight else None,
            event=Reason.POLICY_CHANGED,
        )
        r.doc = r.with_doc(fingerprint=r.fingerprint, policy=r.policy.name)
        self._commit(r, decision, state, r.doc.window_end, report)

    # -- manual controls -------------------------------------------------------------------

    def _manual(self, r: Rollout, raw: str, now: float, report: TickReport) -> None:
        assert r.doc is not None
        manual = parse_manual(raw)
        if manual is None:
            self._clear(r, raw)
            self._event(
                r.key,
                Reason.INVALID_ACTION,
                f"ignored {ACTION_ANNOTATION}={raw!r}: expected one of "
                + ", ".join(m.value for m in Manual),
            )
            return
        if not RolloutController.changes(r.doc.state, manual):
            self._clear(r, raw)
            log.info(
                "manual action has no effect",
                extra={
                    "fields": {
                        "rollout": str(r.key),
                        "action": manual.value,
                        "phase": r.doc.state.phase.value,
                    }
                },
            )
            return
        if self._step(r, None, now, manual, report):
            self._clear(r, raw)

    def _ignore(self, r: Rollout, raw: str, why: str) -> None:
        self._clear(r, raw)
        self._event(r.key, Reason.ACTION_IGNORED, f"{ACTION_ANNOTATION}={raw} ignored: {why}")
        log.warning(
            "manual action ignored",
            extra={"fields": {"rollout": str(r.key), "action": raw, "why": why}},
        )

    def _clear(self, r: Rollout, raw: str) -> None:
        self._check_leader()
        clear_action(self.objects, r.key, raw)

    # -- 5: fetch and judge ---------------------------------------------------------------

    def _fetch(self, due: Sequence[_Due]) -> dict[tuple[RolloutKey, Window], Observation]:
        """One batched fetch per distinct window (rollouts of one interval share windows).

        The tick's fetching is bounded by ``fetch_budget_s``: the newest window (the one every
        up-to-date rollout shares) is fetched first, then the catch-up windows oldest first;
        windows left when the budget is spent are fetched at the next tick, so a rollout
        catching up against a slow Prometheus never starves the others.
        """
        groups: dict[Window, list[FetchRequest]] = {}
        for item in due:
            for w in item.windows:
                groups.setdefault(w, []).append(item.request)
        newest = max((w.end for w in groups), default=0.0)
        order = sorted(groups, key=lambda w: (w.end != newest, w.end, w.start))
        started = time.monotonic()
        out: dict[tuple[RolloutKey, Window], Observation] = {}
        for i, w in enumerate(order):
            if i > 0 and time.monotonic() - started > self.fetch_budget_s:
                log.warning(
                    "fetch budget spent; the remaining windows wait for the next tick",
                    extra={"fields": {"windows_left": len(order) - i}},
                )
                break
            requests = groups[w]
            got = self._fetch_batch(requests, w)
            for req in requests:
                assert isinstance(req.key, RolloutKey)
                out[(req.key, w)] = got.get(req.key) or Observation(
                    w.start, w.end, no_data_reason="metric source returned nothing for this rollout"
                )
        return out

    def _fetch_batch(self, requests: list[FetchRequest], w: Window) -> dict[Hashable, Observation]:
        """One batched fetch; a source that raises (the protocol says never) is no data, so a
        bug in it cannot stop the tick."""
        try:
            return self.metric_source.fetch(requests, w.start, w.end)
        except Exception as exc:
            log.exception("metric source raised; treating as no data")
            return {
                r.key: Observation(w.start, w.end, no_data_reason=f"metric source failed: {exc}")
                for r in requests
            }

    def _fetch_histories(self, due: Sequence[_Due]) -> dict[RolloutKey, Observation]:
        """Stable's history of the rollouts whose judges are not primed yet: one batched
        fetch per distinct history window (rollouts that started in the same interval share
        it), stable's counts only (``history_request``). A rollout starts once, so this costs
        a few queries per rollout, not per tick."""
        groups: dict[Window, list[FetchRequest]] = {}
        for item in due:
            if item.history is not None:
                groups.setdefault(item.history, []).append(history_request(item.request))
        out: dict[RolloutKey, Observation] = {}
        for w, requests in groups.items():
            got = self._fetch_batch(requests, w)
            for req in requests:
                assert isinstance(req.key, RolloutKey)
                obs = got.get(req.key)
                if obs is not None:
                    out[req.key] = obs
        return out

    def _prime(self, r: Rollout, obs: Observation | None) -> None:
        """Prime the rollout's judges with stable's history (once per evidence)."""
        assert r.doc is not None
        obs = None if obs is None else obs.validated()
        stable = obs.stable if obs is not None and obs.usable else None
        why = "the metric source returned nothing" if obs is None else (obs.no_data_reason or "")
        state = r.controller.prime(r.doc.state, stable, why)
        r.doc = r.with_doc(state=state)
        r.dirty += 1
        log.info(
            "read stable's history before the canary",
            extra={
                "fields": {
                    "rollout": str(r.key),
                    "stable_requests": state.pre_canary_requests,
                    "note": state.pre_canary_note,
                }
            },
        )

    def _judge(
        self,
        item: _Due,
        observations: dict[tuple[RolloutKey, Window], Observation],
        now: float,
        report: TickReport,
    ) -> None:
        r = item.rollout
        for w in item.windows:
            obs = observations.get((r.key, w))
            if obs is None:
                break  # not fetched this tick (budget): judged in order at the next one
            self.metrics.windows.labels("true" if obs.usable else "false").inc()
            if self._step(r, obs, w.end, None, report, window_end=w.end):
                return  # a committed change: the later windows are judged at the next tick
        if r.dirty and self._checkpoint_due(r):
            self._write(r, "checkpoint", report)

    def _confirmation(self, r: Rollout, state: RolloutState, t: float) -> Confirmation | None:
        """The promotion gate's answer for a rollout at its last step (None: no gate to ask)."""
        confirm = r.policy.spec.promotion.confirm
        last = len(r.controller.steps) - 1
        if confirm is None or state.phase is not Phase.PROGRESSING or state.step != last:
            return None
        if self.gate is None:
            return Confirmation(False, "this daemon has no promotion gate configured")
        req = confirm_request(r.key.namespace, r.key.name, r.policy, state, t)
        if req is None:
            return None
        answer = self.gate.ask(req) if self.gate_blocking else self.gate.approved(req)
        return Confirmation(answer.approved, answer.message)

    def _notify(self, r: Rollout, notice: Notice) -> None:
        if self.notifier is not None:
            self.notifier.notify(r.policy, notice)

    def _decision_notice(self, r: Rollout, decision: Decision, state: RolloutState) -> Notice:
        meta = r.policy.metadata
        return decision_notice(
            r.key.namespace,
            r.key.name,
            r.policy.name,
            decision,
            state,
            labels=meta.labels,
            annotations=meta.annotations,
        )

    def _checkpoint_due(self, r: Rollout) -> bool:
        """Every ``checkpoint_every`` windows, at a phase of the grid that differs by rollout,
        so that 1,000 rollouts write 1/K of their documents per interval, not all at once."""
        assert r.doc is not None and r.doc.window_end is not None
        k = self.checkpoint_every
        index = round(r.doc.window_end / r.interval)
        phase = zlib.crc32(str(r.key).encode()) % k
        return r.dirty >= k or (index + phase) % k == 0

    # -- deciding, committing, acting -------------------------------------------------------

    def _step(
        self,
        r: Rollout,
        obs: Observation | None,
        t: float,
        manual: Manual | None,
        report: TickReport,
        *,
        window_end: float | None = None,
    ) -> bool:
        """One controller step; returns whether it committed a change."""
        assert r.doc is not None
        before = r.doc.state
        decision, state = r.controller.step(
            before, t, obs, manual, self._confirmation(r, before, t)
        )
        self._log_decision(r, decision, state, obs)
        self.metrics.decisions.labels(r.key.namespace, r.key.name, decision.action.value).inc()
        for v in decision.verdicts:
            if v.e_value is not None:
                self.metrics.evidence.labels(r.key.namespace, r.key.name, v.metric).set(v.e_value)
        end = window_end if window_end is not None else r.doc.window_end
        if before.phase is Phase.PENDING and state.phase is not Phase.PENDING:
            end = grid_floor(t, r.interval)  # the first window starts at the grid point
        if _changes(before, state, decision):
            if self._commit(r, decision, state, end, report):
                report.add(r.key, decision)
            return True  # committed or lost to a concurrent writer: the next tick goes on
        report.add(r.key, decision)
        previous = (r.doc.last_decision or {}).get("event")
        r.doc = r.with_doc(state=state, window_end=end, last_decision=decision_summary(decision))
        if window_end is not None:
            r.dirty += 1
        if decision.event is None:
            r.series, r.series_inherited = None, False
        elif r.series is None and previous == decision.event.value:
            # A series a previous daemon (or run) recorded: its Event stands, not again.
            r.series, r.series_inherited = decision.event, True
        elif not (r.series_inherited and r.series is decision.event):
            first = r.series is not decision.event
            r.series, r.series_inherited = decision.event, False
            self._event(r.key, decision.event, _message(decision))
            if first:  # a series is notified once, at its start, as its Event is posted
                self._notify(r, self._decision_notice(r, decision, state))
        self.metrics.observe_state(r.key, state)
        return False

    def _commit(
        self,
        r: Rollout,
        decision: Decision,
        state: RolloutState,
        window_end: float | None,
        report: TickReport,
    ) -> bool:
        """Save the change before acting on it; then act, record its Event, clear pending.

        Returns False when the write lost to a concurrent writer (nothing was acted on)."""
        assert r.doc is not None
        seq = r.doc.seq + 1
        key = decision_key(r.doc.target_uid, state.canary_revision, seq)
        reason = decision.event or _reason_of(decision)
        message = _message(decision)
        pending = None
        if decision.action in _ROUTER_ACTIONS:
            weight = decision.weight if decision.weight is not None else state.weight
            pending = Pending(
                decision.action, weight, key, reason, message, mirror=decision.mirror_percent
            )
        r.doc = r.with_doc(
            state=state,
            window_end=window_end,
            seq=seq,
            pending=pending,
            last_decision=decision_summary(decision),
        )
        if not self._write(r, "decision", report):
            return False
        self.metrics.observe_state(r.key, state)
        if pending is not None:
            self._apply_pending(r, report, self._decision_notice(r, decision, state))
        else:
            self._event(r.key, reason, message, once=key)
            self._notify(r, self._decision_notice(r, decision, state))
        if self.gate is not None and state.phase.terminal:
            self.gate.forget(r.key.namespace, r.key.name)
        return True

    def _apply_pending(self, r: Rollout, report: TickReport, notice: Notice | None = None) -> None:
        """Apply the stored router change, record its Event once, notify it, then clear it.

        After a restart (``notice`` None) the notice is rebuilt from the pending change: a
        receiver sees the same ``id`` again, at least once, never a lost decision."""
        assert r.doc is not None and r.doc.pending is not None
        p = r.doc.pending
        self._check_leader()
        try:
            _actuate(r.router, p)
        except Exception as exc:
            self._event(
                r.key,
                p.reason,
                f"{p.message} (applying it failed, will retry: {exc})",
                once=f"{p.key}/failed",
            )
            raise
        self._event(r.key, p.reason, p.message, once=p.key)
        self._notify(r, notice if notice is not None else self._pending_notice(r, p))
        r.pending_done = True
        r.doc = r.with_doc(pending=None)
        self._write(r, "applied", report)

    def _pending_notice(self, r: Rollout, p: Pending) -> Notice:
        assert r.doc is not None
        st = r.doc.state
        t = st.history[-1].t if st.history else (st.decided_at or 0.0)
        decision = Decision(p.action, p.message, t, weight=p.weight, event=p.reason)
        return self._decision_notice(r, decision, st)

    def _write(self, r: Rollout, why: str, report: TickReport) -> bool:
        """Save ``r.doc`` with optimistic concurrency; False (and the live state dropped) on 409."""
        assert r.doc is not None
        self._check_leader()
        doc = r.with_doc(
            updated=datetime.now(UTC).isoformat(timespec="seconds"),
            limits=limits_of(r.policy, self.settle_s),
        )
        try:
            version = self.store.save(r.key, doc.to_dict(), r.version)
        except ConflictError as exc:
            # Someone else wrote (another daemon, a human): never overwrite, nothing actuated.
            self.metrics.conflicts.labels(r.key.namespace, r.key.name).inc()
            report.conflicts.append(r.key)
            log.warning(
                "state changed concurrently; re-reading at the next tick",
                extra={"fields": {"rollout": str(r.key), "error": str(exc)}},
            )
            r.doc, r.version, r.uid = None, "<conflict>", ""
            return False
        self._superseded.setdefault(r.key, set()).add(r.version)
        r.doc, r.version, r.dirty = doc, version, 0
        if why != "applied":
            r.pending_done = r.doc.pending is None
        report.writes += 1
        self.metrics.state_writes.labels(why).inc()
        return True

    # -- helpers -------------------------------------------------------------------------

    def _check_leader(self) -> None:
        if self._may_write is not None and not self._may_write():
            raise NotLeaderError("not the leader")

    def _event(
        self, key: RolloutKey, reason: Reason, message: str, once: str | None = None
    ) -> None:
        self._check_leader()
        self.events.record(key, reason, message, key=once)

    def _abort(self, r: Rollout, exc: Exception) -> None:
        """An InferenceService gone mid-rollout: one Aborted Event, the state is kept."""
        if r.aborted:
            return
        r.aborted = True
        doc = r.doc
        if doc is None or doc.state.phase.terminal or doc.state.phase is Phase.PENDING:
            return
        st = doc.state
        self._event(
            r.key,
            Reason.ABORTED,
            f"InferenceService {r.key} disappeared during the rollout of {st.canary_revision} "
            f"(phase {st.phase.value}, step {st.step + 1}, {st.weight}%): {exc}; "
            "the rollout state is kept",
            once=f"aborted/{st.canary_revision}/{r.uid}",
        )

    def _fault(self, report: TickReport, key: RolloutKey, exc: Exception, doing: str) -> None:
        report.errors[key] = f"{type(exc).__name__}: {exc}"
        self.metrics.errors.labels(key.namespace, key.name).inc()
        log.error(
            f"error {doing}; other rollouts are unaffected",
            exc_info=not isinstance(exc, CanarydError),
            extra={
                "fields": {"rollout": str(key), "error_type": type(exc).__name__, "error": str(exc)}
            },
        )

    def _state_name(self, key: RolloutKey) -> str:
        name_for = getattr(self.store, "name_for", None)
        return str(name_for(key)) if callable(name_for) else f"canaryd-{key.name}"

    def _count_phases(self) -> None:
        counts = dict.fromkeys(Phase, 0)
        for r in self._rollouts.values():
            if r.doc is not None:
                counts[r.doc.state.phase] += 1
        for ph, n in counts.items():
            self.metrics.rollouts.labels(ph.value).set(n)

    def _log_decision(
        self, r: Rollout, decision: Decision, state: RolloutState, obs: Observation | None
    ) -> None:
        fields: dict[str, Any] = {
            "rollout": str(r.key),
            "policy": r.policy.name,
            "action": decision.action.value,
            "weight": decision.weight,
            "event": None if decision.event is None else decision.event.value,
            "reason": decision.reason,
            "phase": state.phase.value,
            "step": state.step + 1,
            "canary_revision": state.canary_revision,
            "stable_revision": state.stable_revision,
            "t": decision.t,
            "verdicts": [v.summary() for v in decision.verdicts],
            "impact": decision.impact.to_dict(),
        }
        if obs is not None:
            fields["window"] = [obs.start_s, obs.end_s]
            if obs.no_data_reason:
                fields["no_data"] = obs.no_data_reason
        log.info("decision", extra={"fields": fields})


def _actuate(router: TrafficRouter, p: Pending) -> None:
    """Apply a committed router change. Whatever lowers the canary's exposure goes first: the
    weight before a new mirror (a shadow phase's start, a rollback), the mirror off before more
    weight (the first step after a shadow phase, a promotion)."""
    mirror_first = p.mirror is not None and p.action in (Action.SET_WEIGHT, Action.PROMOTE)
    if mirror_first and p.mirror is not None:
        router.set_mirror_percent(p.mirror)
    if p.action in (Action.SET_WEIGHT, Action.SET_MIRROR):
        router.set_canary_percent(p.weight)
    elif p.action is Action.PROMOTE:
        router.promote()
    elif p.action is Action.ROLLBACK:
        router.rollback()
    if not mirror_first and p.mirror is not None:
        router.set_mirror_percent(p.mirror)


def _changes(before: RolloutState, after: RolloutState, decision: Decision) -> bool:
    """Whether a decision changes the rollout (and must be written before it is acted on)."""
    return (
        decision.action is not Action.HOLD
        or before.phase is not after.phase
        or before.step != after.step
        or before.weight != after.weight
    )


def _reason_of(decision: Decision) -> Reason:
    return {
        Action.SET_MIRROR: Reason.SHADOW_STARTED,
        Action.SET_WEIGHT: Reason.WEIGHT_CHANGED,
        Action.PROMOTE: Reason.PROMOTED,
        Action.ROLLBACK: Reason.ROLLED_BACK,
        Action.PAUSE: Reason.PAUSED,
    }.get(decision.action, Reason.RESUMED)


def _message(decision: Decision) -> str:
    message = decision.reason
    extra = [s for s in (v.summary() for v in decision.verdicts) if s not in message]
    if extra:
        message = f"{message} | {'; '.join(extra)}"
    return f"{message} | {decision.impact.summary()}"


__all__ = ["NotLeaderError", "Reconciler", "TickReport", "decision_summary", "key_of"]
