"""Welch's t-test on per-interval samples, with a relative tolerance (fixed-horizon)."""

from __future__ import annotations

import math
from typing import ClassVar, Unpack

import numpy as np
from scipy import stats

from canaryd.stats.classic.base import (
    JudgeArgs,
    Kind,
    SampleJudge,
    SeriesResult,
    check_alpha,
)
from canaryd.stats.verdict import Status


class WelchTJudge(SampleJudge):
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
        self.alpha = check_alpha(alpha)
        if tolerance < 0:
            raise ValueError(f"tolerance must be non-negative, got {tolerance}")
        self.tolerance = float(tolerance)

    @property
    def _effective_min(self) -> int:
        return max(2, self.min_intervals)

    def _test(self, name: str, canary: list[float], stable: list[float]) -> SeriesResult:
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
            return SeriesResult(
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
        return SeriesResult(
            status,
            reason,
            estimate=ratio,
            interval=interval,
            p_value=p,
            threshold=level,
            details=details,
        )
