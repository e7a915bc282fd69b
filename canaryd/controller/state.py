"""The rollout state: a plain serializable value, including the judges' evidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

STATE_VERSION = 1


class Phase(StrEnum):
    PENDING = "pending"
    SHADOW = "shadow"
    """The canary gets mirrored copies of live requests; no user depends on its responses."""
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
    SET_MIRROR = "set_mirror"
    """Start the shadow phase: canary weight 0, mirror ``Decision.mirror_percent``."""
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
class UserImpact:
    """What the canary did to users, counted from the observations up to a decision.

    ``user_requests``/``user_errors``: requests the canary served to users (every canary
    request of a weighted step; in shadow only those the metric source shows were not mirrored,
    e.g. a header route to the canary). ``shadow_requests``/``shadow_errors``: mirrored copies,
    whose responses were discarded: they affected no user and count zero. Requests served after
    the last observed interval (less than one interval) are not in these counts.
    """

    user_requests: float = 0.0
    user_errors: float = 0.0
    shadow_requests: float = 0.0
    shadow_errors: float = 0.0

    def add(
        self, user_requests: float, user_errors: float, shadow_requests: float, shadow_errors: float
    ) -> UserImpact:
        return UserImpact(
            self.user_requests + user_requests,
            self.user_errors + user_errors,
            self.shadow_requests + shadow_requests,
            self.shadow_errors + shadow_errors,
        )

    def summary(self) -> str:
        """One sentence for Events, logs and reports."""
        text = (
            f"user impact: the canary served {self.user_requests:.0f} user requests "
            f"({self.user_errors:.0f} failed)"
        )
        if self.shadow_requests or self.shadow_errors:
            text += (
                f"; {self.shadow_requests:.0f} mirrored requests ({self.shadow_errors:.0f} "
                "failed) affected no user"
            )
        return text

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


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
    impact: UserImpact = field(default_factory=UserImpact)
    """User requests the canary served (and failed), and mirrored ones, so far."""
    history: tuple[StepRecord, ...] = ()
    judges: dict[str, Any] = field(default_factory=dict)
    pre_canary_requests: float | None = None
    """Stable requests in the history read before the canary (``spec.analysis.history``) that
    primed the judges; None until it has been read (a daemon reads it once per evidence)."""
    pre_canary_note: str = ""
    """What the judges took from that history, or why there was none."""

    @property
    def in_shadow(self) -> bool:
        """Whether the canary is receiving mirrored traffic (shadow, or paused in shadow)."""
        return self.phase is Phase.SHADOW or (
            self.phase is Phase.PAUSED and self.paused_from is Phase.SHADOW
        )

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
        # Documents written before user-impact accounting (and shadow phases) have no
        # "impact": every canary request they counted was a user request.
        if "impact" in body:
            body["impact"] = UserImpact(**body["impact"])
        else:
            body["impact"] = UserImpact(body["canary_requests"], body["canary_errors"])
        # Documents written before the history was read: a started rollout's judges have their
        # evidence already, so its history is not read any more.
        if "pre_canary_requests" not in body and body["phase"] is not Phase.PENDING:
            body["pre_canary_requests"] = 0.0
        return cls(**body)
