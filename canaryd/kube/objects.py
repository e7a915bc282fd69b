"""Reading and writing objects: the small protocol every router, store and control goes through.

``Objects`` is the whole surface the daemon needs of the cluster's objects: read one (from the
watch cache where it is cached), read one fresh from the API (after a 409), merge-patch one with
optimistic concurrency, create and delete, and ask discovery which version of an API group is
served. ``KubeObjects`` is the real one; ``canaryd.kube.memory.MemoryObjects`` keeps objects in a
dict with the same resourceVersion semantics, for unit tests of the daemon's tick.

``update_object`` is read-decide-write: the object is read (cached), ``mutate`` returns it as it
should be, and exactly the difference outside ``status`` is sent as a JSON merge patch carrying
``metadata.resourceVersion``; a 409 re-reads it from the API and ``mutate`` decides again (it may
now decide that nothing is to be done). No difference, no write.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from kubernetes import client as k8s

from canaryd.errors import RoutingError
from canaryd.kube.api import FIELD_MANAGER, JSON, MERGE_PATCH, merge_patch, raw_request
from canaryd.kube.errors import ApiConflictError, ApiNotFoundError
from canaryd.kube.resources import Resource


class Reader(Protocol):
    """Where cached objects come from (``canaryd.kube.watching.WatchCache``)."""

    def lookup(self, resource: Resource, namespace: str, name: str) -> JSON | bool | None:
        """The cached object, None when the cache knows it is absent, False when not cached."""
        ...


class Objects(Protocol):
    """Object reads and writes (see the module docstring)."""

    def get(self, resource: Resource, namespace: str, name: str) -> JSON:
        """The object, from the cache when it is cached; raises ApiNotFoundError."""
        ...

    def fresh(self, resource: Resource, namespace: str, name: str) -> JSON:
        """The object as the API has it now; raises ApiNotFoundError."""
        ...

    def patch(self, resource: Resource, namespace: str, name: str, patch: JSON) -> JSON:
        """Apply a JSON merge patch; a ``metadata.resourceVersion`` in it makes it conditional
        (ApiConflictError when the object moved on). Returns the written object."""
        ...

    def create(self, resource: Resource, namespace: str, body: JSON) -> JSON: ...

    def delete(self, resource: Resource, namespace: str, name: str) -> None: ...

    def served_versions(self, group: str) -> list[str]:
        """The versions of an API group the apiserver serves (discovery), preferred first."""
        ...


Mutation = Callable[[JSON], JSON]
"""Given a deep copy of the current object, return the object as it should be (or raise)."""


def update_object(
    objects: Objects,
    resource: Resource,
    namespace: str,
    name: str,
    mutate: Mutation,
    *,
    attempts: int = 5,
) -> tuple[JSON, bool]:
    """Read, decide, write with optimistic concurrency; returns (object, whether it wrote)."""
    what = f"{resource.kind} {namespace}/{name}"
    current = objects.get(resource, namespace, name)
    for attempt in range(attempts):
        desired = mutate(copy.deepcopy(current))
        patch = merge_patch(_without_status(current), _without_status(desired))
        if patch == {}:
            return current, False
        version = (current.get("metadata") or {}).get("resourceVersion")
        if not version:
            raise RoutingError(f"{what} has no metadata.resourceVersion; refusing a blind write")
        patch.setdefault("metadata", {})["resourceVersion"] = version
        try:
            return objects.patch(resource, namespace, name, patch), True
        except ApiConflictError:
            if attempt + 1 >= attempts:
                raise
            time.sleep(min(0.05 * 2**attempt, 1.0))
            current = objects.fresh(resource, namespace, name)
    raise ApiConflictError(
        what, 409, "ApiConflictError", f"kept changing; gave up after {attempts} attempts"
    )


def as_objects(api: Objects | k8s.ApiClient) -> Objects:
    """``api`` itself, or an ApiClient wrapped in ``KubeObjects`` (reads go to the API)."""
    return KubeObjects(api) if isinstance(api, k8s.ApiClient) else api


def preferred_version(objects: Objects, group: str, candidates: Sequence[str]) -> str:
    """The first of ``candidates`` that the apiserver serves for ``group``."""
    served = objects.served_versions(group)
    for candidate in candidates:
        if candidate in served:
            return candidate
    raise RoutingError(f"API group {group} serves {served}, none of {list(candidates)}")


def _without_status(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k != "status"}


class KubeObjects:
    """``Objects`` over the real API, reading through a watch cache where one is given."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        cache: Reader | None = None,
        *,
        write_timeout_s: tuple[float, float] = (2.0, 3.0),
    ) -> None:
        self.api_client = api_client
        self.cache = cache
        self.write_timeout_s = write_timeout_s
        """(connect, read) of every write: short, so a write started by a leader lands before
        its Lease can pass to another daemon (see ``LeaderElector.may_write``)."""
        self._versions: dict[str, list[str]] = {}

    def get(self, resource: Resource, namespace: str, name: str) -> JSON:
        if self.cache is not None:
            got = self.cache.lookup(resource, namespace, name)
            if isinstance(got, dict):
                return got
            if got is None:
                raise ApiNotFoundError(
                    f"{resource.kind} {namespace}/{name}", 404, "ApiNotFoundError", ""
                )
        return self.fresh(resource, namespace, name)

    def fresh(self, resource: Resource, namespace: str, name: str) -> JSON:
        return raw_request(
            self.api_client,
            "GET",
            resource.path(namespace, name),
            what=f"{resource.kind} {namespace}/{name}",
        )

    def patch(self, resource: Resource, namespace: str, name: str, patch: JSON) -> JSON:
        return raw_request(
            self.api_client,
            "PATCH",
            resource.path(namespace, name),
            body=patch,
            query={"fieldManager": FIELD_MANAGER},
            content_type=MERGE_PATCH,
            timeout=self.write_timeout_s,
            what=f"{resource.kind} {namespace}/{name}",
        )

    def create(self, resource: Resource, namespace: str, body: JSON) -> JSON:
        name = (body.get("metadata") or {}).get("name", "")
        return raw_request(
            self.api_client,
            "POST",
            resource.collection_path(namespace),
            body=body,
            query={"fieldManager": FIELD_MANAGER},
            timeout=self.write_timeout_s,
            what=f"{resource.kind} {namespace}/{name}",
        )

    def delete(self, resource: Resource, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiNotFoundError):
            raw_request(
                self.api_client,
                "DELETE",
                resource.path(namespace, name),
                what=f"{resource.kind} {namespace}/{name}",
            )

    def served_versions(self, group: str) -> list[str]:
        if group not in self._versions:
            info = raw_request(self.api_client, "GET", f"/apis/{group}", what=f"API group {group}")
            preferred = (info.get("preferredVersion") or {}).get("version")
            versions = [
                str(v.get("version")) for v in info.get("versions", []) if isinstance(v, dict)
            ]
            if preferred in versions:
                versions.remove(preferred)
                versions.insert(0, preferred)
            self._versions[group] = versions
        return list(self._versions[group])
