"""Kubernetes Events for canaryd's decisions, and an in-memory sink for tests.

Every decision is explained to the people who own the model as an ``events.k8s.io/v1`` Event on
the InferenceService (``kubectl events``), with ``reportingController: canaryd.io/canaryd`` and
the controller's explanation as ``note`` (cut to the API's 1024 bytes on a character boundary).
The Event type and action come from the reason (``canaryd.reasons.Reason``).

Two kinds of record:

- **Once** (``key`` given): an applied decision (started, weight changed, promoted, rolled back,
  paused, ...) is recorded exactly once, even when a restarted daemon records it again: the
  Event's name is derived from the rollout and the decision's ``key``, so a second POST is
  answered 409 AlreadyExists and counts as recorded.
- **Series** (no key): a condition that repeats every interval (analysis inconclusive, an
  ignored action) is recorded the way client-go's EventRecorder does: the first occurrence
  creates an Event; repeats of the same reason on the same object within ``series_window_s``
  only count up its ``series`` (``count``, ``lastObservedTime``), which is written at most every
  ``series_patch_s``. A different reason in between ends the series.

Events are best effort: a failed delivery is logged and reported by the return value and never
stops a decision. An Event may name an InferenceService that was just deleted (the apiserver does
not check the regarded object); it then has no uid.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from kubernetes import client as k8s

from canaryd.identity import RolloutKey
from canaryd.kube.api import JSON, MERGE_PATCH, raw_request
from canaryd.kube.errors import ApiConflictError, ApiError
from canaryd.kube.resources import EVENT, INFERENCE_SERVICE
from canaryd.reasons import Reason

log = logging.getLogger("canaryd.events")

REPORTING_CONTROLLER = "canaryd.io/canaryd"
NOTE_LIMIT = 1024  # bytes, events.k8s.io/v1 validation
_ELLIPSIS = "…"


def truncate_note(message: str, limit: int = NOTE_LIMIT) -> str:
    """``message`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    raw = message.encode("utf-8")
    if len(raw) <= limit:
        return message
    room = limit - len(_ELLIPSIS.encode("utf-8"))
    return raw[:room].decode("utf-8", "ignore") + _ELLIPSIS


def event_name(target: RolloutKey, key: str) -> str:
    """A deterministic Event name for ``key`` on ``target`` (a DNS subdomain, <= 253 chars)."""
    digest = hashlib.sha256(f"{target}/{key}".encode()).hexdigest()[:16]
    return f"{target.name[:200]}.canaryd-{digest}"


@dataclass(frozen=True)
class RecordedEvent:
    target: RolloutKey
    reason: Reason
    message: str
    type: str
    time: datetime
    key: str | None = None
    count: int = 1


class EventSink(Protocol):
    """Where decision Events go. ``record`` never raises for a failed delivery.

    ``key``: record at most once per (target, key), across restarts (an applied decision);
    without it, repeats of a reason are aggregated into a series.
    """

    def record(
        self, target: RolloutKey, reason: Reason, message: str, *, key: str | None = None
    ) -> bool: ...


@dataclass
class MemoryEventSink:
    """Keeps Events in a list, with the same once-per-key and series rules (tests)."""

    events: list[RecordedEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self, target: RolloutKey, reason: Reason, message: str, *, key: str | None = None
    ) -> bool:
        with self._lock:
            if key is not None and any(e.key == key and e.target == target for e in self.events):
                return True
            mine = [e for e in self.events if e.target == target]
            if key is None and mine and mine[-1].reason is reason and mine[-1].key is None:
                last = mine[-1]
                i = self.events.index(last)
                self.events[i] = RecordedEvent(
                    last.target,
                    last.reason,
                    last.message,
                    last.type,
                    last.time,
                    None,
                    last.count + 1,
                )
                return True
            self.events.append(
                RecordedEvent(
                    target,
                    reason,
                    truncate_note(message),
                    reason.severity,
                    datetime.now(UTC),
                    key,
                )
            )
        return True

    def reasons(self) -> list[str]:
        with self._lock:
            return [str(e.reason) for e in self.events]


@dataclass
class _Series:
    reason: Reason
    name: str
    first: float
    last: float
    count: int
    written_count: int
    written_at: float


UidLookup = Callable[[RolloutKey], str | None]


class EventRecorder:
    """Posts ``events.k8s.io/v1`` Events on InferenceServices (see the module docstring)."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        instance: str | None = None,
        *,
        uid_of: UidLookup | None = None,
        series_window_s: float = 1800.0,
        series_patch_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = api_client
        # reportingInstance: the pod name in the cluster (HOSTNAME), max 128 characters.
        self.instance = (instance or os.environ.get("HOSTNAME") or socket.gethostname())[:128]
        self._uid_of = uid_of if uid_of is not None else self._uid_from_api
        self.series_window_s = series_window_s
        self.series_patch_s = series_patch_s
        self._clock = clock
        self._series: dict[RolloutKey, _Series] = {}
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.posts = 0
        self.patches = 0

    def record(
        self, target: RolloutKey, reason: Reason, message: str, *, key: str | None = None
    ) -> bool:
        now = self._clock()
        if key is not None:
            with self._lock:
                self._series.pop(target, None)
            return self._post(target, reason, message, event_name(target, key))
        with self._lock:
            s = self._series.get(target)
            if s is not None and s.reason is reason and now - s.last <= self.series_window_s:
                s.count += 1
                s.last = now
                due = now - s.written_at >= self.series_patch_s
                if not due:
                    return True
                name, count = s.name, s.count
            else:
                s = None
        if s is not None:
            return self._patch_series(target, s, name, count, now)
        name = f"{target.name[:200]}.{time.time_ns():x}"
        ok = self._post(target, reason, message, name)
        if ok:
            with self._lock:
                self._series[target] = _Series(reason, name, now, now, 1, 1, now)
        return ok

    def flush(self) -> None:
        """Write every series count that has not been written yet (at shutdown)."""
        with self._lock:
            pending = [(t, s) for t, s in self._series.items() if s.count > s.written_count]
        for target, s in pending:
            self._patch_series(target, s, s.name, s.count, self._clock())

    def _post(self, target: RolloutKey, reason: Reason, message: str, name: str) -> bool:
        uid = self._uid_of(target)
        body = self.build(target, reason, message, uid=uid, name=name)
        try:
            raw_request(
                self._client,
                "POST",
                EVENT.collection_path(target.namespace),
                body=body,
                what=f"Event {reason} on {target}",
            )
        except ApiConflictError as err:
            if err.already_exists:
                return True  # recorded before (a restarted daemon repeating an applied one)
            return self._failed(reason, target, err)
        except ApiError as err:
            return self._failed(reason, target, err)
        self.posts += 1
        self.last_error = None
        return True

    def _patch_series(
        self, target: RolloutKey, s: _Series, name: str, count: int, now: float
    ) -> bool:
        patch = {
            "series": {
                "count": count,
                "lastObservedTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
        }
        try:
            raw_request(
                self._client,
                "PATCH",
                EVENT.path(target.namespace, name),
                body=patch,
                content_type=MERGE_PATCH,
                what=f"Event series {s.reason} on {target}",
            )
        except ApiError as err:
            return self._failed(s.reason, target, err)
        self.patches += 1
        with self._lock:
            s.written_count = count
            s.written_at = now
        return True

    def _failed(self, reason: Reason, target: RolloutKey, err: ApiError) -> bool:
        self.last_error = str(err)
        log.warning(
            "could not record event",
            extra={"fields": {"reason": str(reason), "rollout": str(target), "error": str(err)}},
        )
        return False

    def _uid_from_api(self, target: RolloutKey) -> str | None:
        try:
            obj = raw_request(
                self._client, "GET", INFERENCE_SERVICE.path(target.namespace, target.name)
            )
        except ApiError:
            return None  # deleted or unreadable: record the Event without the uid
        uid = (obj.get("metadata") or {}).get("uid")
        return str(uid) if uid else None

    def build(
        self,
        target: RolloutKey,
        reason: Reason,
        message: str,
        *,
        uid: str | None = None,
        name: str | None = None,
    ) -> JSON:
        now = datetime.now(UTC)
        regarding: JSON = {
            "apiVersion": INFERENCE_SERVICE.api_version,
            "kind": INFERENCE_SERVICE.kind,
            "namespace": target.namespace,
            "name": target.name,
        }
        if uid:
            regarding["uid"] = uid
        return {
            "apiVersion": EVENT.api_version,
            "kind": EVENT.kind,
            "metadata": {
                # client-go's naming: <object>.<unix nanoseconds in hex>, unique enough.
                "name": name or f"{target.name[:200]}.{time.time_ns():x}",
                "namespace": target.namespace,
                "labels": {"app.kubernetes.io/managed-by": "canaryd"},
            },
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance,
            "action": reason.verb,
            "reason": str(reason),
            "regarding": regarding,
            "note": truncate_note(message),
            "type": reason.severity,
        }
