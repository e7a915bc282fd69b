"""What every classic judge shares: arguments, sample series, count checks, state.

See ``canaryd.stats.classic`` for what the classic judges are and why none of them is safe to
re-run every interval.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypedDict, Unpack

import numpy as np

from canaryd.errors import HistogramLayoutError
from canaryd.jsonnum import encode_tree
from canaryd.observation import VersionCounts
from canaryd.stats.histogram import common_bounds, histogram_quantile, rebucket
from canaryd.stats.verdict import Status, Verdict

Kind = Literal["errors", "latency", "custom"]
KINDS: tuple[str, ...] = ("errors", "latency", "custom")
STATE_VERSION = 1

COMPUTE_ERRORS = (ValueError, ArithmeticError, IndexError, HistogramLayoutError)


def quantile_label(q: float) -> str:
    """``0.99`` -> ``"p99"``, ``0.999`` -> ``"p99.9"``."""
    return f"p{round(q * 100, 6):g}"


def counts_problem(vc: VersionCounts, kind: str) -> str | None:
    """Why this version's counts cannot be used for ``kind``, or None."""
    if kind == "errors":
        r, e = vc.requests, vc.errors
        if not (math.isfinite(r) and math.isfinite(e)):
            return "non-finite request or error count"
        if r < 0 or e < 0:
            return "negative increment (counter reset)"
        if e > r:
            return f"more errors ({e:g}) than requests ({r:g})"
        return None
    if kind == "latency":
        if not vc.has_histogram:
            return "no latency histogram"
        return vc.problem()
    return None


def aligned_histograms(
    stable: VersionCounts, canary: VersionCounts
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Both histograms on one layout: (bounds, stable cumulative, canary cumulative).

    Raises ``HistogramLayoutError`` when the layouts share no usable boundary.
    """
    if tuple(stable.bounds_ms) == tuple(canary.bounds_ms):
        return tuple(stable.bounds_ms), tuple(stable.bucket_counts), tuple(canary.bucket_counts)
    bounds = common_bounds(stable.bounds_ms, canary.bounds_ms)
    return (
        bounds,
        rebucket(stable.bounds_ms, stable.bucket_counts, bounds),
        rebucket(canary.bounds_ms, canary.bucket_counts, bounds),
    )


def check_common(
    kind: str, quantiles: Sequence[float], min_intervals: int
) -> tuple[str, tuple[float, ...]]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    qs = tuple(float(q) for q in quantiles)
    if kind == "latency" and not qs:
        raise ValueError("latency needs at least one quantile")
    for q in qs:
        if not 0.0 < q <= 1.0:
            raise ValueError(f"quantiles must be in (0, 1], got {q}")
    if min_intervals < 1:
        raise ValueError(f"min_intervals must be at least 1, got {min_intervals}")
    return kind, qs


def check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


@dataclass
class SeriesResult:
    """One series' test (one latency quantile, or the only series of errors/custom)."""

    status: Status
    reason: str
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    p_value: float | None = None
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


class JudgeArgs(TypedDict, total=False):
    """The settings every classic judge shares (keyword arguments after ``metric, kind``)."""

    critical: bool
    quantiles: Sequence[float]
    custom_name: str | None
    min_intervals: int


class ClassicJudgeBase:
    """What every classic judge knows about its metric."""

    judge_name: ClassVar[str] = ""
    peeking_safe: ClassVar[bool] = False

    def __init__(
        self,
        metric: str,
        kind: Kind | str = "errors",
        *,
        critical: bool = True,
        quantiles: Sequence[float] = (0.5, 0.9, 0.99),
        custom_name: str | None = None,
        min_intervals: int = 5,
    ) -> None:
        self.metric = metric
        self.kind, self.quantiles = check_common(kind, quantiles, min_intervals)
        self.critical = bool(critical)
        self.custom_name = custom_name
        self.min_intervals = int(min_intervals)


class SampleJudge(ClassicJudgeBase, abc.ABC):
    """Shared machinery of the judges that compare per-interval samples of the two versions."""

    def __init__(
        self, metric: str, kind: Kind | str = "errors", **common: Unpack[JudgeArgs]
    ) -> None:
        super().__init__(metric, kind, **common)
        self._stable: dict[str, list[float]] = {k: [] for k in self.series_names}
        self._canary: dict[str, list[float]] = {k: [] for k in self.series_names}
        self._intervals = 0
        self._skipped = 0
        self._last_problem: str | None = None

    # -- samples -------------------------------------------------------------------------------

    @property
    def series_names(self) -> tuple[str, ...]:
        if self.kind == "latency":
            return tuple(quantile_label(q) for q in self.quantiles)
        if self.kind == "errors":
            return ("error_rate",)
        return ("value",)

    @property
    def _custom_key(self) -> str:
        return self.custom_name or self.metric

    def _samples(
        self, stable: VersionCounts, canary: VersionCounts
    ) -> tuple[dict[str, float], dict[str, float]]:
        """This interval's finite samples per series for each version (absent = no sample)."""
        s: dict[str, float] = {}
        c: dict[str, float] = {}
        if self.kind == "errors":
            for vc, out in ((stable, s), (canary, c)):
                if vc.requests > 0:
                    out["error_rate"] = float(vc.errors) / float(vc.requests)
        elif self.kind == "custom":
            for vc, out in ((stable, s), (canary, c)):
                v = vc.values.get(self._custom_key)
                if v is not None and math.isfinite(v):
                    out["value"] = float(v)
        else:
            bounds, cs, cc = aligned_histograms(stable, canary)
            for q, name in zip(self.quantiles, self.series_names, strict=True):
                for cum, out in ((cs, s), (cc, c)):
                    v = histogram_quantile(q, bounds, cum)
                    if math.isfinite(v):
                        out[name] = float(v)
        return s, c

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None:
        self._intervals += 1
        for label, vc in (("stable", stable), ("canary", canary)):
            why = counts_problem(vc, self.kind)
            if why is not None:
                self._skipped += 1
                self._last_problem = f"{label}: {why}"
                return
        try:
            s, c = self._samples(stable, canary)
        except COMPUTE_ERRORS as exc:
            self._skipped += 1
            self._last_problem = str(exc)
            return
        for name, v in s.items():
            self._stable[name].append(v)
        for name, v in c.items():
            self._canary[name].append(v)

    # -- verdict -------------------------------------------------------------------------------

    @property
    def _effective_min(self) -> int:
        return self.min_intervals

    def _verdict(self, **kw: Any) -> Verdict:
        kw["details"] = encode_tree(kw.get("details", {}))
        return Verdict(metric=self.metric, judge=self.judge_name, critical=self.critical, **kw)

    def _too_little(self, n_s: int, n_c: int) -> Verdict:
        need = self._effective_min
        reason = (
            f"too little data: canary has {n_c} and stable {n_s} usable intervals, "
            f"{need} needed per version"
        )
        if self._last_problem is not None:
            reason += f"; {self._skipped} interval(s) skipped, last because {self._last_problem}"
        return self._verdict(
            status=Status.INCONCLUSIVE,
            reason=reason,
            canary_samples=float(n_c),
            stable_samples=float(n_s),
            details=self._base_details(),
        )

    def _base_details(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "intervals": self._intervals,
            "skipped_intervals": self._skipped,
            "peeking_safe": False,
        }
        if self._last_problem is not None:
            d["last_problem"] = self._last_problem
        return d

    @abc.abstractmethod
    def _test(self, name: str, canary: list[float], stable: list[float]) -> SeriesResult:
        """Compare one series (a quantile, the error rate or a custom value) of both versions."""

    def verdict(self) -> Verdict:
        names = self.series_names
        n_s = min(len(self._stable[k]) for k in names)
        n_c = min(len(self._canary[k]) for k in names)
        if n_s < self._effective_min or n_c < self._effective_min:
            return self._too_little(n_s, n_c)
        results: dict[str, SeriesResult] = {}
        for name in names:
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    results[name] = self._test(name, self._canary[name], self._stable[name])
            except COMPUTE_ERRORS as exc:
                results[name] = SeriesResult(Status.INCONCLUSIVE, f"could not compute: {exc}")
        failing = [k for k in names if results[k].status == Status.FAIL]
        inconclusive = [k for k in names if results[k].status == Status.INCONCLUSIVE]
        if failing:
            pick = failing[0]
        elif inconclusive:
            pick = inconclusive[0]
        else:
            pick = names[-1]
        r = results[pick]
        details = self._base_details()
        details.update(r.details)
        if self.kind == "latency":
            details["quantile"] = pick
            details["series"] = {
                k: {"status": v.status.value, **v.details} for k, v in results.items()
            }
        reason = r.reason if len(names) == 1 else f"{pick}: {r.reason}"
        return self._verdict(
            status=r.status,
            reason=reason,
            estimate=r.estimate,
            interval=r.interval,
            p_value=r.p_value,
            threshold=r.threshold,
            canary_samples=float(len(self._canary[pick])),
            stable_samples=float(len(self._stable[pick])),
            details=details,
        )

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "judge": self.judge_name,
            "stable": {k: list(v) for k, v in self._stable.items()},
            "canary": {k: list(v) for k, v in self._canary.items()},
            "intervals": self._intervals,
            "skipped": self._skipped,
            "last_problem": self._last_problem,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        check_state(state, self.judge_name)
        if set(state["stable"]) != set(self.series_names):
            raise ValueError(
                f"state holds series {sorted(state['stable'])}, judge expects "
                f"{list(self.series_names)}"
            )
        self._stable = {k: [float(x) for x in state["stable"][k]] for k in self.series_names}
        self._canary = {k: [float(x) for x in state["canary"][k]] for k in self.series_names}
        self._intervals = int(state["intervals"])
        self._skipped = int(state["skipped"])
        self._last_problem = state.get("last_problem")


def pair(t: Sequence[float] | None) -> tuple[float, float] | None:
    if t is None:
        return None
    if len(t) != 2:
        raise ValueError(f"thresholds are (allowed decrease, allowed increase), got {t!r}")
    return (float(t[0]), float(t[1]))


def check_state(state: dict[str, Any], judge_name: str) -> None:
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"unsupported state version {state.get('version')!r}")
    if state.get("judge") != judge_name:
        raise ValueError(f"state is for judge {state.get('judge')!r}, not {judge_name!r}")
