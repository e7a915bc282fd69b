"""Kubernetes Events for canaryd's decisions, and an in-memory sink for the simulator and tests.

Every decision the controller takes is explained to the people who own the model as an Event
on the InferenceService (``kubectl describe isvc`` / ``kubectl events``). The Kubernetes
recorder posts ``events.k8s.io/v1`` Events with ``reportingController: canaryd.io/canaryd``;
``note`` is the controller's explanation, cut to the API's 1024-byte limit on a UTF-8
character boundary.

Events are best effort: a failure to record is logged and reported by the return value, and
never stops a rollout decision. An Event may name an InferenceService that was just deleted
(for example the ``Aborted`` event of a rollout whose model went away): the apiserver does not
check that the regarded object exists, so the Event is stored, without the object's uid when
it could no longer be read.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from canaryd.kube import INFERENCE_SERVICE, JSON, raw_request
from canaryd.reasons import Reason
from canaryd.state.base import RolloutKey

log = logging.getLogger(__name__)

REPORTING_CONTROLLER = "canaryd.io/canaryd"
NOTE_LIMIT = 1024  # bytes, events.k8s.io/v1 validation
_ELLIPSIS = "…"


def default_type(reason: Reason | str) -> str:
    """The Event type of ``reason`` (see ``Reason.severity``); ``Normal`` for an unknown one."""
    try:
        return Reason(reason).severity
    except ValueError:
        return "Normal"


def _verb(reason: Reason | str) -> str:
    try:
        return Reason(reason).verb
    except ValueError:
        return str(reason)


def truncate_note(message: str, limit: int = NOTE_LIMIT) -> str:
    """``message`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    raw = message.encode("utf-8")
    if len(raw) <= limit:
        return message
    room = limit - len(_ELLIPSIS.encode("utf-8"))
    return raw[:room].decode("utf-8", "ignore") + _ELLIPSIS


@dataclass(frozen=True)
class RecordedEvent:
    target: RolloutKey
    reason: str
    message: str
    type: str
    time: datetime


class EventSink(Protocol):
    """Where decision events go. ``record`` never raises for a failed delivery."""

    def record(
        self,
        target: RolloutKey,
        reason: Reason | str,
        message: str,
        event_type: str | None = None,
    ) -> bool: ...


@dataclass
class MemoryEventSink:
    """Keeps events in a list (simulator, tests)."""

    events: list[RecordedEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self,
        target: RolloutKey,
        reason: Reason | str,
        message: str,
        event_type: str | None = None,
    ) -> bool:
        event = RecordedEvent(
            target=target,
            reason=str(reason),
            message=truncate_note(message),
            type=event_type or default_type(reason),
            time=datetime.now(UTC),
        )
        with self._lock:
            self.events.append(event)
        return True

    def reasons(self) -> list[str]:
        with self._lock:
            return [e.reason for e in self.events]


class EventRecorder:
    """Posts ``events.k8s.io/v1`` Events on InferenceServices."""

    def __init__(self, api_client: k8s.ApiClient, instance: str | None = None) -> None:
        self._client = api_client
        # reportingInstance: the pod name in the cluster (HOSTNAME), max 128 characters.
        self.instance = (instance or os.environ.get("HOSTNAME") or socket.gethostname())[:128]
        self.last_error: str | None = None

    def record(
        self,
        target: RolloutKey,
        reason: Reason | str,
        message: str,
        event_type: str | None = None,
    ) -> bool:
        body = self.build(target, reason, message, event_type, uid=self._uid(target))
        path = f"/apis/events.k8s.io/v1/namespaces/{target.namespace}/events"
        try:
            raw_request(self._client, "POST", path, body=body)
        except ApiException as err:
            self.last_error = f"{err.status} {err.reason}: {err.body}"
            log.warning(
                "could not record event %s on %s: %s %s", reason, target, err.status, err.reason
            )
            return False
        self.last_error = None
        return True

    def build(
        self,
        target: RolloutKey,
        reason: Reason | str,
        message: str,
        event_type: str | None = None,
        uid: str | None = None,
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
        reason_text = str(reason)
        return {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                # client-go's naming: <object>.<unix nanoseconds in hex>, unique enough.
                "name": f"{target.name[:200]}.{time.time_ns():x}",
                "namespace": target.namespace,
                "labels": {"app.kubernetes.io/managed-by": "canaryd"},
            },
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance,
            "action": _verb(reason)[:128],
            "reason": reason_text[:128],
            "regarding": regarding,
            "note": truncate_note(message),
            "type": event_type or default_type(reason),
        }

    def _uid(self, target: RolloutKey) -> str | None:
        res = INFERENCE_SERVICE
        path = f"/apis/{res.api_version}/namespaces/{target.namespace}/{res.plural}/{target.name}"
        try:
            obj = raw_request(self._client, "GET", path)
        except ApiException:
            return None  # deleted or unreadable: record the event without the uid
        uid = (obj.get("metadata") or {}).get("uid")
        return str(uid) if uid else None
