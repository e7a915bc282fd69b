"""Kayenta's Mann-Whitney metric classifier, reimplemented for conformance.

Kayenta (spinnaker/kayenta, ``NetflixACAJudge``) classifies one metric by comparing the canary
("experiment") sample with the baseline ("control") sample:

1. NaN values are removed (``remove``) or replaced by 0 (``replace``).
2. An empty sample gives ``Nodata`` under ``remove`` and ``Pass`` under ``replace``.
3. Identical samples (as multisets), or a single distinct value overall, give ``Pass``.
4. Otherwise a confidence interval for the location shift ``canary - baseline`` comes from
   inverting the two-sided Wilcoxon rank-sum test as R's
   ``wilcox.test(canary, baseline, conf.int=TRUE, exact=FALSE, correct=TRUE)`` does: the normal
   approximation with tie-corrected variance and continuity correction; each end of the interval
   is the root of the standardized statistic at ``±z`` found with a Brent solver. The shift
   estimate is the root at ``z = 0`` (R's asymptotic Hodges–Lehmann estimate).
5. ``High`` when the interval's lower end exceeds ``tolerance·|estimate|`` and the effect size
   reaches the allowed increase; ``Low`` when the upper end is below ``-tolerance·|estimate|`` and
   the effect size is at most the allowed decrease. A NaN effect size (a zero mean under
   ``meanRatio``) skips the effect-size condition. ``direction`` restricts which of the two can
   fire.
6. A critical metric whose class is High/Low beyond the critical effect-size thresholds is
   flagged ``critical`` (the class itself does not change).

Deviations from Kayenta, all deliberate:

- When both samples are constant but different, Kayenta adds Gaussian noise of relative size
  1e-5 so the rank test can run. The samples are then completely separated, so the interval and
  the estimate are the difference itself up to the noise; this module returns exactly that
  difference, deterministically.
- Kayenta reports Apache Commons' Mann-Whitney p-value (no tie or continuity correction). This
  module reports R's p-value (tie-corrected, continuity-corrected, two-sided). The p-value plays
  no part in the classification.
- Brent: Kayenta's solver (Apache Commons, started at the bracket midpoint) returns the midpoint
  when the function is exactly zero there, which matters for tied data (the statistic is a step
  function). This module checks the midpoint first too, and then runs
  ``scipy.optimize.brentq`` with ``xtol=1e-4`` as R's ``uniroot(tol=1e-4)`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

Classification = Literal["High", "Low", "Pass", "Nodata"]
Direction = Literal["increase", "decrease", "either"]
Measure = Literal["meanRatio", "cles"]

Values = Sequence[float] | np.ndarray
"""A sample: a sequence of floats or a 1-d numpy array."""

BRENT_XTOL = 1e-4
"""Absolute tolerance of the root finder, as R's ``uniroot(..., tol = 1e-4)``."""


@dataclass(frozen=True)
class WilcoxonResult:
    """R-style asymptotic Wilcoxon rank-sum interval for the shift ``experiment - control``."""

    lower: float
    upper: float
    estimate: float
    p_value: float


@dataclass(frozen=True)
class KayentaResult:
    """What ``kayenta_classify`` concludes, with the numbers behind it.

    ``effect_size`` is the measure the thresholds were checked against (mean ratio or CLES);
    ``mean_ratio`` is always the ratio of means (NaN when either mean is zero), which is what
    Kayenta reports as the metric's "ratio". ``lower``/``upper``/``estimate``/``p_value`` are NaN
    when no rank test was run (Nodata, identical or single-valued data).
    """

    classification: Classification
    lower: float
    upper: float
    estimate: float
    effect_size: float
    p_value: float
    mean_ratio: float
    critical: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "classification": self.classification,
            "lower": self.lower,
            "upper": self.upper,
            "estimate": self.estimate,
            "effect_size": self.effect_size,
            "p_value": self.p_value,
            "mean_ratio": self.mean_ratio,
            "critical": self.critical,
            "reason": self.reason,
        }


def mean_ratio(control: Values, experiment: Values) -> float:
    """mean(experiment) / mean(control); NaN when either mean is zero (as Kayenta)."""
    c = float(np.mean(control))
    e = float(np.mean(experiment))
    if c == 0.0 or e == 0.0:
        return math.nan
    return e / c


def cles(control: Values, experiment: Values) -> float:
    """Common-language effect size: P(experiment > control) + P(tie)/2 (Vargha–Delaney A)."""
    m = len(experiment)
    n = len(control)
    ranks = stats.rankdata(
        np.concatenate([np.asarray(experiment, float), np.asarray(control, float)])
    )
    r1 = float(sum(float(r) for r in ranks[:m]))
    return (2 * r1 - m * (m + 1)) / (2 * n * m)


def _wilcoxon_diff(x: np.ndarray, y: np.ndarray) -> Callable[[float, float], float]:
    """R's ``wdiff``: the continuity-corrected standardized rank-sum statistic of x - d vs y, minus zq."""
    nx = float(len(x))
    ny = float(len(y))

    def wdiff(d: float, zq: float) -> float:
        dr = stats.rankdata(np.concatenate([x - d, y]), method="average")
        _, ties = np.unique(dr, return_counts=True)
        dz = sum(float(r) for r in dr[: len(x)]) - nx * (nx + 1) / 2 - nx * ny / 2
        correction = math.copysign(0.5, dz) if dz != 0 else 0.0
        tie_term = float(sum(float(t) ** 3 - float(t) for t in ties))
        sigma = math.sqrt((nx * ny / 12) * ((nx + ny + 1) - tie_term / ((nx + ny) * (nx + ny - 1))))
        if sigma == 0:
            raise ValueError("cannot compute confidence interval when all observations are tied")
        return (dz - correction) / sigma - zq

    return wdiff


def _solve(f: Callable[[float], float], lo: float, hi: float) -> float:
    """Root of a decreasing step-like function on [lo, hi], as Kayenta's solver finds it.

    The midpoint is tried first and returned if it is an exact root (Apache Commons' Brent
    solvers start there); otherwise Brent's method with R's tolerance on the bracketing half.
    """
    mid = lo + 0.5 * (hi - lo)
    f_mid = f(mid)
    if f_mid == 0.0:
        return mid
    f_lo = f(lo)
    if f_lo == 0.0:
        return lo
    if f_lo * f_mid < 0:
        return _brent_or_bisect(f, lo, mid)
    f_hi = f(hi)
    if f_hi == 0.0:
        return hi
    if f_mid * f_hi < 0:
        return _brent_or_bisect(f, mid, hi)
    raise ValueError(f"no sign change of the rank statistic on [{lo}, {hi}]")


def _brent_or_bisect(f: Callable[[float], float], lo: float, hi: float) -> float:
    """Brent's method on a bracket; plain bisection when it does not converge.

    Brent can stall on a step function whose bracket is huge next to ``BRENT_XTOL`` (values
    near 1e300 were found by the fuzz test); bisection always closes in on the step, within
    the float resolution of the bracket after at most ~2,100 halvings.
    """
    try:
        return float(optimize.brentq(f, lo, hi, xtol=BRENT_XTOL, maxiter=1000))
    except RuntimeError:
        f_lo = f(lo)
        for _ in range(2200):
            mid = lo + 0.5 * (hi - lo)
            if mid in (lo, hi):
                break
            f_mid = f(mid)
            if f_mid == 0.0:
                return mid
            if (f_mid < 0) == (f_lo < 0):
                lo, f_lo = mid, f_mid
            else:
                hi = mid
        return lo + 0.5 * (hi - lo)


def wilcoxon_shift_interval(
    experiment: Values, control: Values, confidence: float
) -> WilcoxonResult:
    """Asymptotic Wilcoxon confidence interval and estimate for the shift experiment - control.

    Mirrors R's ``wilcox.test(experiment, control, conf.int=TRUE, exact=FALSE, correct=TRUE)``
    as Kayenta ports it. Raises ``ValueError`` when every observation is tied.
    """
    x = np.asarray(experiment, dtype=float)
    y = np.asarray(control, dtype=float)
    if len(x) == 0 or len(y) == 0:
        raise ValueError("both samples must be non-empty")
    alpha = 1.0 - confidence
    mu_min = float(x.min() - y.max())
    mu_max = float(x.max() - y.min())
    wdiff = _wilcoxon_diff(x, y)

    def root(zq: float) -> float:
        if wdiff(mu_min, zq) <= 0:
            return mu_min
        if wdiff(mu_max, zq) >= 0:
            return mu_max
        return _solve(lambda d: wdiff(d, zq), mu_min, mu_max)

    z = float(stats.norm.ppf(alpha / 2))  # negative
    lower = root(-z)
    upper = root(z)
    estimate = _solve(lambda d: wdiff(d, 0.0), mu_min, mu_max)
    p_value = float(
        stats.mannwhitneyu(
            x, y, use_continuity=True, alternative="two-sided", method="asymptotic"
        ).pvalue
    )
    return WilcoxonResult(lower=lower, upper=upper, estimate=estimate, p_value=p_value)


def _clean(values: Values, nan_strategy: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    nan = np.isnan(arr)
    if nan_strategy == "remove":
        return arr[~nan]
    return np.where(nan, 0.0, arr)


def kayenta_classify(
    experiment: Values,
    control: Values,
    *,
    tolerance: float = 0.25,
    confidence: float = 0.98,
    effect_size_thresholds: tuple[float, float] | None = None,
    critical_thresholds: tuple[float, float] | None = None,
    measure: str = "meanRatio",
    direction: str = "either",
    nan_strategy: str = "remove",
    critical_metric: bool = False,
) -> KayentaResult:
    """Classify ``experiment`` (canary) against ``control`` (baseline) as Kayenta does.

    ``effect_size_thresholds`` and ``critical_thresholds`` are ``(allowed decrease, allowed
    increase)``; ``None`` means Kayenta's default, ``(1.0, 1.0)`` for ``meanRatio`` and
    ``(0.5, 0.5)`` for ``cles``. ``measure``, ``direction`` and ``nan_strategy`` are
    case-insensitive (``meanRatio``/``cles``; ``increase``/``decrease``/``either``;
    ``remove``/``replace``). The module docstring lists the deviations from Kayenta.
    """
    measure_key = measure.lower()
    if measure_key not in ("meanratio", "cles"):
        raise ValueError(f"unknown effect-size measure {measure!r} (meanRatio or cles)")
    direction_key = direction.lower()
    if direction_key not in ("increase", "decrease", "either"):
        raise ValueError(f"unknown direction {direction!r} (increase, decrease or either)")
    nan_key = nan_strategy.lower()
    if nan_key not in ("remove", "replace"):
        raise ValueError(f"unknown NaN strategy {nan_strategy!r} (remove or replace)")
    default = 0.5 if measure_key == "cles" else 1.0
    allowed_decrease, allowed_increase = effect_size_thresholds or (default, default)
    critical_decrease, critical_increase = critical_thresholds or (default, default)

    exp = _clean(experiment, nan_key)
    ctl = _clean(control, nan_key)
    nan = math.nan

    def result(
        cls: Classification, reason: str, *, mr: float = 1.0, es: float = nan
    ) -> KayentaResult:
        return KayentaResult(cls, nan, nan, nan, es, nan, mr, False, reason)

    if len(exp) == 0 or len(ctl) == 0:
        if nan_key == "remove":
            missing = "canary" if len(exp) == 0 else "baseline"
            return KayentaResult(
                "Nodata", nan, nan, nan, nan, nan, 1.0, critical_metric, f"no {missing} data"
            )
        return result("Pass", "no data, and NaN values are replaced (Kayenta passes)")
    if np.array_equal(np.sort(exp), np.sort(ctl)):
        return result("Pass", "the canary and baseline data are identical")
    if len(np.unique(np.concatenate([exp, ctl]))) == 1:
        return result("Pass", "a single distinct value in both samples")

    mr = mean_ratio(ctl, exp)
    effect = cles(ctl, exp) if measure_key == "cles" else mr
    if len(np.unique(exp)) == 1 and len(np.unique(ctl)) == 1:
        # Kayenta jitters these by 1e-5 relative Gaussian noise; the samples are separated, so
        # the interval collapses onto the difference.
        diff = float(exp[0] - ctl[0])
        wr = WilcoxonResult(
            diff,
            diff,
            diff,
            float(
                stats.mannwhitneyu(
                    exp, ctl, use_continuity=True, alternative="two-sided", method="asymptotic"
                ).pvalue
            ),
        )
    else:
        wr = wilcoxon_shift_interval(exp, ctl, confidence)

    bound = tolerance * abs(wr.estimate)
    effect_nan = math.isnan(effect)
    is_high = (
        direction_key in ("increase", "either")
        and wr.lower > bound
        and (effect_nan or effect >= allowed_increase)
    )
    is_low = (
        direction_key in ("decrease", "either")
        and wr.upper < -bound
        and (effect_nan or effect <= allowed_decrease)
    )
    cls: Classification = "High" if is_high else "Low" if is_low else "Pass"
    critical = critical_metric and (
        (cls == "High" and (effect_nan or effect >= critical_increase))
        or (cls == "Low" and (effect_nan or effect <= critical_decrease))
    )
    if cls == "Pass":
        reason = (
            f"shift interval [{wr.lower:.4g}, {wr.upper:.4g}] is within ±{bound:.4g} "
            f"(tolerance {tolerance:g} of |estimate|) or the effect size {effect:.4g} is too small"
        )
    else:
        side = "above" if cls == "High" else "below"
        reason = (
            f"classified {cls}: shift interval [{wr.lower:.4g}, {wr.upper:.4g}] lies {side} "
            f"±{bound:.4g}, effect size {effect:.4g}" + (" (critical)" if critical else "")
        )
    return KayentaResult(
        classification=cls,
        lower=wr.lower,
        upper=wr.upper,
        estimate=wr.estimate,
        effect_size=effect,
        p_value=wr.p_value,
        mean_ratio=mr,
        critical=critical,
        reason=reason,
    )
