"""What a metric source hands the analysis for one interval: per-version increments.

These are increments over one analysis interval, like PromQL ``increase(x[interval])``.
Latency histograms are *cumulative* like Prometheus ``le`` buckets: ``bucket_counts[k]`` is the
number of requests with latency <= ``bounds_ms[k]``; the last bound is ``inf`` and its count equals
the number of requests observed by the histogram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from canaryd.jsonnum import decode_float, encode_float


@dataclass(frozen=True)
class VersionCounts:
    """One version's increments over one interval."""

    requests: float
    errors: float
    bounds_ms: tuple[float, ...] = ()
    bucket_counts: tuple[float, ...] = ()
    values: dict[str, float] = field(default_factory=dict)
    """Per-interval values of ``custom`` metrics, by metric name."""
    mirrored_requests: float | None = None
    """How many of ``requests`` were mirrored copies (shadow traffic, responses discarded);
    None when the source cannot tell (every preset but istio, and outside a shadow phase)."""
    mirrored_errors: float | None = None
    """How many of ``errors`` were on mirrored copies; None when the source cannot tell."""

    def problem(self) -> str | None:
        """Why these counts cannot be used (NaN, negative = counter reset, bad layout), or None."""
        values = (self.requests, self.errors, *self.bucket_counts)
        if any(isinstance(v, float) and math.isnan(v) for v in values):
            return "NaN in the counts"
        if any(v < 0 for v in values):
            return "negative increment (counter reset)"
        if self.errors > self.requests:
            return f"more errors ({self.errors:g}) than requests ({self.requests:g})"
        for what, part, whole in (
            ("requests", self.mirrored_requests, self.requests),
            ("errors", self.mirrored_errors, self.errors),
        ):
            if part is not None and not 0 <= part <= whole:
                return f"mirrored {what} ({part:g}) outside 0..{whole:g}"
        if len(self.bounds_ms) != len(self.bucket_counts):
            return "histogram bounds and counts differ in length"
        if self.bounds_ms:
            if self.bounds_ms[-1] != math.inf:
                return "histogram lacks the +Inf bucket"
            if any(b2 <= b1 for b1, b2 in zip(self.bounds_ms, self.bounds_ms[1:], strict=False)):
                return "histogram bounds are not increasing"
            if any(
                c2 < c1 - 1e-9
                for c1, c2 in zip(self.bucket_counts, self.bucket_counts[1:], strict=False)
            ):
                return "histogram buckets are not cumulative (partial bucket set or reset)"
        return None

    @property
    def has_histogram(self) -> bool:
        return len(self.bounds_ms) > 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "bounds_ms": [encode_float(b) for b in self.bounds_ms],
            "bucket_counts": list(self.bucket_counts),
            "values": dict(self.values),
        }
        if self.mirrored_requests is not None:
            d["mirrored_requests"] = self.mirrored_requests
        if self.mirrored_errors is not None:
            d["mirrored_errors"] = self.mirrored_errors
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VersionCounts:
        return cls(
            requests=float(d["requests"]),
            errors=float(d["errors"]),
            bounds_ms=tuple(decode_float(b) for b in d.get("bounds_ms", ())),
            bucket_counts=tuple(float(c) for c in d.get("bucket_counts", ())),
            values={str(k): float(v) for k, v in d.get("values", {}).items()},
            mirrored_requests=_optional(d.get("mirrored_requests")),
            mirrored_errors=_optional(d.get("mirrored_errors")),
        )


def _optional(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Observation:
    """Both versions' counts over ``[start_s, end_s)``, or the reason there are none."""

    start_s: float
    end_s: float
    stable: VersionCounts | None = None
    canary: VersionCounts | None = None
    no_data_reason: str | None = None
    errors_measured: bool = True
    """False when the source cannot count errors at all (a preset without an error counter):
    its zeros are then not evidence, and the error judges are not fed."""
    checked: bool = field(default=False, compare=False, repr=False)
    """Set by ``validated()``, so repeated validation costs nothing."""

    @property
    def usable(self) -> bool:
        return self.no_data_reason is None and self.stable is not None and self.canary is not None

    def validated(self) -> Observation:
        """Return self, or a no-data observation naming the first problem in the counts."""
        if self.checked or self.no_data_reason is not None:
            return self
        if self.stable is None or self.canary is None:
            missing = "stable" if self.stable is None else "canary"
            return Observation(self.start_s, self.end_s, no_data_reason=f"no {missing} series")
        for name, vc in (("stable", self.stable), ("canary", self.canary)):
            why = vc.problem()
            if why is not None:
                return Observation(self.start_s, self.end_s, no_data_reason=f"{name}: {why}")
        return replace(self, checked=True)
