"""The rate-ratio grid: built without scipy but to scipy's bits, shared and read-only."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp

from canaryd.stats.ratio import (
    ALT_SCALE,
    CS_SCALE,
    GRID_HALF_WIDTH,
    GRID_POINTS,
    LATENCY_ALT_SCALE,
    Grid,
    logsumexp_1d,
)


def test_logsumexp_1d_has_scipys_bits() -> None:
    rng = np.random.default_rng(7)
    cases = [rng.normal(0, s, n) for s in (0.1, 1.0, 30.0, 700.0) for n in (1, 2, 100, 201)]
    cases += [np.array([3.0, 3.0, 1.0]), np.array([-1e300, 0.0]), np.full(5, -2.5)]
    for a in cases:
        assert logsumexp_1d(a) == float(logsumexp(a)), a


@pytest.mark.parametrize("rho0", [1.05, 1.2, 1.5, 3.0])
@pytest.mark.parametrize("alt_scale", [ALT_SCALE, 0.5])
def test_grid_has_the_weights_scipy_gave(rho0: float, alt_scale: float) -> None:
    """The grid's prior weights are the ones scipy.special.logsumexp normalised (bit for bit),
    so evidence stored by an earlier version is judged exactly as it was."""
    g = Grid.make(rho0, alt_scale=alt_scale)
    u = np.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, GRID_POINTS)
    u[GRID_POINTS // 2] = 0.0
    log_rho = math.log(rho0) + u
    alt = np.full(GRID_POINTS, -np.inf)
    pos = u > 0
    alt[pos] = -0.5 * (u[pos] / alt_scale) ** 2
    alt[pos] -= logsumexp(alt[pos])
    cs = -0.5 * (log_rho / CS_SCALE) ** 2
    cs -= logsumexp(cs)
    assert np.array_equal(g.log_rho, log_rho)
    assert np.array_equal(g.log_w_alt, alt)
    assert np.array_equal(g.log_w_cs, cs)


@pytest.mark.parametrize("rho0", [1.0, 1.15])
def test_a_mixture_prior_is_the_average_of_its_half_normals(rho0: float) -> None:
    g = Grid.make(rho0, alt_scale=LATENCY_ALT_SCALE)
    parts = [Grid.make(rho0, alt_scale=sc).log_w_alt for sc in LATENCY_ALT_SCALE]
    pos = g.log_rho > math.log(rho0)
    want = logsumexp(np.array(parts)[:, pos], axis=0) - math.log(len(parts))
    np.testing.assert_allclose(g.log_w_alt[pos], want, rtol=0, atol=1e-12)
    assert np.all(np.isneginf(g.log_w_alt[~pos]))
    assert float(logsumexp(g.log_w_alt[pos])) == pytest.approx(0.0, abs=1e-12)
    assert Grid.make(rho0, alt_scale=list(LATENCY_ALT_SCALE)) is g  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        Grid.make(rho0, alt_scale=(0.5, 0.0))


def test_grids_are_shared_and_read_only() -> None:
    a, b = Grid.make(1.2), Grid.make(1.2)
    assert a is b
    assert Grid.make(1.2, alt_scale=LATENCY_ALT_SCALE) is not a
    with pytest.raises(ValueError, match="read-only"):
        a.log_w_alt[0] = 0.0


def test_bad_grids_are_refused() -> None:
    with pytest.raises(ValueError, match="rho0 must be positive"):
        Grid.make(0.0)
    with pytest.raises(ValueError, match="odd"):
        Grid.make(1.2, points=200)
