"""``MemoryObjects``: the ``Objects`` protocol over a dict, with the apiserver's concurrency rules.

For unit tests of everything that reads and writes objects (routers, the state store, the
daemon's tick) without an apiserver. It keeps what those callers rely on: every write bumps a
global ``resourceVersion``; a merge patch that carries ``metadata.resourceVersion`` is refused
with ``ApiConflictError`` when the object moved on; a create of an existing name is ``ApiConflictError``
(AlreadyExists); a missing object is ``ApiNotFoundError``; ``metadata.generation`` counts spec changes;
``uid`` is set on create. Reads return deep copies, so callers can never edit the store by
accident. The real behaviour is checked against a real apiserver in tests/integration/kube.
"""

from __future__ import annotations

import copy
import itertools
import threading
import uuid
from collections import Counter

from canaryd.kube.api import JSON, apply_merge_patch
from canaryd.kube.errors import ApiConflictError, ApiNotFoundError
from canaryd.kube.resources import Resource


class MemoryObjects:
    def __init__(self, served: dict[str, list[str]] | None = None) -> None:
        self._objects: dict[tuple[str, str, str], JSON] = {}
        self._rv = itertools.count(1)
        self._lock = threading.Lock()
        self._served = served or {}
        self.calls: Counter[str] = Counter()
        """Calls by verb (``get``, ``fresh``, ``patch``, ``create``, ``delete``)."""

    @staticmethod
    def _key(resource: Resource, namespace: str, name: str) -> tuple[str, str, str]:
        return (str(resource), namespace, name)

    def _what(self, resource: Resource, namespace: str, name: str) -> str:
        return f"{resource.kind} {namespace}/{name}"

    def put(self, resource: Resource, namespace: str, obj: JSON) -> JSON:
        """Create or replace an object as a test fixture would (no concurrency check)."""
        with self._lock:
            body = copy.deepcopy(obj)
            meta = body.setdefault("metadata", {})
            meta["namespace"] = namespace
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = str(next(self._rv))
            self._objects[self._key(resource, namespace, meta["name"])] = body
            return copy.deepcopy(body)

    def get(self, resource: Resource, namespace: str, name: str) -> JSON:
        self.calls["get"] += 1
        return self._read(resource, namespace, name)

    def fresh(self, resource: Resource, namespace: str, name: str) -> JSON:
        self.calls["fresh"] += 1
        return self._read(resource, namespace, name)

    def _read(self, resource: Resource, namespace: str, name: str) -> JSON:
        with self._lock:
            obj = self._objects.get(self._key(resource, namespace, name))
            if obj is None:
                raise ApiNotFoundError(
                    self._what(resource, namespace, name), 404, "ApiNotFoundError"
                )
            return copy.deepcopy(obj)

    def items(self, resource: Resource, namespace: str) -> list[JSON]:
        with self._lock:
            return [
                copy.deepcopy(o)
                for (r, ns, _), o in sorted(self._objects.items())
                if r == str(resource) and ns == namespace
            ]

    def patch(self, resource: Resource, namespace: str, name: str, patch: JSON) -> JSON:
        self.calls["patch"] += 1
        what = self._what(resource, namespace, name)
        with self._lock:
            key = self._key(resource, namespace, name)
            current = self._objects.get(key)
            if current is None:
                raise ApiNotFoundError(what, 404, "ApiNotFoundError")
            want = (patch.get("metadata") or {}).get("resourceVersion")
            if want is not None and want != current["metadata"]["resourceVersion"]:
                raise ApiConflictError(
                    what, 409, "ApiConflictError", "the object has been modified"
                )
            new = apply_merge_patch(current, patch)
            if new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            new["metadata"]["resourceVersion"] = str(next(self._rv))
            self._objects[key] = new
            return copy.deepcopy(new)

    def create(self, resource: Resource, namespace: str, body: JSON) -> JSON:
        self.calls["create"] += 1
        name = body["metadata"]["name"]
        with self._lock:
            if self._key(resource, namespace, name) in self._objects:
                raise ApiConflictError(
                    self._what(resource, namespace, name), 409, "AlreadyExists", "already exists"
                )
        return self.put(resource, namespace, body)

    def delete(self, resource: Resource, namespace: str, name: str) -> None:
        self.calls["delete"] += 1
        with self._lock:
            self._objects.pop(self._key(resource, namespace, name), None)

    def served_versions(self, group: str) -> list[str]:
        return list(self._served.get(group, ["v1"]))
