"""The reconciler: one ``tick`` drives every due rollout one analysis interval forward.

Per tick:

1. **Manual controls.** One LIST of InferenceServices per watched namespace reads the
   ``canaryd.io/action`` annotations (promote|rollback|pause|resume), so a human's command is
   acted on at the next tick even when the policy's interval is not due.
2. **Prepare** each policy that is due (or has an annotation): read the router's status
   (stable = latestRolledoutRevision, canary = latestReadyRevision); no canary → nothing to do.
   Load the state document from the StateStore. A canary revision other than the stored one
   starts a fresh rollout; a stored *terminal* state for this revision (rolled back, promoted,
   failed) holds: a rolled-back revision is never retried automatically.
3. **Fetch** the observations of every prepared rollout in one batched
   ``MetricSource.fetch`` per distinct analysis interval (usually one call per tick). The window
   is ``[window_end, now)`` where ``window_end`` is stored with the state, so a restarted daemon
   neither counts an interval twice nor skips one; a stale ``window_end`` (more than
   ``max_catchup`` intervals ago) is replaced by ``now - interval``.
4. **Decide and act**: ``controller.step`` → save the state with ``expected_version`` (the
   commit point; a ``ConflictError`` means someone else wrote: nothing is actuated, the next tick
   re-reads) → remove the handled annotation → apply the decision through the router → Event,
   JSON log line and Prometheus metrics.

The decision's router action is saved as ``pending`` in the document *before* it is applied, and
re-applied (routers are idempotent: an already-applied change writes nothing) at the start of
the rollout's next tick, so a router failure after the commit is retried rather than lost.

Faults are isolated per rollout: any exception (InferenceService deleted, RoutingError, API 5xx,
a corrupt state document) is logged with the rollout's key and counted in
``canaryd_reconcile_errors_total``; the other rollouts of the same tick proceed. An
InferenceService deleted mid-rollout gets one ``Aborted`` Event and its state is kept.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge

from canaryd.controller import Action, Decision, Manual, Phase, RolloutController, RolloutState
from canaryd.errors import CanarydError, ConflictError, NotFoundError
from canaryd.events import EventSink
from canaryd.kube import INFERENCE_SERVICE, JSON, custom_objects, translate, update_custom_object
from canaryd.metrics.source import FetchRequest, MetricSource, fetch_request_for
from canaryd.observation import Observation
from canaryd.policy.model import CanaryPolicy
from canaryd.reasons import Reason
from canaryd.routing import TrafficRouter
from canaryd.routing.factory import router_for_policy
from canaryd.state.base import RolloutKey, StateStore

log = logging.getLogger("canaryd.daemon")

ACTION_ANNOTATION = "canaryd.io/action"
DOC_VERSION = 1

RouterFactory = Callable[[CanaryPolicy, k8s.ApiClient], TrafficRouter]


def key_of(policy: CanaryPolicy) -> RolloutKey:
    return RolloutKey(policy.spec.target.namespace, policy.spec.target.inference_service)


def parse_manual(value: str) -> Manual | None:
    try:
        return Manual(value.strip().lower())
    except ValueError:
        return None


def manual_acts(state: RolloutState, manual: Manual) -> bool:
    """Whether ``manual`` changes a non-terminal ``state`` (mirrors the controller's rules)."""
    if manual in (Manual.PROMOTE, Manual.ROLLBACK):
        return True
    if manual is Manual.PAUSE:
        return state.phase is not Phase.PAUSED
    return state.phase is Phase.PAUSED


# -- the state document --------------------------------------------------------------------


@dataclass
class StateDoc:
    """What the daemon keeps per rollout in the StateStore (``data["state.json"]``)."""

    state: RolloutState
    policy: str = ""
    router: dict[str, Any] = field(default_factory=dict)
    component: str = "predictor"
    window_end: float | None = None
    pending: dict[str, Any] | None = None
    last_decision: dict[str, Any] | None = None
    updated: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": DOC_VERSION,
            "policy": self.policy,
            "router": self.router,
            "component": self.component,
            "state": self.state.to_dict(),
            "window_end": self.window_end,
            "pending": self.pending,
            "last_decision": self.last_decision,
            "updated": self.updated,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StateDoc:
        if d.get("version") != DOC_VERSION or not isinstance(d.get("state"), dict):
            raise CanarydError(f"unsupported canaryd state document (version {d.get('version')!r})")
        try:
            state = RolloutState.from_dict(d["state"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CanarydError(f"corrupt rollout state: {exc}") from exc
        we = d.get("window_end")
        return cls(
            state=state,
            policy=str(d.get("policy", "")),
            router=dict(d.get("router") or {}),
            component=str(d.get("component") or "predictor"),
            window_end=float(we) if we is not None else None,
            pending=d.get("pending"),
            last_decision=d.get("last_decision"),
            updated=str(d.get("updated", "")),
        )


def decision_summary(decision: Decision) -> dict[str, Any]:
    return {
        "action": decision.action.value,
        "reason": decision.reason,
        "t": decision.t,
        "weight": decision.weight,
        "event": decision.event,
        "verdicts": [v.summary() for v in decision.verdicts],
        "evidence": {
            v.metric: v.e_value
            for v in decision.verdicts
            if v.e_value is not None and math.isfinite(v.e_value)
        },
    }


# -- metrics ------------------------------------------------------------------------------


class DaemonMetrics:
    """The daemon's Prometheus metrics, in their own registry (tests stay isolated)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "canaryd_decisions_total",
            "Controller decisions taken, by action.",
            ["namespace", "name", "action"],
            registry=r,
        )
        self.weight = Gauge(
            "canaryd_canary_weight",
            "The canary's traffic percent as canaryd last set it.",
            ["namespace", "name"],
            registry=r,
        )
        self.evidence = Gauge(
            "canaryd_evidence",
            "The sequential judge's e-value per metric (rollback at 1/alpha).",
            ["namespace", "name", "metric"],
            registry=r,
        )
        self.phase = Gauge(
            "canaryd_rollout_phase",
            "1 for the rollout's current phase, 0 for the others.",
            ["namespace", "name", "phase"],
            registry=r,
        )
        self.errors = Counter(
            "canaryd_reconcile_errors_total",
            "Rollouts whose reconciliation failed in a tick (the others were unaffected).",
            ["namespace", "name"],
            registry=r,
        )
        self.conflicts = Counter(
            "canaryd_state_conflicts_total",
            "State writes that lost to a concurrent writer (re-read at the next tick).",
            ["namespace", "name"],
            registry=r,
        )
        self.ticks = Counter("canaryd_ticks_total", "Reconcile ticks run.", registry=r)
        self.tick_seconds = Gauge(
            "canaryd_last_tick_duration_seconds", "Duration of the last tick.", registry=r
        )

    def observe_state(self, key: RolloutKey, state: RolloutState) -> None:
        for ph in Phase:
            self.phase.labels(key.namespace, key.name, ph.value).set(
                1.0 if ph is state.phase else 0.0
            )
        weight = state.weight
        if state.phase is Phase.PROMOTED:
            weight = 100
        elif state.phase is Phase.ROLLED_BACK:
            weight = 0
        self.weight.labels(key.namespace, key.name).set(weight)


# -- the reconciler -------------------------------------------------------------------------


@dataclass
class _Entry:
    policy: CanaryPolicy
    key: RolloutKey
    controller: RolloutController
    router: TrafficRouter


@dataclass
class _Work:
    entry: _Entry
    state: RolloutState
    version: str | None
    manual: Manual | None
    manual_raw: str | None
    request: FetchRequest | None
    start_s: float
    window_end: float | None
    previous_event: str = ""
    """The Event reason of the rollout's last decision (to report a run of no-data once)."""


@dataclass
class TickReport:
    """What one tick did (for tests, ``--once`` and the log)."""

    now: float
    decisions: dict[RolloutKey, Decision] = field(default_factory=dict)
    errors: dict[RolloutKey, str] = field(default_factory=dict)
    conflicts: list[RolloutKey] = field(default_factory=list)
    skipped: list[RolloutKey] = field(default_factory=list)


class Reconciler:
    """Drives every policy's rollout; see the module docstring."""

    def __init__(
        self,
        policies: Iterable[CanaryPolicy],
        api_client: k8s.ApiClient,
        metric_source: MetricSource,
        state_store: StateStore,
        events: EventSink,
        clock: Callable[[], float] = time.time,
        *,
        registry: CollectorRegistry | None = None,
        namespaces: Iterable[str] | None = None,
        router_factory: RouterFactory = router_for_policy,
        epoch: datetime | None = None,
        due_slack_s: float = 2.5,
        max_catchup: float = 10.0,
    ) -> None:
        self._api = api_client
        self._custom = custom_objects(api_client)
        self.metric_source = metric_source
        self.store = state_store
        self.events = events
        self.clock = clock
        self.metrics = DaemonMetrics(registry)
        self.namespaces = frozenset(namespaces) if namespaces is not None else None
        self._router_factory = router_factory
        self._epoch = epoch
        self.due_slack_s = due_slack_s
        self.max_catchup = max_catchup
        self._entries: dict[RolloutKey, _Entry] = {}
        self._next_due: dict[RolloutKey, float] = {}
        self._aborted: set[RolloutKey] = set()
        self.last_tick_at: float | None = None
        """``time.monotonic()`` at the end of the last tick (for /healthz)."""
        self.set_policies(policies)

    # -- policies ------------------------------------------------------------------------

    @property
    def policies(self) -> list[CanaryPolicy]:
        return [e.policy for e in self._entries.values()]

    def set_policies(self, policies: Iterable[CanaryPolicy]) -> None:
        """Replace the policy set. Unchanged policies keep their controller and router."""
        entries: dict[RolloutKey, _Entry] = {}
        for policy in policies:
            key = key_of(policy)
            if self.namespaces is not None and key.namespace not in self.namespaces:
                log.warning(
                    "policy targets a namespace canaryd does not watch; ignored",
                    extra={"fields": {"policy": policy.name, "rollout": str(key)}},
                )
                continue
            if key in entries:
                log.error(
                    "two policies target the same InferenceService; keeping the first",
                    extra={
                        "fields": {
                            "rollout": str(key),
                            "kept": entries[key].policy.name,
                            "ignored": policy.name,
                        }
                    },
                )
                continue
            old = self._entries.get(key)
            if old is not None and old.policy == policy:
                entries[key] = old
                continue
            entries[key] = _Entry(
                policy=policy,
                key=key,
                controller=RolloutController(policy, self._epoch),
                router=self._router_factory(policy, self._api),
            )
        self._entries = entries
        self._next_due = {k: v for k, v in self._next_due.items() if k in entries}

    def min_interval(self) -> float:
        return min((e.policy.spec.analysis.interval for e in self._entries.values()), default=60.0)

    # -- the tick ------------------------------------------------------------------------

    def tick(self, now_s: float | None = None, *, force: bool = False) -> TickReport:
        """Advance every due rollout (every rollout with ``force``) by one interval."""
        started = time.monotonic()
        now = self.clock() if now_s is None else now_s
        report = TickReport(now=now)
        annotations, failed_ns = self._read_annotations()
        work: list[_Work] = []
        for key, entry in list(self._entries.items()):
            if key.namespace in failed_ns:
                self._fault(report, key, failed_ns[key.namespace], "listing InferenceServices")
                continue
            try:
                item = self._prepare(entry, now, annotations.get(key), force, report)
            except Exception as exc:
                self._on_prepare_error(report, entry, now, exc)
                continue
            if item is not None:
                work.append(item)
        observations = self._fetch(work, now)
        for item in work:
            try:
                self._decide(item, observations.get(item.entry.key), now, report)
            except Exception as exc:
                self._fault(report, item.entry.key, exc, "acting on the decision")
        self.metrics.ticks.inc()
        self.metrics.tick_seconds.set(time.monotonic() - started)
        self.last_tick_at = time.monotonic()
        return report

    # -- steps of a tick -----------------------------------------------------------------

    def _read_annotations(self) -> tuple[dict[RolloutKey, str], dict[str, Exception]]:
        """``canaryd.io/action`` per InferenceService, one LIST per namespace with a policy."""
        found: dict[RolloutKey, str] = {}
        failed: dict[str, Exception] = {}
        res = INFERENCE_SERVICE
        for ns in sorted({k.namespace for k in self._entries}):
            try:
                listing = self._custom.list_namespaced_custom_object(
                    res.group, res.version, ns, res.plural
                )
            except ApiException as err:
                failed[ns] = translate(err, f"InferenceServices in {ns}")
                continue
            except Exception as exc:  # connection refused, timeouts: isolate per namespace
                failed[ns] = exc
                continue
            items = listing.get("items", []) if isinstance(listing, dict) else []
            for obj in items:
                meta = obj.get("metadata") or {}
                value = (meta.get("annotations") or {}).get(ACTION_ANNOTATION)
                if value is not None:
                    found[RolloutKey(ns, str(meta.get("name")))] = str(value)
        return found, failed

    def _prepare(
        self,
        entry: _Entry,
        now: float,
        manual_raw: str | None,
        force: bool,
        report: TickReport,
    ) -> _Work | None:
        key, policy = entry.key, entry.policy
        interval = policy.spec.analysis.interval
        known_due = self._next_due.get(key)
        if (
            not force
            and manual_raw is None
            and known_due is not None
            and now < known_due - self.due_slack_s
        ):
            return None
        status = entry.router.status()
        if key in self._aborted:
            self._aborted.discard(key)
            log.info("InferenceService is back", extra={"fields": {"rollout": str(key)}})
        stable, canary = status.stable_revision, status.canary_revision
        if not stable or not canary or stable == canary:
            self._next_due[key] = now + interval
            if manual_raw is not None:
                self._drop_annotation(key, manual_raw)
                self._ignored(key, manual_raw, "no canary revision is rolling out")
            report.skipped.append(key)
            return None
        manual: Manual | None = None
        if manual_raw is not None:
            manual = parse_manual(manual_raw)
            if manual is None:
                self._drop_annotation(key, manual_raw)
                self.events.record(
                    key,
                    Reason.INVALID_ACTION,
                    f"ignored {ACTION_ANNOTATION}={manual_raw!r}: expected one of "
                    + ", ".join(m.value for m in Manual),
                    "Warning",
                )
                log.warning(
                    "invalid manual action ignored",
                    extra={"fields": {"rollout": str(key), "value": manual_raw}},
                )
        stored = self.store.load(key)
        doc = StateDoc.from_dict(stored.data) if stored is not None else None
        version = stored.version if stored is not None else None
        previous = ""
        if doc is None or doc.state.canary_revision != canary:
            state = entry.controller.new_state(stable, canary)
            window_end: float | None = None
            if doc is not None:
                log.info(
                    "new canary revision: starting a fresh rollout",
                    extra={
                        "fields": {
                            "rollout": str(key),
                            "previous": doc.state.canary_revision,
                            "canary": canary,
                        }
                    },
                )
        else:
            state, window_end = doc.state, doc.window_end
            previous = str((doc.last_decision or {}).get("event") or "")
            if doc.pending:
                self._apply(entry.router, doc.pending)
            if state.phase.terminal:
                self._next_due[key] = now + interval
                self.metrics.observe_state(key, state)
                if manual is not None:
                    self._drop_annotation(key, manual_raw or "")
                    self._ignored(
                        key,
                        manual.value,
                        f"the rollout of {canary} is already {state.phase.value}; delete "
                        f"the state ConfigMap to start it over",
                    )
                if doc.pending:
                    doc.pending = None
                    try:
                        self.store.save(key, doc.to_dict(), version)
                    except ConflictError:
                        self._next_due.pop(key, None)
                report.skipped.append(key)
                return None
        due = (
            force
            or window_end is None
            or state.phase is Phase.PENDING
            or now >= window_end + interval - self.due_slack_s
        )
        if not due:
            self._next_due[key] = window_end + interval if window_end is not None else now
            if manual is None:
                return None
            if not manual_acts(state, manual):
                self._drop_annotation(key, manual_raw or "")
                log.info(
                    "manual action has no effect",
                    extra={
                        "fields": {
                            "rollout": str(key),
                            "action": manual.value,
                            "phase": state.phase.value,
                        }
                    },
                )
                return None
            # Acted on now, between intervals: no observation, the window stays open.
            return _Work(entry, state, version, manual, manual_raw, None, now, window_end, previous)
        start = now - interval
        if window_end is not None and 0 <= now - window_end <= self.max_catchup * interval:
            start = window_end
        request = None
        if state.phase is not Phase.PENDING and start < now:
            request = fetch_request_for(policy, key, stable, canary, key.namespace)
        return _Work(entry, state, version, manual, manual_raw, request, start, now, previous)

    def _fetch(self, work: Sequence[_Work], now: float) -> dict[Hashable, Observation]:
        """One batched fetch per distinct window (the same interval → the same call)."""
        groups: dict[float, list[_Work]] = {}
        for w in work:
            if w.request is not None:
                groups.setdefault(w.start_s, []).append(w)
        out: dict[Hashable, Observation] = {}
        for start, items in groups.items():
            requests = [w.request for w in items if w.request is not None]
            try:
                got = self.metric_source.fetch(requests, start, now)
            except Exception as exc:  # the protocol says never; a bug must not stop the tick
                log.exception("metric source raised; treating as no data")
                got = {
                    r.key: Observation(start, now, no_data_reason=f"metric source failed: {exc}")
                    for r in requests
                }
            for r in requests:
                out[r.key] = got.get(r.key) or Observation(
                    start, now, no_data_reason="metric source returned nothing for this rollout"
                )
        return out

    def _decide(
        self, item: _Work, observation: Observation | None, now: float, report: TickReport
    ) -> None:
        entry, key = item.entry, item.entry.key
        policy = entry.policy
        decision, state = entry.controller.step(item.state, now, observation, item.manual)
        pending = _pending_of(decision)
        doc = StateDoc(
            state=state,
            policy=policy.name,
            router=policy.spec.router.model_dump(mode="json", by_alias=True, exclude_none=True),
            component=policy.spec.target.component,
            window_end=item.window_end,
            pending=pending,
            last_decision=decision_summary(decision),
            updated=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            self.store.save(key, doc.to_dict(), item.version)
        except ConflictError as exc:
            # Someone else wrote (another daemon, a human): never overwrite, nothing actuated.
            self._next_due.pop(key, None)
            self.metrics.conflicts.labels(key.namespace, key.name).inc()
            report.conflicts.append(key)
            log.warning(
                "state changed concurrently; re-reading at the next tick",
                extra={"fields": {"rollout": str(key), "error": str(exc)}},
            )
            return
        interval = policy.spec.analysis.interval
        self._next_due[key] = (item.window_end if item.window_end is not None else now) + interval
        if item.manual_raw is not None:
            self._drop_annotation(key, item.manual_raw)
        failure: Exception | None = None
        if pending is not None:
            try:
                self._apply(entry.router, pending)
            except Exception as exc:
                failure = exc
        report.decisions[key] = decision
        message = decision.reason
        extra = [s for s in (v.summary() for v in decision.verdicts) if s not in message]
        if extra:
            message = f"{message} | {'; '.join(extra)}"
        if failure is not None:
            message += f" (applying it failed, will retry: {failure})"
        repeat = decision.event == item.previous_event == Reason.ANALYSIS_INCONCLUSIVE
        if decision.event and not repeat:
            # A run of inconclusive intervals is one Event (its start), not one a minute;
            # the log line and the metrics still record every interval.
            self.events.record(key, decision.event, message)
        self._log_decision(key, policy, decision, state, observation, failure)
        self.metrics.decisions.labels(key.namespace, key.name, decision.action.value).inc()
        self.metrics.observe_state(key, state)
        for v in decision.verdicts:
            if v.e_value is not None:
                self.metrics.evidence.labels(key.namespace, key.name, v.metric).set(v.e_value)
        if failure is not None:
            raise failure

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _apply(router: TrafficRouter, pending: dict[str, Any]) -> None:
        action = pending.get("action")
        if action == Action.SET_WEIGHT.value:
            router.set_canary_percent(int(pending["weight"]))
        elif action == Action.PROMOTE.value:
            router.promote()
        elif action == Action.ROLLBACK.value:
            router.rollback()

    def _drop_annotation(self, key: RolloutKey, value: str) -> None:
        """Remove ``canaryd.io/action`` if it still holds ``value`` (merge patch + rv)."""

        def mutate(obj: JSON) -> JSON:
            ann = (obj.get("metadata") or {}).get("annotations") or {}
            if ann.get(ACTION_ANNOTATION) == value:
                del ann[ACTION_ANNOTATION]
            return obj

        with contextlib.suppress(NotFoundError):
            update_custom_object(self._custom, INFERENCE_SERVICE, key.namespace, key.name, mutate)

    def _ignored(self, key: RolloutKey, action: str, why: str) -> None:
        self.events.record(
            key, Reason.ACTION_IGNORED, f"{ACTION_ANNOTATION}={action} ignored: {why}", "Warning"
        )
        log.warning(
            "manual action ignored",
            extra={"fields": {"rollout": str(key), "action": action, "why": why}},
        )

    def _on_prepare_error(
        self, report: TickReport, entry: _Entry, now: float, exc: Exception
    ) -> None:
        key = entry.key
        if isinstance(exc, NotFoundError):
            self._next_due[key] = now + entry.policy.spec.analysis.interval
            if key not in self._aborted:
                self._aborted.add(key)
                self._abort(key, exc)
        self._fault(report, key, exc, "preparing the rollout")

    def _abort(self, key: RolloutKey, exc: Exception) -> None:
        """An InferenceService gone mid-rollout: one Aborted Event, the state is kept."""
        try:
            stored = self.store.load(key)
        except Exception:
            stored = None
        if stored is None:
            return
        try:
            state = StateDoc.from_dict(stored.data).state
        except CanarydError:
            return
        if state.phase.terminal:
            return
        self.events.record(
            key,
            Reason.ABORTED,
            f"InferenceService {key} disappeared during the rollout of {state.canary_revision} "
            f"(phase {state.phase.value}, step {state.step}, {state.weight}%): {exc}; "
            "the rollout state is kept",
        )

    def _fault(self, report: TickReport, key: RolloutKey, exc: Exception, doing: str) -> None:
        report.errors[key] = f"{type(exc).__name__}: {exc}"
        self.metrics.errors.labels(key.namespace, key.name).inc()
        log.error(
            f"error {doing}; other rollouts are unaffected",
            exc_info=not isinstance(exc, CanarydError),
            extra={
                "fields": {
                    "rollout": str(key),
                    "error_type": type(exc).__name__,
                    "error": str(exc),
                }
            },
        )

    def _log_decision(
        self,
        key: RolloutKey,
        policy: CanaryPolicy,
        decision: Decision,
        state: RolloutState,
        observation: Observation | None,
        failure: Exception | None,
    ) -> None:
        fields: dict[str, Any] = {
            "rollout": str(key),
            "policy": policy.name,
            "action": decision.action.value,
            "weight": decision.weight,
            "event": decision.event,
            "reason": decision.reason,
            "phase": state.phase.value,
            "step": state.step,
            "canary_revision": state.canary_revision,
            "stable_revision": state.stable_revision,
            "t": decision.t,
            "verdicts": [v.summary() for v in decision.verdicts],
        }
        if observation is not None:
            fields["window"] = [observation.start_s, observation.end_s]
            if observation.no_data_reason:
                fields["no_data"] = observation.no_data_reason
        if failure is not None:
            fields["apply_error"] = str(failure)
        log.info("decision", extra={"fields": fields})


def _pending_of(decision: Decision) -> dict[str, Any] | None:
    if decision.action in (Action.SET_WEIGHT, Action.PROMOTE, Action.ROLLBACK):
        return {"action": decision.action.value, "weight": decision.weight}
    return None
