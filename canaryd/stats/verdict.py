"""The one result type every judge returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from canaryd.jsonnum import decode_optional, encode_optional, encode_tree


class Status(StrEnum):
    """What a judge concludes about one metric.

    - ``fail``: the evidence says the canary is worse than tolerated.
    - ``pass``: the evidence shows the canary is no worse than tolerated (non-inferiority).
    - ``continue``: enough data to judge, but neither shown yet; keep collecting.
    - ``inconclusive``: too little data (or none) to judge. Never counts as a pass.
    """

    FAIL = "fail"
    PASS = "pass"
    CONTINUE = "continue"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """A judge's conclusion on one metric, with everything needed to explain it."""

    metric: str
    judge: str
    status: Status
    reason: str
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    e_value: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    canary_samples: float = 0.0
    stable_samples: float = 0.0
    canary_events: float | None = None
    """Count-based judges: the canary's count of the judged event (errors; requests slower
    than the worst boundary) among ``canary_samples``. None where the judge counts none."""
    stable_events: float | None = None
    """The same for stable; the controller plans the evidence it still needs from it."""
    critical: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "judge": self.judge,
            "status": self.status.value,
            "reason": self.reason,
            "estimate": encode_optional(self.estimate),
            "interval": None
            if self.interval is None
            else [encode_optional(x) for x in self.interval],
            "e_value": encode_optional(self.e_value),
            "p_value": encode_optional(self.p_value),
            "threshold": encode_optional(self.threshold),
            "canary_samples": self.canary_samples,
            "stable_samples": self.stable_samples,
            "canary_events": self.canary_events,
            "stable_events": self.stable_events,
            "critical": self.critical,
            "details": encode_tree(self.details),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        interval = d.get("interval")
        return cls(
            metric=d["metric"],
            judge=d["judge"],
            status=Status(d["status"]),
            reason=d["reason"],
            estimate=decode_optional(d.get("estimate")),
            interval=None
            if interval is None
            else (decode_optional(interval[0]) or 0.0, decode_optional(interval[1]) or 0.0),
            e_value=decode_optional(d.get("e_value")),
            p_value=decode_optional(d.get("p_value")),
            threshold=decode_optional(d.get("threshold")),
            canary_samples=float(d.get("canary_samples", 0.0)),
            stable_samples=float(d.get("stable_samples", 0.0)),
            canary_events=decode_optional(d.get("canary_events")),
            stable_events=decode_optional(d.get("stable_events")),
            critical=bool(d.get("critical", True)),
            details=dict(d.get("details", {})),
        )

    def summary(self) -> str:
        """One line a person reads in an Event or a log."""
        parts = [f"{self.metric}: {self.status.value}"]
        if self.estimate is not None:
            est = f"estimate {self.estimate:.3g}"
            if self.interval is not None:
                est += f" [{self.interval[0]:.3g}, {self.interval[1]:.3g}]"
            parts.append(est)
        if self.e_value is not None:
            parts.append(f"e={self.e_value:.3g}")
        if self.p_value is not None:
            parts.append(f"p={self.p_value:.3g}")
        parts.append(self.reason)
        return " ".join(parts[:1]) + " (" + "; ".join(parts[1:]) + ")"
