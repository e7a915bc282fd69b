"""The rate-ratio e-process and the sequential judges."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import betainc, betaln

from canaryd.observation import VersionCounts
from canaryd.stats.bounds import (
    one_sample_floor_errors,
    step_schedule,
    two_sample_floor,
)
from canaryd.stats.multinomial import dm_sequential_p_values
from canaryd.stats.ratio import Grid, RateRatioBatch, loglik_increment
from canaryd.stats.sequential import SequentialErrorsJudge, SequentialLatencyJudge
from canaryd.stats.verdict import Status, Verdict

BOUNDS = (25.0, 50.0, 100.0, 250.0, 500.0, math.inf)


def _vc(n: float, e: float, hist: tuple[float, ...] = ()) -> VersionCounts:
    return VersionCounts(n, e, BOUNDS if hist else (), hist)


# --- floors (DESIGN.md's worked example) ------------------------------------------------
def test_one_sample_floor_matches_design_example() -> None:
    assert one_sample_floor_errors(0.005, 3.0, 0.01) == pytest.approx(705.3, abs=0.5)


def test_two_sample_floor_matches_design_example() -> None:
    schedule = step_schedule(20, list(range(5, 55, 5)), 60, 1)
    assert two_sample_floor(schedule, 0.005, 3.0, 0.01) == pytest.approx(960, rel=0.01)


# --- Dirichlet-multinomial vectors (savvi, Lindon & Malek) -------------------------------
def test_dirichlet_multinomial_first_vector() -> None:
    np.random.seed(1)
    x = np.random.multinomial(1, [0.1, 0.3, 0.6], 1000)
    p = dm_sequential_p_values(x, [0.1, 0.4, 0.5], k=100)
    n = int(np.argmax(p <= 0.05))
    assert n + 1 == 402
    assert p[n] == pytest.approx(0.04845591105969517, rel=1e-9)


def test_dirichlet_multinomial_canary_vector() -> None:
    rho = np.array([0.8, 0.2])
    theta = rho * np.exp([1.5, 2.0])
    theta /= theta.sum()
    np.random.seed(1)
    x = np.random.multinomial(1, theta, 1500)
    p = dm_sequential_p_values(x, rho, k=100)
    n = int(np.argmax(p <= 0.05))
    assert n + 1 == 210
    assert p[n] == pytest.approx(0.045579631759249686, rel=1e-9)


# --- grid mixture against the closed-form beta-binomial ----------------------------------
@pytest.mark.parametrize(("x", "y"), [(3, 10), (12, 20), (0, 5), (30, 40)])
def test_grid_mixture_matches_truncated_beta_binomial(x: int, y: int) -> None:
    """One interval, null split theta0: the grid (with the beta prior mapped onto it) must
    reproduce the closed form E = B(a+x,b+y)/B(a,b) (1-I(a+x,b+y))/(1-I(a,b)) / t^x (1-t)^y."""
    n_s, n_c = 700.0, 300.0
    t0 = n_c / (n_c + n_s)
    k = 20.0
    a, b = k * t0, k * (1 - t0)
    closed = (
        math.exp(betaln(a + x, b + y) - betaln(a, b))
        * (1 - betainc(a + x, b + y, t0))
        / (1 - betainc(a, b, t0))
        / (t0**x * (1 - t0) ** y)
    )
    grid = Grid.make(1.0, points=40001, half_width=12.0)
    u = grid.log_rho
    theta = n_c * np.exp(u) / (n_c * np.exp(u) + n_s)
    dtheta_du = theta * (1 - theta)
    log_prior = (a - 1) * np.log(theta) + (b - 1) * np.log1p(-theta) + np.log(dtheta_du)
    log_prior[u <= 0] = -np.inf
    log_prior -= (
        np.log(np.sum(np.exp(log_prior[u > 0] - log_prior[u > 0].max()))) + log_prior[u > 0].max()
    )
    ll = loglik_increment(u, n_s, y, n_c, x)[0]
    log_e = np.log(np.sum(np.exp(ll + log_prior - ll[grid.centre])[u > 0]))
    assert math.exp(log_e) == pytest.approx(closed, rel=2e-3)


# --- engine behaviour --------------------------------------------------------------------
def test_a_a_false_rollbacks_stay_below_alpha() -> None:
    rng = np.random.default_rng(11)
    rows = 3000
    eng = RateRatioBatch(rows, 1.0)
    for i in range(60):
        w = min(5 + 5 * i, 50) / 100
        n = rng.poisson(600, rows)
        nc = rng.binomial(n, w)
        ns = n - nc
        eng.update(ns, rng.binomial(ns, 0.01), nc, rng.binomial(nc, 0.01))
    rate = float(np.mean(eng.max_log_e >= math.log(100)))
    assert rate <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / rows)


def test_regression_is_detected_and_interval_covers_truth() -> None:
    rng = np.random.default_rng(5)
    rows = 400
    eng = RateRatioBatch(rows, 1.0)
    for _ in range(120):
        n = rng.poisson(1200, rows)
        nc = rng.binomial(n, 0.3)
        ns = n - nc
        eng.update(ns, rng.binomial(ns, 0.005), nc, rng.binomial(nc, 0.015))
    assert np.mean(eng.max_log_e >= math.log(100)) >= 0.99
    lo, hi = eng.confidence_sequence(0.01)
    assert np.mean((lo <= 3.0) & (hi >= 3.0)) >= 0.98


def test_uninformative_intervals_add_nothing() -> None:
    eng = RateRatioBatch(3, 1.2)
    eng.update([0, 100, 100], [0, 0, 3], [50, 0, 100], [1, 0, 0])
    assert np.all(eng.loglik[0] == 0) and np.all(eng.loglik[1] == 0)
    assert not np.all(eng.loglik[2] == 0)


def test_huge_counts_do_not_overflow() -> None:
    eng = RateRatioBatch(1, 1.0)
    for _ in range(5):
        eng.update(1e12, 1e10, 1e12, 3e10)
    assert np.isfinite(eng.loglik).all()
    assert eng.max_log_e[0] > math.log(100)
    lo, hi = eng.confidence_sequence(0.01)
    assert lo[0] <= 3.0 <= hi[0] * 1.05


# --- judges ------------------------------------------------------------------------------
def test_errors_judge_states_inconclusive_then_fails() -> None:
    j = SequentialErrorsJudge("errors", 0.01, 0.2)
    v = j.verdict()
    assert v.status is Status.INCONCLUSIVE
    for _ in range(30):
        j.update(_vc(1000, 5), _vc(1000, 40))
    v = j.verdict()
    assert v.status is Status.FAIL
    assert v.e_value is not None and v.e_value >= 100
    assert v.interval is not None and v.interval[0] > 1.2
    assert "canary error rate" in v.reason


def test_errors_judge_shows_non_inferiority() -> None:
    j = SequentialErrorsJudge("errors", 0.01, 0.5)
    for _ in range(200):
        j.update(_vc(1000, 20), _vc(1000, 20))
    assert j.verdict().status is Status.PASS


def test_zero_errors_is_continue_never_pass() -> None:
    j = SequentialErrorsJudge("errors", 0.01, 0.2)
    for _ in range(50):
        j.update(_vc(1000, 0), _vc(1000, 0))
    assert j.verdict().status is Status.CONTINUE


def test_all_errors_is_handled() -> None:
    j = SequentialErrorsJudge("errors", 0.01, 0.2)
    j.update(_vc(100, 100), _vc(100, 100))
    assert j.verdict().status in (Status.CONTINUE, Status.PASS)


def _hist(rng: np.random.Generator, n: int, median: float) -> tuple[float, ...]:
    from scipy.stats import lognorm

    cdf = lognorm(s=0.5, scale=median).cdf(np.array(BOUNDS[:-1]))
    p = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    return tuple(float(c) for c in np.cumsum(rng.multinomial(n, p)))


def test_latency_judge_fails_on_slower_canary_and_reports_quantiles() -> None:
    rng = np.random.default_rng(3)
    j = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.99), omnibus=True)
    assert j.verdict().status is Status.INCONCLUSIVE
    for _ in range(40):
        j.update(_vc(600, 0, _hist(rng, 600, 80)), _vc(600, 0, _hist(rng, 600, 130)))
    v = j.verdict()
    assert v.status is Status.FAIL
    assert v.details["canary_p50_ms"] > v.details["stable_p50_ms"]


def test_latency_judge_passes_identical_distributions_eventually() -> None:
    rng = np.random.default_rng(4)
    j = SequentialLatencyJudge("latency", 0.01, 0.3, (0.5,))
    for _ in range(200):
        j.update(_vc(2000, 0, _hist(rng, 2000, 80)), _vc(2000, 0, _hist(rng, 2000, 80)))
    assert j.verdict().status is Status.PASS


def test_latency_judge_rebuckets_different_layouts() -> None:
    j = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5,))
    other = VersionCounts(100, 0, (50.0, 100.0, math.inf), (40.0, 80.0, 100.0))
    mine = VersionCounts(100, 0, BOUNDS, (10.0, 40.0, 80.0, 95.0, 99.0, 100.0))
    for _ in range(3):
        j.update(mine, other)
    assert j.layout == (50.0, 100.0, math.inf)


def test_latency_judge_without_common_layout_is_inconclusive() -> None:
    j = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5,))
    a = VersionCounts(100, 0, (10.0, math.inf), (50.0, 100.0))
    b = VersionCounts(100, 0, (20.0, math.inf), (50.0, 100.0))
    j.update(a, b)
    v = j.verdict()
    assert v.status is Status.INCONCLUSIVE
    assert "share no finite boundary" in v.reason


def test_state_round_trip_is_exact() -> None:
    rng = np.random.default_rng(9)
    a = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.99), omnibus=True)
    e = SequentialErrorsJudge("errors", 0.01, 0.2)
    for _ in range(10):
        s, c = _vc(500, 3, _hist(rng, 500, 80)), _vc(500, 5, _hist(rng, 500, 85))
        a.update(s, c)
        e.update(s, c)
    a2 = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.99), omnibus=True)
    e2 = SequentialErrorsJudge("errors", 0.01, 0.2)
    a2.load_state(json.loads(json.dumps(a.state())))
    e2.load_state(json.loads(json.dumps(e.state())))
    for _ in range(10):
        s, c = _vc(500, 3, _hist(rng, 500, 80)), _vc(500, 9, _hist(rng, 500, 95))
        for j in (a, a2, e, e2):
            j.update(s, c)
    assert a.verdict() == a2.verdict()
    assert e.verdict() == e2.verdict()
    assert Verdict.from_dict(json.loads(json.dumps(a.verdict().to_dict()))) == a.verdict()


def test_changed_tolerance_refuses_old_evidence() -> None:
    e = SequentialErrorsJudge("errors", 0.01, 0.2)
    other = SequentialErrorsJudge("errors", 0.01, 0.5)
    with pytest.raises(ValueError, match="tolerance changed"):
        other.load_state(e.state())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*(st.integers(0, 10**7) for _ in range(4))), min_size=1, max_size=8))
def test_errors_judge_never_crashes(rows: list[tuple[int, int, int, int]]) -> None:
    j = SequentialErrorsJudge("errors", 0.01, 0.2)
    for ns, xs, nc, xc in rows:
        j.update(_vc(ns, min(xs, ns)), _vc(nc, min(xc, nc)))
    v = j.verdict()
    assert v.status in Status
    json.dumps(v.to_dict(), allow_nan=False)


def test_latency_crossing_counts_even_when_no_verdict_was_read() -> None:
    """verdict() is a pure read; the running maximum is kept by update()."""
    rng = np.random.default_rng(21)
    looked = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5,))
    unlooked = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5,))
    for _ in range(30):
        s, c = _vc(600, 0, _hist(rng, 600, 80)), _vc(600, 0, _hist(rng, 600, 120))
        looked.update(s, c)
        unlooked.update(s, c)
        looked.verdict()
    assert looked.state() == unlooked.state()
    assert looked.verdict() == unlooked.verdict()


# -- latency boundaries named for what they are, and no pass against the quantile ------------

_BOUNDS = (50.0, 100.0, 150.0, 200.0, math.inf)


def _hist_vc(n: float, cum: tuple[float, ...]) -> VersionCounts:
    return VersionCounts(n, 0.0, _BOUNDS, tuple(c * n for c in cum))


def test_a_boundary_is_named_by_its_stable_quantile_not_the_one_asked_for() -> None:
    # Asked for p90; stable's nearest boundary is 150 ms, which is stable's p95.
    judge = SequentialLatencyJudge("latency", 0.01, 0.1, quantiles=(0.9,))
    stable = (0.2, 0.84, 0.95, 0.99, 1.0)
    for _ in range(60):
        judge.update(_hist_vc(20000, stable), _hist_vc(20000, stable))
    v = judge.verdict()
    assert v.status is Status.PASS
    assert "every tested boundary: 150 ms = stable's p95" in v.reason
    assert "p90 " not in v.reason.split(";")[0]  # never "p90" for the 150 ms boundary


def test_no_pass_while_the_interpolated_quantile_is_outside_tolerance() -> None:
    # The canary matches stable at the 150 ms boundary (5 % slower on both), but below it its
    # requests are much slower: its interpolated p90 is 147 ms against stable's 127 ms.
    judge = SequentialLatencyJudge("latency", 0.01, 0.1, quantiles=(0.9,))
    for _ in range(60):
        judge.update(
            _hist_vc(20000, (0.2, 0.84, 0.95, 0.99, 1.0)),
            _hist_vc(20000, (0.01, 0.05, 0.95, 0.99, 1.0)),
        )
    v = judge.verdict()
    assert v.status is Status.CONTINUE
    assert v.reason == (
        "every tested boundary is within tolerance (150 ms = stable's p95), but p90 canary "
        "147.2 ms > 1.1 x stable 127.3 ms: not passing while the two disagree"
    )
    assert v.details["quantiles_beyond_tolerance"] == [
        "p90 canary 147.2 ms > 1.1 x stable 127.3 ms"
    ]
