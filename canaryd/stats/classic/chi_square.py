"""Chi-square test of the pooled bucket counts (fixed-horizon)."""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, Unpack

import numpy as np
from scipy import stats

from canaryd.errors import HistogramLayoutError
from canaryd.jsonnum import decode_float, encode_float, encode_tree
from canaryd.observation import VersionCounts
from canaryd.stats.classic.base import (
    COMPUTE_ERRORS,
    STATE_VERSION,
    ClassicJudgeBase,
    JudgeArgs,
    Kind,
    aligned_histograms,
    check_alpha,
    check_state,
    counts_problem,
    quantile_label,
)
from canaryd.stats.histogram import common_bounds, histogram_quantile, rebucket
from canaryd.stats.verdict import Status, Verdict


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


class ChiSquareJudge(ClassicJudgeBase):
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
        self.alpha = check_alpha(alpha)
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
            why = counts_problem(vc, self.kind)
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
            bounds, cs, cc = aligned_histograms(stable, canary)
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
        except COMPUTE_ERRORS as exc:
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
        check_state(state, self.judge_name)
        self._requests = [float(x) for x in state["requests"]]
        self._errors = [float(x) for x in state["errors"]]
        self._bounds = tuple(decode_float(b) for b in state["bounds_ms"])
        self._cum = [[float(x) for x in c] for c in state["cumulative"]]
        self._traffic_intervals = [int(x) for x in state["traffic_intervals"]]
        self._intervals = int(state["intervals"])
        self._skipped = int(state["skipped"])
        self._last_problem = state.get("last_problem")
