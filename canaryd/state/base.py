"""The StateStore protocol: durable rollout state with optimistic concurrency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from canaryd.identity import RolloutKey

__all__ = ["RolloutKey", "StateStore", "StoredState"]


@dataclass(frozen=True)
class StoredState:
    """A state document and the version it was read at (a resourceVersion, or a counter)."""

    data: dict[str, Any]
    version: str


class StateStore(Protocol):
    """Load and save one JSON-serializable document per rollout.

    ``save`` with ``expected_version`` set raises ``ConflictError`` when the stored version
    differs (someone else wrote in between); with ``None`` it creates and raises
    ``ConflictError`` when a document already exists. It returns the new version.
    """

    def load(self, key: RolloutKey) -> StoredState | None: ...

    def version(self, key: RolloutKey) -> str | None:
        """The stored version without decoding the document (None when absent)."""
        ...

    def save(self, key: RolloutKey, data: dict[str, Any], expected_version: str | None) -> str: ...

    def delete(self, key: RolloutKey) -> None: ...
