"""The simulator's ML signals: vLLM's histograms and finish reasons, class counts, delayed labels.

``MlSignals`` runs beside the engine's requests/errors/latency generator, on its own random
stream, for every run at once. Each tick it takes the requests and errors the engine drew for
each version and draws, per version:

- with ``llm`` (vLLM): time to first token, time per output token (one per request), answer and
  prompt tokens, each Multinomial over vLLM's default buckets (exact probabilities) (``canaryd.simulation.vllm``); the
  finish reasons (``error`` = the engine's errors, then ``abort``, ``length`` for answers cut at
  ``maxTokens``, else ``stop``); and the end-to-end latency's bucket probabilities, derived per
  request as ``ttft + (answer tokens - 1) x time per token`` from a fixed sample of 20,000
  requests (common random numbers: equal models give equal distributions);
- with ``categories``: counts per category, Multinomial over the version's shares;
- with ``accuracy``: predictions that will be labelled (``labels.share``) join a pool, each
  labelled after an exponential delay (``labels.delay``, geometric per tick), right with the
  version's accuracy at prediction time.

The interval's counts become ``VersionCounts.histograms`` / ``categories`` / ``labels``, keyed by
what the policy's metrics read, exactly as the vllm preset and the metric templates fill them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from canaryd.errors import Problem, ScenarioError
from canaryd.metrics.presets import VLLM_SERIES
from canaryd.observation import Histogram, LabelCounts, Signal
from canaryd.policy.model import LLM_KINDS, CanaryPolicy
from canaryd.simulation.scenario import Latency, Llm, Scenario, Tokens
from canaryd.simulation.vllm import LLM_LATENCY_BOUNDS_MS, request_token_buckets

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

E2E_SAMPLE = 20_000
"""Requests in the fixed sample that derives the end-to-end latency distribution."""
DEFAULT_MAX_MODEL_LEN = 8192
FINISH = ("stop", "length", "abort", "error")


def token_cdf(t: Tokens, bounds: Sequence[float], cap: int | None) -> FloatArray:
    """P(tokens <= b) for tokens = ceil(lognormal), at least 1, cut at ``cap``."""
    ln = t.lognormal
    b = np.asarray(bounds, dtype=float)
    cdf = np.asarray(stats.lognorm(s=ln.sigma, scale=ln.median).cdf(b))
    if cap is not None:
        cdf = np.where(b >= cap, 1.0, cdf)
    return cdf


def bucket_probs(cdf: FloatArray) -> FloatArray:
    """Bucket probabilities (the last bucket is +Inf) from the CDF at the finite bounds."""
    c = np.maximum.accumulate(np.clip(cdf, 0.0, 1.0))
    p = np.clip(np.diff(np.concatenate([[0.0], c, [1.0]])), 0.0, None)
    return np.asarray(p / p.sum())


@dataclass(frozen=True)
class _LlmShape:
    """One LLM configuration, with what the simulator draws from it."""

    llm: Llm
    e2e_samples: FloatArray  # sorted
    out: FloatArray
    prompt: FloatArray
    p_length: float
    p_abort: float


class MlSignals:
    """Per-run ML counts for one simulation (see the module docstring)."""

    def __init__(
        self,
        sc: Scenario,
        base: Path,
        runs: int,
        seed: int,
        tick_s: float,
        finish_metrics: tuple[str, ...],
        categorical: tuple[str, ...],
        quality: tuple[str, ...],
    ) -> None:
        self.sc = sc
        self.base = base
        self.runs = runs
        self.rng = np.random.default_rng([seed, 2])
        self.tick_s = tick_s
        self.finish_metrics = finish_metrics
        self.categorical = categorical
        self.quality = quality
        self.llm = sc.stable.llm is not None
        stable_llm = sc.stable.llm
        mml = (stable_llm.max_model_len if stable_llm else None) or DEFAULT_MAX_MODEL_LEN
        self.bounds: dict[Signal, tuple[float, ...]] = {
            "ttft": LLM_LATENCY_BOUNDS_MS["ttft"],
            "inter_token": LLM_LATENCY_BOUNDS_MS["inter-token"],
            "generation_tokens": (*request_token_buckets(mml), math.inf),
            "prompt_tokens": (*request_token_buckets(mml), math.inf),
        }
        self._max_model_len = mml
        crn = np.random.default_rng(20261125)
        self._u = crn.random((3, E2E_SAMPLE)) * (1 - 2e-9) + 1e-9
        self._shapes: dict[str, _LlmShape] = {}
        self._lat_cache: dict[tuple[str, str, float], FloatArray] = {}
        self._cat_order = {
            name: sorted(
                set((sc.stable.categories or {}).get(name, {}))
                | set((sc.canary.categories or {}).get(name, {}))
                | {c for ch in sc.canary.changes for c in (ch.categories or {}).get(name, {})}
            )
            for name in categorical
        }
        self.pending = np.zeros((runs, 2), dtype=np.int64)
        self.pending_ok = np.zeros((runs, 2), dtype=np.int64)
        self.reset()

    # --- construction --------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        sc: Scenario,
        policy: CanaryPolicy,
        base: Path,
        runs: int,
        seed: int,
        tick_s: float,
    ) -> MlSignals | None:
        """The ML signals a scenario and policy need, or None; ScenarioError naming what the
        scenario lacks for one of the policy's metrics."""
        metrics = policy.spec.analysis.metrics
        problems: list[Problem] = []

        def need(path: str, message: str) -> None:
            problems.append(sc.problem(path, message))

        for m in metrics:
            if m.kind in LLM_KINDS and sc.stable.llm is None:
                need("stable.llm", f"the policy's metric {m.name!r} (kind {m.kind}) reads vLLM's "
                     "histograms: the scenario needs stable.llm")  # fmt: skip
            if m.kind == "categorical" and m.name not in (sc.stable.categories or {}):
                need(f"stable.categories.{m.name}", f"the policy's categorical metric {m.name!r} "
                     "needs the stable version's shares")  # fmt: skip
            if m.kind == "quality" and sc.stable.accuracy is None:
                need("stable.accuracy", f"the policy's quality metric {m.name!r} needs "
                     "stable.accuracy")  # fmt: skip
        if problems:
            raise ScenarioError(problems)
        finish = tuple(m.name for m in metrics if m.kind == "finish-reason")
        categorical = tuple(m.name for m in metrics if m.kind == "categorical")
        quality = tuple(m.name for m in metrics if m.kind == "quality")
        if sc.stable.llm is None and not categorical and not quality:
            return None
        return cls(sc, base, runs, seed, tick_s, finish, categorical, quality)

    # --- the truth at time t ---------------------------------------------------------------
    def _llm_at(self, t: float) -> tuple[Llm, Llm]:
        stable = self.sc.stable.llm
        assert stable is not None
        canary = stable.merged(self.sc.canary.llm)
        for ch in self.sc.canary.changes:
            if t >= ch.at:
                canary = canary.merged(ch.llm)
        return stable, canary

    def _shares_at(self, name: str, t: float) -> tuple[FloatArray, FloatArray]:
        order = self._cat_order[name]
        stable = (self.sc.stable.categories or {})[name]
        canary = (self.sc.canary.categories or {}).get(name, stable)
        for ch in self.sc.canary.changes:
            if t >= ch.at and ch.categories and name in ch.categories:
                canary = ch.categories[name]
        vec = [np.array([shares.get(c, 0.0) for c in order]) for shares in (stable, canary)]
        return vec[0], vec[1]

    def _accuracy_at(self, t: float) -> tuple[float, float]:
        s = self.sc.stable.accuracy
        assert s is not None
        c = self.sc.canary.accuracy if self.sc.canary.accuracy is not None else s
        for ch in self.sc.canary.changes:
            if t >= ch.at and ch.accuracy is not None:
                c = ch.accuracy
        return s, c

    def _shape(self, llm: Llm) -> _LlmShape:
        key = llm.model_dump_json()
        if key in self._shapes:
            return self._shapes[key]
        assert llm.ttft is not None and llm.time_per_token is not None
        assert llm.output_tokens is not None and llm.prompt_tokens is not None
        assert llm.max_tokens is not None
        ttft = llm.ttft.ppf(self._u[0], self.base)
        tpot = llm.time_per_token.ppf(self._u[1], self.base)
        ln = llm.output_tokens.lognormal
        raw = np.ceil(stats.lognorm(s=ln.sigma, scale=ln.median).ppf(self._u[2]))
        answer = np.clip(raw, 1, llm.max_tokens)
        e2e = np.sort(ttft + (answer - 1.0) * tpot)
        gen_b = self.bounds["generation_tokens"][:-1]
        shape = _LlmShape(
            llm=llm,
            e2e_samples=e2e,
            out=bucket_probs(token_cdf(llm.output_tokens, gen_b, llm.max_tokens)),
            prompt=bucket_probs(token_cdf(llm.prompt_tokens, gen_b, self._max_model_len)),
            p_length=float(1.0 - token_cdf(llm.output_tokens, [llm.max_tokens - 1], None)[0]),
            p_abort=float(llm.abort_rate or 0.0),
        )
        self._shapes[key] = shape
        return shape

    @staticmethod
    def _cdf_probs(samples: FloatArray, bounds: Sequence[float], factor: float) -> FloatArray:
        finite = np.asarray(bounds[:-1], dtype=float)
        cdf = np.searchsorted(samples * factor, finite, side="right") / samples.size
        return bucket_probs(cdf)

    def _latency(self, lat: Latency, signal: Signal, factor: float) -> FloatArray:
        """Bucket probabilities of a latency model over a signal's bounds (cached)."""
        key = (lat.model_dump_json(), signal, factor)
        got = self._lat_cache.get(key)
        if got is None:
            finite = np.asarray(self.bounds[signal][:-1]) / factor
            got = bucket_probs(lat.cdf(finite, self.base))
            self._lat_cache[key] = got
        return got

    def latency_probs(
        self, t: float, factor: float, bounds: Sequence[float]
    ) -> tuple[FloatArray, FloatArray]:
        """The end-to-end latency's bucket probabilities of (stable, canary) at ``t``."""
        s, c = (self._shape(x) for x in self._llm_at(t))
        return (
            self._cdf_probs(s.e2e_samples, bounds, factor),
            self._cdf_probs(c.e2e_samples, bounds, factor),
        )

    # --- per tick ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new interval (the label pools carry over)."""
        self.hist: dict[Signal, IntArray] = {
            sig: np.zeros((self.runs, 2, len(b)), dtype=np.int64) for sig, b in self.bounds.items()
        } if self.llm else {}  # fmt: skip
        self.finish = np.zeros((self.runs, 2, len(FINISH)), dtype=np.int64)
        self.cats = {
            name: np.zeros((self.runs, 2, len(order)), dtype=np.int64)
            for name, order in self._cat_order.items()
        }
        self.labelled = np.zeros((self.runs, 2), dtype=np.int64)
        self.correct = np.zeros((self.runs, 2), dtype=np.int64)

    def tick(
        self, t: float, factor: float, n: Sequence[IntArray], errors: Sequence[IntArray]
    ) -> None:
        """Draw one tick for every run; ``n``/``errors`` are (stable, canary) arrays (runs,)."""
        rng = self.rng
        if self.llm:
            shapes = [self._shape(x) for x in self._llm_at(t)]
            for v, shape in enumerate(shapes):
                nv = np.asarray(n[v], dtype=np.int64)
                assert shape.llm.ttft is not None and shape.llm.time_per_token is not None
                draws: dict[Signal, FloatArray] = {
                    "ttft": self._latency(shape.llm.ttft, "ttft", factor),
                    "inter_token": self._latency(shape.llm.time_per_token, "inter_token", factor),
                    "generation_tokens": shape.out,
                    "prompt_tokens": shape.prompt,
                }
                for sig, p in draws.items():
                    self.hist[sig][:, v] += rng.multinomial(nv, p)
                ok = nv - np.asarray(errors[v], dtype=np.int64)
                a, pl = shape.p_abort, shape.p_length
                self.finish[:, v, :3] += rng.multinomial(ok, [(1 - a) * (1 - pl), (1 - a) * pl, a])
                self.finish[:, v, 3] += np.asarray(errors[v], dtype=np.int64)
        for name in self.categorical:
            shares = self._shares_at(name, t)
            for v in (0, 1):
                self.cats[name][:, v] += rng.multinomial(
                    np.asarray(n[v], dtype=np.int64), shares[v]
                )
        if self.quality:
            acc = self._accuracy_at(t)
            share = self.sc.labels.share
            delay = self.sc.labels.delay
            q = 1.0 if delay <= 0 else 1.0 - math.exp(-self.tick_s / delay)
            for v in (0, 1):
                will = rng.binomial(np.asarray(n[v], dtype=np.int64), share)
                self.pending[:, v] += will
                self.pending_ok[:, v] += rng.binomial(will, acc[v])
                now = rng.binomial(self.pending[:, v], q)
                ok = rng.hypergeometric(
                    self.pending_ok[:, v], self.pending[:, v] - self.pending_ok[:, v], now
                )
                self.pending[:, v] -= now
                self.pending_ok[:, v] -= ok
                self.labelled[:, v] += now
                self.correct[:, v] += ok

    def fields(self, r: int, v: int) -> dict[str, Any]:
        """Run ``r``'s interval counts of version ``v`` as ``VersionCounts`` keyword arguments."""
        out: dict[str, Any] = {}
        if self.llm:
            out["histograms"] = {
                sig: Histogram(
                    self.bounds[sig],
                    tuple(float(x) for x in np.cumsum(counts[r, v])),
                    series=VLLM_SERIES[sig][0],
                )
                for sig, counts in self.hist.items()
            }
        cats: dict[str, dict[str, float]] = {}
        if self.llm:
            finish = {c: float(x) for c, x in zip(FINISH, self.finish[r, v], strict=True) if x}
            cats.update({name: dict(finish) for name in self.finish_metrics})
        for name, order in self._cat_order.items():
            cats[name] = {
                c: float(x) for c, x in zip(order, self.cats[name][r, v], strict=True) if x
            }
        if cats:
            out["categories"] = cats
        if self.quality:
            lc = LabelCounts(float(self.correct[r, v]), float(self.labelled[r, v]))
            out["labels"] = dict.fromkeys(self.quality, lc)
        return out
