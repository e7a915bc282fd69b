"""Delivering notifications without ever blocking the caller.

``Notifier.notify(policy, notice)`` renders the body and appends it to the queue of each of the
policy's webhooks that wants this decision's reason, and returns: no I/O, no waiting. Each
distinct webhook has its own bounded queue (``queue_size``, default 256) and its own worker
thread, so a slow or dead receiver delays only its own notices. When a queue is full the
**oldest** notice is dropped (a fresh decision matters more than a stale one).

A worker POSTs one notice at a time (``canaryd.outbound``: the webhook's ``timeout`` is the
total deadline of an attempt, redirects only to the same origin), and retries a timeout, a
connection failure, a 5xx or a 429 with exponential backoff (``Backoff``: 0.5 s doubling, at
most 8 s between attempts, 4 attempts). Any 2xx is delivered; another 4xx, a refused redirect or
a URL that cannot be read fails at once.

``canaryd_notifications_total{result}`` (on the registry passed in) counts every outcome:
``delivered``, ``retried`` (one per retry), ``failed`` (given up), ``dropped`` (pushed out of a
full queue, or still queued at ``close``). Log lines name the webhook by ``describe`` (no
secret) and never hold a response body.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from canaryd import outbound
from canaryd.notify.endpoint import EndpointResolver, describe
from canaryd.notify.payload import Notice, render
from canaryd.outbound import OutboundError
from canaryd.policy.model import CanaryPolicy, Webhook

log = logging.getLogger(__name__)

RESULTS = ("delivered", "retried", "failed", "dropped")


@dataclass(frozen=True)
class Backoff:
    attempts: int = 4
    first_s: float = 0.5
    max_s: float = 8.0

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        return float(min(self.max_s, self.first_s * 2**attempt))


@dataclass(frozen=True)
class _Item:
    notice: Notice
    body: bytes


class _Destination:
    """One webhook's queue and worker."""

    def __init__(self, hook: Webhook, owner: Notifier) -> None:
        self.hook = hook
        self.name = describe(hook)
        self._owner = owner
        self._queue: collections.deque[_Item] = collections.deque()
        self._cv = threading.Condition()
        self._busy = False
        self._thread = threading.Thread(
            target=self._run, name=f"canaryd-notify {self.name}", daemon=True
        )
        self._thread.start()

    def put(self, item: _Item) -> None:
        with self._cv:
            if len(self._queue) >= self._owner.queue_size:
                dropped = self._queue.popleft()
                self._owner.count("dropped")
                log.warning(
                    "notification queue full: dropped the oldest",
                    extra={"fields": {"webhook": self.name, "dropped": dropped.notice.id}},
                )
            self._queue.append(item)
            self._cv.notify()

    def idle(self) -> bool:
        with self._cv:
            return not self._queue and not self._busy

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._owner.stopping.is_set():
                    self._cv.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(item)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _deliver(self, item: _Item) -> None:
        backoff = self._owner.backoff
        for attempt in range(backoff.attempts):
            outcome, why = self._attempt(item)
            if outcome == "delivered":
                self._owner.count("delivered")
                return
            last = attempt + 1 >= backoff.attempts
            if outcome == "fatal" or last or self._owner.stopping.is_set():
                self._owner.count("failed")
                log.warning(
                    "notification not delivered",
                    extra={
                        "fields": {
                            "webhook": self.name,
                            "notice": item.notice.id,
                            "attempts": attempt + 1,
                            "error": why,
                        }
                    },
                )
                return
            self._owner.count("retried")
            if self._owner.stopping.wait(backoff.pause(attempt)):
                self._owner.count("failed")
                return

    def _attempt(self, item: _Item) -> tuple[str, str]:
        try:
            url = self._owner.resolver.url(self.hook)
            resp = self._owner.send(url, item.body, self.hook.timeout)
        except OutboundError as exc:
            return ("retry" if exc.retryable else "fatal"), exc.reason
        if resp.ok:
            return "delivered", ""
        why = f"HTTP {resp.status}: {outbound.body_excerpt(resp)}"
        retry = resp.status >= 500 or resp.status in {408, 429}
        return ("retry" if retry else "fatal"), why

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def discard(self) -> int:
        with self._cv:
            n = len(self._queue)
            self._queue.clear()
            return n


Send = Callable[[str, bytes, float], outbound.Response]


def post_json(url: str, body: bytes, timeout_s: float) -> outbound.Response:
    return outbound.request(
        "POST",
        url,
        timeout_s=timeout_s,
        body=body,
        headers={"Content-Type": "application/json"},
        max_body_bytes=64 * 1024,
    )


class Notifier:
    """Per-webhook bounded queues and workers (see the module docstring)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        resolver: EndpointResolver | None = None,
        queue_size: int = 256,
        backoff: Backoff | None = None,
        send: Send = post_json,
    ) -> None:
        self.resolver = resolver if resolver is not None else EndpointResolver()
        self.queue_size = max(1, queue_size)
        self.backoff = backoff if backoff is not None else Backoff()
        self.send = send
        self.stopping = threading.Event()
        self._destinations: dict[str, _Destination] = {}
        self._lock = threading.Lock()
        self._total = Counter(
            "canaryd_notifications",
            "Decision notifications by outcome: delivered, retried (one per retry), failed "
            "(given up), dropped (a full queue's oldest, or left at shutdown).",
            ["result"],
            registry=registry,
        )
        for r in RESULTS:
            self._total.labels(r)

    def count(self, result: str) -> None:
        self._total.labels(result).inc()

    def notify(self, policy: CanaryPolicy, notice: Notice) -> int:
        """Queue ``notice`` for each of ``policy``'s webhooks that wants it; never blocks.

        Returns how many were queued. A notice with no Event reason is sent to no one.
        """
        if notice.reason is None or self.stopping.is_set():
            return 0
        queued = 0
        for hook in policy.spec.notifications.webhooks:
            if hook.events is not None and notice.reason.value not in hook.events:
                continue
            self._destination(hook).put(_Item(notice, render(notice, hook.format)))
            queued += 1
        return queued

    def _destination(self, hook: Webhook) -> _Destination:
        key = hook.model_dump_json()
        with self._lock:
            dest = self._destinations.get(key)
            if dest is None:
                dest = self._destinations[key] = _Destination(hook, self)
            return dest

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queue is empty and idle (``--once``, tests); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                dests = list(self._destinations.values())
            if all(d.idle() for d in dests):
                return True
            time.sleep(0.02)
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what can be delivered within ``timeout_s``; the rest counts as dropped."""
        self.flush(timeout_s)
        self.stopping.set()
        with self._lock:
            dests = list(self._destinations.values())
        for d in dests:
            left = d.discard()
            for _ in range(left):
                self.count("dropped")
            d.wake()
        for d in dests:
            d.join(1.0)
