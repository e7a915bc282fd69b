"""The anytime-valid rate-ratio e-process: canaryd's core test.

Model (DESIGN.md §2). In interval ``i`` stable serves ``n_s`` requests and canary ``n_c``; each
request of version ``v`` is an *event* (an error, or slower than a latency boundary) with
probability ``p_v``. Let ``rho = p_c / p_s``. Conditioned on the interval's total events
``x_s + x_c``, the canary's events are ``Binomial(x_s + x_c, theta_i(rho))`` with::

    theta_i(rho) = n_c * rho / (n_c * rho + n_s)

The unknown baseline rate drops out, any split works, and the split may change every interval.

Evidence is kept as one log-likelihood vector over a fixed grid of ``log(rho / rho0)``; an
update costs O(grid). Two mixtures are read off the same vector:

- the **rollback e-process** ``E_t = sum_j w_j L_t(rho_j) / L_t(rho0)`` with a prior ``w`` on the
  alternatives ``rho_j > rho0``. Each factor's expectation is <= 1 for every ``rho <= rho0``
  (monotone likelihood ratio), so ``E_t`` is a nonnegative supermartingale under the whole
  composite null and, by Ville's inequality, ``P(sup_t E_t >= 1/alpha) <= alpha``: the
  false-rollback rate holds however often it is looked at;
- the **confidence sequence** ``{rho : M_t / L_t(rho) < 1/alpha}`` with ``M_t`` a two-sided
  mixture over the whole grid, valid uniformly over time for the same reason.

Priors (a design choice, see DESIGN-NOTES.md): the alternative prior is a half-normal on
``u = log(rho / rho0) > 0`` with scale ``ALT_SCALE``; the confidence-sequence prior is a normal
on ``log rho`` centred at 0 with scale ``CS_SCALE``.

Counts are rounded to integers (PromQL ``increase()`` extrapolates to non-integers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from canaryd.jsonnum import pack_f64, unpack_f64

FloatArray = npt.NDArray[np.float64]

GRID_POINTS = 201
"""Odd, so that ``rho0`` itself is the centre point."""
GRID_HALF_WIDTH = math.log(64.0)
"""The grid spans ``rho0 / 64 .. rho0 * 64``."""
ALT_SCALE = 1.0
"""Scale of the half-normal prior on ``log(rho / rho0)`` for the rollback test (errors)."""
LATENCY_ALT_SCALE: tuple[float, ...] = (2.0,)
"""The same for latency exceedances (half-normal scales; several make an equal-weight mixture).
The latency judge's rate-ratio rows serve the *tail* boundaries' rollback evidence; its body
(policy quantiles up to p90) is tested by the score test too (``stats.score``), whose evidence
does not depend on this prior. A tail change is a large ratio at p99 (x6.8 for sigma 0.5 ->
0.8), so the prior is broad: at 15 s the tail-only change is detected at 1.57x its two-sample
floor against 1.94x under the mixture 0.05/0.2/1 the judge used while its rows served the body
too (1,000 seeded rollouts of the power study's traffic, measured when the score test came in;
``analysis/results/power.md`` has the 60 s mixtures). Validity does not depend on it: any
prior gives an e-process."""
CS_SCALE = 1.5
"""Scale of the normal prior on ``log(rho)`` for the confidence sequence."""


@dataclass(frozen=True)
class Grid:
    """The fixed grid and prior weights of one rate-ratio e-process."""

    rho0: float
    log_rho: FloatArray
    log_w_alt: FloatArray
    """log prior weights over the alternatives (``-inf`` at and below ``rho0``)."""
    log_w_cs: FloatArray
    centre: int

    @classmethod
    def make(
        cls,
        rho0: float,
        points: int = GRID_POINTS,
        half_width: float = GRID_HALF_WIDTH,
        alt_scale: float | tuple[float, ...] = ALT_SCALE,
        cs_scale: float = CS_SCALE,
    ) -> Grid:
        """The grid for these parameters. ``alt_scale``: the rollback prior's half-normal scale
        on ``log(rho / rho0) > 0``, or several, for an equal-weight mixture of them.

        Grids are immutable (their arrays are read-only) and shared: every judge with the same
        ``rho0`` and scales gets the same object, so a daemon serving thousands of rollouts
        keeps one grid per tolerance, not three arrays per judge."""
        if rho0 <= 0:
            raise ValueError(f"rho0 must be positive, got {rho0}")
        if points < 3 or points % 2 == 0:
            raise ValueError(f"grid points must be odd and >= 3, got {points}")
        scales = (alt_scale,) if isinstance(alt_scale, (int, float)) else tuple(alt_scale)
        if not scales or any(not sc > 0 for sc in scales):
            raise ValueError(f"prior scales must be positive, got {alt_scale!r}")
        return _make_grid(
            float(rho0),
            points,
            float(half_width),
            tuple(float(sc) for sc in scales),
            float(cs_scale),
        )


@lru_cache(maxsize=256)
def _make_grid(
    rho0: float, points: int, half_width: float, scales: tuple[float, ...], cs_scale: float
) -> Grid:
    u = np.linspace(-half_width, half_width, points)
    centre = points // 2
    u[centre] = 0.0
    log_rho = math.log(rho0) + u
    pos = u > 0
    comps = []
    for sc in scales:
        comp = np.full(points, -np.inf)
        comp[pos] = -0.5 * (u[pos] / sc) ** 2
        comp[pos] -= logsumexp_1d(comp[pos])
        comps.append(comp)
    alt = comps[0]
    if len(comps) > 1:  # equal weights; one scale keeps exactly the single prior's bits
        stack = np.array(comps)[:, pos]
        alt = np.full(points, -np.inf)
        alt[pos] = np.logaddexp.reduce(stack, axis=0) - math.log(len(comps))
    cs = -0.5 * (log_rho / cs_scale) ** 2
    cs -= logsumexp_1d(cs)
    for a in (log_rho, alt, cs):
        a.setflags(write=False)
    return Grid(rho0, log_rho, alt, cs, centre)


def logsumexp_1d(a: FloatArray) -> float:
    """``log(sum(exp(a)))`` of a 1-D float array with a finite maximum, computed as
    ``scipy.special.logsumexp`` (1.15 and later) computes it: the largest terms are separated
    out, the rest summed after the shift, ``log1p`` of that plus the log of the largest terms'
    count. The same bits (a unit test compares them), without importing scipy.special, which
    costs the daemon 14 MB of resident memory for this one call."""
    a_max = a.max()
    is_max = a == a_max
    m = np.sum(is_max, dtype=np.float64)
    s = np.sum(np.exp(np.where(is_max, -np.inf, a) - a_max))
    if s != 0:
        s = s / m
    return float(np.log1p(s) + np.log(m) + a_max)


def lse_rows(a: FloatArray) -> FloatArray:
    """log-sum-exp along axis 1. scipy's logsumexp costs ~100 us of array-API dispatch per
    call, which dominates at a grid of 201; this is the same arithmetic without it."""
    m = a.max(axis=1)
    return m + np.log(np.exp(a - m[:, None]).sum(axis=1))


def _as_rows(x: Any) -> FloatArray:
    return np.rint(np.atleast_1d(np.asarray(x, dtype=np.float64)))


def loglik_increment(log_rho: FloatArray, n_s: Any, x_s: Any, n_c: Any, x_c: Any) -> FloatArray:
    """Per-row, per-grid-point conditional log-likelihood of one interval (shape ``(R, G)``).

    The binomial coefficient is dropped: it is the same at every ``rho`` and cancels in every
    ratio. Rows with no requests on either side, or no events at all, carry no information
    and add zero.
    """
    ns, xs, nc, xc = (_as_rows(v) for v in (n_s, x_s, n_c, x_c))
    return _increment(log_rho, ns, xs, nc, xc)


def _increment(
    log_rho: FloatArray, ns: FloatArray, xs: FloatArray, nc: FloatArray, xc: FloatArray
) -> FloatArray:
    """``loglik_increment`` on rows already converted by ``_as_rows``."""
    informative = (ns > 0) & (nc > 0) & ((xs + xc) > 0)
    out = np.zeros((ns.shape[0], log_rho.shape[0]))
    if not informative.any():
        return out
    idx = np.nonzero(informative)[0]
    a = np.log(nc[idx])[:, None] + log_rho[None, :]
    b = np.log(ns[idx])[:, None]
    lse = np.logaddexp(a, b)
    out[idx] = xc[idx, None] * (a - lse) + xs[idx, None] * (b - lse)
    return out


class RateRatioBatch:
    """Rate-ratio e-processes for ``rows`` independent rollouts, updated together.

    This is the vectorized engine behind both the per-rollout judges (``rows=1``) and the
    simulator and studies (thousands of rows), so all of them compute the same numbers.
    """

    def __init__(self, rows: int, rho0: float, grid: Grid | None = None) -> None:
        if grid is not None and grid.rho0 != rho0:
            raise ValueError(f"grid was made for rho0={grid.rho0}, not {rho0}")
        self.grid = grid if grid is not None else Grid.make(rho0)
        self.loglik = np.zeros((rows, self.grid.log_rho.shape[0]))
        self.events = np.zeros((rows, 2))  # cumulative (stable, canary) events
        self.requests = np.zeros((rows, 2))  # cumulative (stable, canary) requests
        self.max_log_e = np.zeros(rows)  # running maximum: the e-process is "ever crossed"
        self.shift = np.zeros(rows, dtype=np.int64)
        """Per row, how many grid steps above ``rho0`` the rollback null sits (``set_shift``)."""

    @property
    def rows(self) -> int:
        return int(self.loglik.shape[0])

    def update(self, n_s: Any, x_s: Any, n_c: Any, x_c: Any) -> None:
        """Add one interval for every row (arrays of shape ``(rows,)`` or scalars)."""
        ns, xs, nc, xc = (_as_rows(v) for v in (n_s, x_s, n_c, x_c))
        self.loglik += _increment(self.grid.log_rho, ns, xs, nc, xc)
        self.events[:, 0] += xs
        self.events[:, 1] += xc
        self.requests[:, 0] += ns
        self.requests[:, 1] += nc
        np.maximum(self.max_log_e, self.log_e(), out=self.max_log_e)

    @property
    def step(self) -> float:
        """Spacing of the grid in ``log rho``."""
        g = self.grid
        return float(g.log_rho[g.centre + 1] - g.log_rho[g.centre])

    @property
    def max_shift(self) -> int:
        """Largest shift that leaves at least one alternative on the grid."""
        return self.grid.centre - 1

    def set_shift(self, steps: Any) -> None:
        """Widen each row's rollback null to ``rho <= rho0 * exp(steps * step)``.

        The likelihood is kept over the whole grid, so the e-value against a wider null is read
        off the same evidence: the alternative prior moves up with the null (its mass beyond the
        grid's end is dropped, which only lowers the e-value). Steps must lie in
        ``0..max_shift``.
        """
        s = np.broadcast_to(np.asarray(steps, dtype=np.int64), (self.rows,))
        if (s < 0).any() or (s > self.max_shift).any():
            raise ValueError(f"shift must be in 0..{self.max_shift} grid steps")
        self.shift = s.copy()

    def log_e(self) -> FloatArray:
        """log of the rollback e-value per row (H0: ``rho <= rho0 * exp(shift * step)``)."""
        g = self.grid
        if not self.shift.any():
            return lse_rows(self.loglik + g.log_w_alt[None, :]) - self.loglik[:, g.centre]
        points = g.log_rho.shape[0]
        idx = np.arange(points)[None, :] - self.shift[:, None]
        w = np.where(idx >= 0, g.log_w_alt[np.clip(idx, 0, points - 1)], -np.inf)
        null = self.loglik[np.arange(self.rows), g.centre + self.shift]
        return lse_rows(self.loglik + w) - null

    def log_mixture(self) -> FloatArray:
        return lse_rows(self.loglik + self.grid.log_w_cs[None, :])

    def confidence_sequence(self, alpha: float) -> tuple[FloatArray, FloatArray]:
        """Lower and upper ends of the level-``1-alpha`` confidence sequence for ``rho``.

        Conservative on the grid: each end is the first grid point *outside* the set, so the
        continuous set lies strictly inside. Rows with no information give ``(0, inf)``.
        """
        log_rho = self.grid.log_rho
        inside = (self.log_mixture()[:, None] - self.loglik) < math.log(1.0 / alpha)
        lo = np.zeros(self.rows)
        hi = np.full(self.rows, np.inf)
        any_in = inside.any(axis=1)
        first = np.argmax(inside, axis=1)
        last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
        has_lo = any_in & (first > 0)
        has_hi = any_in & (last < inside.shape[1] - 1)
        lo[has_lo] = np.exp(log_rho[first[has_lo] - 1])
        hi[has_hi] = np.exp(log_rho[last[has_hi] + 1])
        return lo, hi

    def non_inferior(self, alpha: float) -> npt.NDArray[np.bool_]:
        """True where every ``rho >= rho0`` is outside the confidence sequence."""
        g = self.grid
        excluded = (self.log_mixture() - self.loglik[:, g.centre]) >= math.log(1.0 / alpha)
        below = np.argmax(self.loglik, axis=1) < g.centre
        return excluded & below

    def estimate(self) -> FloatArray:
        """Maximum-likelihood ratio on the grid (NaN where there are no events yet)."""
        est = np.exp(self.grid.log_rho[np.argmax(self.loglik, axis=1)])
        return np.where(self.events.sum(axis=1) > 0, est, np.nan)

    # --- exact persistence -------------------------------------------------------------
    def row_state(self, row: int) -> dict[str, Any]:
        """The row's evidence, exact, as JSON (the grid packed: ``canaryd.jsonnum.pack_f64``)."""
        return {
            "rho0": self.grid.rho0,
            "loglik": pack_f64(self.loglik[row]),
            "events": self.events[row].tolist(),
            "requests": self.requests[row].tolist(),
            "max_log_e": float(self.max_log_e[row]),
            "shift": int(self.shift[row]),
        }

    def load_row_state(self, row: int, state: dict[str, Any]) -> None:
        if float(state["rho0"]) != self.grid.rho0:
            raise ValueError(
                f"stored evidence was gathered for rho0={state['rho0']}, "
                f"not {self.grid.rho0}; the policy's tolerance changed mid-rollout"
            )
        ll = unpack_f64(state["loglik"])
        if ll.shape != self.loglik[row].shape:
            raise ValueError("stored evidence has a different grid size")
        self.loglik[row] = ll
        self.events[row] = state["events"]
        self.requests[row] = state["requests"]
        self.max_log_e[row] = float(state["max_log_e"])
        shift = int(state.get("shift", 0))  # absent in state saved before pods were judged
        if not 0 <= shift <= self.max_shift:
            raise ValueError(f"stored null shift {shift} outside 0..{self.max_shift}")
        self.shift[row] = shift
