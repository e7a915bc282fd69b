"""Two-sample Kolmogorov-Smirnov on per-interval samples (fixed-horizon)."""

from __future__ import annotations

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


class KSJudge(SampleJudge):
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
        self.alpha = check_alpha(alpha)

    def _test(self, name: str, canary: list[float], stable: list[float]) -> SeriesResult:
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
            return SeriesResult(
                Status.FAIL,
                f"canary stochastically larger: KS D+={d:.3g}, p={p:.3g} < {level:.3g}",
                estimate=d,
                p_value=p,
                threshold=level,
                details=details,
            )
        return SeriesResult(
            Status.CONTINUE,
            f"no evidence the canary is larger: KS D+={d:.3g}, p={p:.3g} >= {level:.3g}",
            estimate=d,
            p_value=p,
            threshold=level,
            details=details,
        )
