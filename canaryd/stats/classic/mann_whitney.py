"""Kayenta's Mann-Whitney classifier as a (fixed-horizon) judge."""

from __future__ import annotations

import math
from typing import ClassVar, Unpack

from canaryd.stats.classic.base import (
    JudgeArgs,
    Kind,
    SampleJudge,
    SeriesResult,
    pair,
)
from canaryd.stats.kayenta import kayenta_classify
from canaryd.stats.verdict import Status


class MannWhitneyJudge(SampleJudge):
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
        self.effect_size_thresholds = pair(effect_size_thresholds)
        self.critical_thresholds = pair(critical_thresholds)
        self.measure = measure

    def _test(self, name: str, canary: list[float], stable: list[float]) -> SeriesResult:
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
        return SeriesResult(
            status=status,
            reason=f"Kayenta class {r.classification}: {r.reason}",
            estimate=r.estimate if has_ci else None,
            interval=(r.lower, r.upper) if has_ci else None,
            p_value=None if math.isnan(r.p_value) else r.p_value,
            threshold=self.tolerance * abs(r.estimate) if has_ci else None,
            details=details,
        )
