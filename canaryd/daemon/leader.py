"""Leader election on a ``coordination.k8s.io/v1`` Lease (client-go's algorithm, small).

- ``try_acquire_or_renew()`` reads the Lease ``canaryd-leader``:
  absent → create it with us as holder (409: someone else was first → not leader);
  held by someone else and not expired → not leader;
  ours, released (empty holder) or expired → replace it carrying its ``resourceVersion``
  (409: someone else won the race → not leader).
- **Expiry is judged on the local monotonic clock**, as client-go does: a Lease is expired when
  its record (holder, renewTime, resourceVersion) has not changed for ``lease_duration_s``
  since *we* first saw it, so clock skew between pods cannot make two leaders.
- ``is_leader`` is true only while the last successful renew is younger than
  ``renew_deadline_s`` (< lease duration): a leader that cannot reach the apiserver stops
  acting before anyone else may take over.
- ``release()`` (on a graceful shutdown) empties the holder so a standby takes over at once.

Defaults: lease 15 s, renew every 5 s, renew deadline 10 s. RBAC: leases get/create/update in
the lease namespace (``deploy/base/rbac.yaml``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client as k8s

from canaryd.kube import JSON, ApiConflictError, ApiError, ApiNotFoundError, raw_request

log = logging.getLogger("canaryd.leader")

LEASE_NAME = "canaryd-leader"


def _micro_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


class LeaderElector:
    """One participant in the election for ``namespace/name`` (see the module docstring)."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        identity: str | None = None,
        *,
        name: str = LEASE_NAME,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float | None = None,
        retry_period_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = api_client
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = (
            renew_deadline_s if renew_deadline_s is not None else lease_duration_s * 2 / 3
        )
        self.retry_period_s = retry_period_s
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._renewed_at: float | None = None
        self._observed: tuple[str, str, str] | None = None
        self._observed_at = 0.0
        self.on_change: Callable[[bool], None] | None = None
        self._reported = False
        """Leadership as last logged: a Lease that lapsed while this process was frozen is
        reported as lost at the next round, not silently."""

    @property
    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    def may_write(self) -> bool:
        """Whether a write started now lands before anyone else can hold the Lease.

        True while the last renewal (timed from the start of its round) is younger than the
        renew deadline; a write bounded by the write timeout (``lease_duration -
        renew_deadline`` at most) then completes before the Lease can expire. The daemon checks
        it before every write, so two daemons can never both write.
        """
        return self.is_leader

    @property
    def is_leader(self) -> bool:
        with self._lock:
            return (
                self._renewed_at is not None
                and self._clock() - self._renewed_at < self.renew_deadline_s
            )

    def try_acquire_or_renew(self) -> bool:
        """One election round; returns whether we lead now. Never raises for API errors."""
        was = self._reported
        try:
            won = self._round()
        except ApiError as err:
            log.warning(
                "lease round failed",
                extra={"fields": {"status": err.status, "error": str(err)}},
            )
            won = False
        except Exception as exc:  # connection refused etc.: we just did not renew
            log.warning("lease round failed", extra={"fields": {"error": str(exc)}})
            won = False
        now_leader = self.is_leader
        self._reported = now_leader
        if now_leader != was:
            log.info(
                "leadership changed",
                extra={"fields": {"leader": now_leader, "identity": self.identity}},
            )
            if self.on_change is not None:
                self.on_change(now_leader)
        return won and now_leader

    def _round(self) -> bool:
        now_m = self._clock()
        now_w = self._wall()
        try:
            lease = raw_request(self._client, "GET", f"{self._path}/{self.name}")
        except ApiNotFoundError:
            return self._create(now_m, now_w)
        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""), str(meta.get("resourceVersion")))
        if record != self._observed:
            self._observed, self._observed_at = record, now_m
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        mine = holder == self.identity
        expired = not holder or self._observed_at + duration <= now_m
        if not mine and not expired:
            self._lost()
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec: JSON = dict(spec)
        new_spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, round(self.lease_duration_s)),
            renewTime=_micro_time(now_w),
        )
        if not mine:
            new_spec["acquireTime"] = _micro_time(now_w)
            new_spec["leaseTransitions"] = transitions + 1
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": meta.get("resourceVersion"),
            },
            "spec": new_spec,
        }
        try:
            written = raw_request(self._client, "PUT", f"{self._path}/{self.name}", body=body)
        except ApiConflictError:
            self._lost()
            return False
        self._won(written, now_m)
        return True

    def _create(self, now_m: float, now_w: float) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_duration_s)),
                "acquireTime": _micro_time(now_w),
                "renewTime": _micro_time(now_w),
                "leaseTransitions": 0,
            },
        }
        try:
            written = raw_request(self._client, "POST", self._path, body=body)
        except ApiConflictError:
            self._lost()
            return False
        self._won(written, now_m)
        return True

    def _won(self, lease: JSON, now_m: float) -> None:
        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        self._observed = (
            str(spec.get("holderIdentity") or ""),
            str(spec.get("renewTime") or ""),
            str(meta.get("resourceVersion")),
        )
        self._observed_at = now_m
        with self._lock:
            self._renewed_at = now_m

    def _lost(self) -> None:
        with self._lock:
            self._renewed_at = None

    def release(self) -> None:
        """Give the Lease up (graceful shutdown): empty holder, so a standby takes over now."""
        if not self.is_leader:
            return
        self._lost()
        try:
            lease = raw_request(self._client, "GET", f"{self._path}/{self.name}")
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return
            spec["holderIdentity"] = ""
            spec["leaseDurationSeconds"] = 1
            lease["spec"] = spec
            raw_request(self._client, "PUT", f"{self._path}/{self.name}", body=lease)
            log.info("lease released", extra={"fields": {"identity": self.identity}})
        except Exception as exc:
            log.warning("could not release the lease", extra={"fields": {"error": str(exc)}})
