"""Replicas in the simulator: each version on its own pods, which differ (``Scenario.pods``).

Per run, every pod draws its effects once, from ``[seed, 2]`` (its own stream, so scenarios
without ``pods`` keep their random streams and results exactly): an error-rate multiplier,
log-uniform within ``x1/errorRateSpread .. x errorRateSpread``, and a latency scale factor,
lognormal with mean 1 and coefficient of variation ``latencyCv``. Stable pods and canary pods are
drawn apart. Per tick, a version's requests are split evenly (multinomially) across its pods;
each pod's errors are binomial at the version's rate times its multiplier (capped at 1), and its
latency buckets multinomial from the version's distribution scaled by its factor (and by any
incident's factor).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from canaryd.observation import PodCounts
from canaryd.simulation.scenario import Latency, Pods

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

VERSIONS = ("stable", "canary")


class PodDraws:
    """The pods of every run: their effects, and their per-tick draws (vectorised over runs)."""

    def __init__(self, spec: Pods, runs: int, seed: int, bounds: tuple[float, ...]) -> None:
        rng = np.random.default_rng([seed, 2])
        self.counts = (spec.stable, spec.canary)
        spread = math.log(spec.error_rate_spread)
        sigma = math.sqrt(math.log1p(spec.latency_cv**2))
        self.error_multiplier: list[FloatArray] = []
        self.latency_scale: list[FloatArray] = []
        for k in self.counts:
            self.error_multiplier.append(np.exp(rng.uniform(-spread, spread, (runs, k))))
            z = rng.standard_normal((runs, k))
            self.latency_scale.append(np.exp(sigma * z - 0.5 * sigma**2))
        self.names = tuple(
            tuple(f"{v}-pod-{i}" for i in range(k))
            for v, k in zip(VERSIONS, self.counts, strict=True)
        )
        self._finite = np.asarray(bounds[:-1], dtype=np.float64)
        self._probs: dict[tuple[int, int, float], FloatArray] = {}

    def split(self, rng: np.random.Generator, n: IntArray, version: int) -> IntArray:
        """Per run, the version's requests across its pods: shape ``(runs, pods)``."""
        k = self.counts[version]
        return np.asarray(rng.multinomial(n, np.full(k, 1.0 / k)), dtype=np.int64)

    def errors(
        self, rng: np.random.Generator, n_pods: IntArray, rate: float, version: int
    ) -> IntArray:
        p = np.clip(rate * self.error_multiplier[version], 0.0, 1.0)
        return np.asarray(rng.binomial(n_pods, p), dtype=np.int64)

    def buckets(
        self,
        rng: np.random.Generator,
        n_pods: IntArray,
        version: int,
        key: int,
        latency: Latency,
        factor: float,
        base: Path,
    ) -> IntArray:
        """Per-bucket counts ``(runs, pods, buckets)``; ``key`` names ``latency`` in the cache."""
        cache_key = (version, key, factor)
        probs = self._probs.get(cache_key)
        if probs is None:
            scale = factor * self.latency_scale[version][..., None]
            cdf = np.clip(latency.cdf(self._finite[None, None, :] / scale, base), 0.0, 1.0)
            cdf = np.maximum.accumulate(cdf, axis=-1)
            ones = np.ones((*cdf.shape[:-1], 1))
            probs = np.clip(np.diff(np.concatenate([0 * ones, cdf, ones], axis=-1)), 0.0, None)
            probs = probs / probs.sum(axis=-1, keepdims=True)
            self._probs[cache_key] = probs
        return np.asarray(rng.multinomial(n_pods, probs), dtype=np.int64)

    def counts_of(
        self, version: int, requests: FloatArray, errors: FloatArray, hist: FloatArray
    ) -> tuple[PodCounts, ...]:
        """One run's pods over one interval; ``hist`` per bucket (made cumulative here)."""
        cum = np.cumsum(hist, axis=-1)
        return tuple(
            PodCounts(name, float(requests[i]), float(errors[i]), tuple(cum[i].tolist()))
            for i, name in enumerate(self.names[version])
        )
