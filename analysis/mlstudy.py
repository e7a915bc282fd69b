"""Shared pieces of the ML studies: vectorized generators and the ML judges' decisions.

Generators (thousands of rollouts at once, one analysis interval at a time, on top of
``studylib.gen_requests``: Poisson requests per interval, Binomial canary share):

- LLM histograms: Multinomial over vLLM's default buckets (``canaryd.simulation.vllm``) of a
  lognormal time to first token / time per output token, or of answer tokens (``ceil`` of a
  lognormal, cut at ``max_tokens``), with the simulator's own ``token_cdf``;
- **per-token** inter-token latency, as ``vllm:inter_token_latency_seconds`` counts it: each
  request draws its time per token and its answer length, and all its tokens fall in its bucket
  (the tokens of one request share its speed: the worst case of clustering);
- class counts: Multinomial over each version's shares;
- delayed labels: each prediction is labelled with probability ``share``, after an exponential
  delay (labelled per interval with probability ``1 - exp(-60 s / delay)``), right with the
  version's accuracy.

Decisions are read exactly as the judges read them: the histogram kinds through
``studylib.latency_crossing`` (``RateRatioBatch`` with the latency prior, e-values of the tested
boundaries averaged: ``SequentialLatencyJudge``, which ``SignalJudge`` runs); categories through
``canaryd.stats.categorical.CategoryShares`` (the judge's own engine); quality through
``studylib.errors_crossing`` on (labelled, wrong) predictions (``SequentialQualityJudge``'s
engine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import studylib as c
from scipy import stats

from canaryd.simulation.scenario import TokenLogNormal, Tokens
from canaryd.simulation.signals import bucket_probs, token_cdf
from canaryd.simulation.vllm import (
    INTER_TOKEN_LATENCY_MS,
    TIME_TO_FIRST_TOKEN_MS,
    request_token_buckets,
)
from canaryd.stats.categorical import CategoryShares
from canaryd.stats.histogram import nearest_boundary

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
NEVER = c.NEVER

TOKEN_BOUNDS = request_token_buckets(8192)


@dataclass(frozen=True)
class Signal:
    """One LLM histogram: a distribution over a bucket layout (finite bounds, ms or tokens)."""

    name: str
    bounds: tuple[float, ...]
    probs: FloatArray  # per bucket, the last one +Inf

    @property
    def cdf(self) -> FloatArray:
        return np.cumsum(self.probs)

    def boundaries(self, quantiles: Sequence[float]) -> list[int]:
        """The boundaries nearest each quantile of the known distribution (the limit of the
        judge's choice from stable's first requests)."""
        out: list[int] = []
        for q in quantiles:
            k = nearest_boundary((*self.bounds, math.inf), self.cdf, q)
            assert k is not None
            if k not in out:
                out.append(k)
        return out

    def share_above(self, k: int) -> float:
        return float(1.0 - self.cdf[k])


def latency_signal(name: str, bounds: tuple[float, ...], median_ms: float, sigma: float) -> Signal:
    cdf = stats.lognorm(s=sigma, scale=median_ms).cdf(np.asarray(bounds))
    return Signal(name, bounds, bucket_probs(np.asarray(cdf)))


def ttft(median_ms: float, sigma: float = 0.5) -> Signal:
    return latency_signal(f"TTFT lognormal({median_ms:g} ms, σ {sigma:g})", TIME_TO_FIRST_TOKEN_MS, median_ms, sigma)  # fmt: skip


def tpot(median_ms: float, sigma: float = 0.25) -> Signal:
    return latency_signal(f"time per token lognormal({median_ms:g} ms, σ {sigma:g})", INTER_TOKEN_LATENCY_MS, median_ms, sigma)  # fmt: skip


def answer_tokens(median: float, sigma: float = 0.7, max_tokens: int = 1024) -> Signal:
    t = Tokens(lognormal=TokenLogNormal(median=median, sigma=sigma))
    cdf = token_cdf(t, TOKEN_BOUNDS, max_tokens)
    return Signal(f"answers ceil(lognormal({median:g}, σ {sigma:g})) cut at {max_tokens}", TOKEN_BOUNDS, bucket_probs(cdf))  # fmt: skip


def p_cut(median: float, sigma: float = 0.7, max_tokens: int = 1024) -> float:
    """Share of answers cut at ``max_tokens`` (finish reason ``length``)."""
    t = Tokens(lognormal=TokenLogNormal(median=median, sigma=sigma))
    return float(1.0 - token_cdf(t, [max_tokens - 1], None)[0])


# --- generators ------------------------------------------------------------------------------


def hist_traffic(
    rng: np.random.Generator, rows: int, rps: float, w: FloatArray, s: Signal, cn: Signal
) -> c.Traffic:
    tr = c.gen_requests(rng, rows, rps, w)
    tr.h_s = rng.multinomial(tr.n_s.astype(np.int64), s.probs).astype(np.int32)
    tr.h_c = rng.multinomial(tr.n_c.astype(np.int64), cn.probs).astype(np.int32)
    return tr


def per_token_traffic(
    rng: np.random.Generator,
    rows: int,
    rps: float,
    w: FloatArray,
    speed: Signal,
    tokens_median: float = 220.0,
    tokens_sigma: float = 0.7,
    max_tokens: int = 1024,
) -> c.Traffic:
    """Per-token counts: every token of a request in that request's time-per-token bucket.

    ``n_s``/``n_c`` are then *tokens* (answer tokens - 1 per request), as the per-token
    histogram's ``_count`` is.
    """
    tr = c.gen_requests(rng, rows, rps, w)
    k = len(speed.probs)
    t_n = tr.n_s.shape[0]
    h = [np.zeros((t_n, rows, k), dtype=np.int64), np.zeros((t_n, rows, k), dtype=np.int64)]
    for t in range(t_n):
        for v, n in enumerate((tr.n_s[t], tr.n_c[t])):
            n = n.astype(np.int64)
            total = int(n.sum())
            if total == 0:
                continue
            row = np.repeat(np.arange(rows), n)
            bucket = rng.choice(k, size=total, p=speed.probs)
            m = np.clip(
                np.ceil(rng.lognormal(math.log(tokens_median), tokens_sigma, total)), 1, max_tokens
            )
            h[v][t] = np.bincount(row * k + bucket, weights=m - 1, minlength=rows * k).reshape(rows, k).astype(np.int64)  # fmt: skip
    tr.h_s = h[0].astype(np.int32)
    tr.h_c = h[1].astype(np.int32)
    tr.n_s = h[0].sum(axis=2).astype(float)
    tr.n_c = h[1].sum(axis=2).astype(float)
    return tr


def class_counts(
    rng: np.random.Generator, tr: c.Traffic, q_s: Sequence[float], q_c: Sequence[float]
) -> tuple[IntArray, IntArray]:
    """Counts per category, (T, rows, k), for each version."""
    cs = rng.multinomial(tr.n_s.astype(np.int64), np.asarray(q_s) / np.sum(q_s))
    cc = rng.multinomial(tr.n_c.astype(np.int64), np.asarray(q_c) / np.sum(q_c))
    return cs.astype(np.int64), cc.astype(np.int64)


def labelled_traffic(
    rng: np.random.Generator,
    tr: c.Traffic,
    acc_s: float,
    acc_c: float,
    delay_s: float,
    share: float,
) -> c.Traffic:
    """(labelled, wrong) per interval and version, from delayed labels of the predictions."""
    t_n, rows = tr.n_s.shape
    q = 1.0 if delay_s <= 0 else 1.0 - math.exp(-c.INTERVAL_S / delay_s)
    out_n = [np.zeros((t_n, rows)), np.zeros((t_n, rows))]
    out_x = [np.zeros((t_n, rows)), np.zeros((t_n, rows))]
    for v, (n, acc) in enumerate(((tr.n_s, acc_s), (tr.n_c, acc_c))):
        pool = np.zeros(rows, dtype=np.int64)
        pool_ok = np.zeros(rows, dtype=np.int64)
        for t in range(t_n):
            will = rng.binomial(n[t].astype(np.int64), share)
            pool += will
            pool_ok += rng.binomial(will, acc)
            now = rng.binomial(pool, q)
            ok = rng.hypergeometric(pool_ok, pool - pool_ok, now)
            pool -= now
            pool_ok -= ok
            out_n[v][t] = now
            out_x[v][t] = now - ok
    return c.Traffic(n_s=out_n[0], n_c=out_n[1], x_s=out_x[0], x_c=out_x[1])


def expected_labelled(n_c: Sequence[float], delay_s: float, share: float) -> FloatArray:
    """Expected labelled predictions per interval for expected predictions ``n_c``."""
    q = 1.0 if delay_s <= 0 else 1.0 - math.exp(-c.INTERVAL_S / delay_s)
    pool = 0.0
    out = []
    for n in n_c:
        pool += share * n
        out.append(pool * q)
        pool -= pool * q
    return np.asarray(out)


# --- decisions -------------------------------------------------------------------------------


def categorical_crossing(cs: IntArray, cc: IntArray, tolerance: float, alpha: float) -> IntArray:
    """Interval at which ``SequentialCategoricalJudge`` first fails (``NEVER`` if it does not)."""
    t_n, rows, k = cs.shape
    engine = CategoryShares(rows, k, tolerance)
    out = np.full(rows, NEVER, dtype=np.int64)
    alive = np.arange(rows)
    threshold = math.log(1.0 / alpha)
    for t in range(t_n):
        engine.update(cs[t, alive], cc[t, alive])
        hit = engine.max_log_e >= threshold
        if hit.any():
            out[alive[hit]] = t
            engine.drop(~hit)
            alive = alive[~hit]
            if alive.size == 0:
                break
    return out


def cumulative_at(n: FloatArray, when: IntArray) -> FloatArray:
    """Cumulative ``n`` (T, rows) at the end of interval ``when`` (NaN where never)."""
    cum = np.cumsum(n, axis=0)
    out = np.full(when.shape, np.nan)
    ok = when >= 0
    out[ok] = cum[when[ok], np.nonzero(ok)[0]]
    return out


def schedule_weights(steps: Sequence[tuple[float, int]], horizon: int) -> FloatArray:
    """Canary share per one-minute interval: ``(share, minutes)`` steps, the last one held."""
    w: list[float] = []
    for share, minutes in steps:
        w.extend([share] * minutes)
    w.extend([steps[-1][0]] * max(0, horizon - len(w)))
    return np.asarray(w[:horizon])
