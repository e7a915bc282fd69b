"""What a metric source hands the analysis for one interval: per-version increments.

These are increments over one analysis interval, like PromQL ``increase(x[interval])``.
Latency histograms are *cumulative* like Prometheus ``le`` buckets: ``bucket_counts[k]`` is the
number of requests with latency <= ``bounds_ms[k]``; the last bound is ``inf`` and its count equals
the number of requests observed by the histogram.

Besides requests, errors and the latency histogram, a version may carry what ML-aware metrics
judge (all optional, empty by default):

- ``histograms``: further cumulative histograms by *signal* (``Signal``): time to first token and
  inter-token latency (bounds in milliseconds), answer and prompt lengths (bounds in tokens);
- ``categories``: counts per category (predicted class, finish reason, ...) by metric name;
- ``labels``: delayed ground-truth outcomes (``LabelCounts``) by metric name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from canaryd.jsonnum import decode_float, encode_float

Signal = Literal["ttft", "inter_token", "generation_tokens", "prompt_tokens"]
"""The named histograms a source may carry besides the request-latency histogram:

- ``ttft``: time to first token, one observation per request (ms);
- ``inter_token``: time per output token (ms); see ``Histogram.per_token``;
- ``generation_tokens`` / ``prompt_tokens``: tokens per answer / per prompt, one observation
  per request (bounds in tokens).
"""
SIGNALS: tuple[Signal, ...] = get_args(Signal)


@dataclass(frozen=True)
class Histogram:
    """One cumulative histogram (``le`` buckets): ``cumulative[k]`` observations <= ``bounds[k]``.

    The last bound is ``inf``. ``series`` names the exported series it was read from (for example
    ``vllm:request_time_per_output_token_seconds``), so a judge can tell what one observation is.
    """

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    series: str = ""
    per_token: bool = False
    """True when each observation is one *token*, not one request (vLLM's
    ``vllm:inter_token_latency_seconds``): such observations are clustered by request, which a
    test that assumes independent observations cannot absorb."""

    @property
    def total(self) -> float:
        return float(self.cumulative[-1]) if self.cumulative else 0.0

    def problem(self) -> str | None:
        """Why this histogram cannot be used, or None (the same rules as the latency histogram)."""
        return _histogram_problem(self.bounds, self.cumulative)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bounds": [encode_float(b) for b in self.bounds],
            "cumulative": list(self.cumulative),
            "series": self.series,
            "per_token": self.per_token,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        return cls(
            bounds=tuple(decode_float(b) for b in d["bounds"]),
            cumulative=tuple(float(c) for c in d["cumulative"]),
            series=str(d.get("series", "")),
            per_token=bool(d.get("per_token", False)),
        )


@dataclass(frozen=True)
class LabelCounts:
    """Ground truth that arrived in the interval for one version's earlier predictions.

    ``labelled``: predictions whose true label arrived; ``correct``: those the version got right.
    Labels arrive late, so ``labelled`` may exceed the interval's requests (they belong to
    predictions made earlier) and need not relate to them at all.
    """

    correct: float
    labelled: float

    def problem(self) -> str | None:
        if any(math.isnan(v) or math.isinf(v) for v in (self.correct, self.labelled)):
            return "NaN or Inf in the label counts"
        if self.correct < 0 or self.labelled < 0:
            return "negative label count (counter reset)"
        if self.correct > self.labelled:
            return f"more correct ({self.correct:g}) than labelled ({self.labelled:g}) predictions"
        return None


def _non_finite(values: Iterable[float]) -> str | None:
    """ "NaN in the counts" or "infinite count" when a value is either (any numeric type: a
    numpy float32 is no ``float``), checked before the sign so a NaN is never called a reset."""
    for v in values:
        f = float(v)
        if math.isnan(f):
            return "NaN in the counts"
        if math.isinf(f):
            return "infinite count"
    return None


def _histogram_problem(bounds: Sequence[float], counts: Sequence[float]) -> str | None:
    why = _non_finite(counts)
    if why is not None:
        return why
    if any(v < 0 for v in counts):
        return "negative increment (counter reset)"
    if len(bounds) != len(counts):
        return "histogram bounds and counts differ in length"
    if bounds:
        if bounds[-1] != math.inf:
            return "histogram lacks the +Inf bucket"
        if any(b2 <= b1 for b1, b2 in itertools.pairwise(bounds)):
            return "histogram bounds are not increasing"
        if any(c2 < c1 - 1e-9 for c1, c2 in itertools.pairwise(counts)):
            return "histogram buckets are not cumulative (partial bucket set or reset)"
    return None


@dataclass(frozen=True)
class PodCounts:
    """One replica's (pod's) share of a version's increments over one interval.

    ``bucket_counts`` are cumulative at the version's ``bounds_ms`` (empty without a
    histogram). Between-pod differences of the *stable* version, when nothing changed, are
    what the judges use to tell a canary that differs from a canary that merely runs on other
    pods (see DESIGN-NOTES "Canary on its own pods").
    """

    pod: str
    requests: float
    errors: float
    bucket_counts: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "requests": self.requests,
            "errors": self.errors,
            "bucket_counts": list(self.bucket_counts),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PodCounts:
        return cls(
            pod=str(d["pod"]),
            requests=float(d["requests"]),
            errors=float(d["errors"]),
            bucket_counts=tuple(float(c) for c in d.get("bucket_counts", ())),
        )


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
    histograms: Mapping[Signal, Histogram] = field(default_factory=dict)
    """Named histograms (LLM serving signals), by signal."""
    categories: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Counts per category, by metric name (``categorical`` and ``finish-reason`` metrics). A
    category absent from the mapping had no count in the interval."""
    labels: Mapping[str, LabelCounts] = field(default_factory=dict)
    """Delayed ground truth, by metric name (``quality`` metrics)."""
    pods: tuple[PodCounts, ...] = ()
    """The same increments per replica, when the source can tell pods apart (empty: it
    cannot). Their sums are ``requests``, ``errors`` and ``bucket_counts``."""

    def problem(self) -> str | None:
        """Why these counts cannot be used (NaN or infinite, negative = counter reset, bad
        layout), or None. Non-finite counts are named as such before any sign check.

        Every field is checked: a problem in a named histogram, a category count or a label
        count makes the whole interval unusable, named by the field it is in.
        """
        values = (self.requests, self.errors, *self.bucket_counts)
        why = _non_finite(values)
        if why is not None:
            return why
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
        why = _histogram_problem(self.bounds_ms, self.bucket_counts)
        if why is not None:
            return why
        for signal, hist in self.histograms.items():
            why = hist.problem()
            if why is not None:
                return f"{signal} histogram: {why}"
        for name, counts in self.categories.items():
            for category, n in counts.items():
                if math.isnan(n) or math.isinf(n):
                    return f"{name}: count of category {category!r} is {n}"
                if n < 0:
                    return f"{name}: negative count of category {category!r} (counter reset)"
        for name, lc in self.labels.items():
            why = lc.problem()
            if why is not None:
                return f"{name}: {why}"
        for pod in self.pods:
            values = (pod.requests, pod.errors, *pod.bucket_counts)
            if any(math.isnan(v) or v < 0 for v in values) or pod.errors > pod.requests:
                return f"pod {pod.pod!r}: counts are NaN, negative or inconsistent"
            if pod.bucket_counts and len(pod.bucket_counts) != len(self.bounds_ms):
                return f"pod {pod.pod!r}: histogram differs in length from the version's"
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
            "histograms": {k: h.to_dict() for k, h in self.histograms.items()},
            "categories": {k: dict(v) for k, v in self.categories.items()},
            "labels": {k: [lc.correct, lc.labelled] for k, lc in self.labels.items()},
        }
        if self.mirrored_requests is not None:
            d["mirrored_requests"] = self.mirrored_requests
        if self.mirrored_errors is not None:
            d["mirrored_errors"] = self.mirrored_errors
        if self.pods:
            d["pods"] = [p.to_dict() for p in self.pods]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VersionCounts:
        hists: dict[Signal, Histogram] = {}
        for k, h in d.get("histograms", {}).items():
            if k not in SIGNALS:
                raise ValueError(f"unknown histogram signal {k!r} (expected one of {SIGNALS})")
            hists[k] = Histogram.from_dict(h)
        return cls(
            requests=float(d["requests"]),
            errors=float(d["errors"]),
            bounds_ms=tuple(decode_float(b) for b in d.get("bounds_ms", ())),
            bucket_counts=tuple(float(c) for c in d.get("bucket_counts", ())),
            values={str(k): float(v) for k, v in d.get("values", {}).items()},
            mirrored_requests=_optional(d.get("mirrored_requests")),
            mirrored_errors=_optional(d.get("mirrored_errors")),
            histograms=hists,
            categories={
                str(k): {str(c): float(n) for c, n in v.items()}
                for k, v in d.get("categories", {}).items()
            },
            labels={
                str(k): LabelCounts(float(v[0]), float(v[1]))
                for k, v in d.get("labels", {}).items()
            },
            pods=tuple(PodCounts.from_dict(p) for p in d.get("pods", ())),
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
