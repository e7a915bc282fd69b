"""Flagger-style absolute thresholds on the canary alone."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Unpack

from canaryd.jsonnum import encode_tree
from canaryd.observation import VersionCounts
from canaryd.stats.classic.base import (
    COMPUTE_ERRORS,
    STATE_VERSION,
    ClassicJudgeBase,
    JudgeArgs,
    Kind,
    check_state,
    counts_problem,
    quantile_label,
)
from canaryd.stats.histogram import histogram_quantile
from canaryd.stats.verdict import Status, Verdict


class ThresholdJudge(ClassicJudgeBase):
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
        why = counts_problem(canary, self.kind)
        v: float | None = None
        if why is None:
            try:
                v = self._value(canary)
            except COMPUTE_ERRORS as exc:
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
        check_state(state, self.judge_name)
        self._checks = int(state["checks"])
        self._failed = int(state["failed"])
        self._inconclusive = int(state["inconclusive"])
        lv = state.get("last_value")
        self._last_value = None if lv is None else float(lv)
        self._last_ok = state.get("last_ok")
        self._last_problem = state.get("last_problem")
