"""How a rollout is named: the InferenceService it acts on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class RolloutKey:
    """A rollout is identified by the InferenceService it acts on."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"
