"""Between-pod spread of the stable version, and how far it widens the rate-ratio null.

In KServe the canary runs on its own pods. Pods of the *same* version differ (node, GPU, cache,
neighbours), so even a healthy canary's true ratio ``rho_AA = p_canary / p_stable`` is not 1:
it is the canary's few pods against stable's pods. The conditional rate-ratio test is exact
*at* ``rho_AA``, so it stays valid if its null ``rho <= rho0`` is widened to ``rho <= rho0 * h``
with ``h >= rho_AA`` (with probability ``1 - beta``). This module estimates ``h`` from stable's
own per-pod counts (DESIGN-NOTES.md, "Canary on its own pods"):

1. per stable pod ``i``: ``y_i = log((x_i + 1/2) / (n_i + 1/2))`` (events ``x_i`` in requests
   ``n_i``), with binomial variance ``v_i = 1/(x_i + 1/2) - 1/(n_i + 1/2)``;
2. the method-of-moments (DerSimonian-Laird) between-pod variance of log rates, with the
   binomial noise subtracted: ``tau^2 = max(0, (Q - (k_s - 1)) / (S1 - S2 / S1))``, ``Q``
   Cochran's statistic with weights ``1 / v_i``, ``S1``/``S2`` the sums of the weights and of
   their squares (homogeneous pods give exactly ``tau = 0`` in most looks);
3. ``log h = t_{k_s-1}(1 - beta) * tau * sqrt(sum a_j^2 + sum b_i^2)`` with ``a``/``b`` the
   canary's and stable's pods' traffic shares: the one-sided prediction bound of a Student t
   with ``k_s - 1`` degrees of freedom for the difference of two traffic-weighted means of pod
   effects, where the spread is itself estimated from ``k_s`` pods. ``beta`` is
   ``POD_ALPHA_SHARE`` of the judge's alpha, spent only when the source reports pods;
4. with fewer than ``EXACT_BELOW_PODS`` (4) stable pods, or fewer than
   ``EXACT_BELOW_EVENTS`` (1,200) events across stable's pods, no noise is subtracted
   (``tau^2 = Q / c``): the bound is then the exact Student-t prediction bound on the raw
   spread of the pods' observed log rates, valid whatever the spread (the binomial noise only
   makes it wider). Subtracting the noise from a 2-degree-of-freedom estimate gives ``tau = 0``
   in about 4 % of rollouts whose pods in truth differ, which is where the false rollbacks of
   the three-pod cells came from; with few events per pod the subtracted noise is itself a
   guess, which is where those of the four-pod cells without history came from
   (DESIGN-NOTES.md, "Few stable pods");
5. until stable's pods have seen ``MIN_POD_EVENTS`` events each on average, or
   ``WARM_UP_EVENTS`` in all (from four pods on), ``h`` is at least the *assumed* widening
   (``PodSpread.assume``): their spread is not yet known, and a canary pod far from stable's few
   pods is then as likely a pod effect as a regression, so only a canary further off than the
   assumption is rolled back early. The evidence is kept, so a smaller regression is rolled back
   as soon as the warm-up ends;
6. with fewer than ``MIN_SPREAD_PODS`` (3) stable pods the spread cannot be estimated at all
   (one pod has none, and two give a t quantile with one degree of freedom, 127 at
   ``beta = 0.0025``), so ``h`` is the assumed widening for the whole rollout: the guarantee
   then rests on the assumption, stated in the verdict, that pods of one version differ by
   less than the metric's ``podSpread``;
7. with fewer than ``ROUGH_BELOW_PODS`` (4), i.e. three, the t quantile has two degrees of
   freedom (14.1 at ``beta = 0.0025``): the bound is valid but, on the binomial noise of a
   few dozen events per pod, often wider than the grid (x60), and the metric could not roll
   back at all, where on one pod it could. So ``h`` is the *smaller* of the estimate and the
   assumed widening. ``P(min < rho_AA) <= P(estimate < rho_AA) + P(assumed < rho_AA)``, so
   the guarantee is the same as on fewer pods: it holds at ``beta`` while pods differ by
   less than ``podSpread``, and without that assumption wherever the estimate is the smaller;
8. three pods' bound is held between doublings of stable's events (``HeldBound``): it is
   computed afresh only when stable's events in all have doubled since the last time, the
   ``j``-th time at ``beta_j = 6 beta / (pi^2 j^2)`` (``epoch_beta``, summing to ``beta``), and
   in between it stays as it was. Each fresh bound fails with probability at most ``beta_j``,
   so the bound fails at *any* look with probability at most ``beta`` (a union over the
   doublings, not over the looks). Recomputed after every interval, as it was, a two-degree-of-
   freedom bound fails at some look far more often than at one: the raw spread of three pods'
   observed rates dips whenever their counts happen to lie close, and a canary pod truly x2-x3
   off stable's mean was then rolled back in 0.4 % of healthy rollouts per judge at
   ``alpha = 0.5 %`` (``beta = 0.125 %``; DESIGN-NOTES.md, "Few stable pods"). From four pods
   on the estimate is recomputed after every interval, and is not held: held, it left errors
   x2 on four alike pods without history detected in 3 % of rollouts. The chance of a dip falls
   with the degrees of freedom (``P(Q < q)`` goes as ``q^((k-1)/2)``), but on four pods the
   bound, with the noise subtracted, misses the canary pod's offset at some look in about 1 %
   of rollouts, several times ``beta``: that the false-rollback rate holds alpha there is
   measured (``analysis/results/pods.md``, at 5-1,280 rps), not proved.

The assumption is the policy's per-metric ``podSpread``: for a rate (errors) a ratio of rates,
``log h = log podSpread`` (default ``DEFAULT_RATE_SPREAD``, x4); for latency a ratio of
*latencies*, which the judge turns into each boundary's rate ratio through stable's own
histogram (``latency_log_h``; default ``DEFAULT_LATENCY_SPREAD``, x3). The latency scale is
the one a user can know ("our replicas differ by up to 30 % in latency"), and the one in which
pods differ: a pod 1.5x slower has a share above stable's p99 boundary some 6x stable's, but
above the p50 boundary only 1.6x.

Pods are keyed by name and capped at ``MAX_PODS`` per version (a pod beyond the cap still
counts in the version's totals, not in the spread estimate), so the state stays small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from canaryd.observation import PodCounts

FloatArray = npt.NDArray[np.float64]

MAX_PODS = 32
"""Pods remembered per version; later names are left out of the spread estimate."""
POD_ALPHA_SHARE = 0.25
"""Share of a judge's alpha spent on "the canary's pods are further from stable's than the
bound ``h``" (only when the source reports pods; otherwise the whole alpha goes to the test)."""
NOISE_SHARE = 1.0
"""How much of the expected binomial noise ``k_s - 1`` is subtracted from Cochran's Q: 1 is the
method of moments. Less is more conservative and costs detection delay on alike pods; the study
measures 0, 0.5 and 1 (``analysis/pods.py``, DESIGN-NOTES.md)."""
DEFAULT_RATE_SPREAD = 4.0
"""``podSpread``'s default for error rates: pods of one version differ by less than x4 (the
study's strongest level, x0.5..x2 per pod). Without any assumption (an infinite widening), a
x10 error rate at 0.1 % on 4 alike stable pods was rolled back after a median 110 min instead
of 5 (the warm-up's length); x4 gives 26 min at the same A/A rates."""
DEFAULT_LATENCY_SPREAD = 3.0
"""``podSpread``'s default for latency: pods of one version differ by less than x3 in latency.
Two pods whose latency scales vary with a coefficient of variation of 30 % (the study's
strongest level) differ by more than that with probability ~0.4 %, about the ``beta`` the
estimated spread is allowed; on one or two stable pods there x3 kept false rollbacks at 0.0 % /
0.0 % (alpha 1 %), where x2.5 let through 0.8 % / 0.4 % and x2 3.4 % / 2.0 %
(``analysis/pods.py``). The price, on one alike stable pod: a canary 4x slower is rolled back
after a median 11 min, 3x never. A team whose replicas are alike declares a smaller value."""
MIN_SPREAD_PODS = 3
"""Stable pods with traffic needed to estimate their spread; with fewer the null's widening is
the assumed one throughout (an assumption the verdict states)."""
EXACT_BELOW_PODS = 4
"""With fewer stable pods than this, no binomial noise is subtracted (the exact t bound)."""
ROUGH_BELOW_PODS = 4
"""With fewer stable pods than this (and at least ``MIN_SPREAD_PODS``) the estimated widening
is capped at the assumed one (point 7 above)."""
EXACT_BELOW_EVENTS = 1200.0
"""Nor below this many events across stable's pods (300 each on ``EXACT_BELOW_PODS`` pods);
chosen on the study (``analysis/pods.py``, 4,000 rollouts per cell). Without history, the
errors judge on 4 stable pods rolled back up to 1.9 % of healthy canaries with no such rule,
up to 0.80 % (upper 95 % 1.07 %) below 150 events per pod, and 0.07-0.22 % below 300 (the
worst judge cell is then 0.38 %, upper 0.58 %). It counts the total, not the events per pod:
first set at 300 per pod, it kept 8 alike stable pods with 2 h of history at a 1 % error rate
(180 events each) on the exact bound, and errors x2 then took a median 36 min where 4 pods
took 16 (250 rollouts); more pods estimate the spread on more degrees of freedom and a smaller
t quantile, and the eight-pod cells hold alpha with the total (``analysis/results/pods.md``).
The price is paid wherever stable's pods have fewer events than this: without history, on 4
alike pods errors x2 took a median 75 min instead of 56; with 2 h of history at a 1 % error
rate (1,300 events in all) nothing changes (19 min, where 2,000 would have made it 47), but at
0.5 % (about 720) the exact bound holds too, and ``canaryd plan`` of
``policies/gateway-api.yaml`` at 20 rps on 4 pods detects x7 within its 15 min, not x4."""
HOLD_GROWTH = 2.0
"""Three pods' bound is computed afresh when stable's events in all have grown this much
(point 8 of the module's docstring)."""
MIN_POD_EVENTS = 30.0
"""Events per stable pod (on average) before the spread is trusted: until then ``h`` is at
least the assumed widening; chosen on the study (``analysis/pods.py``)."""
WARM_UP_EVENTS = 120.0
"""Nor more than this many events across stable's pods (``MIN_POD_EVENTS`` on four pods): the
warm-up ends there however many pods share them. Past it, below ``EXACT_BELOW_EVENTS``, the
bound is the exact t bound on the pods' raw spread, which counts their binomial noise in, so
more pods with fewer events each give a wider spread on more degrees of freedom, never a
narrower one by construction; the eight-pod cells of the study hold alpha with it. Counted per
pod throughout, the warm-up had 8 alike stable pods at a 0.1 % error rate (2 h of history,
~16 events each) assume the spread for longer than 4 pods, and a x10 canary was rolled back
after a median 23 min where 4 pods took 15 (500 rollouts); with the total, 11.5, and the
8-pod A/A cells keep their maxima (``analysis/results/pods.md``)."""


def assumed_spread_text(spread: float, measure: str) -> str:
    """A ``podSpread`` assumption in the words every verdict and plan uses: "pods differ by
    less than x3 in latency (podSpread)", or, for ``podSpread: 1``, where no ratio below x1
    exists, "pods of one version are alike in latency (podSpread 1)"."""
    if spread <= 1.0:
        return f"pods of one version are alike in {measure} (podSpread 1)"
    return f"pods differ by less than x{spread:g} in {measure} (podSpread)"


def _assumed_log_h(assumed: FloatArray | float | None, shape: tuple[int, ...]) -> FloatArray:
    """The assumed ``log h`` per row (``log_widening``'s ``assumed``; None: the errors
    default, ``log DEFAULT_RATE_SPREAD``)."""
    value = math.log(DEFAULT_RATE_SPREAD) if assumed is None else assumed
    return np.broadcast_to(np.asarray(value, dtype=np.float64), shape)


def log_widening(
    n: FloatArray,
    x: FloatArray,
    shares_sq: FloatArray,
    beta: float,
    noise_share: float | None = None,
    assumed: FloatArray | float | None = None,
) -> tuple[FloatArray, FloatArray]:
    """``(log h, tau)`` per row from stable's per-pod counts.

    ``n``, ``x``: cumulative requests and events, shape ``(rows, pods)`` (a pod with no requests
    is left out). ``shares_sq``: ``sum a_j^2 + sum b_i^2`` per row. ``beta``: the one-sided
    error of the bound; ``noise_share``: see ``NOISE_SHARE`` (None: ``NOISE_SHARE`` from
    ``EXACT_BELOW_PODS`` stable pods and ``EXACT_BELOW_EVENTS`` events in all on, 0 below).
    ``assumed``: ``log h`` per row (or one for all) where the spread is not known (None:
    ``log DEFAULT_RATE_SPREAD``). Rows with fewer than ``MIN_SPREAD_PODS`` stable pods get
    it (``tau`` is reported, NaN below two pods), rows still in the warm-up (``in_warm_up``)
    at least that, rows with fewer than ``ROUGH_BELOW_PODS`` at most that.
    """
    # scipy.special is imported here, not with the module: it costs 14 MB of resident memory,
    # and a daemon whose rollouts have no per-pod counts never needs it.
    from scipy.special import stdtrit

    n = np.atleast_2d(np.asarray(n, dtype=np.float64))
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    live = n > 0
    k = live.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log((x + 0.5) / (n + 0.5))
        v = 1.0 / (x + 0.5) - 1.0 / (n + 0.5)
        w = np.where(live, 1.0 / np.maximum(v, 1e-12), 0.0)
        y = np.where(live, y, 0.0)
        s1 = w.sum(axis=1)
        ybar = (w * y).sum(axis=1) / s1
        q = (w * (y - ybar[:, None]) ** 2).sum(axis=1)
        c = s1 - (w**2).sum(axis=1) / s1
        df = np.maximum(k - 1, 1)
        if noise_share is None:
            few_events = x.sum(axis=1) < EXACT_BELOW_EVENTS
            share = np.where((k < EXACT_BELOW_PODS) | few_events, 0.0, NOISE_SHARE)
        else:
            share = np.full(k.shape, noise_share)
        tau2 = np.where(k >= 2, np.maximum(0.0, (q - share * (k - 1)) / c), np.nan)
        tq = stdtrit(df, 1.0 - beta)  # Student-t quantile (scipy.stats costs 40 MB at import)
    tau = np.sqrt(tau2)
    log_h = np.where(k >= 2, tq * tau * np.sqrt(np.asarray(shares_sq, dtype=np.float64)), 0.0)
    log_h = np.nan_to_num(log_h, nan=0.0)
    # Until stable's pods have seen enough events the spread is unknown: only a canary further
    # off than the floor is rolled back. With too few pods it is assumed: the floor itself (two
    # pods' t bound, with one degree of freedom, would leave nothing short of the grid's edge).
    floor = _assumed_log_h(assumed, log_h.shape)
    log_h = np.where(in_warm_up(n, x), np.maximum(log_h, floor), log_h)
    # Three pods' two-degree-of-freedom bound is never allowed wider than the assumption.
    log_h = np.where(k < ROUGH_BELOW_PODS, np.minimum(log_h, floor), log_h)
    return np.where(k < MIN_SPREAD_PODS, floor, log_h), tau


def epoch_beta(beta: float, j: int) -> float:
    """The error spent on the ``j``-th fresh bound (``j >= 1``): ``6 beta / (pi^2 j^2)``,
    which sums to ``beta`` over all ``j``."""
    if j < 1:
        raise ValueError(f"j must be at least 1, got {j}")
    return 6.0 * beta / (math.pi**2 * j * j)


class HeldBound:
    """Per row, three stable pods' widening held between doublings of stable's events.

    ``widen`` takes the arguments of ``log_widening`` and gives its answer, except on rows
    with three stable pods past the warm-up: there the spread bound (``log h`` over
    ``sqrt(shares_sq)``, the part read off stable's pods) is computed afresh only when
    stable's events in all have grown ``HOLD_GROWTH``-fold since the last time, the ``j``-th
    time at ``epoch_beta(beta, j)``, and held in between; it is scaled by the current traffic
    shares and capped by the current assumption. Point 8 of the module's docstring gives the
    argument. The state is three numbers per row, kept in the judge's state (``state``).
    """

    def __init__(self, rows: int) -> None:
        self.used = np.zeros(rows, dtype=np.int64)
        """Fresh bounds computed so far."""
        self.events = np.zeros(rows)
        """Stable's events in all at the last fresh bound."""
        self.spread = np.zeros(rows)
        """The last fresh bound's ``log h / sqrt(shares_sq)``."""

    def widen(
        self,
        n: FloatArray,
        x: FloatArray,
        shares_sq: FloatArray,
        beta: float,
        noise_share: float | None = None,
        assumed: FloatArray | float | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """``(log h, tau)`` per row, as ``log_widening``, with three pods' bound held."""
        log_h, tau = log_widening(n, x, shares_sq, beta, noise_share, assumed)
        n = np.atleast_2d(np.asarray(n, dtype=np.float64))
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        sq = np.broadcast_to(np.asarray(shares_sq, dtype=np.float64), log_h.shape)
        floor = _assumed_log_h(assumed, log_h.shape)
        k = (n > 0).sum(axis=1)
        held = (k >= MIN_SPREAD_PODS) & (k < ROUGH_BELOW_PODS) & ~in_warm_up(n, x)
        total = x.sum(axis=1)
        due = held & ((self.used == 0) | (total >= HOLD_GROWTH * self.events))
        for j in np.unique(self.used[due] + 1):
            sel = due & (self.used + 1 == j)
            # No cap here (an infinite assumption): the cap is the current one, below.
            raw, _ = log_widening(
                n[sel], x[sel], sq[sel], epoch_beta(beta, int(j)), noise_share, math.inf
            )
            self.spread[sel] = raw / np.sqrt(sq[sel])
        self.used[due] += 1
        self.events[due] = total[due]
        kept = np.minimum(self.spread * np.sqrt(sq), floor)
        return np.where(held, kept, log_h), tau

    def state(self) -> dict[str, list[float]]:
        return {
            "used": [float(v) for v in self.used],
            "events": [float(v) for v in self.events],
            "spread": [float(v) for v in self.spread],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        rows = self.used.shape[0]
        used, events, spread = (
            np.asarray(state[key], dtype=np.float64) for key in ("used", "events", "spread")
        )
        if not used.shape == events.shape == spread.shape == (rows,):
            raise ValueError(f"stored held bounds do not have {rows} rows")
        self.used = used.astype(np.int64)
        self.events = events
        self.spread = spread


def scaled_bound(bounds: Sequence[float], k: int, spread: float) -> tuple[int, float]:
    """Where ``bounds[k] / spread`` falls: ``(j, w)`` with the count slower than it read as
    ``(1 - w) * slower(j) + w * slower(j + 1)``, linear within the bucket as Prometheus's
    ``histogram_quantile`` assumes (``j = -1``: the first bucket, whose lower edge is 0 and
    has every request slower than it)."""
    if spread < 1.0:
        raise ValueError(f"spread must be at least 1, got {spread}")
    b = np.asarray(bounds, dtype=np.float64)
    target = b[k] / spread
    j = int(np.searchsorted(b, target * (1.0 + 1e-12), side="right")) - 1
    lo = 0.0 if j < 0 else float(b[j])
    if j >= k:
        return k, 0.0
    hi = float(b[j + 1])
    return j, (target - lo) / (hi - lo)


def latency_log_h(
    bounds: Sequence[float], cumulative: Sequence[float], chosen: Sequence[int], spread: float
) -> FloatArray:
    """Per tested boundary, ``log h`` for "a pod's latency is within x ``spread`` of stable's".

    ``bounds``: the histogram's upper bounds (ms, increasing); ``cumulative``: stable's
    cumulative counts at them, the last the total; ``chosen``: the tested boundaries' indices.
    A pod whose latency is stable's scaled by ``s <= spread`` has a share slower than ``b``
    of at most stable's share slower than ``b / spread``, interpolated within its bucket
    (``scaled_bound``). The ratio to stable's share slower than ``b`` is taken with half a
    request added to both, so a boundary stable has hardly exceeded gets a wide null, not a
    narrow one. Only stable's data enters.
    """
    cum = np.asarray(cumulative, dtype=np.float64)
    total = float(cum[-1])
    out = np.empty(len(chosen))
    for row, k in enumerate(chosen):
        j, w = scaled_bound(bounds, k, spread)
        slower_j = total if j < 0 else total - cum[j]
        slower = (1.0 - w) * slower_j + w * (total - cum[j + 1])
        out[row] = max(0.0, math.log((slower + 0.5) / (total - cum[k] + 0.5)))
    return out


def warm_up_text(k: int) -> str:
    """The warm-up in the words of every verdict: what ``k`` stable pods have not seen yet."""
    if MIN_POD_EVENTS * k <= WARM_UP_EVENTS:
        return f"stable's pods have fewer than {MIN_POD_EVENTS:g} events each"
    return f"stable's {k} pods have fewer than {WARM_UP_EVENTS:g} events in all"


def in_warm_up(n: FloatArray, x: FloatArray) -> npt.NDArray[np.bool_]:
    """Per row, whether at least two stable pods have traffic but fewer than
    ``MIN_POD_EVENTS`` events each on average, or ``WARM_UP_EVENTS`` in all (shapes as in
    ``log_widening``)."""
    n = np.atleast_2d(np.asarray(n, dtype=np.float64))
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    k = (n > 0).sum(axis=1)
    ends = np.minimum(MIN_POD_EVENTS * np.maximum(k, 1), WARM_UP_EVENTS)
    return np.asarray((k >= 2) & (x.sum(axis=1) < ends))


def grid_steps(log_h: FloatArray, step: float, limit: int) -> npt.NDArray[np.int64]:
    """``log h`` rounded *up* to whole grid steps (so the tested null is never narrower)."""
    lh = np.asarray(log_h, dtype=np.float64)
    s = np.ceil(np.minimum(lh, (limit + 1) * step) / step - 1e-9).astype(np.int64)
    return np.clip(s, 0, limit)


class PodSpread:
    """Stable's accumulated per-pod counts for ``rows`` event kinds, and the canary's traffic.

    ``add`` takes one interval; ``log_h`` gives the current widening per row. Only *stable's*
    events enter the estimate; of the canary only the requests per pod (its traffic shares) are
    used, never its outcomes.

    ``spread`` and ``measure`` name the assumption made where the spread is not known (the
    metric's ``podSpread``, "error rate" or "latency"); its ``log h`` per row is
    ``log spread`` until the judge gives another (``assume``).
    """

    def __init__(
        self,
        rows: int,
        alpha: float,
        spread: float = DEFAULT_RATE_SPREAD,
        measure: str = "error rate",
    ) -> None:
        if spread < 1.0:
            raise ValueError(f"spread must be at least 1, got {spread}")
        self.rows = rows
        self.alpha = alpha
        self.spread = spread
        self.measure = measure
        self.assumed: FloatArray = np.full(rows, math.log(spread))
        """``log h`` per row where the spread is not known (``assume``)."""
        self.stable: dict[str, list[float]] = {}
        """pod -> [requests, events of row 0, events of row 1, ...]"""
        self.canary: dict[str, float] = {}
        self.seen = False
        """True once the source has reported pods for either version."""
        self.ignored = 0
        """Pod names beyond ``MAX_PODS`` (left out of the estimate)."""
        self.held = HeldBound(rows)
        """Three pods' bound between doublings of stable's events (``HeldBound``)."""
        self._estimated: tuple[FloatArray, FloatArray] | None = None
        """``estimate``'s answer for the current state (None: to be computed); every method
        that changes the state clears it."""

    def assume(self, log_h: Sequence[float] | FloatArray) -> None:
        """Set the assumed ``log h`` per row (the latency judge's, from ``latency_log_h``)."""
        a = np.asarray(log_h, dtype=np.float64)
        if a.shape != (self.rows,) or (a < 0).any():
            raise ValueError(f"expected {self.rows} non-negative log widenings, got {a!r}")
        self.assumed = a
        self._estimated = None

    @property
    def beta(self) -> float:
        return POD_ALPHA_SHARE * self.alpha

    def add(
        self, stable: Sequence[tuple[str, float, Sequence[float]]], canary: Sequence[PodCounts]
    ) -> None:
        """One interval: stable ``(pod, requests, events per row)`` and the canary's pods."""
        if stable or canary:
            self.seen = True
        self._estimated = None
        for name, req, ev in stable:
            if len(ev) != self.rows:
                raise ValueError(f"pod {name!r}: expected {self.rows} event counts, got {len(ev)}")
            acc = self.stable.get(name)
            if acc is None:
                if len(self.stable) >= MAX_PODS:
                    self.ignored += 1
                    continue
                acc = self.stable[name] = [0.0] * (1 + self.rows)
            acc[0] += float(req)
            for r, e in enumerate(ev):
                acc[1 + r] += float(e)
        for p in canary:
            if p.pod not in self.canary and len(self.canary) >= MAX_PODS:
                self.ignored += 1
                continue
            self.canary[p.pod] = self.canary.get(p.pod, 0.0) + float(p.requests)

    @property
    def stable_pods(self) -> int:
        return sum(1 for acc in self.stable.values() if acc[0] > 0)

    @property
    def canary_pods(self) -> int:
        return sum(1 for n in self.canary.values() if n > 0)

    def _shares_sq(self) -> float:
        ns = np.array([acc[0] for acc in self.stable.values()])
        nc = np.array(list(self.canary.values()))
        b2 = float(np.sum((ns / ns.sum()) ** 2)) if ns.sum() > 0 else 1.0
        # Without the canary's pods, assume the worst: one canary pod.
        a2 = float(np.sum((nc / nc.sum()) ** 2)) if nc.sum() > 0 else 1.0
        return a2 + b2

    @property
    def too_few(self) -> bool:
        """The source reports pods, but fewer than ``MIN_SPREAD_PODS`` stable ones with
        traffic: the spread is assumed. False where no pods were seen (nothing is assumed
        then: the test takes requests as exchangeable)."""
        return self.seen and self.stable_pods < MIN_SPREAD_PODS

    def assumed_rows(self) -> npt.NDArray[np.bool_]:
        """Per row, True where the widening in force is the assumed one (``podSpread``): too
        few stable pods, their warm-up, or three pods whose estimate is wider than the
        assumption (point 7 of the module's docstring). False where no pods were seen."""
        if not self.seen:
            return np.zeros(self.rows, dtype=bool)
        if self.too_few:
            return np.ones(self.rows, dtype=bool)
        log_h, _ = self.estimate()
        capped = self.stable_pods < ROUGH_BELOW_PODS
        return np.asarray(self.warming() | (capped & (log_h >= self.assumed - 1e-12)), dtype=bool)

    def estimate(self) -> tuple[FloatArray, FloatArray]:
        """``(log h, tau)`` per row (``log_widening``); with fewer than two stable pods the
        assumed ``log h`` and NaN; three pods' bound held between doublings of stable's events
        (``HeldBound``, which this advances: asking again in the same state gives the same
        answer). Computed once per state (the judge's update, its verdict's reason and details
        all ask); the arrays it returns are read-only."""
        if self._estimated is None:
            if self.stable_pods < 2:
                log_h, tau = self.assumed.copy(), np.full(self.rows, np.nan)
            else:
                acc = np.array(list(self.stable.values()))  # (pods, 1 + rows)
                n = np.broadcast_to(acc[:, 0], (self.rows, acc.shape[0]))
                x = acc[:, 1:].T
                shares = np.full(self.rows, self._shares_sq())
                log_h, tau = self.held.widen(n, x, shares, self.beta, assumed=self.assumed)
            log_h.setflags(write=False)
            tau.setflags(write=False)
            self._estimated = (log_h, tau)
        return self._estimated

    def warming(self) -> npt.NDArray[np.bool_]:
        """Per row, True while stable's pods are in the warm-up."""
        if self.stable_pods < 2:
            return np.zeros(self.rows, dtype=bool)
        acc = np.array(list(self.stable.values()))
        return in_warm_up(np.broadcast_to(acc[:, 0], (self.rows, acc.shape[0])), acc[:, 1:].T)

    def assumption(self) -> str:
        """What the test assumes where stable's pods cannot show how much pods differ
        (``assumed_spread_text``)."""
        return assumed_spread_text(self.spread, self.measure)

    def details(self) -> dict[str, Any]:
        """What the verdict shows about the pods."""
        if not self.seen:
            return {
                "pods": "the metric source cannot tell pods apart: the test assumes requests "
                "are exchangeable between versions"
            }
        _, tau = self.estimate()
        out: dict[str, Any] = {
            "stable_pods": self.stable_pods,
            "canary_pods": self.canary_pods,
            "alpha_for_pod_spread": self.beta,
            "between_pod_sd_log": [None if math.isnan(t) else float(t) for t in tau],
        }
        if self.too_few:
            out["pods"] = (
                f"{self.stable_pods} stable pod(s) with traffic, fewer than {MIN_SPREAD_PODS}: "
                f"how much pods differ cannot be estimated, so the test assumes "
                f"{self.assumption()} and widens the null by that"
            )
        elif self.warming().any():
            out["pods"] = (
                f"{warm_up_text(self.stable_pods)}: how much pods "
                f"differ is not known yet, so the test assumes {self.assumption()} until "
                "they have"
            )
        elif self.assumed_rows().any():
            out["pods"] = (
                f"{self.stable_pods} stable pods bound how much pods differ only roughly (a t "
                f"bound with {self.stable_pods - 1} degrees of freedom), here wider than "
                f"podSpread: the test assumes {self.assumption()}"
            )
        if self.ignored:
            out["pods_ignored"] = self.ignored
        return out

    def state(self) -> dict[str, Any]:
        return {
            "stable": {k: list(v) for k, v in self.stable.items()},
            "canary": dict(self.canary),
            "seen": self.seen,
            "ignored": self.ignored,
            "held": self.held.state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        stable = {str(k): [float(x) for x in v] for k, v in state["stable"].items()}
        if any(len(v) != 1 + self.rows for v in stable.values()):
            raise ValueError(f"stored pod counts do not have {self.rows} event kinds")
        self.stable = stable
        self.canary = {str(k): float(v) for k, v in state["canary"].items()}
        self.seen = bool(state["seen"])
        self.ignored = int(state["ignored"])
        self.held = HeldBound(self.rows)
        if "held" in state:  # a judge stored before the bound was held starts afresh
            self.held.load_state(state["held"])
        self._estimated = None
