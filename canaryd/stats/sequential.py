"""Anytime-valid judges for errors and latency histograms, built on the rate-ratio e-process."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from canaryd.errors import HistogramLayoutError
from canaryd.jsonnum import decode_float, encode_float, unpack_f64
from canaryd.observation import PodCounts, VersionCounts
from canaryd.stats.histogram import common_bounds, histogram_quantile, nearest_boundary, rebucket
from canaryd.stats.pods import (
    DEFAULT_LATENCY_SPREAD,
    DEFAULT_RATE_SPREAD,
    MIN_SPREAD_PODS,
    PodSpread,
    grid_steps,
    latency_log_h,
    scaled_bound,
    warm_up_text,
)
from canaryd.stats.ratio import LATENCY_ALT_SCALE, Grid, RateRatioBatch
from canaryd.stats.score import ScoreBatch, step_scores
from canaryd.stats.verdict import Status, Verdict

MIN_SELECTION_REQUESTS = 30
"""Fewest stable requests before the latency boundaries are chosen from stable's histogram."""
SELECTION_TAIL_EVENTS = 10
"""Stable requests slower than the highest quantile expected before choosing: a p99 boundary
chosen from 30 requests is a guess (all of them are below it), so wait for ~10/(1-q)."""
MAX_SELECTION_REQUESTS = 1000
REPORT_QUANTILES = (0.5, 0.9, 0.99)
BODY_MAX_QUANTILE = 0.9
"""Policy quantiles up to this one are the distribution's *body*: their boundaries are tested
together by the score test (``stats.score``); those above it, the *tail*, one by one with the
rate-ratio test, whose Poisson model suits rare events."""
BODY_WEIGHT = 0.2
"""The score test's share of the latency judge's averaged e-value when the policy asks for both
body and tail quantiles (the tail boundaries share the rest equally). Chosen on the power study
(analysis/results/power.md, "The body and the tail"): the score test needs a fraction of the
p50 boundary's rate-ratio evidence, so most of the weight goes where evidence is scarce, the
tail. Validity does not depend on it: fixed weights summing to 1 give an e-value."""


def _stable_quantile(stable_share_slower: float) -> str:
    """What a tested boundary is in stable's data: "stable's p79" (the share of stable's
    requests at or below it, never the quantile it was chosen for)."""
    return f"stable's p{100.0 * (1.0 - stable_share_slower):.3g}"


def _boundary_text(le_ms: float, stable_share_slower: float) -> str:
    """A tested latency boundary with its stable quantile: "60 ms (stable's p79)"."""
    return f"{le_ms:g} ms ({_stable_quantile(stable_share_slower)})"


def _fmt_ratio(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def latency_log_e(
    log_e_rows: np.ndarray, log_e_score: np.ndarray | None, body_rows: Sequence[int]
) -> np.ndarray:
    """The latency judge's rollback log e-value, for ``n`` rollouts at once.

    ``log_e_rows``: the boundaries' rate-ratio log e-values, ``(rows, n)``; ``log_e_score``:
    the body's score test's, ``(n,)`` (None without a body); ``body_rows``: the rows in the
    body. The body's e-value is the mean of the score test's and of the body rows'; the
    result is ``BODY_WEIGHT`` of it plus the rest over the tail rows, equally (without a body
    the mean of all rows, without a tail the body's). ``SequentialLatencyJudge`` and the
    studies (``analysis/``) both read it here, so they compute the same numbers.
    """
    rows = np.asarray(log_e_rows, dtype=np.float64)
    if log_e_score is None or not len(body_rows):
        return np.asarray(np.logaddexp.reduce(rows, axis=0) - math.log(rows.shape[0]))
    body = list(body_rows)
    tail = [r for r in range(rows.shape[0]) if r not in body]
    rate_body = np.logaddexp.reduce(rows[body], axis=0) - math.log(len(body))
    log_body = np.logaddexp(np.asarray(log_e_score), rate_body) - math.log(2.0)
    if not tail:
        return np.asarray(log_body)
    log_tail = np.logaddexp.reduce(rows[tail], axis=0) - math.log(len(tail))
    return np.asarray(
        np.logaddexp(log_body + math.log(BODY_WEIGHT), log_tail + math.log(1.0 - BODY_WEIGHT))
    )


def _widen(engine: RateRatioBatch, pods: PodSpread) -> None:
    """Move each row's rollback null up by stable's between-pod spread (see ``stats.pods``)."""
    log_h, _ = pods.estimate()
    engine.set_shift(grid_steps(log_h, engine.step, engine.max_shift))


def _widening(engine: RateRatioBatch, row: int) -> float:
    """The factor row ``row``'s null is widened by (1 when it is not)."""
    return math.exp(int(engine.shift[row]) * engine.step)


def _widened_text(engine: RateRatioBatch, pods: PodSpread, row: int) -> str:
    """The reason's note on row ``row``'s null, ``rho0 x h``, widened by ``pods`` (none where
    the source reports no pods), saying whether ``h`` is assumed, estimated, or the widest the
    grid holds."""
    rho0, h = engine.grid.rho0, _widening(engine, row)
    tested = f"tested against {rho0:.3g}x{h:.3g}"
    assuming = f"assuming {pods.assumption()}"
    if pods.too_few:
        return (
            f"; fewer than {MIN_SPREAD_PODS} stable pods, so how much pods differ cannot be "
            f"estimated: {tested}, {assuming}"
        )
    if pods.warming()[row]:
        return (
            f"; {warm_up_text(pods.stable_pods)}, so how much pods "
            f"differ is not known yet: {tested} until they have, {assuming}"
        )
    if pods.assumed_rows()[row]:
        return (
            f"; {pods.stable_pods} stable pods bound how much pods differ only roughly, wider "
            f"than podSpread: {tested}, {assuming}"
        )
    if h <= 1.0:
        return ""
    if int(engine.shift[row]) >= engine.max_shift:
        return (
            f"; stable's pods differ so much, or have so few events, that the null is the "
            f"widest the test holds ({tested}): this metric cannot roll back until they show "
            "less spread"
        )
    return (
        f"; stable's pods differ, so the canary's may by up to x{h:.3g} on a healthy canary: "
        f"{tested}"
    )


class SequentialErrorsJudge:
    """Error-rate ratio, canary over stable, tested sequentially (peeking-safe).

    Fails when the e-value for ``rho > 1 + tolerance`` reaches ``1/alpha``; passes when the
    confidence sequence shows ``rho < 1 + tolerance``. ``pod_spread``: the ratio of error
    rates by which pods of one version are assumed to differ at most, where stable's pods
    cannot show it (``stats.pods``; the policy's ``podSpread``).
    """

    judge_name: ClassVar[str] = "sequential"
    peeking_safe: ClassVar[bool] = True

    def __init__(
        self,
        metric: str,
        alpha: float,
        tolerance: float,
        critical: bool = True,
        pod_spread: float = DEFAULT_RATE_SPREAD,
    ) -> None:
        self.metric = metric
        self.alpha = alpha
        self.tolerance = tolerance
        self.critical = critical
        self.pod_spread = pod_spread
        self.engine = RateRatioBatch(1, 1.0 + tolerance)
        self.pods = self._new_pods()
        self.history_pods = 0
        """Stable pods whose pre-canary counts seeded the spread (``prime``)."""

    def _new_pods(self) -> PodSpread:
        return PodSpread(1, self.alpha, self.pod_spread, "error rate")

    def prime(self, stable: VersionCounts) -> None:
        """Seed stable's between-pod spread with its per-pod counts from before the canary.

        Only the spread: the rate-ratio test compares concurrent traffic, so stable's earlier
        error rate never enters it.
        """
        if stable.pods:
            self.pods.add([(p.pod, p.requests, (p.errors,)) for p in stable.pods], ())
            self.history_pods = sum(1 for p in stable.pods if p.requests > 0)

    def history_note(self) -> str:
        if self.history_pods < MIN_SPREAD_PODS:  # too few to show a spread: nothing learned
            return ""
        return f"the spread of stable's {self.history_pods} pods from before the canary"

    @property
    def test_alpha(self) -> float:
        """alpha left for the rate-ratio test once the pods' share is spent (all without pods)."""
        return self.alpha - self.pods.beta if self.pods.seen else self.alpha

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None:
        if stable.pods or canary.pods:
            self.pods.add([(p.pod, p.requests, (p.errors,)) for p in stable.pods], canary.pods)
            _widen(self.engine, self.pods)
        self.engine.update(stable.requests, stable.errors, canary.requests, canary.errors)

    def verdict(self) -> Verdict:
        e = self.engine
        ns, nc = e.requests[0]
        xs, xc = e.events[0]
        rho0 = e.grid.rho0
        base: dict[str, Any] = {
            "metric": self.metric,
            "judge": "sequential",
            "critical": self.critical,
            "canary_samples": float(nc),
            "stable_samples": float(ns),
            "canary_events": float(xc),
            "stable_events": float(xs),
            "threshold": 1.0 / self.test_alpha,
            "details": {
                "canary_error_rate": float(xc / nc) if nc else math.nan,
                "stable_error_rate": float(xs / ns) if ns else math.nan,
                "max_ratio_tolerated": rho0,
                "alpha": self.alpha,
                **self.pods.details(),
                "null_widening": _widening(self.engine, 0),
            },
        }
        if nc <= 0 or ns <= 0:
            who = "canary" if nc <= 0 else "stable"
            return Verdict(status=Status.INCONCLUSIVE, reason=f"no {who} requests yet", **base)
        e_now = float(math.exp(min(e.log_e()[0], 700.0)))
        e_max = float(math.exp(min(e.max_log_e[0], 700.0)))
        lo, hi = (float(a[0]) for a in e.confidence_sequence(self.alpha))
        est = float(e.estimate()[0])
        base.update(e_value=e_now, interval=(lo, hi), estimate=None if math.isnan(est) else est)
        h = _widening(e, 0)
        widened = _widened_text(e, self.pods, 0)
        if e_max >= 1.0 / self.test_alpha:
            reason = (
                f"canary error rate is more than {rho0:.3g}x stable's "
                f"({int(xc)}/{int(nc)} vs {int(xs)}/{int(ns)}; e-value {e_max:.3g} >= "
                f"{1 / self.test_alpha:.3g}){widened}"
            )
            return Verdict(status=Status.FAIL, reason=reason, **base)
        if xs + xc == 0:
            return Verdict(
                status=Status.CONTINUE,
                reason=f"no errors yet in {int(nc)} canary and {int(ns)} stable requests",
                **base,
            )
        if bool(e.non_inferior(self.alpha)[0]):
            reason = (
                f"canary error rate shown below {rho0:.3g}x stable's (ratio < {_fmt_ratio(hi)})"
            )
            return Verdict(status=Status.PASS, reason=reason, **base)
        ratio = f"ratio {_fmt_ratio(lo)}..{_fmt_ratio(hi)}"
        if lo <= rho0 or h <= 1.0:
            reason = f"{ratio} still includes {rho0:.3g}{widened}"
        else:  # above the tolerance, but not beyond what the pods may differ by
            where = "still includes" if hi >= rho0 * h else "below"
            reason = (
                f"{ratio} is above {rho0:.3g} but {where} {rho0 * h:.3g}, the widened null{widened}"
            )
        return Verdict(status=Status.CONTINUE, reason=reason, **base)

    def state(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"engine": self.engine.row_state(0), "pods": self.pods.state()}
        if self.history_pods:
            doc["history_pods"] = self.history_pods
        return doc

    def load_state(self, state: dict[str, Any]) -> None:
        self.engine.load_row_state(0, state["engine"])
        self.pods = self._new_pods()
        if "pods" in state:  # absent in state saved before pods were judged
            self.pods.load_state(state["pods"])
        self.history_pods = int(state.get("history_pods", 0))


class SequentialLatencyJudge:
    """Latency, tested on exceedance counts above stable's quantile boundaries (peeking-safe).

    For each policy quantile q, the finite bucket boundary ``b`` where stable's cumulative
    share is nearest q is chosen once, from stable data only, after ``selection_requests``
    stable requests (enough for ~10 to be slower than the highest quantile, at most 1000); testing starts with the *next* interval, so the choice never peeks at the
    canary. "Slower than b" is a count, tested with the rate-ratio e-process against
    ``rho0 = 1 + tolerance``; these give each boundary's ratio, confidence sequence and the
    pass. The rollback e-value is a weighted average of e-values (an average of e-values is an
    e-value: no Bonferroni penalty): the *body* boundaries (policy quantiles up to
    ``BODY_MAX_QUANTILE``) are tested together by the score test (``stats.score``), which keeps
    the information the Poisson model discards where half the requests are slower, and weighs
    ``BODY_WEIGHT``; the *tail* boundaries share the rest, each with its rate-ratio e-value.

    With ``omnibus``, half of alpha goes to a test of equality of the whole bucket distribution:
    the product over buckets of two-sided per-bucket rate-ratio mixtures (each request updates
    one factor). It fails only when the distributions differ *and* the canary is slower at
    the first boundary; it has no tolerance, so it catches any shift given enough data.

    ``pod_spread``: the ratio of *latencies* by which pods of one version are assumed to differ
    at most, where stable's pods cannot show it; each boundary's null is widened by what that
    does to stable's share slower than it (``stats.pods.latency_log_h``, the policy's
    ``podSpread``).
    """

    judge_name: ClassVar[str] = "sequential"
    peeking_safe: ClassVar[bool] = True

    def __init__(
        self,
        metric: str,
        alpha: float,
        tolerance: float,
        quantiles: tuple[float, ...] = (0.5, 0.99),
        omnibus: bool = False,
        critical: bool = True,
        pod_spread: float = DEFAULT_LATENCY_SPREAD,
    ) -> None:
        self.metric = metric
        self.alpha = alpha
        self.tolerance = tolerance
        self.pod_spread = pod_spread
        self.quantiles = tuple(sorted(set(quantiles)))
        self.omnibus = omnibus
        self.critical = critical
        self.layout: tuple[float, ...] | None = None
        self.chosen: list[int] = []  # indices into layout, one per distinct boundary
        self.body_rows: list[int] = []
        """Rows of ``chosen`` in the body (every quantile they stand for <= BODY_MAX_QUANTILE)."""
        self.engine: RateRatioBatch | None = None
        self.score: ScoreBatch | None = None
        """The body's score test (None without body rows)."""
        self.score_rho0 = 1.0
        """The null ratio the score test was last updated against (tolerance x pod widening)."""
        self.omni: RateRatioBatch | None = None
        self.hist_s: list[float] = []
        self.hist_c: list[float] = []
        self.pending_s: list[float] = []  # stable histogram before boundaries are chosen
        self.pods: PodSpread | None = None  # stable's per-pod exceedances, once chosen
        self.skipped: dict[str, int] = {}
        self.max_combined = 0.0
        """Running maximum of the averaged e-value: once crossed, the evidence stands."""
        self.history_requests = 0.0
        """Stable requests in the history ``prime`` was given (0: none)."""
        self.from_history = False
        """Whether the boundaries were chosen from that history (else from stable's first
        requests during the canary)."""

    def _grid(self) -> Grid:
        return Grid.make(1.0 + self.tolerance, alt_scale=LATENCY_ALT_SCALE)

    @property
    def selection_requests(self) -> int:
        tail = SELECTION_TAIL_EVENTS / (1.0 - max(self.quantiles))
        return int(min(MAX_SELECTION_REQUESTS, max(MIN_SELECTION_REQUESTS, math.ceil(tail))))

    @property
    def _alpha_excess(self) -> float:
        return self.alpha / 2 if self.omnibus else self.alpha

    @property
    def _pods_seen(self) -> bool:
        return self.pods is not None and self.pods.seen

    @property
    def _alpha_test(self) -> float:
        """The exceedance test's alpha once the pods' share is spent (all of it without pods)."""
        if self.pods is not None and self.pods.seen:
            return self._alpha_excess - self.pods.beta
        return self._alpha_excess

    def prime(self, stable: VersionCounts) -> None:
        """Choose the boundaries from stable's history before the canary started.

        With at least ``selection_requests`` stable requests in the history the boundaries are
        chosen from them (on stable's layout; the canary's must share the chosen boundaries),
        stable's per-pod exceedances there seed the between-pod spread, and testing starts
        with the first interval. With less, nothing is kept: the boundaries are chosen from
        stable's first requests during the canary, as without history. Stable's history never
        enters the test itself, which compares concurrent traffic only.
        """
        if self.layout is not None or not stable.has_histogram:
            return
        s = np.asarray(stable.bucket_counts, dtype=np.float64)
        self.history_requests = float(s[-1])
        if s[-1] < self.selection_requests:
            return
        self._choose(tuple(stable.bounds_ms), s)
        if self.layout is None:
            return
        self.from_history = True
        if stable.pods:
            self._add_pods(stable, ())

    def history_note(self) -> str:
        if self.from_history:
            return (
                f"{self.metric} boundaries from stable's {self.history_requests:,.0f} requests "
                "before the canary"
            )
        if self.history_requests > 0:
            return (
                f"{self.metric}: only {self.history_requests:,.0f} stable requests before the "
                f"canary (fewer than {self.selection_requests}); boundaries from stable's first "
                "requests during the canary"
            )
        return ""

    def _fit_layout(self, bounds_ms: tuple[float, ...]) -> tuple[float, ...]:
        """The layout to rebucket onto: a history layout the canary does not fully share is
        narrowed, before any evidence, to the boundaries both have (the chosen ones must be
        among them, else the interval is skipped as incomparable)."""
        assert self.layout is not None and self.engine is not None
        if set(self.layout) <= set(bounds_ms) or self.engine.requests[0].any():
            return self.layout
        shared = common_bounds(self.layout, bounds_ms)
        picked = [self.layout[k] for k in self.chosen]
        if not set(picked) <= set(shared):
            raise HistogramLayoutError(
                f"the canary's histogram lacks the boundaries chosen from stable's history "
                f"({', '.join(f'{b:g}' for b in picked)} ms)"
            )
        self.chosen = [shared.index(b) for b in picked]
        self.layout = shared
        if self.score is not None:
            self.score = ScoreBatch(1, self._body_scores(), self.score.centre[0])
        self.hist_s = [0.0] * len(shared)
        self.hist_c = [0.0] * len(shared)
        if self.omni is not None:
            self.omni = RateRatioBatch(len(shared), 1.0)
        return shared

    def _add_pods(self, stable: VersionCounts, canary_pods: Sequence[PodCounts]) -> None:
        """Stable's per-pod exceedances at the chosen boundaries (and the canary's traffic)."""
        assert self.pods is not None and self.layout is not None
        rows: list[tuple[str, float, tuple[float, ...]]] = []
        for p in stable.pods:
            if not p.bucket_counts:
                continue
            pc = rebucket(stable.bounds_ms, p.bucket_counts, self.layout)
            rows.append((p.pod, pc[-1], tuple(pc[-1] - pc[k] for k in self.chosen)))
        self.pods.add(rows, canary_pods)

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None:
        if not stable.has_histogram or not canary.has_histogram:
            self._skip("no latency histogram")
            return
        try:
            if self.layout is None:
                layout = common_bounds(stable.bounds_ms, canary.bounds_ms)
            else:
                layout = self._fit_layout(canary.bounds_ms)
            s = np.asarray(rebucket(stable.bounds_ms, stable.bucket_counts, layout))
            c = np.asarray(rebucket(canary.bounds_ms, canary.bucket_counts, layout))
            # The score test's null is fixed before this interval's data: the widening in
            # force so far (or, the first time pods show, the assumed one).
            rho0_score = self._score_rho0(bool(stable.pods or canary.pods))
            if self.pods is not None and (stable.pods or canary.pods):
                self._add_pods(stable, canary.pods)
        except HistogramLayoutError as exc:
            self._skip(str(exc))
            return
        if self.layout is None:
            self._select(layout, s)
            return
        self.hist_s = (np.asarray(self.hist_s) + s).tolist()
        self.hist_c = (np.asarray(self.hist_c) + c).tolist()
        assert self.engine is not None
        if self.pods is not None and self.pods.seen:
            self._assume()
            _widen(self.engine, self.pods)
        n_s, n_c = s[-1], c[-1]
        rows = len(self.chosen)
        x_s = np.array([n_s - s[k] for k in self.chosen])
        x_c = np.array([n_c - c[k] for k in self.chosen])
        self.engine.update(np.full(rows, n_s), x_s, np.full(rows, n_c), x_c)
        bs = np.diff(np.concatenate([[0.0], s]))
        bc = np.diff(np.concatenate([[0.0], c]))
        if self.score is not None:
            self.score_rho0 = rho0_score
            self.score.update(n_s, n_c, bc[None, :], (bs + bc)[None, :], rho0_score)
        if self.omni is not None:
            k = len(bs)
            self.omni.update(np.full(k, n_s), bs, np.full(k, n_c), bc)
        # Track the running maximum here, not when a verdict is read: a crossing counts even
        # if nobody looked at that interval.
        self.max_combined = max(self.max_combined, self._combined())

    def _score_rho0(self, pods_now: bool) -> float:
        """The score test's null ratio for the next interval: ``1 + tolerance`` times the
        widest widening of its body boundaries (stable's pod spread so far; the assumed one
        when pods show for the first time; none while the source reports no pods)."""
        rho0 = 1.0 + self.tolerance
        if self.pods is None or not self.body_rows:
            return rho0
        if self.pods.seen:
            log_h = self.pods.estimate()[0]
        elif pods_now:
            log_h = self.pods.assumed
        else:
            return rho0
        return rho0 * math.exp(max(float(log_h[r]) for r in self.body_rows))

    def _body_leads(self, log_e: np.ndarray) -> bool:
        """Whether the body's weighted e-value is the larger part of the average now
        (``log_e``: the rows' rate-ratio log e-values)."""
        if self.score is None:
            return False
        tail = self._tail_rows()
        if not tail:
            return True
        return bool(
            self._log_body(log_e) + math.log(BODY_WEIGHT)
            >= latency_log_e(log_e[tail][:, None], None, ())[0] + math.log(1.0 - BODY_WEIGHT)
        )

    def _tail_rows(self) -> list[int]:
        return [r for r in range(len(self.chosen)) if r not in self.body_rows]

    def _log_body(self, log_e: np.ndarray) -> float:
        """log of the body's e-value (``latency_log_e`` without a tail)."""
        assert self.score is not None
        return float(
            latency_log_e(
                log_e[self.body_rows][:, None], self.score.log_e(), range(len(self.body_rows))
            )[0]
        )

    def _combined(self) -> float:
        """The rollback e-value now (``latency_log_e``)."""
        assert self.engine is not None
        score = None if self.score is None else self.score.log_e()
        log_e = latency_log_e(self.engine.log_e()[:, None], score, self.body_rows)
        return math.exp(min(float(log_e[0]), 700.0))

    def _body_centre(self, cumulative: Sequence[float]) -> float:
        """Stable's mean score in the cumulative histogram ``cumulative``: its shares slower
        than the body boundaries, averaged (1/2 where it holds no requests)."""
        total = float(cumulative[-1]) if len(cumulative) else 0.0
        if total <= 0:
            return 0.5
        return float(
            np.mean([(total - float(cumulative[self.chosen[r]])) / total for r in self.body_rows])
        )

    def _body_scores(self) -> np.ndarray:
        assert self.layout is not None
        return step_scores(len(self.layout), [self.chosen[r] for r in self.body_rows])

    def _new_pods(self) -> PodSpread:
        return PodSpread(len(self.chosen), self._alpha_excess, self.pod_spread, "latency")

    def _assume(self, stable_cumulative: Sequence[float] | None = None) -> None:
        """Each boundary's assumed widening, from stable's histogram during the canary (or,
        before it has any, the one the boundaries were chosen from)."""
        assert self.pods is not None and self.layout is not None
        cum = self.hist_s if stable_cumulative is None else stable_cumulative
        if len(cum) and cum[-1] > 0:
            self.pods.assume(latency_log_h(self.layout, cum, self.chosen, self.pod_spread))

    def _unresolved_spread(self) -> str:
        """Why the assumed spread is blunt, when it is in use and a tested boundary over
        ``pod_spread`` falls inside the histogram's first bucket (which says nothing of where
        below its bound requests lie, so they are taken as spread evenly from 0 ms)."""
        assert self.pods is not None and self.layout is not None
        if not self.pods.assumed_rows().any():
            return ""
        low = [
            self.layout[k]
            for k in self.chosen
            if scaled_bound(self.layout, k, self.pod_spread)[0] < 0
        ]
        if not low:
            return ""
        return (
            f"the {', '.join(f'{b:g} ms' for b in low)} boundary divided by {self.pod_spread:g} "
            f"falls in the histogram's first bucket (0-{self.layout[0]:g} ms), where its "
            "requests are taken as spread evenly from 0 ms: the null is wider than pods of "
            "that speed need (finer buckets at the low end, or a smaller podSpread for alike "
            "pods, narrow it)"
        )

    def _select(self, layout: tuple[float, ...], s: np.ndarray) -> None:
        pend = np.asarray(self.pending_s) + s if self.pending_s else s
        self.pending_s = pend.tolist()
        if pend[-1] < self.selection_requests:
            return
        self._choose(layout, pend)

    def _choose(self, layout: tuple[float, ...], pend: np.ndarray) -> None:
        """Fix the boundaries nearest the policy's quantiles in stable's histogram ``pend``."""
        chosen: list[int] = []
        top: dict[int, float] = {}  # boundary -> the highest quantile it stands for
        for q in self.quantiles:
            k = nearest_boundary(layout, pend.tolist(), q)
            if k is None:
                continue
            if k not in chosen:
                chosen.append(k)
            top[k] = max(top.get(k, 0.0), q)
        if not chosen:
            return
        self.layout = layout
        self.chosen = chosen
        self.body_rows = [r for r, k in enumerate(chosen) if top[k] <= BODY_MAX_QUANTILE]
        self.engine = RateRatioBatch(len(chosen), 1.0 + self.tolerance, self._grid())
        self.score = None
        if self.body_rows:
            self.score = ScoreBatch(1, self._body_scores(), self._body_centre(pend.tolist()))
        self.pods = self._new_pods()
        self._assume(pend.tolist())
        if self.omnibus:
            self.omni = RateRatioBatch(len(layout), 1.0)
        self.hist_s = [0.0] * len(layout)
        self.hist_c = [0.0] * len(layout)

    def _quantiles(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.layout is None:
            return out
        for q in sorted(set(REPORT_QUANTILES) | set(self.quantiles)):
            tag = f"p{q * 100:g}"
            out[f"stable_{tag}_ms"] = histogram_quantile(q, self.layout, self.hist_s)
            out[f"canary_{tag}_ms"] = histogram_quantile(q, self.layout, self.hist_c)
        return out

    def _log_e_omnibus(self) -> float:
        assert self.omni is not None
        o = self.omni
        return float(np.sum(o.log_mixture() - o.loglik[:, o.grid.centre]))

    def verdict(self) -> Verdict:
        details: dict[str, Any] = {"alpha": self.alpha, "max_ratio_tolerated": 1 + self.tolerance}
        if self.skipped:
            details["skipped_intervals"] = dict(self.skipped)
        base: dict[str, Any] = {
            "metric": self.metric,
            "judge": "sequential",
            "critical": self.critical,
            "threshold": 1.0 / self._alpha_test,
        }
        if self.engine is None or self.layout is None:
            why = (
                "no comparable latency histograms: " + "; ".join(self.skipped)
                if self.skipped and not self.pending_s
                else f"waiting for {self.selection_requests} stable requests to choose boundaries"
            )
            return Verdict(status=Status.INCONCLUSIVE, reason=why, details=details, **base)
        e = self.engine
        n_s, n_c = e.requests[0]
        base.update(canary_samples=float(n_c), stable_samples=float(n_s))
        details.update(self._quantiles())
        assert self.pods is not None
        details.update(self.pods.details())
        unresolved = self._unresolved_spread()
        if unresolved:
            details["pods"] = f"{details['pods']}; {unresolved}"
        details["boundaries_chosen_from"] = (
            f"stable's {self.history_requests:.0f} requests before the canary"
            if self.from_history
            else f"stable's first {self.selection_requests} or more requests during the canary"
        )
        if n_c <= 0 or n_s <= 0:
            who = "canary" if n_c <= 0 else "stable"
            return Verdict(
                status=Status.INCONCLUSIVE,
                reason=f"no {who} latency samples yet",
                details=details,
                **base,
            )
        log_e = e.log_e()
        combined_now = self._combined()
        lo, hi = e.confidence_sequence(self.alpha)
        est = e.estimate()
        per: list[dict[str, Any]] = []
        for row, k in enumerate(self.chosen):
            per.append(
                {
                    "le_ms": self.layout[k],
                    "stable_share_slower": float(e.events[row, 0] / n_s),
                    "canary_share_slower": float(e.events[row, 1] / n_c),
                    "ratio": float(est[row]),
                    "interval": [float(lo[row]), float(hi[row])],
                    "e_value": float(np.exp(min(log_e[row], 700.0))),
                    "null_widening": _widening(e, row),
                }
            )
        details["boundaries"] = per
        by_body = self._body_leads(log_e)
        if self.score is not None:
            details["body"] = {
                "boundaries_ms": [self.layout[self.chosen[r]] for r in self.body_rows],
                "score_e_value": math.exp(min(float(self.score.log_e()[0]), 700.0)),
                "e_value": math.exp(min(self._log_body(log_e), 700.0)),
                "weight": BODY_WEIGHT if self._tail_rows() else 1.0,
                "null_ratio": self.score_rho0,
            }
        # The boundary the reason names: among those whose evidence leads the average.
        rows = self.body_rows if by_body else (self._tail_rows() or list(range(len(per))))
        worst = max(rows, key=lambda r: float(log_e[r]))
        b_ms = self.layout[self.chosen[worst]]
        est_w = float(est[worst])
        base.update(
            e_value=combined_now,
            estimate=None if math.isnan(est_w) else est_w,
            interval=(float(lo[worst]), float(hi[worst])),
        )
        q_txt = self._quantile_text(details)
        assert self.pods is not None
        w_txt = _widened_text(e, self.pods, worst)
        b_txt = _boundary_text(b_ms, per[worst]["stable_share_slower"])
        if self.max_combined >= 1.0 / self._alpha_test:
            details["decided_by"] = (
                "the score test of the body boundaries" if by_body else "the tail boundaries"
            )
            return Verdict(
                status=Status.FAIL,
                reason=(
                    f"more canary requests are slower than {b_txt} than tolerated "
                    f"(canary {per[worst]['canary_share_slower']:.3g} vs stable "
                    f"{per[worst]['stable_share_slower']:.3g}, at most "
                    f"{per[worst]['stable_share_slower'] * (1.0 + self.tolerance):.3g} "
                    f"tolerated){q_txt}{w_txt}"
                ),
                details=details,
                **base,
            )
        if self.omni is not None and self._pods_seen:
            details["omnibus"] = (
                "not used: it tests exact equality, which a canary on its own pods never meets"
            )
        elif self.omni is not None:
            log_o = self._log_e_omnibus()
            details["omnibus_e_value"] = math.exp(min(log_o, 700.0))
            slower = bool(np.isfinite(est[0]) and est[0] > 1.0)
            if log_o >= math.log(2.0 / self.alpha) and slower:
                return Verdict(
                    status=Status.FAIL,
                    reason=f"canary latency distribution differs from stable's and is slower{q_txt}",
                    details=details,
                    **base,
                )
        if bool(np.all(e.non_inferior(self.alpha))):
            tested = ", ".join(
                f"{p['le_ms']:g} ms = {_stable_quantile(p['stable_share_slower'])}" for p in per
            )
            beyond = self._quantiles_beyond_tolerance(details)
            if beyond:
                # The boundaries pass, yet a quantile the policy asked for, interpolated from
                # the buckets, is outside tolerance: no pass is claimed while the two disagree.
                details["quantiles_beyond_tolerance"] = beyond
                return Verdict(
                    status=Status.CONTINUE,
                    reason=(
                        f"every tested boundary is within tolerance ({tested}), but "
                        f"{'; '.join(beyond)}: not passing while the two disagree"
                    ),
                    details=details,
                    **base,
                )
            return Verdict(
                status=Status.PASS,
                reason=f"canary shown no slower than tolerated at every tested boundary: {tested}{q_txt}",
                details=details,
                **base,
            )
        return Verdict(
            status=Status.CONTINUE,
            reason=f"not yet shown either way at {b_txt}{q_txt}{w_txt}",
            details=details,
            **base,
        )

    def _quantiles_beyond_tolerance(self, details: dict[str, Any]) -> list[str]:
        """The policy's quantiles whose interpolated canary value exceeds stable's by more
        than the tolerance, as text ("p90 canary 146.8 ms > 1.1 x stable 78.1 ms")."""
        out = []
        for q in self.quantiles:
            tag = f"p{q * 100:g}"
            s, c = details.get(f"stable_{tag}_ms"), details.get(f"canary_{tag}_ms")
            if s is None or c is None or not (math.isfinite(s) and math.isfinite(c)):
                continue
            if c > (1.0 + self.tolerance) * s:
                out.append(
                    f"{tag} canary {c:.4g} ms > {1.0 + self.tolerance:.3g} x stable {s:.4g} ms"
                )
        return out

    def _quantile_text(self, details: dict[str, Any]) -> str:
        q = max(self.quantiles)
        tag = f"p{q * 100:g}"
        s, c = details.get(f"stable_{tag}_ms"), details.get(f"canary_{tag}_ms")
        if s is None or c is None or math.isnan(s) or math.isnan(c):
            return ""
        return f"; {tag} canary {c:.4g} ms vs stable {s:.4g} ms"

    def state(self) -> dict[str, Any]:
        return {
            "layout": None if self.layout is None else [encode_float(b) for b in self.layout],
            "chosen": list(self.chosen),
            "engine": None
            if self.engine is None
            else [self.engine.row_state(r) for r in range(self.engine.rows)],
            "omni": None
            if self.omni is None
            else [self.omni.row_state(r) for r in range(self.omni.rows)],
            "hist_s": list(self.hist_s),
            "hist_c": list(self.hist_c),
            "pending_s": list(self.pending_s),
            "skipped": dict(self.skipped),
            "max_combined": self.max_combined,
            "pods": None if self.pods is None else self.pods.state(),
            "body_rows": list(self.body_rows),
            "score": None if self.score is None else self.score.row_state(0),
            "score_rho0": self.score_rho0,
            "history_requests": self.history_requests,
            "from_history": self.from_history,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        layout = state["layout"]
        self.layout = None if layout is None else tuple(decode_float(b) for b in layout)
        self.chosen = [int(k) for k in state["chosen"]]
        self.hist_s = [float(x) for x in state["hist_s"]]
        self.hist_c = [float(x) for x in state["hist_c"]]
        self.pending_s = [float(x) for x in state["pending_s"]]
        self.skipped = {str(k): int(v) for k, v in state["skipped"].items()}
        self.max_combined = float(state["max_combined"])
        # Absent in state saved before boundaries could come from history.
        self.history_requests = float(state.get("history_requests", 0.0))
        self.from_history = bool(state.get("from_history", False))
        self.engine = self.omni = None
        if state["engine"] is not None:
            self.engine = RateRatioBatch(len(state["engine"]), 1.0 + self.tolerance, self._grid())
            for r, rs in enumerate(state["engine"]):
                self.engine.load_row_state(r, rs)
            self.pods = self._new_pods()
            if state.get("pods") is not None:  # absent in state saved before pods were judged
                self.pods.load_state(state["pods"])
                self._assume()
        if state["omni"] is not None:
            self.omni = RateRatioBatch(len(state["omni"]), 1.0)
            for r, rs in enumerate(state["omni"]):
                self.omni.load_row_state(r, rs)
        self.score = None
        self.score_rho0 = float(state.get("score_rho0", 1.0 + self.tolerance))
        # State saved before the body had its score test keeps the judge it was started with
        # (the mean of the boundaries' e-values): no rows in the body.
        self.body_rows = [int(r) for r in state.get("body_rows", [])]
        if self.body_rows and self.layout is not None:
            stored = state.get("score")
            if stored is not None:
                self.score = ScoreBatch(1, unpack_f64(stored["scores"]), stored["centre"])
                self.score.load_row_state(0, stored)
            else:
                self.score = ScoreBatch(1, self._body_scores(), self._body_centre(self.hist_s))
