"""Shared pieces of the studies: a small vectorized traffic generator and the sequential tests.

The generator draws thousands of rollouts at once, one analysis interval at a time:

- requests per interval ~ Poisson(rps * interval_s);
- canary requests ~ Binomial(requests, canary weight of that interval) (the step schedule);
- errors ~ Binomial(requests of the version, error rate of the version);
- latency buckets ~ Multinomial(requests of the version, bucket probabilities), from a lognormal
  or Pareto (heavy-tailed) distribution over the Istio or knative boundaries.

The sequential tests feed :class:`canaryd.stats.ratio.RateRatioBatch` directly - the same engine
the judges use with ``rows=1`` - and read decisions exactly as the judges do: the errors judge
fails once the running maximum of the e-value reaches ``1/alpha``; the latency judge averages the
e-values of the p50 and p99 boundaries and fails once the running maximum of the average reaches
``1/alpha``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from canaryd.simulation.scenario import ISTIO_BUCKETS_MS, KNATIVE_BUCKETS_MS  # noqa: E402
from canaryd.stats.histogram import nearest_boundary  # noqa: E402
from canaryd.stats.ratio import (  # noqa: E402
    LATENCY_ALT_SCALE,
    Grid,
    RateRatioBatch,
    loglik_increment,
)
from canaryd.stats.score import ScoreBatch, step_scores  # noqa: E402
from canaryd.stats.sequential import latency_log_e  # noqa: E402

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
T = TypeVar("T")
R = TypeVar("R")
RESULTS = Path(__file__).resolve().parent / "results"
INTERVAL_S = 60.0

# --- schedules -------------------------------------------------------------------------------


def weights(split: str, intervals: int, step_every: int = 1) -> FloatArray:
    """Canary share per interval: ``fixed`` = 10 %; ``steps`` = 5 % -> 50 % by 5 every step."""
    if split == "fixed":
        return np.full(intervals, 0.10)
    if split == "steps":
        i = np.arange(intervals)
        return np.minimum(5 * (i // step_every + 1), 50) / 100.0
    raise ValueError(split)


def expected_schedule(rps: float, w: FloatArray) -> list[tuple[float, float]]:
    n = rps * INTERVAL_S
    return [(n * (1 - x), n * x) for x in w]


# --- latency distributions -------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyDist:
    """A latency distribution and the bucket layout it is observed through."""

    name: str
    kind: str  # "lognormal" or "pareto"
    a: float  # lognormal: median ms; pareto: scale ms
    b: float  # lognormal: sigma; pareto: shape
    buckets: str = "knative"

    @property
    def bounds(self) -> tuple[float, ...]:
        finite = KNATIVE_BUCKETS_MS if self.buckets == "knative" else ISTIO_BUCKETS_MS
        return (*finite, math.inf)

    def cdf(self) -> FloatArray:
        """P(latency <= b) at every boundary (1 at +Inf)."""
        b = np.asarray(self.bounds[:-1], dtype=float)
        if self.kind == "lognormal":
            c = stats.norm.cdf(np.log(b / self.a) / self.b)
        elif self.kind == "pareto":
            c = np.where(b >= self.a, 1.0 - (self.a / np.maximum(b, 1e-300)) ** self.b, 0.0)
        else:
            raise ValueError(self.kind)
        return np.append(c, 1.0)

    def probs(self) -> FloatArray:
        return np.diff(np.concatenate([[0.0], self.cdf()]))

    def boundaries(self, quantiles: Sequence[float] = (0.5, 0.99)) -> list[int]:
        """Indices of the finite boundaries nearest each quantile of the *known* distribution.

        The judge chooses them from stable's first 30+ requests; with the true distribution
        known, the study takes the limit of that choice (``nearest_boundary`` on the CDF).
        """
        out: list[int] = []
        for q in quantiles:
            k = nearest_boundary(self.bounds, self.cdf(), q)
            assert k is not None
            if k not in out:
                out.append(k)
        return out


def lognormal(median: float, sigma: float, buckets: str = "knative") -> LatencyDist:
    return LatencyDist(
        f"lognormal({median:g} ms, σ {sigma:g})", "lognormal", median, sigma, buckets
    )


def pareto(scale: float, shape: float, buckets: str = "istio") -> LatencyDist:
    return LatencyDist(f"Pareto({scale:g} ms, shape {shape:g})", "pareto", scale, shape, buckets)


# --- generator -------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Per-interval counts of ``rows`` rollouts over ``T`` intervals (arrays ``(T, rows)``)."""

    n_s: FloatArray
    n_c: FloatArray
    x_s: FloatArray | None = None  # errors
    x_c: FloatArray | None = None
    h_s: npt.NDArray[np.int32] | None = None  # bucket counts (T, rows, K), not cumulative
    h_c: npt.NDArray[np.int32] | None = None


def gen_requests(rng: np.random.Generator, rows: int, rps: float, w: FloatArray) -> Traffic:
    t_n = len(w)
    n = rng.poisson(rps * INTERVAL_S, size=(t_n, rows))
    n_c = rng.binomial(n, w[:, None])
    return Traffic(n_s=(n - n_c).astype(float), n_c=n_c.astype(float))


def gen_errors(
    rng: np.random.Generator, tr: Traffic, p_s: float, p_c: float | FloatArray
) -> Traffic:
    """Errors; ``p_c`` may be an array over intervals (slow creep)."""
    pc = np.broadcast_to(np.asarray(p_c, dtype=float), (tr.n_c.shape[0],))[:, None]
    tr.x_s = rng.binomial(tr.n_s.astype(np.int64), p_s).astype(float)
    tr.x_c = rng.binomial(tr.n_c.astype(np.int64), pc).astype(float)
    return tr


def _multinomial(rng: np.random.Generator, n: FloatArray, p: FloatArray) -> npt.NDArray[np.int32]:
    return rng.multinomial(n.astype(np.int64), p).astype(np.int32)


def gen_latency(
    rng: np.random.Generator, tr: Traffic, stable: LatencyDist, canary: LatencyDist
) -> Traffic:
    tr.h_s = _multinomial(rng, tr.n_s, stable.probs())
    tr.h_c = _multinomial(rng, tr.n_c, canary.probs())
    return tr


# --- sequential tests ------------------------------------------------------------------------

NEVER = -1


def _compact(b: RateRatioBatch, keep: npt.NDArray[np.bool_]) -> None:
    """Drop rows that have decided (their later evidence no longer matters)."""
    b.loglik = b.loglik[keep]
    b.events = b.events[keep]
    b.requests = b.requests[keep]
    b.max_log_e = b.max_log_e[keep]
    b.shift = b.shift[keep]


def first_crossing(
    n_s: FloatArray,
    x_s: Sequence[FloatArray],
    n_c: FloatArray,
    x_c: Sequence[FloatArray],
    rho0: float,
    alpha: float,
    alt_scale: float | tuple[float, ...] | None = None,
) -> IntArray:
    """Interval index at which each rollout's judge first fails (``NEVER`` if it does not).

    ``x_s``/``x_c`` hold one event-count array ``(T, rows)`` per tested boundary: one for the
    errors judge, two (p50, p99 exceedances) for the latency judge, whose e-values are averaged
    as ``SequentialLatencyJudge`` does. Evaluated after every interval.
    """
    t_n, rows = n_s.shape
    m = len(x_s)
    grid = Grid.make(rho0) if alt_scale is None else Grid.make(rho0, alt_scale=alt_scale)
    batch = RateRatioBatch(rows * m, rho0, grid)
    out = np.full(rows, NEVER, dtype=np.int64)
    alive = np.arange(rows)
    threshold = math.log(1.0 / alpha)
    for t in range(t_n):
        a = alive
        batch.update(
            np.tile(n_s[t, a], m),
            np.concatenate([x[t, a] for x in x_s]),
            np.tile(n_c[t, a], m),
            np.concatenate([x[t, a] for x in x_c]),
        )
        le = batch.log_e().reshape(m, len(a))
        comb = le[0] if m == 1 else np.logaddexp.reduce(le, axis=0) - math.log(m)
        # the judges keep a running maximum; a crossing is final, so "now >= threshold" at
        # the first crossing is the same event.
        hit = comb >= threshold
        if hit.any():
            out[a[hit]] = t
            keep = ~hit
            _compact(batch, np.tile(keep, m))
            alive = a[keep]
            if alive.size == 0:
                break
    return out


def oracle_crossing(
    n_s: FloatArray,
    x_s: FloatArray,
    n_c: FloatArray,
    x_c: FloatArray,
    rho0: float,
    rho1: float,
    alpha: float,
) -> IntArray:
    """``first_crossing`` of the test that *knows* the effect: one event kind (``(T, rows)``
    arrays) and the likelihood ratio of the true ``rho1`` against ``rho0``, a point prior. It
    is an e-process under ``rho <= rho0`` for the same reason the judges' mixtures are
    (monotone likelihood ratio), and the one whose expected log grows fastest at ``rho1``
    (Kelly): a reference for what knowing the effect buys, not a bound every test obeys on
    every seed, and not a test a judge could run (it would have to know the regression in
    advance)."""
    if not rho1 > rho0 > 0:
        raise ValueError(f"need rho1 > rho0 > 0, got {rho1} and {rho0}")
    log_rho = np.log(np.array([rho0, rho1]))
    llr = np.zeros(n_s.shape[1])
    out = np.full(n_s.shape[1], NEVER, dtype=np.int64)
    threshold = math.log(1.0 / alpha)
    for t in range(n_s.shape[0]):
        inc = loglik_increment(log_rho, n_s[t], x_s[t], n_c[t], x_c[t])
        llr += inc[:, 1] - inc[:, 0]
        out = np.where((out == NEVER) & (llr >= threshold), t, out)
    return out


def exceedances(h: npt.NDArray[np.int32], k: int) -> FloatArray:
    """Requests slower than boundary ``k`` (bucket counts are per bucket, not cumulative)."""
    return h[..., k + 1 :].sum(axis=-1).astype(float)


def errors_crossing(
    tr: Traffic, rho0: float, alpha: float, alt_scale: float | tuple[float, ...] | None = None
) -> IntArray:
    assert tr.x_s is not None and tr.x_c is not None
    return first_crossing(tr.n_s, [tr.x_s], tr.n_c, [tr.x_c], rho0, alpha, alt_scale)


def latency_crossing(
    tr: Traffic,
    ks: Sequence[int],
    rho0: float,
    alpha: float,
    alt_scale: float | tuple[float, ...] | None = None,
    body_rows: Sequence[int] | None = (0,),
    centre: float | None = None,
) -> IntArray:
    """Interval of each rollout's first latency rollback, as ``SequentialLatencyJudge`` reads
    the traffic: the rate-ratio e-values of boundaries ``ks`` and the score test of those in
    ``body_rows`` (rows of ``ks``; the first, stable's p50, for the judge's default quantiles
    0.5 and 0.99), combined by ``latency_log_e``. ``centre``: the score test's centre (None:
    stable's share slower than the body boundaries over the whole study, which is the known
    distribution's up to sampling noise). ``body_rows=None``: the rate-ratio e-values alone,
    averaged (``first_crossing``), the judge before the score test."""
    assert tr.h_s is not None and tr.h_c is not None
    xs = [exceedances(tr.h_s, k) for k in ks]
    xc = [exceedances(tr.h_c, k) for k in ks]
    scale = LATENCY_ALT_SCALE if alt_scale is None else alt_scale  # as SequentialLatencyJudge
    if not body_rows:
        return first_crossing(tr.n_s, xs, tr.n_c, xc, rho0, alpha, scale)
    body = list(body_rows)
    if centre is None:
        total = float(tr.n_s.sum())
        centre = float(np.mean([xs[r].sum() / total for r in body]))
    t_n, rows = tr.n_s.shape
    m = len(ks)
    batch = RateRatioBatch(rows * m, rho0, Grid.make(rho0, alt_scale=scale))
    score = ScoreBatch(rows, step_scores(tr.h_s.shape[-1], [ks[r] for r in body]), centre)
    out = np.full(rows, NEVER, dtype=np.int64)
    threshold = math.log(1.0 / alpha)
    for t in range(t_n):
        batch.update(
            np.tile(tr.n_s[t], m),
            np.concatenate([x[t] for x in xs]),
            np.tile(tr.n_c[t], m),
            np.concatenate([x[t] for x in xc]),
        )
        hc = tr.h_c[t].astype(float)
        score.update(tr.n_s[t], tr.n_c[t], hc, hc + tr.h_s[t], rho0)
        comb = latency_log_e(batch.log_e().reshape(m, rows), score.log_e(), body)
        out = np.where((out == NEVER) & (comb >= threshold), t, out)
    return out


def canary_at(tr: Traffic, when: IntArray) -> FloatArray:
    """Cumulative canary requests at the end of interval ``when`` (NaN where never)."""
    cum = np.cumsum(tr.n_c, axis=0)
    out = np.full(when.shape, np.nan)
    ok = when >= 0
    out[ok] = cum[when[ok], np.nonzero(ok)[0]]
    return out


# --- classic tests ---------------------------------------------------------------------------


def z_two_proportion(
    n_s: FloatArray, x_s: FloatArray, n_c: FloatArray, x_c: FloatArray
) -> FloatArray:
    """Pooled two-proportion z statistic (canary minus stable); 0 where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (x_s + x_c) / (n_s + n_c)
        se = np.sqrt(p * (1 - p) * (1 / n_s + 1 / n_c))
        z = (x_c / n_c - x_s / n_s) / se
    return np.where(np.isfinite(z), z, 0.0)


def first_true(flags: npt.NDArray[np.bool_]) -> IntArray:
    """First index along axis 0 that is True (``NEVER`` if none); flags ``(T, rows)``."""
    any_ = flags.any(axis=0)
    return np.where(any_, np.argmax(flags, axis=0), NEVER)


def cumulative_z_crossing(tr: Traffic, crit: float, two_sided: bool = True) -> IntArray:
    assert tr.x_s is not None and tr.x_c is not None
    z = z_two_proportion(
        np.cumsum(tr.n_s, 0), np.cumsum(tr.x_s, 0), np.cumsum(tr.n_c, 0), np.cumsum(tr.x_c, 0)
    )
    return first_true(np.abs(z) >= crit if two_sided else z >= crit)


def mann_whitney_crossing(
    v_s: FloatArray, v_c: FloatArray, alpha: float = 0.05, start: int = 2
) -> IntArray:
    """scipy Mann-Whitney (two-sided) on the per-interval values seen so far, every interval."""
    t_n, rows = v_s.shape
    flags = np.zeros((t_n, rows), dtype=bool)
    for t in range(start - 1, t_n):
        p = stats.mannwhitneyu(v_c[: t + 1], v_s[: t + 1], axis=0).pvalue
        flags[t] = p < alpha
    return first_true(flags)


def rates(x: FloatArray, n: FloatArray) -> FloatArray:
    """Per-interval rate, 0 where an interval had no requests."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, x / np.maximum(n, 1), 0.0)


# --- summaries -------------------------------------------------------------------------------


def cp_upper(k: int, n: int, level: float = 0.95) -> float:
    """One-sided upper Clopper-Pearson bound on a binomial proportion."""
    return 1.0 if k >= n else float(stats.beta.ppf(level, k + 1, n - k))


def cp_lower(k: int, n: int, level: float = 0.95) -> float:
    return 0.0 if k <= 0 else float(stats.beta.ppf(1 - level, k, n - k + 1))


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def parse_quick(description: str) -> bool:
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="reduced size (a smoke run)")
    return bool(ap.parse_args().quick)


def map_cells(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]`` in one worker process per core this process may use, in
    order. ``fn`` must be a module-level function and each item seeded on its own, so a study
    comes out the same on any number of cores."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        return list(pool.map(fn, items))


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    import time

    t0 = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t0


def histogram_quantile_v(q: float, bounds: Sequence[float], h: npt.NDArray[np.int32]) -> FloatArray:
    """Vectorized ``canaryd.stats.histogram.histogram_quantile`` over per-bucket counts ``h``
    (last axis = buckets, last bucket +Inf); NaN where a histogram is empty."""
    b = np.asarray(bounds, dtype=float)
    cum = np.cumsum(h, axis=-1).astype(float)
    total = cum[..., -1]
    rank = q * total
    idx = np.minimum((cum < rank[..., None]).sum(axis=-1), len(b) - 1)
    upper = b[idx]
    lower = np.where(idx == 0, 0.0, b[np.maximum(idx - 1, 0)])
    below = np.where(
        idx == 0, 0.0, np.take_along_axis(cum, np.maximum(idx - 1, 0)[..., None], -1)[..., 0]
    )
    count = np.take_along_axis(cum, idx[..., None], -1)[..., 0] - below
    with np.errstate(divide="ignore", invalid="ignore"):
        val = lower + (upper - lower) * (rank - below) / count
    val = np.where(count <= 0, upper, val)
    val = np.where(np.isinf(upper), b[-2], val)
    return np.where(total > 0, val, np.nan)
