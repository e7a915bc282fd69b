"""The rollout state: a plain serializable value, including the judges' evidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

STATE_VERSION = 1


class Phase(StrEnum):
    PENDING = "pending"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED)


class Action(StrEnum):
    HOLD = "hold"
    SET_WEIGHT = "set_weight"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"


class Manual(StrEnum):
    """Manual controls (annotations on the InferenceService, or the CLI)."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True)
class StepRecord:
    t: float
    weight: int
    reason: str


@dataclass(frozen=True)
class RolloutState:
    """Everything the controller needs to resume a rollout exactly where it was."""

    canary_revision: str = ""
    stable_revision: str = ""
    phase: Phase = Phase.PENDING
    step: int = -1
    weight: int = 0
    started_at: float | None = None
    step_started_at: float = 0.0
    step_canary_requests: float = 0.0
    canary_requests: float = 0.0
    canary_errors: float = 0.0
    last_data_at: float | None = None
    paused_from: Phase | None = None
    reason: str = ""
    decided_at: float | None = None
    intervals: int = 0
    no_data_intervals: int = 0
    history: tuple[StepRecord, ...] = ()
    judges: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> RolloutState:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = STATE_VERSION
        d["phase"] = self.phase.value
        d["paused_from"] = None if self.paused_from is None else self.paused_from.value
        d["history"] = [asdict(h) for h in self.history]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RolloutState:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported rollout state version {d.get('version')!r}")
        body = {k: v for k, v in d.items() if k != "version"}
        body["phase"] = Phase(body["phase"])
        body["paused_from"] = None if body["paused_from"] is None else Phase(body["paused_from"])
        body["history"] = tuple(StepRecord(**h) for h in body["history"])
        return cls(**body)
