"""Information-theoretic floors: the fewest canary requests any level-alpha test needs.

A level-alpha sequential test cannot, on average, reject a true shift before the expected
cumulative information (the KL divergence summed over observations) reaches ``log(1/alpha)``
(Wald; Lai). Two floors are given:

- **one-sample**: the stable distribution is known exactly; only canary requests carry
  information. Bernoulli KL for error rates, KL of the *bucketed* distributions for latency
  (buckets are all the information Prometheus keeps).
- **two-sample, along the traffic schedule**: stable is estimated too. Conditioned on each
  interval's total events, the canary's share is Binomial with ``theta_i(rho)``; the information
  per interval is ``E[events_i] * KL(Bern(theta_i(rho1)) || Bern(theta_i(rho0)))``. This is the
  fair yardstick for canaryd's conditional test; the studies report delays as multiples of it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np


def kl_bernoulli(p: float, q: float) -> float:
    """KL(Bern(p) || Bern(q)) in nats."""
    if not (0.0 <= p <= 1.0 and 0.0 < q < 1.0):
        raise ValueError(f"need 0 <= p <= 1 and 0 < q < 1, got p={p}, q={q}")
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


def kl_categorical(p: Sequence[float], q: Sequence[float]) -> float:
    """KL(p || q) for two bucket distributions (each summing to 1)."""
    pa = np.asarray(p, dtype=float)
    qa = np.asarray(q, dtype=float)
    if pa.shape != qa.shape:
        raise ValueError("bucket distributions differ in length")
    mask = pa > 0
    if np.any(qa[mask] <= 0):
        return math.inf
    return float(np.sum(pa[mask] * np.log(pa[mask] / qa[mask])))


def one_sample_floor_errors(p_stable: float, ratio: float, alpha: float) -> float:
    """Canary requests needed when the stable error rate is known: log(1/alpha) / KL."""
    p_c = p_stable * ratio
    if not 0 < p_c < 1:
        raise ValueError(f"canary error rate {p_c} is outside (0, 1)")
    return math.log(1.0 / alpha) / kl_bernoulli(p_c, p_stable)


def one_sample_floor_buckets(
    p_stable: Sequence[float], p_canary: Sequence[float], alpha: float
) -> float:
    """Canary requests needed when stable's bucketed latency distribution is known."""
    kl = kl_categorical(p_canary, p_stable)
    return math.inf if kl == 0 else math.log(1.0 / alpha) / kl


def bucket_probabilities(bounds_ms: Sequence[float], cdf_ms: Sequence[float]) -> list[float]:
    """Per-bucket probabilities from CDF values at each boundary (last bound +Inf)."""
    cdf = [float(c) for c in cdf_ms]
    cdf[-1] = 1.0
    probs = [cdf[0]] + [b - a for a, b in itertools.pairwise(cdf)]
    if len(probs) != len(bounds_ms):
        raise ValueError("one CDF value per boundary expected")
    return probs


def _theta(n_s: float, n_c: float, rho: float) -> float:
    return n_c * rho / (n_c * rho + n_s)


def interval_information(
    n_s: float, n_c: float, p_stable: float, rho1: float, rho0: float
) -> float:
    """Expected conditional information (nats) one interval carries against ``rho0``."""
    if n_s <= 0 or n_c <= 0:
        return 0.0
    events = n_s * p_stable + n_c * p_stable * rho1
    return events * kl_bernoulli(_theta(n_s, n_c, rho1), _theta(n_s, n_c, rho0))


def two_sample_floor(
    schedule: Sequence[tuple[float, float]],
    p_stable: float,
    rho1: float,
    alpha: float,
    rho0: float = 1.0,
) -> float:
    """Canary requests at which the expected information first reaches ``log(1/alpha)``.

    ``schedule`` lists the expected (stable, canary) requests of each interval of the real
    split schedule. Within the crossing interval the canary requests are interpolated. The
    last interval repeats if the schedule ends first (the rollout stays at its last step).
    """
    if not schedule:
        raise ValueError("empty schedule")
    if rho1 <= rho0:
        raise ValueError(f"rho1 ({rho1}) must exceed rho0 ({rho0})")
    target = math.log(1.0 / alpha)
    info = 0.0
    canary = 0.0
    i = 0
    while True:
        n_s, n_c = schedule[min(i, len(schedule) - 1)]
        gain = interval_information(n_s, n_c, p_stable, rho1, rho0)
        if info + gain >= target and gain > 0:
            return canary + n_c * (target - info) / gain
        info += gain
        canary += n_c
        i += 1
        if i > len(schedule) and gain <= 0:
            return math.inf
        if i > 10_000_000:
            return math.inf


def step_schedule(
    rps: float, weights_pct: Sequence[int], interval_s: float, intervals_per_step: int
) -> list[tuple[float, float]]:
    """Expected (stable, canary) requests per interval for a step schedule at constant rps."""
    out: list[tuple[float, float]] = []
    for w in weights_pct:
        n = rps * interval_s
        out.extend([(n * (100 - w) / 100, n * w / 100)] * intervals_per_step)
    return out
