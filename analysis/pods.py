"""A/A calibration when the canary runs on its own pods, before and after the pod-aware null.

Run: ``nice .venv/bin/python analysis/pods.py [--quick]``. Writes ``analysis/results/pods.md``.

Each rollout has ``k_s`` stable pods (3, 4 or 8) and one canary pod, all of the *same* version.
Per rollout, every pod draws an error-rate multiplier (log-uniform within x1/spread..x spread)
and a latency scale factor (lognormal, mean 1, coefficient of variation ``cv``), as the
simulator's ``pods`` do (``canaryd/simulation/pods.py``). Per one-minute interval a version's
requests are Poisson, split evenly over its pods; errors are binomial and latency buckets
multinomial per pod. The canary takes a fixed 10 % of 20 rps for 120 minutes.

The judges are read exactly as ``SequentialErrorsJudge`` / ``SequentialLatencyJudge`` do
(``RateRatioBatch``, running maximum, the latency e-values of the p50 and p99 boundaries
averaged), in two ways on the same traffic:

- **before**: the old test, requests assumed exchangeable (``h = 1``, threshold ``1/alpha``);
- **after**: the null widened by ``h`` from stable's accumulated per-pod counts after every
  interval (``stats.pods.HeldBound``, ``grid_steps``, ``set_shift``), threshold
  ``1/(alpha - beta)`` with ``beta = POD_ALPHA_SHARE * alpha``.

Each judge runs at alpha 1 %; a second table runs both at the default policy's split of it
(0.5 % each), which is what a rollout's false-rollback rate is bounded by.

The power cost is measured with homogeneous pods (cv 0, spread x1), errors x2 and median
latency +10 % from the start: detection share within the horizon and median delay.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as c

from canaryd.stats.pods import (
    DEFAULT_LATENCY_SPREAD,
    DEFAULT_RATE_SPREAD,
    EXACT_BELOW_EVENTS,
    EXACT_BELOW_PODS,
    MIN_SPREAD_PODS,
    POD_ALPHA_SHARE,
    ROUGH_BELOW_PODS,
    HeldBound,
    grid_steps,
    latency_log_h,
    scaled_bound,
)
from canaryd.stats.ratio import LATENCY_ALT_SCALE, Grid, RateRatioBatch
from canaryd.stats.score import ScoreBatch, step_scores
from canaryd.stats.sequential import latency_log_e

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ALPHA = 0.01
RPS = 20.0
WEIGHT = 0.10
HORIZON = 120
ERROR_RATE = 0.01
LATENCY = c.lognormal(80, 0.5, "knative")
CVS = (0.0, 0.1, 0.2, 0.3)
SPREADS = (1.0, 1.5, 2.0)
STABLE_PODS = (3, 4, 8)
SEED = 20261202
POLICY_METRICS = 2
"""The default policy's metrics (errors and latency, weight 1 each): each judges at
``ALPHA / POLICY_METRICS`` (policies/README "How alpha is split")."""
HISTORY_MIN = 120
"""Minutes of stable-only history before the canary (the policy's default ``history``: 2h)."""
NOISE_SHARES = (0.0, 0.5, 1.0)
"""Shares of the binomial noise subtracted from Cochran's Q in the trade-off table."""
POWER_PODS = (1, 3, 8)
"""Stable pod counts of the second power table (alike pods, history)."""
FEW_PODS = (1, 2)
"""Stable pod counts below ``MIN_SPREAD_PODS``: the spread is assumed, not estimated."""
FEW_PODS_CELLS = ((0.0, 1.0), (0.1, 1.5), (0.2, 2.0), (0.3, 2.0))
"""(latency CV, error spread) of the few-pods table."""
LATENCY_SPREADS = (1.5, 2.0, 2.5, DEFAULT_LATENCY_SPREAD)
"""Latency ``podSpread`` values of the few-pods tables (the default last)."""
FEW_PODS_EFFECTS = (2.0, 3.0, 4.0)
"""Canary latency factors of the few-pods power table (one stable pod, alike pods)."""


@dataclass(frozen=True)
class Heterogeneity:
    cv: float
    spread: float
    stable_pods: int
    canary_pods: int = 1


VARIANT_CELLS = (
    Heterogeneity(0.0, 2.0, 3),
    Heterogeneity(0.1, 1.5, 3),
    Heterogeneity(0.2, 1.5, 3),
)
"""The cells where the default fails most, for the trade-off table."""


@dataclass
class Traffic:
    """Per-interval per-pod counts ``(T, rows, pods)`` of each version; buckets per bucket."""

    n: tuple[FloatArray, FloatArray]
    x: tuple[FloatArray, FloatArray]
    h: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
    history: tuple[FloatArray, FloatArray, npt.NDArray[np.int64]] | None = None
    """Stable's per-pod requests, errors ``(rows, pods)`` and buckets ``(rows, pods, buckets)``
    over ``HISTORY_MIN`` minutes before the canary, all traffic to stable, same pod effects."""


def generate(
    rng: np.random.Generator,
    rows: int,
    het: Heterogeneity,
    error_ratio: float = 1.0,
    latency_factor: float = 1.0,
    horizon: int = HORIZON,
    error_rate: float = ERROR_RATE,
    history_rng: np.random.Generator | None = None,
    rps: float = RPS,
) -> Traffic:
    """Seeded per-pod traffic at ``rps``; the canary's error rate x ``error_ratio``, latency x
    factor.

    With ``history_rng``, stable's ``HISTORY_MIN`` minutes before the canary are drawn too, on
    that stream (so the rollout's own traffic is the same with and without it)."""
    spread = math.log(het.spread)
    sigma = math.sqrt(math.log1p(het.cv**2))
    finite = np.asarray(LATENCY.bounds[:-1])
    ns, xs, hs = [], [], []
    for v, k in enumerate((het.stable_pods, het.canary_pods)):
        mult = np.exp(rng.uniform(-spread, spread, (rows, k)))
        scale = np.exp(sigma * rng.standard_normal((rows, k)) - 0.5 * sigma**2)
        if v == 1:
            mult = mult * error_ratio
            scale = scale * latency_factor
        cdf = stats.norm.cdf(
            np.log(finite[None, None, :] / (LATENCY.a * scale[..., None])) / LATENCY.b
        )
        cdf = np.concatenate([cdf, np.ones((rows, k, 1))], axis=-1)
        probs = np.diff(np.concatenate([np.zeros((rows, k, 1)), cdf], axis=-1), axis=-1)
        share = WEIGHT if v == 1 else 1.0 - WEIGHT
        n = rng.poisson(rps * c.INTERVAL_S * share / k, size=(horizon, rows, k))
        x = rng.binomial(n, np.clip(error_rate * mult, 0.0, 1.0)[None])
        h = rng.multinomial(n, np.broadcast_to(probs, (horizon, *probs.shape)))
        ns.append(n.astype(float))
        xs.append(x.astype(float))
        hs.append(h.astype(np.int64))
        if v == 0:
            stable_effects = (mult, probs)
    history = None
    if history_rng is not None:
        mult, probs = stable_effects
        k = het.stable_pods
        n_h = history_rng.poisson(rps * c.INTERVAL_S * HISTORY_MIN / k, size=(rows, k))
        x_h = history_rng.binomial(n_h, np.clip(error_rate * mult, 0.0, 1.0))
        h_h = history_rng.multinomial(n_h, probs)
        history = (n_h.astype(float), x_h.astype(float), h_h.astype(np.int64))
    return Traffic((ns[0], ns[1]), (xs[0], xs[1]), (hs[0], hs[1]), history)


@dataclass(frozen=True)
class Body:
    """The latency judge's score test in ``crossing``: bucket counts summed over pods
    ``(T, rows, buckets)`` of each version, the scores and centre, the body's rows among the
    tested boundaries, and each rollout's assumed ``log h`` per boundary before any traffic
    ``(rows, boundaries)``."""

    stable: FloatArray
    canary: FloatArray
    scores: FloatArray
    centre: float
    rows: tuple[int, ...]
    first_log_h: FloatArray


def latency_body(tr: Traffic, spread: float, history: bool) -> Body:
    """``Body`` for the judge's default quantiles (p50 in the body, p99 in the tail): the score
    steps at the known distribution's p50 boundary, centred on its share slower there; each
    rollout's assumed ``log h`` before the first interval read by ``latency_log_h`` from its
    stable's own histogram, as the judge reads it: the history's (``history``), else the first
    interval's (the judge's from the stable requests it chooses its boundaries on)."""
    ks = LATENCY.boundaries()
    if history and tr.history is not None:
        own = tr.history[2].sum(axis=1)
    else:
        own = tr.h[0][0].sum(axis=1)
    cum = np.cumsum(own, axis=1).astype(float)
    first = np.array([latency_log_h(LATENCY.bounds, row, ks, spread) for row in cum])
    return Body(
        tr.h[0].sum(axis=2).astype(float),
        tr.h[1].sum(axis=2).astype(float),
        step_scores(len(LATENCY.bounds), [ks[0]]),
        float(1.0 - LATENCY.cdf()[ks[0]]),
        (0,),
        first,
    )


def _shares_sq(n_s: FloatArray, n_c: FloatArray) -> FloatArray:
    """``sum a^2 + sum b^2`` per row from cumulative per-pod requests ``(rows, pods)``."""
    out = np.zeros(n_s.shape[0])
    for n in (n_s, n_c):
        tot = n.sum(axis=1, keepdims=True)
        out += np.where(tot[:, 0] > 0, ((n / np.maximum(tot, 1)) ** 2).sum(axis=1), 1.0)
    return out


def crossing(
    n: tuple[FloatArray, FloatArray],
    events: list[tuple[FloatArray, FloatArray]],
    rho0: float,
    pods: bool,
    alt_scale: float = 1.0,
    alpha: float = ALPHA,
    noise_share: float | None = None,
    history: tuple[FloatArray, list[FloatArray]] | None = None,
    assumed_events: list[FloatArray] | None = None,
    body: Body | None = None,
) -> IntArray:
    """First interval at which the judge fails (``c.NEVER`` if it does not).

    ``body``: the latency judge's score test of its body boundaries (``Body``); the e-values
    are then combined by ``latency_log_e`` as ``SequentialLatencyJudge`` does, the score test
    against ``rho0`` times the widest widening of its boundaries in force before each interval.

    ``history``: stable's per-pod requests and events (one per boundary) ``(rows, pods)``
    before the canary; they seed the spread estimate only, as ``Judge.prime`` does.
    ``assumed_events``: per tested boundary, stable's per-pod events ``(T, rows, pods)`` at the
    bound ``latency_log_h`` reads for the latency ``podSpread``; the assumed widening is then
    taken from stable's traffic during the canary, as ``SequentialLatencyJudge`` does (None:
    the errors judge's ``log DEFAULT_RATE_SPREAD``).

    ``events`` holds per-pod event counts ``(T, rows, pods)`` of (stable, canary), one pair
    per tested boundary; their e-values are averaged. ``pods``: widen the null by stable's
    between-pod spread (and spend ``beta``), as the pod-aware judges do.
    """
    t_n, rows, _ = n[0].shape
    m = len(events)
    batch = RateRatioBatch(rows * m, rho0, Grid.make(rho0, alt_scale=alt_scale))
    beta = POD_ALPHA_SHARE * alpha
    threshold = math.log(1.0 / (alpha - beta if pods else alpha))
    out = np.full(rows, c.NEVER, dtype=np.int64)
    cum_n = [np.zeros_like(n[0][0]), np.zeros_like(n[1][0])]
    cum_x = [np.zeros_like(n[0][0]) for _ in range(m)]
    if history is not None:
        cum_n[0] += history[0]
        for j in range(m):
            cum_x[j] += history[1][j]
    held = [HeldBound(rows) for _ in range(m)]  # three pods' bounds, as PodSpread holds them
    running = np.zeros(rows)
    during = [np.zeros(rows) for _ in range(m)]  # stable's events during the canary, per bound
    during_low = [np.zeros(rows) for _ in range(m)]
    score = None if body is None else ScoreBatch(rows, body.scores, body.centre)
    if body is not None and pods:
        # Before the first interval: the spread from history, else the assumed widening.
        first = body.first_log_h.T
        if history is not None:
            sq0 = _shares_sq(cum_n[0], cum_n[1])
            prev = np.array(
                [
                    held[j].widen(cum_n[0], cum_x[j], sq0, beta, noise_share, first[j])[0]
                    for j in range(m)
                ]
            )
        else:
            prev = first.copy()
    for t in range(t_n):
        if score is not None:
            rho_score = np.full(rows, rho0)
            if pods:
                rho_score = rho0 * np.exp(prev[list(body.rows)].max(axis=0))
        cum_n[0] += n[0][t]
        cum_n[1] += n[1][t]
        for j, (xs, _) in enumerate(events):
            cum_x[j] += xs[t]
            during[j] += xs[t].sum(axis=1)
            if assumed_events is not None:
                during_low[j] += assumed_events[j][t].sum(axis=1)
        if pods:
            sq = _shares_sq(cum_n[0], cum_n[1])
            assumed: list[FloatArray | None] = [
                None
                if assumed_events is None
                else np.log((during_low[j] + 0.5) / (during[j] + 0.5))
                for j in range(m)
            ]
            log_h = np.concatenate(
                [
                    held[j].widen(cum_n[0], cum_x[j], sq, beta, noise_share, assumed[j])[0]
                    for j in range(m)
                ]
            )
            batch.set_shift(grid_steps(log_h, batch.step, batch.max_shift))
            prev = log_h.reshape(m, rows)
        batch.update(
            np.tile(n[0][t].sum(axis=1), m),
            np.concatenate([xs[t].sum(axis=1) for xs, _ in events]),
            np.tile(n[1][t].sum(axis=1), m),
            np.concatenate([xc[t].sum(axis=1) for _, xc in events]),
        )
        le = batch.log_e().reshape(m, rows)
        if score is not None and body is not None:
            hs, hc = body.stable[t], body.canary[t]
            score.update(n[0][t].sum(axis=1), n[1][t].sum(axis=1), hc, hs + hc, rho_score)
            comb = latency_log_e(le, score.log_e(), body.rows)
        else:
            comb = le[0] if m == 1 else np.logaddexp.reduce(le, axis=0) - math.log(m)
        running = np.maximum(running, comb)
        hit = (running >= threshold) & (out == c.NEVER)
        out[hit] = t
    return out


def latency_events(tr: Traffic) -> list[tuple[FloatArray, FloatArray]]:
    """Per-pod exceedances at the p50 and p99 boundaries of the known stable distribution."""
    return [(c.exceedances(tr.h[0], k), c.exceedances(tr.h[1], k)) for k in LATENCY.boundaries()]


def assumed_latency_events(tr: Traffic, spread: float) -> list[FloatArray]:
    """Stable's per-pod requests slower than each tested boundary divided by ``spread``,
    interpolated within its bucket as ``stats.pods.latency_log_h`` reads them."""
    out = []
    for k in LATENCY.boundaries():
        j, w = scaled_bound(LATENCY.bounds, k, spread)
        below = tr.n[0] if j < 0 else c.exceedances(tr.h[0], j)
        out.append((1.0 - w) * below + w * c.exceedances(tr.h[0], j + 1))
    return out


@dataclass
class Cell:
    het: Heterogeneity
    rollouts: int
    errors: tuple[int, int, int]  # rollbacks before, after, after with history
    latency: tuple[int, int, int]
    either: tuple[int, int, int]
    latency_by_spread: tuple[int, ...] = ()
    """Latency rollbacks, pod-aware with history, at each of ``LATENCY_SPREADS`` (if asked)."""
    split: tuple[int, ...] = ()
    """Rollouts rolled back by either pod-aware judge when each runs at
    ``ALPHA / POLICY_METRICS``, as the default policy splits alpha: without history, with
    history (if asked)."""


def aa_cell(
    het: Heterogeneity,
    rollouts: int,
    seed: Any,
    horizon: int = HORIZON,
    noise_share: float | None = None,
    spreads: tuple[float, ...] = (),
    policy_split: bool = False,
) -> Cell:
    """A/A rollbacks of one heterogeneity level; ``spreads``: also the latency judge's with
    history at each of these ``podSpread`` values; ``policy_split``: also either judge's,
    each at the default policy's share of alpha (``Cell.split``)."""
    rng = np.random.default_rng(seed)
    tr = generate(
        rng, rollouts, het, horizon=horizon, history_rng=np.random.default_rng([*_seq(seed), 7])
    )
    err, lat, both = [], [], []
    for pods, hist in ((False, False), (True, False), (True, True)):
        e = judge_crossing(tr, "errors", pods, hist, noise_share)
        la = judge_crossing(tr, "latency", pods, hist, noise_share)
        err.append(int(np.sum(e >= 0)))
        lat.append(int(np.sum(la >= 0)))
        both.append(int(np.sum((e >= 0) | (la >= 0))))
    by_spread = tuple(
        int(np.sum(judge_crossing(tr, "latency", True, True, noise_share, sp) >= 0))
        for sp in spreads
    )
    split: tuple[int, ...] = ()
    if policy_split:
        share = ALPHA / POLICY_METRICS
        split = tuple(
            int(
                np.sum(
                    (judge_crossing(tr, "errors", True, hist, noise_share, alpha=share) >= 0)
                    | (judge_crossing(tr, "latency", True, hist, noise_share, alpha=share) >= 0)
                )
            )
            for hist in (False, True)
        )
    return Cell(
        het,
        rollouts,
        (err[0], err[1], err[2]),
        (lat[0], lat[1], lat[2]),
        (both[0], both[1], both[2]),
        by_spread,
        split,
    )


def judge_crossing(
    tr: Traffic,
    kind: str,
    pods: bool,
    history: bool,
    noise_share: float | None = None,
    latency_spread: float = DEFAULT_LATENCY_SPREAD,
    alpha: float = ALPHA,
) -> IntArray:
    """``crossing`` as the ``kind`` ("errors" or "latency") judge reads the traffic at
    ``alpha``: pod-aware or not, with stable's history seeding the spread or not; the latency
    judge assumes ``latency_spread`` (its ``podSpread``) where the spread is not known."""
    if kind == "errors":
        return crossing(
            tr.n,
            [tr.x],
            1.0,
            pods,
            alpha=alpha,
            noise_share=noise_share,
            history=_hist(tr, history),
        )
    return crossing(
        tr.n,
        latency_events(tr),
        1.0,
        pods,
        LATENCY_ALT_SCALE,
        alpha=alpha,
        noise_share=noise_share,
        history=_hist(tr, history, latency=True),
        assumed_events=assumed_latency_events(tr, latency_spread),
        body=latency_body(tr, latency_spread, history),
    )


def _seq(seed: Any) -> list[int]:
    return list(seed) if isinstance(seed, (list, tuple)) else [int(seed)]


def _hist(
    tr: Traffic, use: bool, latency: bool = False
) -> tuple[FloatArray, list[FloatArray]] | None:
    """The history argument of ``crossing`` for the error or the latency judge."""
    if not use or tr.history is None:
        return None
    n_h, x_h, h_h = tr.history
    if not latency:
        return n_h, [x_h]
    return n_h, [c.exceedances(h_h[None], k)[0] for k in LATENCY.boundaries()]


def power(
    rollouts: int,
    seed: int,
    horizon: int = HORIZON,
    noise_share: float | None = None,
    stable_pods: int = 4,
    variants: tuple[tuple[bool, bool, str], ...] | None = None,
) -> list[tuple[str, str, float, float]]:
    """(effect, test, detected share, median delay in minutes among detected) on homogeneous
    pods (``stable_pods`` of them, one canary pod).

    At a 0.1 % base rate stable's pods need ~110 min for the warm-up's 30 events each, so the
    last effect shows what ``WARM_UP_WIDENING`` buys: a far-off canary is rolled back before.
    """
    het = Heterogeneity(0.0, 1.0, stable_pods)
    out: list[tuple[str, str, float, float]] = []
    tests = variants or (
        (False, False, "before"),
        (True, False, "after"),
        (True, True, f"after, {HISTORY_MIN} min history"),
    )
    effects: tuple[tuple[str, dict[str, float]], ...] = (
        ("errors x2", {"error_ratio": 2.0}),
        ("latency +10 %", {"latency_factor": 1.1}),
        ("errors x10 at a 0.1 % base rate", {"error_ratio": 10.0, "error_rate": 0.001}),
    )
    for effect, kw in effects:
        rng = np.random.default_rng([seed, len(out)])
        hrng = np.random.default_rng([seed, len(out), 7])
        tr = generate(rng, rollouts, het, horizon=horizon, history_rng=hrng, **kw)
        for pods, hist, name in tests:
            kind = "errors" if effect.startswith("errors") else "latency"
            hit = judge_crossing(tr, kind, pods, hist, noise_share)
            ok = hit >= 0
            delay = float(np.median(hit[ok] + 1)) if ok.any() else math.nan
            out.append((effect, name, float(ok.mean()), delay))
    return out


def few_pods_power(rollouts: int, seed: int) -> list[tuple[float, float, float, float]]:
    """(latency factor, podSpread, detected share, median delay) on one stable pod and one
    canary pod, alike, with history: what the latency assumption costs."""
    out = []
    for i, factor in enumerate(FEW_PODS_EFFECTS):
        rng = np.random.default_rng([seed, i])
        tr = generate(
            rng,
            rollouts,
            Heterogeneity(0.0, 1.0, 1),
            latency_factor=factor,
            history_rng=np.random.default_rng([seed, i, 7]),
        )
        for sp in LATENCY_SPREADS:
            hit = judge_crossing(tr, "latency", True, True, latency_spread=sp)
            ok = hit >= 0
            out.append(
                (
                    factor,
                    sp,
                    float(ok.mean()),
                    float(np.median(hit[ok] + 1)) if ok.any() else math.nan,
                )
            )
    return out


ESCAPE_PODS = (3, 4, 8)
"""Stable pod counts of the escapes table."""
ESCAPE_SPREADS = (1.5, 2.0)
"""Error spreads of the escapes table (the main table's two that are not x1)."""


def escapes(rollouts: int, seed: int) -> list[tuple[int, float, bool, float, float]]:
    """(stable pods, error spread, history, mean share of looks, share of rollouts) in which
    the errors judge's widening ``log h`` is below the canary pod's true offset.

    The offset is ``log(p_canary / p_stable)``, stable's rate the mean of its pods' (they take
    equal shares); ``log h`` is read as the judge reads it (``HeldBound.widen``, the default
    policy's ``beta``, the errors ``podSpread`` default), after every one-minute interval,
    before the grid rounds it up. A miss is not a false rollback (the test must then still
    find the canary past ``rho0 * h``); it is where the bound's own promise, ``beta`` at each
    look, is measured.
    """
    beta = POD_ALPHA_SHARE * ALPHA / POLICY_METRICS
    out = []
    for i, ks in enumerate(ESCAPE_PODS):
        for j, spread in enumerate(ESCAPE_SPREADS):
            for hist in (False, True):
                rng = np.random.default_rng([seed, i, j, int(hist)])
                mult = np.exp(rng.uniform(-math.log(spread), math.log(spread), (rollouts, ks + 1)))
                offset = np.log(mult[:, ks] / mult[:, :ks].mean(axis=1))
                p = ERROR_RATE * mult[:, :ks]
                n, x = np.zeros((rollouts, ks)), np.zeros((rollouts, ks))
                if hist:
                    n_h = rng.poisson(RPS * c.INTERVAL_S * HISTORY_MIN / ks, (rollouts, ks))
                    n, x = n_h.astype(float), rng.binomial(n_h, p).astype(float)
                sq = np.full(rollouts, 1.0 + 1.0 / ks)
                held = HeldBound(rollouts)
                looks, ever = [], np.zeros(rollouts, dtype=bool)
                for _ in range(HORIZON):
                    dn = rng.poisson(RPS * c.INTERVAL_S * (1.0 - WEIGHT) / ks, (rollouts, ks))
                    n += dn
                    x += rng.binomial(dn, p)
                    log_h, _ = held.widen(n, x, sq, beta, assumed=math.log(DEFAULT_RATE_SPREAD))
                    miss = offset > log_h
                    looks.append(miss.mean())
                    ever |= miss
                out.append((ks, spread, hist, float(np.mean(looks)), float(ever.mean())))
    return out


SWEEP_RPS = (5.0, 20.0, 80.0, 320.0, 1280.0)
"""Traffic of the traffic sweep (the main table's is ``RPS``)."""


def traffic_sweep(rollouts: int, seed: int) -> list[tuple[float, float, int, int]]:
    """(rps, error spread, rollbacks without history, with history) of the pod-aware errors
    judge at alpha on 4 stable pods, CV 0: whether four pods' bound, whose misses the escapes
    table counts, holds alpha at other traffic than the main table's. More traffic makes the
    test find a smaller miss, and the noise it subtracts smaller."""
    out = []
    for i, rps in enumerate(SWEEP_RPS):
        for j, spread in enumerate(ESCAPE_SPREADS):
            tr = generate(
                np.random.default_rng([seed, i, j]),
                rollouts,
                Heterogeneity(0.0, spread, 4),
                history_rng=np.random.default_rng([seed, i, j, 7]),
                rps=rps,
            )
            hits = [int(np.sum(judge_crossing(tr, "errors", True, h) >= 0)) for h in (False, True)]
            out.append((rps, spread, hits[0], hits[1]))
    return out


def fmt(k: int, n: int) -> str:
    return f"{c.pct(k / n)} (≤ {c.pct(c.cp_upper(k, n))})"


def _main_cell(args: tuple[Heterogeneity, int, list[int]]) -> Cell:
    """One cell of the main table (a top-level function, so a worker process can run it)."""
    het, rollouts, seed = args
    return aa_cell(het, rollouts, seed, policy_split=True)


def main() -> None:
    quick = c.parse_quick(__doc__ or "")
    rollouts = 300 if quick else 1000
    # The main table's cells get four times as many: their upper bounds are what "FRR <= alpha"
    # is claimed on, and 1,000 rollouts put a 0.6 % cell's upper bound above 1 %.
    cell_rollouts = 300 if quick else 4 * rollouts
    t0 = time.perf_counter()
    cells = c.map_cells(
        _main_cell,
        [
            (Heterogeneity(cv, spread, ks), cell_rollouts, [SEED, i, j, k])
            for i, cv in enumerate(CVS)
            for j, spread in enumerate(SPREADS)
            for k, ks in enumerate(STABLE_PODS)
        ],
    )
    few = [
        aa_cell(
            Heterogeneity(cv, spread, ks), rollouts, seed=[SEED, 8, i, ks], spreads=LATENCY_SPREADS
        )
        for i, (cv, spread) in enumerate(FEW_PODS_CELLS)
        for ks in FEW_PODS
    ]
    few_pw = few_pods_power(rollouts // 2, SEED + 4)
    pw = power(rollouts // 2, SEED + 1)
    hist_only = ((True, True, "after"),)
    pw_by_pods = [
        (ks, power(rollouts // 2, SEED + 3, stable_pods=ks, variants=hist_only))
        for ks in POWER_PODS
    ]
    escaped = escapes(cell_rollouts, SEED + 5)
    sweep = traffic_sweep(cell_rollouts, SEED + 6)
    variants = []
    for share in NOISE_SHARES:
        worst3 = [
            aa_cell(h, rollouts // 2, [SEED, 9, i], noise_share=share)
            for i, h in enumerate(VARIANT_CELLS)
        ]
        pw3 = power(rollouts // 4, SEED + 2, noise_share=share, stable_pods=3, variants=hist_only)
        variants.append((share, worst3, pw3))
    elapsed = time.perf_counter() - t0
    rows = [
        (
            f"{100 * x.het.cv:g} %",
            f"x{x.het.spread:g}",
            f"{x.het.stable_pods} vs {x.het.canary_pods}",
            fmt(x.errors[0], x.rollouts),
            fmt(x.errors[1], x.rollouts),
            fmt(x.latency[0], x.rollouts),
            fmt(x.latency[1], x.rollouts),
            fmt(x.either[1], x.rollouts),
            fmt(x.errors[2], x.rollouts),
            fmt(x.latency[2], x.rollouts),
            fmt(x.either[2], x.rollouts),
        )
        for x in cells
    ]
    worst = max(cells, key=lambda x: max(x.errors[1], x.latency[1]))
    worst_k = max(worst.errors[1], worst.latency[1])
    worst_h = max(cells, key=lambda x: max(x.errors[2], x.latency[2]))
    worst_hk = max(worst_h.errors[2], worst_h.latency[2])
    worst_he = max(cells, key=lambda x: x.either[2])
    worst_split = [
        (max(cells, key=lambda x, i=i: x.split[i]), i, when)
        for i, when in enumerate(("without history", f"with {HISTORY_MIN} min of history"))
    ]
    old_worst = max(cells, key=lambda x: max(x.errors[0], x.latency[0]))
    text = [
        "# Canary on its own pods: A/A false rollbacks before and after the pod-aware null",
        "",
        f"Generated by `analysis/pods.py`{' --quick' if quick else ''} (seed {SEED}, "
        f"{elapsed:.0f} s). {cell_rollouts} rollouts per cell, alpha {ALPHA:g}, judged after every "
        f"one-minute interval for {HORIZON} min; {RPS:g} rps, canary {100 * WEIGHT:g} % on one "
        f"pod; errors {100 * ERROR_RATE:g} % (tolerance 0), latency {LATENCY.name} on knative "
        "buckets, boundaries p50 and p99 (tolerance 0). Per pod: error-rate multiplier "
        "log-uniform in x1/spread..x spread, latency scale lognormal (mean 1, CV). 'before' is "
        "the test that assumes requests exchangeable between versions; 'after' widens the null "
        f"by stable's between-pod spread and spends {POD_ALPHA_SHARE:g} of alpha on it (with "
        f"fewer than {EXACT_BELOW_PODS} stable pods or {EXACT_BELOW_EVENTS:g} events across them, the "
        "exact t bound on their raw spread; with fewer than "
        f"{ROUGH_BELOW_PODS}, never wider than the assumed podSpread and held between "
        "doublings of stable's events). "
        "Each figure: false-rollback rate (one-sided 95 % Clopper-Pearson upper bound).",
        "",
        c.md_table(
            (
                "latency CV",
                "error spread",
                "pods stable vs canary",
                "errors before",
                "errors after",
                "latency before",
                "latency after",
                "either judge after",
                f"errors, {HISTORY_MIN} min history",
                f"latency, {HISTORY_MIN} min history",
                f"either, {HISTORY_MIN} min history",
            ),
            rows,
        ),
        "",
        f"Worst 'after' judge cell: {worst_k}/{worst.rollouts} "
        f"(CV {100 * worst.het.cv:g} %, x{worst.het.spread:g}, {worst.het.stable_pods} stable pods); "
        f"upper bound {c.pct(c.cp_upper(worst_k, worst.rollouts))}. Worst 'before': "
        f"{max(old_worst.errors[0], old_worst.latency[0])}/{old_worst.rollouts} "
        f"(CV {100 * old_worst.het.cv:g} %, x{old_worst.het.spread:g}, "
        f"{old_worst.het.stable_pods} stable pods). With {HISTORY_MIN} min of stable's history "
        f"before the canary seeding the spread (``Judge.prime``), the worst judge cell is "
        f"{worst_hk}/{worst_h.rollouts} (CV {100 * worst_h.het.cv:g} %, x{worst_h.het.spread:g}, "
        f"{worst_h.het.stable_pods} stable pods; upper bound "
        f"{c.pct(c.cp_upper(worst_hk, worst_h.rollouts))}) and the worst either-judge cell "
        f"{worst_he.either[2]}/{worst_he.rollouts} (upper bound "
        f"{c.pct(c.cp_upper(worst_he.either[2], worst_he.rollouts))}).",
        "",
        "## The rollout as the default policy judges it: alpha split between its metrics",
        "",
        f"The table above runs each judge at alpha {ALPHA:g}, so 'either judge' there is "
        f"bounded by {POLICY_METRICS * ALPHA:g}, not by alpha. A policy splits its alpha between "
        f"its metrics by weight; the default's {POLICY_METRICS} metrics of weight 1 each judge "
        f"at {ALPHA / POLICY_METRICS:g}, so a rollout is falsely rolled back by either with "
        f"probability <= {ALPHA:g} by the union bound. Measured on the same traffic, "
        f"{cell_rollouts} rollouts per cell: rollouts rolled back by either pod-aware judge at "
        f"alpha {ALPHA / POLICY_METRICS:g} each.",
        "",
        c.md_table(
            (
                "latency CV",
                "error spread",
                "pods stable vs canary",
                "either, no history",
                f"either, {HISTORY_MIN} min history",
            ),
            [
                (
                    f"{100 * x.het.cv:g} %",
                    f"x{x.het.spread:g}",
                    f"{x.het.stable_pods} vs {x.het.canary_pods}",
                    fmt(x.split[0], x.rollouts),
                    fmt(x.split[1], x.rollouts),
                )
                for x in cells
            ],
        ),
        "",
        "Worst cell: "
        + " and ".join(
            f"{x.split[i]}/{x.rollouts} {when} (CV {100 * x.het.cv:g} %, x{x.het.spread:g}, "
            f"{x.het.stable_pods} stable pods; upper bound "
            f"{c.pct(c.cp_upper(x.split[i], x.rollouts))})"
            for x, i, when in worst_split
        )
        + ".",
        "",
        "## How often the widening misses the canary pod's offset",
        "",
        "A false rollback needs the canary pod's true offset from stable, "
        "`log(p_canary / p_stable)`, to lie above the errors judge's widening `log h`, and the "
        "test then to find the canary past `rho0 * h`. The first is the bound's own promise: at "
        f"most beta = {POD_ALPHA_SHARE * ALPHA / POLICY_METRICS:g} (the default policy's) of "
        "rollouts at each look for a fresh bound, and over all looks for a held one. Measured "
        f"here, {cell_rollouts} rollouts per row, the judge's `log h` (`HeldBound.widen`, "
        f"podSpread x{DEFAULT_RATE_SPREAD:g}) after each of {HORIZON} one-minute intervals, "
        f"errors {100 * ERROR_RATE:g} % on the main table's traffic, before the grid rounds "
        "it up.",
        "",
        c.md_table(
            (
                "stable pods",
                "error spread",
                "history",
                "missed at a look (mean over looks)",
                "missed at some look",
            ),
            [
                (
                    f"{ks}",
                    f"x{sp:g}",
                    f"{HISTORY_MIN} min" if hist else "none",
                    c.pct(look, 3),
                    c.pct(ever, 3),
                )
                for ks, sp, hist, look, ever in escaped
            ],
        ),
        "",
        "Three pods' held bound keeps its promise over all looks. Four pods' does not, even at "
        "one look: with 2 h of history the binomial noise is subtracted (method of moments, "
        f"from {EXACT_BELOW_EVENTS:g} events in all), which shrinks the spread most where three "
        "degrees of freedom let it dip; on the pods' true effects alone the t bound misses "
        "about beta. That the false-rollback rate still holds alpha on four pods (tables above) "
        "is measured, not proved: most misses are small, and at this traffic the test does not "
        "find them within the rollout. With more traffic it finds more of them (below).",
        "",
        f"The same four pods at other traffic ({cell_rollouts} rollouts per cell, latency CV 0, "
        f"the errors judge at alpha {ALPHA:g}; the main table has {RPS:g} rps):",
        "",
        c.md_table(
            ("rps", "error spread", "errors, no history", f"errors, {HISTORY_MIN} min history"),
            [
                (f"{rps:g}", f"x{sp:g}", fmt(k0, cell_rollouts), fmt(k1, cell_rollouts))
                for rps, sp, k0, k1 in sweep
            ],
        ),
        "",
        "## Power cost with homogeneous pods (4 stable, 1 canary, CV 0, x1)",
        "",
        f"{rollouts // 2} rollouts per effect, the effect from the start; delay = median "
        "minutes to rollback among the detected.",
        "",
        c.md_table(
            ("effect", "test", "detected in 120 min", "median delay (min)"),
            [(e, t, c.pct(d, 1), f"{m:g}") for e, t, d, m in pw],
        ),
        "",
        f"With {', '.join(str(k) for k in POWER_PODS)} stable pods (the same effects, "
        f"{HISTORY_MIN} min of history):",
        "",
        c.md_table(
            ("effect", "stable pods", "detected in 120 min", "median delay (min)"),
            [
                (e, f"{ks}", c.pct(d, 1), f"{m:g}")
                for ks, rows_k in pw_by_pods
                for e, _, d, m in rows_k
            ],
        ),
        "",
        f"## Fewer than {MIN_SPREAD_PODS} stable pods: the spread is assumed, not estimated",
        "",
        f"One stable pod shows no spread, and two give a Student t with one degree of freedom. "
        f"Below {MIN_SPREAD_PODS} pods the null is widened for the whole rollout by the "
        "metric's `podSpread`, as in the warm-up: errors by a ratio of error rates (default "
        f"x{DEFAULT_RATE_SPREAD:g}), latency by a ratio of latencies (default "
        f"x{DEFAULT_LATENCY_SPREAD:g}), which each boundary's null turns into a ratio of shares "
        "through stable's histogram. Valid while pods of one version differ by less than that. "
        f"{rollouts} rollouts per cell, {HISTORY_MIN} min of history.",
        "",
        c.md_table(
            (
                "latency CV",
                "error spread",
                "pods stable vs canary",
                "errors before",
                f"errors, x{DEFAULT_RATE_SPREAD:g}",
                "latency before",
                *(f"latency, podSpread {sp:g}" for sp in LATENCY_SPREADS),
            ),
            [
                (
                    f"{100 * x.het.cv:g} %",
                    f"x{x.het.spread:g}",
                    f"{x.het.stable_pods} vs {x.het.canary_pods}",
                    fmt(x.errors[0], x.rollouts),
                    fmt(x.errors[2], x.rollouts),
                    fmt(x.latency[0], x.rollouts),
                    *(fmt(k, x.rollouts) for k in x.latency_by_spread),
                )
                for x in few
            ],
        ),
        "",
        f"What the latency assumption costs, on one stable pod and one canary pod that are alike "
        f"({rollouts // 2} rollouts per effect, {HISTORY_MIN} min of history; detected in "
        f"{HORIZON} min, median minutes among the detected):",
        "",
        c.md_table(
            ("canary latency", *(f"podSpread {sp:g}" for sp in LATENCY_SPREADS)),
            [
                (
                    f"x{factor:g}",
                    *(f"{c.pct(d, 1)}, {m:g}" for f2, _, d, m in few_pw if f2 == factor),
                )
                for factor in FEW_PODS_EFFECTS
            ],
        ),
        "",
        "## The trade-off on three stable pods: how much binomial noise the estimate subtracts",
        "",
        f"With fewer than {EXACT_BELOW_PODS} stable pods the default subtracts none (the exact "
        f"t bound); from 4 on, once they have {EXACT_BELOW_EVENTS:g} events in all, all of it (the "
        "method of moments). Here the three "
        f"cells where subtracting all of it was worst ({rollouts // 2} rollouts each, "
        f"3 stable pods, {HISTORY_MIN} min history), and the power cost on 3 alike pods "
        f"({rollouts // 4} rollouts per effect, the same history).",
        "",
        c.md_table(
            (
                "noise share",
                *(f"CV {100 * h.cv:g} %, x{h.spread:g}: errors / latency" for h in VARIANT_CELLS),
                "errors x2: detected, median min",
                "latency +10 %: detected, median min",
                "errors x10 at 0.1 %: detected, median min",
            ),
            [
                (
                    f"{share:g}",
                    *(
                        f"{fmt(x.errors[2], x.rollouts)} / {fmt(x.latency[2], x.rollouts)}"
                        for x in cells3
                    ),
                    *(f"{c.pct(d, 1)}, {m:g}" for _, _, d, m in pw3),
                )
                for share, cells3, pw3 in variants
            ],
        ),
        "",
    ]
    name = "pods-quick.md" if quick else "pods.md"
    (c.RESULTS / name).write_text("\n".join(text), encoding="utf-8")
    print("\n".join(text))


if __name__ == "__main__":
    main()
