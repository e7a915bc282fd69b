"""The promotion gate: ``spec.promotion.confirm``, a webhook that must approve a promotion.

As Flagger's confirm-promotion: canaryd POSTs the rollout (a ``ConfirmPromotion`` notice, the
notification schema) to the webhook; **any 2xx approves**; any other status, a timeout, a
connection failure, a refused redirect or an unreadable URL does not. While not approved, the
rollout holds at its last step (and still rolls back on a failing metric: the gate is asked
only for a promotion).

``PromotionGate.approved(request)`` never blocks: it returns the latest answer for this
rollout and canary revision, and starts a new ask in the background when none is in flight and
the last one is older than ``request.recheck_s`` (the policy's analysis interval). So the
first call returns ``WAITING``, and a later tick sees ``APPROVED`` or ``DENIED``. An approval is
good for ``recheck_s`` after it arrived; an older one is asked again. ``ask`` is the blocking
form (bounded by the webhook's timeout) for ``canaryd run --once``.

``canaryd_promotion_gate_checks_total{result}`` counts the asks: ``approved``, ``denied``
(a non-2xx answer), ``error`` (no answer: timeout, connection, redirect, configuration).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter

from canaryd import outbound
from canaryd.controller import RolloutState
from canaryd.notify.endpoint import EndpointResolver, describe
from canaryd.notify.notifier import Send, post_json
from canaryd.notify.payload import Notice, render
from canaryd.outbound import OutboundError
from canaryd.policy.model import CanaryPolicy, Confirm
from canaryd.reasons import Reason

log = logging.getLogger(__name__)


class GateStatus(StrEnum):
    APPROVED = "approved"
    WAITING = "waiting"
    """Asked, no answer yet (or never asked)."""
    DENIED = "denied"
    """The last ask did not approve (non-2xx, timeout, error); it is asked again later."""


@dataclass(frozen=True)
class GateAnswer:
    status: GateStatus
    message: str
    """Why, for the decision's reason and the Event (no secret, no response body verbatim)."""
    answered_at: float | None = None
    """``time.monotonic()`` of the answer (None while waiting)."""
    event: Reason = Reason.AWAITING_CONFIRMATION
    """The Event reason while the rollout holds for the gate."""

    @property
    def approved(self) -> bool:
        return self.status is GateStatus.APPROVED


@dataclass(frozen=True)
class GateRequest:
    """What the gate is asked about: a rollout ready to promote."""

    confirm: Confirm
    notice: Notice
    """The ``ConfirmPromotion`` notice POSTed to the webhook."""
    recheck_s: float = 60.0
    """How often to ask again while not approved, and how long an approval is good for."""

    @property
    def key(self) -> tuple[str, str, str]:
        n = self.notice
        return (n.namespace, n.name, n.canary_revision)


def confirm_request(
    namespace: str, name: str, policy: CanaryPolicy, state: RolloutState, t: float
) -> GateRequest | None:
    """The gate request for a rollout about to promote (None: its policy has no gate)."""
    confirm = policy.spec.promotion.confirm
    if confirm is None:
        return None
    notice = Notice(
        kind="ConfirmPromotion",
        namespace=namespace,
        name=name,
        policy=policy.name,
        stable_revision=state.stable_revision,
        canary_revision=state.canary_revision,
        action="promote",
        reason=Reason.AWAITING_CONFIRMATION,
        message=f"ready to promote {state.canary_revision} from {state.weight}%; waiting for "
        f"{describe(confirm)} to confirm",
        weight=state.weight,
        phase=state.phase.value,
        step=state.step,
        t=t,
        labels=dict(policy.metadata.labels),
        annotations=dict(policy.metadata.annotations),
    )
    return GateRequest(confirm, notice, policy.spec.analysis.interval)


@dataclass
class _Slot:
    answer: GateAnswer | None = None
    asked_at: float | None = None
    in_flight: bool = False
    future: concurrent.futures.Future[GateAnswer] | None = field(default=None, repr=False)


class PromotionGate:
    """Non-blocking confirm-promotion client (see the module docstring)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        resolver: EndpointResolver | None = None,
        send: Send = post_json,
        clock: Callable[[], float] = time.monotonic,
        max_parallel: int = 4,
    ) -> None:
        self.resolver = resolver if resolver is not None else EndpointResolver()
        self._send = send
        self._clock = clock
        self._slots: dict[tuple[str, str, str], _Slot] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, max_parallel), thread_name_prefix="canaryd-gate"
        )
        self._checks = Counter(
            "canaryd_promotion_gate_checks",
            "Promotion gate asks by result: approved, denied (non-2xx), error (no answer).",
            ["result"],
            registry=registry,
        )
        for r in ("approved", "denied", "error"):
            self._checks.labels(r)

    def approved(self, request: GateRequest) -> GateAnswer:
        """The latest answer for ``request``'s rollout; starts an ask when one is due."""
        now = self._clock()
        with self._lock:
            slot = self._slots.setdefault(request.key, _Slot())
            if slot.in_flight:
                return slot.answer or GateAnswer(
                    GateStatus.WAITING, f"waiting for {describe(request.confirm)} to answer"
                )
            fresh = (
                slot.answer is not None
                and slot.answer.answered_at is not None
                and now - slot.answer.answered_at < request.recheck_s
            )
            if fresh and slot.answer is not None:
                return slot.answer
            slot.in_flight = True
            slot.asked_at = now
            previous = slot.answer
        slot.future = self._pool.submit(self._ask_and_store, request)
        if previous is not None and not previous.approved:
            return previous  # still not approved; the new answer shows at a later call
        return GateAnswer(
            GateStatus.WAITING, f"asked {describe(request.confirm)} to confirm the promotion"
        )

    def ask(self, request: GateRequest) -> GateAnswer:
        """Ask now and wait for the answer (bounded by the webhook's timeout)."""
        answer = self._ask(request)
        with self._lock:
            slot = self._slots.setdefault(request.key, _Slot())
            slot.answer, slot.asked_at = answer, answer.answered_at
        return answer

    def forget(self, namespace: str, name: str) -> None:
        """Drop the answers of a rollout (after its promotion, or a new canary revision)."""
        with self._lock:
            for key in [k for k in self._slots if k[:2] == (namespace, name)]:
                if not self._slots[key].in_flight:
                    del self._slots[key]

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait for the asks in flight (tests, ``--once``)."""
        with self._lock:
            futures = [s.future for s in self._slots.values() if s.in_flight and s.future]
        _, pending = concurrent.futures.wait(futures, timeout=timeout_s)
        return not pending

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _ask_and_store(self, request: GateRequest) -> GateAnswer:
        answer = self._ask(request)
        with self._lock:
            slot = self._slots.setdefault(request.key, _Slot())
            slot.answer, slot.in_flight = answer, False
        return answer

    def _ask(self, request: GateRequest) -> GateAnswer:
        name = describe(request.confirm)
        body = render(replace(request.notice, kind="ConfirmPromotion"), "json")
        try:
            url = self.resolver.url(request.confirm)
            resp = self._send(url, body, request.confirm.timeout)
        except OutboundError as exc:
            self._checks.labels("error").inc()
            answer = GateAnswer(
                GateStatus.DENIED,
                f"promotion not confirmed: {name} did not answer ({exc.reason})",
                self._clock(),
            )
        else:
            if resp.ok:
                self._checks.labels("approved").inc()
                answer = GateAnswer(
                    GateStatus.APPROVED,
                    f"promotion confirmed by {name} (HTTP {resp.status})",
                    self._clock(),
                )
            else:
                self._checks.labels("denied").inc()
                answer = GateAnswer(
                    GateStatus.DENIED,
                    f"promotion not confirmed: {name} answered HTTP {resp.status} "
                    f"({outbound.body_excerpt(resp)})",
                    self._clock(),
                )
        log.info(
            "promotion gate answered",
            extra={
                "fields": {
                    "rollout": "/".join(request.key[:2]),
                    "canary": request.key[2],
                    "status": answer.status.value,
                    "message": answer.message,
                }
            },
        )
        return answer
