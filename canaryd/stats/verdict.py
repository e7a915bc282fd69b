"""The one result type every judge returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
    critical: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "judge": self.judge,
            "status": self.status.value,
            "reason": self.reason,
            "estimate": _num(self.estimate),
            "interval": None if self.interval is None else [_num(x) for x in self.interval],
            "e_value": _num(self.e_value),
            "p_value": _num(self.p_value),
            "threshold": _num(self.threshold),
            "canary_samples": self.canary_samples,
            "stable_samples": self.stable_samples,
            "critical": self.critical,
            "details": {k: _num(v) if isinstance(v, float) else v for k, v in self.details.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        interval = d.get("interval")
        return cls(
            metric=d["metric"],
            judge=d["judge"],
            status=Status(d["status"]),
            reason=d["reason"],
            estimate=_den(d.get("estimate")),
            interval=None
            if interval is None
            else (_den(interval[0]) or 0.0, _den(interval[1]) or 0.0),
            e_value=_den(d.get("e_value")),
            p_value=_den(d.get("p_value")),
            threshold=_den(d.get("threshold")),
            canary_samples=float(d.get("canary_samples", 0.0)),
            stable_samples=float(d.get("stable_samples", 0.0)),
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


def _num(x: float | None) -> float | str | None:
    """JSON has no inf/NaN; encode them as strings so a round trip is exact."""
    if x is None:
        return None
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return x


def _den(x: float | str | None) -> float | None:
    if x is None:
        return None
    if isinstance(x, str):
        return {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}[x]
    return float(x)
