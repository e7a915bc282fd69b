"""Classic fixed-horizon judges: Kayenta's Mann-Whitney, KS, Welch t, chi-square and thresholds.

These exist for compatibility (``mann-whitney`` reproduces Kayenta's classifier) and for
comparison with the anytime-valid judges. **None of them is safe to re-run every interval.**
Each is a fixed-horizon test: its error rate holds for *one* look at a sample size fixed in
advance. Looking again after every interval and rolling back at the first rejection inflates
false rollbacks: a cumulative z-test at a nominal 5%, looked at K times, rejects a healthy canary
14% of the time at K = 5, 19% at K = 10 and 25% at K = 20 (DESIGN.md §2). ``peeking_safe`` is
therefore False for every judge here, and ``canaryd validate`` warns about policies that re-run
them.

Samples. The sample-based judges (``mann-whitney``, ``ks``, ``welch-t``) treat each analysis
interval as one observation per version:

- ``errors``: the interval's error rate ``errors / requests``; an interval with no requests
  contributes nothing for that version;
- ``latency``: ``histogram_quantile(q)`` of the interval's histogram for each policy quantile
  (one series per quantile); an empty histogram (NaN) contributes nothing;
- ``custom``: ``VersionCounts.values[custom_name or metric]``; a missing or non-finite value
  contributes nothing.

Higher is worse for every kind. A version with fewer than ``min_intervals`` samples makes the
verdict INCONCLUSIVE, which never counts as a pass. No judge here ever returns PASS: a test of
"canary worse" that does not reject has not shown the canary is no worse.

Histogram layouts. When the two versions' buckets differ, both are re-bucketed to the
boundaries they share (``common_bounds``), which loses resolution but never invents data. When
they share no finite boundary the interval is skipped and the problem is remembered: the judge
keeps working, and a verdict that lacks data names the problem in its reason. Judges never raise
out of ``update`` or ``verdict`` on bad counts; they skip the interval or return INCONCLUSIVE.

State. ``state()`` is a JSON document (lists of floats, counts, strings); ``load_state`` on a
judge built with the same arguments restores it exactly, so later verdicts are identical.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypedDict, Unpack

import numpy as np
from scipy import stats

from canaryd.errors import HistogramLayoutError
from canaryd.jsonnum import decode_float, encode_float, encode_tree
from canaryd.observation import VersionCounts
from canaryd.stats.histogram import common_bounds, histogram_quantile, rebucket
from canaryd.stats.kayenta import kayenta_classify
from canaryd.stats.verdict import Status, Verdict

Kind = Literal["errors", "latency", "custom"]
KINDS: tuple[str, ...] = ("errors", "latency", "custom")
STATE_VERSION = 1

_COMPUTE_ERRORS = (ValueError, ArithmeticError, IndexError, HistogramLayoutError)


def quantile_label(q: float) -> str:
    """``0.99`` -> ``"p99"``, ``0.999`` -> ``"p99.9"``."""
    return f"p{round(q * 100, 6):g}"


def _counts_problem(vc: VersionCounts, kind: str) -> str | None:
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


def _aligned_histograms(
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


def _check_common(
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


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


@dataclass
class _SeriesResult:
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


class _ClassicJudge:
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
        self.kind, self.quantiles = _check_common(kind, quantiles, min_intervals)
        self.critical = bool(critical)
        self.custom_name = custom_name
        self.min_intervals = int(min_intervals)


class _SampleJudge(_ClassicJudge, abc.ABC):
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
            bounds, cs, cc = _aligned_histograms(stable, canary)
            for q, name in zip(self.quantiles, self.series_names, strict=True):
                for cum, out in ((cs, s), (cc, c)):
                    v = histogram_quantile(q, bounds, cum)
                    if math.isfinite(v):
                        out[name] = float(v)
        return s, c

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None:
        self._intervals += 1
        for label, vc in (("stable", stable), ("canary", canary)):
            why = _counts_problem(vc, self.kind)
            if why is not None:
                self._skipped += 1
                self._last_problem = f"{label}: {why}"
                return
        try:
            s, c = self._samples(stable, canary)
        except _COMPUTE_ERRORS as exc:
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
    def _test(self, name: str, canary: list[float], stable: list[float]) -> _SeriesResult:
        """Compare one series (a quantile, the error rate or a custom value) of both versions."""

    def verdict(self) -> Verdict:
        names = self.series_names
        n_s = min(len(self._stable[k]) for k in names)
        n_c = min(len(self._canary[k]) for k in names)
        if n_s < self._effective_min or n_c < self._effective_min:
            return self._too_little(n_s, n_c)
        results: dict[str, _SeriesResult] = {}
        for name in names:
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    results[name] = self._test(name, self._canary[name], self._stable[name])
            except _COMPUTE_ERRORS as exc:
                results[name] = _SeriesResult(Status.INCONCLUSIVE, f"could not compute: {exc}")
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
        _check_state(state, self.judge_name)
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


def _pair(t: Sequence[float] | None) -> tuple[float, float] | None:
    if t is None:
        return None
    if len(t) != 2:
        raise ValueError(f"thresholds are (allowed decrease, allowed increase), got {t!r}")
    return (float(t[0]), float(t[1]))


def _check_state(state: dict[str, Any], judge_name: str) -> None:
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"unsupported state version {state.get('version')!r}")
    if state.get("judge") != judge_name:
        raise ValueError(f"state is for judge {state.get('judge')!r}, not {judge_name!r}")


class MannWhitneyJudge(_SampleJudge):
    """Kayenta's Mann-Whitney classifier on per-interval samples (``judge: mann-whitney``).

    Not anytime-valid: re-running it every interval inflates false rollbacks (a cumulative
    z-test at nominal 5% looked at K times rejects 14% at K=5, 19% at K=10, 25% at K=20; scipy's
    Mann-Whitney on cumulative data 18% at 10 looks and 24% at 20). Use it as Kayenta does, once
    per fixed analysis window.

    Kayenta's class maps to a status as follows (direction is "increase": higher is worse):
    High → FAIL; Low → CONTINUE (better is not a failure); Pass → CONTINUE with
    ``details["kayenta_class"] = "Pass"`` (a fixed-horizon test cannot show non-inferiority, so
    this judge never returns PASS); Nodata → INCONCLUSIVE. ``estimate`` is the Hodges–Lehmann
    shift canary − stable, ``interval`` its confidence interval, ``threshold`` the tolerance
    band ``tolerance·|estimate|``. Defaults are Kayenta's judge defaults (tolerance 0.25,
    confidence 0.98).
    """

    judge_name: ClassVar[str] = "mann-whitney"

    def __init__(
        self,
        metric: str,
        kind: Kind | str = "errors",
        *,
        tolerance: float = 0.25,
        confidence: float = 0.98,
        effect_size_thresholds: tuple[float, float] | None = None,
        critical_thresholds: tuple[float, float] | None = None,
        measure: str = "meanRatio",
        **common: Unpack[JudgeArgs],
    ) -> None:
        super().__init__(metric, kind, **common)
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be non-negative, got {tolerance}")
        if measure.lower() not in ("meanratio", "cles"):
            raise ValueError(f"measure must be meanRatio or cles, got {measure!r}")
        self.tolerance = float(tolerance)
        self.confidence = float(confidence)
        self.effect_size_thresholds = _pair(effect_size_thresholds)
        self.critical_thresholds = _pair(critical_thresholds)
        self.measure = measure

    def _test(self, name: str, canary: list[float], stable: list[float]) -> _SeriesResult:
        r = kayenta_classify(
            canary,
            stable,
            tolerance=self.tolerance,
            confidence=self.confidence,
            effect_size_thresholds=self.effect_size_thresholds,
            critical_thresholds=self.critical_thresholds,
            measure=self.measure,
            direction="increase",
            nan_strategy="remove",
            critical_metric=self.critical,
        )
        details = {
            "kayenta_class": r.classification,
            "kayenta_critical": r.critical,
            "effect_size": r.effect_size,
            "effect_size_measure": self.measure,
            "mean_ratio": r.mean_ratio,
            "confidence": self.confidence,
            "tolerance": self.tolerance,
        }
        status = {
            "High": Status.FAIL,
            "Low": Status.CONTINUE,
            "Pass": Status.CONTINUE,
            "Nodata": Status.INCONCLUSIVE,
        }[r.classification]
        has_ci = not math.isnan(r.estimate)
        return _SeriesResult(
            status=status,
            reason=f"Kayenta class {r.classification}: {r.reason}",
            estimate=r.estimate if has_ci else None,
            interval=(r.lower, r.upper) if has_ci else None,
            p_value=None if math.isnan(r.p_value) else r.p_value,
            threshold=self.tolerance * abs(r.estimate) if has_ci else None,
            details=details,
        )


class KSJudge(_SampleJudge):
    """One-sided two-sample Kolmogorov–Smirnov test, "canary larger" (``judge: ks``).

    Not anytime-valid: re-running it every interval inflates false rollbacks (a cumulative
    z-test at nominal 5% looked at K times rejects 14% at K=5, 19% at K=10, 25% at K=20).

    ``scipy.stats.ks_2samp(canary, stable, alternative="less")``: scipy's alternative names the
    relation of the first sample's CDF to the second's, and a canary whose values are larger
    has the *lower* CDF. FAIL when p < alpha, else CONTINUE. With several latency quantiles,
    alpha is split evenly across them (Bonferroni). ``estimate`` is the statistic D⁺ =
    max(F_stable − F_canary).
    """

    judge_name: ClassVar[str] = "ks"

    def __init__(
        self,
        metric: str,
        kind: Kind | str = "errors",
        *,
        alpha: float = 0.05,
        **common: Unpack[JudgeArgs],
    ) -> None:
        super().__init__(metric, kind, **common)
        self.alpha = _check_alpha(alpha)

    def _test(self, name: str, canary: list[float], stable: list[float]) -> _SeriesResult:
        level = self.alpha / len(self.series_names)
        res = stats.ks_2samp(canary, stable, alternative="less")
        p = float(res.pvalue)
        d = float(res.statistic)
        details = {
            "alpha": level,
            "statistic": d,
            "canary_median": float(np.median(canary)),
            "stable_median": float(np.median(stable)),
        }
        if p < level:
            return _SeriesResult(
                Status.FAIL,
                f"canary stochastically larger: KS D+={d:.3g}, p={p:.3g} < {level:.3g}",
                estimate=d,
                p_value=p,
                threshold=level,
                details=details,
            )
        return _SeriesResult(
            Status.CONTINUE,
            f"no evidence the canary is larger: KS D+={d:.3g}, p={p:.3g} >= {level:.3g}",
            estimate=d,
            p_value=p,
            threshold=level,
            details=details,
        )


class WelchTJudge(_SampleJudge):
    """One-sided Welch t-test with a relative tolerance (``judge: welch-t``).

    Not anytime-valid: re-running it every interval inflates false rollbacks (a cumulative
    z-test at nominal 5% looked at K times rejects 14% at K=5, 19% at K=10, 25% at K=20).

    Tests H0: mean_canary ≤ (1 + tolerance)·mean_stable by shifting the stable samples by the
    factor: ``ttest_ind(canary, (1+tol)·stable, equal_var=False, alternative="greater")``. FAIL
    when p < alpha (split evenly across latency quantiles). ``estimate`` is the ratio of means
    (None when the stable mean is 0); ``interval`` is the two-sided (1 − alpha) Welch interval for
    the *difference* of means canary − stable. When both samples have zero variance the test is
    decided by the means alone (p = 0 if the canary mean exceeds the tolerated mean, else 1).
    At least 2 samples per version are needed whatever ``min_intervals`` says.
    """

    judge_name: ClassVar[str] = "welch-t"

    def __init__(
        self,
        metric: str,
        kind: Kind | str = "errors",
        *,
        alpha: float = 0.05,
        tolerance: float = 0.0,
        **common: Unpack[JudgeArgs],
    ) -> None:
        super().__init__(metric, kind, **common)
        self.alpha = _check_alpha(alpha)
        if tolerance < 0:
            raise ValueError(f"tolerance must be non-negative, got {tolerance}")
        self.tolerance = float(tolerance)

    @property
    def _effective_min(self) -> int:
        return max(2, self.min_intervals)

    def _test(self, name: str, canary: list[float], stable: list[float]) -> _SeriesResult:
        level = self.alpha / len(self.series_names)
        c = np.asarray(canary, dtype=float)
        s = np.asarray(stable, dtype=float)
        factor = 1.0 + self.tolerance
        mc, ms = float(c.mean()), float(s.mean())
        tolerated = factor * ms
        if float(c.var()) == 0.0 and float(s.var()) == 0.0:
            p = 0.0 if mc > tolerated else 1.0
            interval: tuple[float, float] | None = (mc - ms, mc - ms)
            t_stat = math.inf if mc > tolerated else (-math.inf if mc < tolerated else 0.0)
        else:
            res = stats.ttest_ind(c, factor * s, equal_var=False, alternative="greater")
            p = float(res.pvalue)
            t_stat = float(res.statistic)
            ci = stats.ttest_ind(c, s, equal_var=False).confidence_interval(1.0 - self.alpha)
            interval = (float(ci.low), float(ci.high))
            if not (math.isfinite(interval[0]) and math.isfinite(interval[1])):
                interval = None
        ratio = None if ms == 0 else mc / ms
        details = {
            "alpha": level,
            "tolerance": self.tolerance,
            "t": t_stat,
            "canary_mean": mc,
            "stable_mean": ms,
            "interval_of": "mean difference canary - stable",
        }
        if math.isnan(p):
            return _SeriesResult(
                Status.CONTINUE,
                "t-test undefined on these samples; no evidence of a regression",
                estimate=ratio,
                interval=interval,
                threshold=level,
                details=details,
            )
        if p < level:
            reason = (
                f"canary mean {mc:.4g} exceeds (1+{self.tolerance:g})·stable mean {ms:.4g}: "
                f"p={p:.3g} < {level:.3g}"
            )
            status = Status.FAIL
        else:
            reason = (
                f"no evidence the canary mean {mc:.4g} exceeds (1+{self.tolerance:g})·stable "
                f"mean {ms:.4g}: p={p:.3g} >= {level:.3g}"
            )
            status = Status.CONTINUE
        return _SeriesResult(
            status,
            reason,
            estimate=ratio,
            interval=interval,
            p_value=p,
            threshold=level,
            details=details,
        )


def _merge_sparse(table: np.ndarray, min_expected: float = 5.0) -> tuple[np.ndarray, list[int]]:
    """Merge adjacent columns of a 2×K table until every expected count is ≥ ``min_expected``.

    Greedy from the fastest bucket up; a short tail is merged into the last group. Returns the
    merged table and, for each merged column, the index of its last original column.
    """
    rows = table.sum(axis=1)
    n = float(rows.sum())
    need = min_expected * n / float(rows.min()) if rows.min() > 0 else math.inf
    groups: list[np.ndarray] = []
    ends: list[int] = []
    acc = np.zeros(2)
    for j in range(table.shape[1]):
        acc = acc + table[:, j]
        if acc.sum() >= need:
            groups.append(acc)
            ends.append(j)
            acc = np.zeros(2)
    if acc.sum() > 0 or not groups:
        if groups:
            groups[-1] = groups[-1] + acc
            ends[-1] = table.shape[1] - 1
        else:
            groups.append(acc)
            ends.append(table.shape[1] - 1)
    return np.column_stack(groups), ends


class ChiSquareJudge(_ClassicJudge):
    """Chi-square test on counts cumulated over the rollout (``judge: chi-square``).

    Not anytime-valid: re-running it every interval inflates false rollbacks (a cumulative
    z-test at nominal 5% looked at K times rejects 14% at K=5, 19% at K=10, 25% at K=20).

    - ``errors``: the 2×2 table errors/successes × canary/stable. One-sided: the p-value is half
      the chi-square (Yates-corrected) p-value when the canary's rate is higher, and 1 − half
      otherwise; FAIL when it is below alpha. When an expected count is below 5 the chi-square
      approximation is unreliable and Fisher's exact test (``alternative="greater"``) is used
      instead (``details["test"]`` says which). ``estimate`` is the rate ratio canary/stable with
      a (1 − alpha) Katz log interval (0.5 added to each cell).
    - ``latency``: the bucket counts (differences of the cumulative counts, on the boundaries
      both versions share) in a 2×K table; adjacent sparse buckets are merged so that every
      expected count is ≥ 5, then ``chi2_contingency``. The test itself is two-sided (it tests
      any difference in distribution), so the judge FAILs only when p < alpha **and** the canary
      is worse, defined as: the canary's mean merged-bucket index (an ordinal "how slow") is
      higher than the stable's. ``estimate`` is the ratio canary/stable of the highest policy
      quantile, interpolated as ``histogram_quantile``.

    ``min_intervals`` counts intervals in which the version had traffic. ``custom`` metrics
    have no counts and are not supported.
    """

    judge_name: ClassVar[str] = "chi-square"

    def __init__(
        self,
        metric: str,
        kind: Kind | str = "errors",
        *,
        alpha: float = 0.05,
        **common: Unpack[JudgeArgs],
    ) -> None:
        super().__init__(metric, kind, **common)
        if self.kind == "custom":
            raise ValueError("chi-square needs counts: use it for errors or latency, not custom")
        self.alpha = _check_alpha(alpha)
        self._requests = [0.0, 0.0]  # stable, canary
        self._errors = [0.0, 0.0]
        self._bounds: tuple[float, ...] = ()
        self._cum: list[list[float]] = [[], []]
        self._traffic_intervals = [0, 0]
        self._intervals = 0
        self._skipped = 0
        self._last_problem: str | None = None

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None:
        self._intervals += 1
        for label, vc in (("stable", stable), ("canary", canary)):
            why = _counts_problem(vc, self.kind)
            if why is not None:
                self._skipped += 1
                self._last_problem = f"{label}: {why}"
                return
        if self.kind == "errors":
            for i, vc in enumerate((stable, canary)):
                self._requests[i] += float(vc.requests)
                self._errors[i] += float(vc.errors)
                if vc.requests > 0:
                    self._traffic_intervals[i] += 1
            return
        try:
            bounds, cs, cc = _aligned_histograms(stable, canary)
            if self._bounds and self._bounds != bounds:
                target = common_bounds(self._bounds, bounds)
                acc = [list(rebucket(self._bounds, a, target)) for a in self._cum]
                cs, cc = rebucket(bounds, cs, target), rebucket(bounds, cc, target)
                bounds = target
            elif self._bounds:
                acc = self._cum
            else:
                acc = [[0.0] * len(bounds), [0.0] * len(bounds)]
        except HistogramLayoutError as exc:
            self._skipped += 1
            self._last_problem = str(exc)
            return
        self._bounds = tuple(bounds)
        self._cum = [
            [a + float(x) for a, x in zip(acc[i], new, strict=True)]
            for i, new in enumerate((cs, cc))
        ]
        for i, new in enumerate((cs, cc)):
            if float(new[-1]) > 0:
                self._traffic_intervals[i] += 1

    def _base_details(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "intervals": self._intervals,
            "skipped_intervals": self._skipped,
            "peeking_safe": False,
            "alpha": self.alpha,
        }
        if self._last_problem is not None:
            d["last_problem"] = self._last_problem
        return d

    def _v(self, status: Status, reason: str, **kw: Any) -> Verdict:
        details = self._base_details()
        details.update(kw.pop("details", {}))
        return Verdict(
            metric=self.metric,
            judge=self.judge_name,
            status=status,
            reason=reason,
            critical=self.critical,
            details=encode_tree(details),
            **kw,
        )

    def verdict(self) -> Verdict:
        n_s, n_c = self._traffic_intervals
        if n_s < self.min_intervals or n_c < self.min_intervals:
            reason = (
                f"too little data: canary had traffic in {n_c} and stable in {n_s} intervals, "
                f"{self.min_intervals} needed per version"
            )
            if self._last_problem is not None:
                reason += (
                    f"; {self._skipped} interval(s) skipped, last because {self._last_problem}"
                )
            return self._v(Status.INCONCLUSIVE, reason)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                if self.kind == "errors":
                    return self._errors_verdict()
                return self._latency_verdict()
        except _COMPUTE_ERRORS as exc:
            return self._v(Status.INCONCLUSIVE, f"could not compute the test: {exc}")

    def _errors_verdict(self) -> Verdict:
        n_s, n_c = self._requests
        e_s, e_c = self._errors
        samples = {"canary_samples": n_c, "stable_samples": n_s}
        if n_s <= 0 or n_c <= 0:
            return self._v(Status.INCONCLUSIVE, "no requests for one version", **samples)
        table = np.array([[e_c, n_c - e_c], [e_s, n_s - e_s]], dtype=float)
        rate_c, rate_s = e_c / n_c, e_s / n_s
        expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
        if float(expected.min()) < 5:
            test = "fisher-exact"
            p = float(stats.fisher_exact(np.rint(table).astype(int), alternative="greater").pvalue)
        else:
            test = "chi-square"
            p_two = float(stats.chi2_contingency(table, correction=True).pvalue)
            p = p_two / 2 if rate_c > rate_s else 1.0 - p_two / 2
        if rate_s > 0:
            ratio: float | None = rate_c / rate_s
        else:
            ratio = math.inf if rate_c > 0 else None
        # Katz log interval for the rate ratio, 0.5 added to every cell.
        a, b = e_c + 0.5, n_c - e_c + 0.5
        c, d = e_s + 0.5, n_s - e_s + 0.5
        log_rr = math.log((a / (a + b)) / (c / (c + d)))
        se = math.sqrt(1 / a - 1 / (a + b) + 1 / c - 1 / (c + d))
        z = float(stats.norm.ppf(1 - self.alpha / 2))
        interval = (math.exp(log_rr - z * se), math.exp(log_rr + z * se))
        details = {"test": test, "canary_rate": rate_c, "stable_rate": rate_s}
        if p < self.alpha and rate_c > rate_s:
            status = Status.FAIL
            reason = (
                f"canary error rate {rate_c:.4g} above stable {rate_s:.4g}: {test} one-sided "
                f"p={p:.3g} < {self.alpha:g}"
            )
        else:
            status = Status.CONTINUE
            reason = (
                f"no evidence the canary error rate {rate_c:.4g} is above stable {rate_s:.4g}: "
                f"{test} one-sided p={p:.3g}"
            )
        return self._v(
            status,
            reason,
            estimate=ratio,
            interval=interval,
            p_value=p,
            threshold=self.alpha,
            details=details,
            **samples,
        )

    def _latency_verdict(self) -> Verdict:
        bounds = self._bounds
        cum_s = np.asarray(self._cum[0], dtype=float)
        cum_c = np.asarray(self._cum[1], dtype=float)
        per_s = np.diff(np.concatenate([[0.0], cum_s]))
        per_c = np.diff(np.concatenate([[0.0], cum_c]))
        table = np.vstack([per_c, per_s]).clip(min=0)
        samples = {"canary_samples": float(table[0].sum()), "stable_samples": float(table[1].sum())}
        if table[0].sum() <= 0 or table[1].sum() <= 0:
            return self._v(
                Status.INCONCLUSIVE, "no latency observations for one version", **samples
            )
        merged, ends = _merge_sparse(table)
        q = max(self.quantiles)
        pq_c = histogram_quantile(q, bounds, self._cum[1])
        pq_s = histogram_quantile(q, bounds, self._cum[0])
        ratio = pq_c / pq_s if pq_s > 0 and math.isfinite(pq_c) else None
        details: dict[str, Any] = {
            "test": "chi-square",
            "quantile": quantile_label(q),
            "canary_quantile_ms": pq_c,
            "stable_quantile_ms": pq_s,
            "merged_upper_bounds_ms": [encode_float(bounds[j]) for j in ends],
        }
        if merged.shape[1] < 2:
            return self._v(
                Status.INCONCLUSIVE,
                "too few requests for a chi-square test: sparse buckets merge into one",
                estimate=ratio,
                details=details,
                **samples,
            )
        res = stats.chi2_contingency(merged, correction=False)
        p = float(res.pvalue)
        idx = np.arange(merged.shape[1], dtype=float)
        mean_c = float((merged[0] * idx).sum() / merged[0].sum())
        mean_s = float((merged[1] * idx).sum() / merged[1].sum())
        worse = mean_c > mean_s
        details.update(
            {
                "statistic": float(res.statistic),
                "dof": int(res.dof),
                "canary_mean_bucket": mean_c,
                "stable_mean_bucket": mean_s,
            }
        )
        if p < self.alpha and worse:
            status = Status.FAIL
            reason = (
                f"canary latency distribution differs and is slower (mean bucket {mean_c:.3g} vs "
                f"{mean_s:.3g}): p={p:.3g} < {self.alpha:g}"
            )
        elif p < self.alpha:
            status = Status.CONTINUE
            reason = f"latency distributions differ (p={p:.3g}) but the canary is not slower"
        else:
            status = Status.CONTINUE
            reason = f"no evidence the latency distributions differ: p={p:.3g}"
        return self._v(
            status,
            reason,
            estimate=ratio,
            p_value=p,
            threshold=self.alpha,
            details=details,
            **samples,
        )

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "judge": self.judge_name,
            "requests": list(self._requests),
            "errors": list(self._errors),
            "bounds_ms": [encode_float(b) for b in self._bounds],
            "cumulative": [list(c) for c in self._cum],
            "traffic_intervals": list(self._traffic_intervals),
            "intervals": self._intervals,
            "skipped": self._skipped,
            "last_problem": self._last_problem,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        _check_state(state, self.judge_name)
        self._requests = [float(x) for x in state["requests"]]
        self._errors = [float(x) for x in state["errors"]]
        self._bounds = tuple(decode_float(b) for b in state["bounds_ms"])
        self._cum = [[float(x) for x in c] for c in state["cumulative"]]
        self._traffic_intervals = [int(x) for x in state["traffic_intervals"]]
        self._intervals = int(state["intervals"])
        self._skipped = int(state["skipped"])
        self._last_problem = state.get("last_problem")


class ThresholdJudge(_ClassicJudge):
    """Flagger-style absolute checks of the canary alone (``judge: threshold``).

    Not a statistical test and not anytime-valid: every interval is another chance for noise to
    cross the line, so re-running it inflates false rollbacks just as re-running a test does (a
    cumulative z-test at nominal 5% looked at K times rejects 14% at K=5, 19% at K=10, 25% at
    K=20). ``failure_limit`` (Flagger's ``threshold``) is the only guard.

    Each interval is one check of the canary's value:

    - ``errors``: the error rate in percent, or — when ``success_min`` is given — the success
      rate in percent, which must be ≥ ``success_min`` (Flagger's ``request-success-rate``);
    - ``latency``: ``histogram_quantile(quantile)`` of that interval's histogram, in ms
      (``quantile`` defaults to the highest of ``quantiles``);
    - ``custom``: ``values[custom_name or metric]``.

    The value must lie within ``[min, max]`` (either may be omitted). Failed checks are counted
    over the whole rollout (they do not reset), and the verdict is FAIL once
    ``failed_checks >= failure_limit``. An interval with no canary requests (or an empty
    histogram, or a missing or non-finite custom value) is an inconclusive check: it counts as neither
    passed nor failed. Otherwise CONTINUE, or INCONCLUSIVE while fewer than ``min_intervals``
    conclusive checks have been made (zero checks is always INCONCLUSIVE). Never PASS.
    """

    judge_name: ClassVar[str] = "threshold"

    def __init__(
        self,
        metric: str,
        kind: Kind | str = "errors",
        *,
        min: float | None = None,
        max: float | None = None,
        success_min: float | None = None,
        quantile: float | None = None,
        failure_limit: int = 5,
        **common: Unpack[JudgeArgs],
    ) -> None:
        common.setdefault("min_intervals", 1)  # every interval is a check of its own
        super().__init__(metric, kind, **common)
        if min is None and max is None and success_min is None:
            raise ValueError("threshold needs min, max or success_min")
        if success_min is not None and self.kind != "errors":
            raise ValueError("success_min applies to errors only")
        if min is not None and max is not None and min > max:
            raise ValueError(f"min {min} is above max {max}")
        if failure_limit < 1:
            raise ValueError(f"failure_limit must be at least 1, got {failure_limit}")
        if quantile is not None:
            q = float(quantile)
        else:
            # (``max`` is the upper-bound parameter here, not the builtin)
            q = sorted(self.quantiles)[-1] if self.quantiles else 0.99
        if not 0.0 < q <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {q}")
        self.min = None if min is None else float(min)
        self.max = None if max is None else float(max)
        self.success_min = None if success_min is None else float(success_min)
        self.quantile = float(q)
        self.failure_limit = int(failure_limit)
        self._checks = 0
        self._failed = 0
        self._inconclusive = 0
        self._last_value: float | None = None
        self._last_ok: bool | None = None
        self._last_problem: str | None = None

    @property
    def value_name(self) -> str:
        if self.kind == "errors":
            return "success rate %" if self.success_min is not None else "error rate %"
        if self.kind == "latency":
            return f"{quantile_label(self.quantile)} ms"
        return self.custom_name or self.metric

    def _value(self, canary: VersionCounts) -> float | None:
        if self.kind == "errors":
            if canary.requests <= 0:
                return None
            rate = 100.0 * float(canary.errors) / float(canary.requests)
            return 100.0 - rate if self.success_min is not None else rate
        if self.kind == "latency":
            v = histogram_quantile(self.quantile, canary.bounds_ms, canary.bucket_counts)
            return None if math.isnan(v) else float(v)
        cv = canary.values.get(self.custom_name or self.metric)
        return None if cv is None or not math.isfinite(cv) else float(cv)

    def _ok(self, v: float) -> bool:
        if self.success_min is not None and v < self.success_min:
            return False
        if self.min is not None and v < self.min:
            return False
        return not (self.max is not None and v > self.max)

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None:
        why = _counts_problem(canary, self.kind)
        v: float | None = None
        if why is None:
            try:
                v = self._value(canary)
            except _COMPUTE_ERRORS as exc:
                why = str(exc)
        if why is not None or v is None:
            self._inconclusive += 1
            self._last_problem = why or "no canary data this interval"
            return
        self._checks += 1
        ok = self._ok(v)
        if not ok:
            self._failed += 1
        self._last_value = v
        self._last_ok = ok

    def _bounds_text(self) -> str:
        parts = []
        if self.success_min is not None:
            parts.append(f">= {self.success_min:g}")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)

    def verdict(self) -> Verdict:
        details: dict[str, Any] = {
            "kind": self.kind,
            "value": self.value_name,
            "checks": self._checks,
            "failed_checks": self._failed,
            "inconclusive_checks": self._inconclusive,
            "failure_limit": self.failure_limit,
            "min": self.min,
            "max": self.max,
            "success_min": self.success_min,
            "last_ok": self._last_ok,
            "peeking_safe": False,
        }
        if self._last_problem is not None:
            details["last_problem"] = self._last_problem
        threshold: float | None = (
            self.success_min
            if self.success_min is not None
            else (self.max if self.max is not None else self.min)
        )
        common: dict[str, Any] = {
            "metric": self.metric,
            "judge": self.judge_name,
            "critical": self.critical,
            "estimate": self._last_value,
            "threshold": threshold,
            "canary_samples": float(self._checks),
            "details": encode_tree(details),
        }
        tally = (
            f"{self._failed} of {self._checks} checks failed ({self.value_name} "
            f"{self._bounds_text()}; limit {self.failure_limit})"
        )
        if self._failed >= self.failure_limit:
            return Verdict(status=Status.FAIL, reason=tally, **common)
        if self._checks == 0 or self._checks < self.min_intervals:
            reason = f"too few conclusive checks: {tally}"
            if self._inconclusive:
                reason += f"; {self._inconclusive} inconclusive"
            return Verdict(status=Status.INCONCLUSIVE, reason=reason, **common)
        return Verdict(status=Status.CONTINUE, reason=tally, **common)

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "judge": self.judge_name,
            "checks": self._checks,
            "failed": self._failed,
            "inconclusive": self._inconclusive,
            "last_value": self._last_value,
            "last_ok": self._last_ok,
            "last_problem": self._last_problem,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        _check_state(state, self.judge_name)
        self._checks = int(state["checks"])
        self._failed = int(state["failed"])
        self._inconclusive = int(state["inconclusive"])
        lv = state.get("last_value")
        self._last_value = None if lv is None else float(lv)
        self._last_ok = state.get("last_ok")
        self._last_problem = state.get("last_problem")


ClassicJudge = MannWhitneyJudge | KSJudge | WelchTJudge | ChiSquareJudge | ThresholdJudge

ClassicJudgeClass = (
    type[MannWhitneyJudge]
    | type[KSJudge]
    | type[WelchTJudge]
    | type[ChiSquareJudge]
    | type[ThresholdJudge]
)

CLASSIC_JUDGES: dict[str, ClassicJudgeClass] = {
    "mann-whitney": MannWhitneyJudge,
    "ks": KSJudge,
    "welch-t": WelchTJudge,
    "chi-square": ChiSquareJudge,
    "threshold": ThresholdJudge,
}


def make_classic_judge(judge: str, **kwargs: Any) -> ClassicJudge:
    """Build a classic judge by its policy name (``mann-whitney``, ``ks``, ``welch-t``,
    ``chi-square``, ``threshold``); ``kwargs`` go to the class's constructor."""
    try:
        cls = CLASSIC_JUDGES[judge]
    except KeyError:
        raise ValueError(
            f"unknown classic judge {judge!r}; known: {', '.join(CLASSIC_JUDGES)}"
        ) from None
    return cls(**kwargs)
