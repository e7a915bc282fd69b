"""Prometheus-style cumulative histograms: quantiles, exceedances, common layouts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from canaryd.errors import HistogramLayoutError


def histogram_quantile(q: float, bounds_ms: Sequence[float], cumulative: Sequence[float]) -> float:
    """The q-quantile of a cumulative histogram, interpolated as PromQL ``histogram_quantile``.

    Linear interpolation inside the bucket that holds the rank; the lowest bucket interpolates
    from 0 when its upper bound is positive; a rank in the +Inf bucket returns the highest finite
    bound. NaN when the histogram is empty.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if len(bounds_ms) == 0 or len(bounds_ms) != len(cumulative):
        return math.nan
    total = float(cumulative[-1])
    if total <= 0 or math.isnan(total):
        return math.nan
    if len(bounds_ms) < 2:
        return math.nan
    rank = q * total
    idx = int(np.searchsorted(np.asarray(cumulative, dtype=float), rank, side="left"))
    idx = min(idx, len(bounds_ms) - 1)
    if math.isinf(bounds_ms[idx]):
        return float(bounds_ms[-2])
    if idx == 0 and bounds_ms[0] <= 0:
        return float(bounds_ms[0])
    lower = 0.0 if idx == 0 else float(bounds_ms[idx - 1])
    below = 0.0 if idx == 0 else float(cumulative[idx - 1])
    count = float(cumulative[idx]) - below
    if count <= 0:
        return float(bounds_ms[idx])
    return lower + (float(bounds_ms[idx]) - lower) * (rank - below) / count


def common_bounds(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...]:
    """The boundaries both layouts share (always including +Inf).

    Cumulative counts at a shared boundary are exact in both histograms, so re-bucketing to the
    shared boundaries loses resolution but never invents data.
    """
    shared = sorted(set(a) & set(b))
    if not shared or shared[-1] != math.inf:
        raise HistogramLayoutError("histograms do not both end with a +Inf bucket")
    if len(shared) < 2:
        raise HistogramLayoutError(
            f"histogram layouts share no finite boundary (stable {list(a)[:6]}..., "
            f"canary {list(b)[:6]}...)"
        )
    return tuple(shared)


def rebucket(
    bounds_ms: Sequence[float], cumulative: Sequence[float], target: Sequence[float]
) -> tuple[float, ...]:
    """Cumulative counts at ``target`` boundaries, each of which must be one of ``bounds_ms``."""
    index = {b: i for i, b in enumerate(bounds_ms)}
    try:
        return tuple(float(cumulative[index[t]]) for t in target)
    except KeyError as exc:
        raise HistogramLayoutError(f"boundary {exc.args[0]} is not in the histogram") from None


def exceedances(cumulative: Sequence[float], k: int) -> float:
    """How many requests were slower than boundary ``k``: total minus cumulative at ``k``."""
    return float(cumulative[-1]) - float(cumulative[k])


def nearest_boundary(
    bounds_ms: Sequence[float], cumulative: Sequence[float], q: float
) -> int | None:
    """Index of the finite boundary whose cumulative share is nearest to quantile ``q``.

    Used to pick where to test "slower than b" for a policy quantile (p50, p90, p99). Returns
    None when the histogram is empty.
    """
    total = float(cumulative[-1]) if len(cumulative) else 0.0
    if total <= 0:
        return None
    finite = [i for i, b in enumerate(bounds_ms) if not math.isinf(b)]
    if not finite:
        return None
    shares = np.array([float(cumulative[i]) / total for i in finite])
    # Only boundaries that some requests exceed carry information about exceedance.
    usable = [j for j, s in enumerate(shares) if s < 1.0]
    if not usable:
        return finite[int(np.argmin(np.abs(shares - q)))]
    best = min(usable, key=lambda j: abs(shares[j] - q))
    return finite[best]
