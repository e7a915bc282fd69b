"""An in-memory StateStore with the same optimistic-concurrency contract as the Kubernetes one."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

from canaryd.errors import ConflictError
from canaryd.state.base import RolloutKey, StoredState


class MemoryStateStore:
    """Keeps documents as JSON text, so what comes back is exactly what a durable store returns."""

    def __init__(self) -> None:
        self._docs: dict[RolloutKey, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def load(self, key: RolloutKey) -> StoredState | None:
        with self._lock:
            got = self._docs.get(key)
        if got is None:
            return None
        return StoredState(json.loads(got[0]), str(got[1]))

    def version(self, key: RolloutKey) -> str | None:
        with self._lock:
            got = self._docs.get(key)
        return None if got is None else str(got[1])

    def save(self, key: RolloutKey, data: dict[str, Any], expected_version: str | None) -> str:
        text = json.dumps(copy.deepcopy(data), sort_keys=True, allow_nan=False)
        with self._lock:
            current = self._docs.get(key)
            if expected_version is None:
                if current is not None:
                    raise ConflictError(f"state for {key} already exists")
                version = 1
            else:
                if current is None or str(current[1]) != expected_version:
                    raise ConflictError(
                        f"state for {key} changed (expected version {expected_version})"
                    )
                version = current[1] + 1
            self._docs[key] = (text, version)
        return str(version)

    def delete(self, key: RolloutKey) -> None:
        with self._lock:
            self._docs.pop(key, None)
