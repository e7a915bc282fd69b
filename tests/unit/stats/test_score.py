"""The two-sample score e-process (``stats.score``): its one-interval expectation under the null,
computed exactly, its seeded A/A rate, and the latency judge that uses it for the body."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy.stats import multinomial

from canaryd.jsonnum import pack_f64
from canaryd.observation import VersionCounts
from canaryd.stats.ratio import Grid, RateRatioBatch
from canaryd.stats.score import LAMBDA_GRID, ScoreBatch, step_scores
from canaryd.stats.sequential import BODY_WEIGHT, SequentialLatencyJudge, latency_log_e
from canaryd.stats.verdict import Status


def _exact_mean(
    p_s: np.ndarray, p_c: np.ndarray, n_s: int, n_c: int, w: np.ndarray, centre: float, rho0: float
) -> np.ndarray:
    """E[e_1(lambda)] for every tilt, summed over every outcome of one interval: stable's and
    the canary's requests multinomial over the buckets."""
    k = len(w)

    def outcomes(n: int) -> list[np.ndarray]:
        return [
            np.bincount(combo, minlength=k).astype(float)
            for combo in itertools.combinations_with_replacement(range(k), n)
        ]

    total = np.zeros(LAMBDA_GRID.size)
    for c in outcomes(n_c):
        pc = multinomial.pmf(c, n_c, p_c)
        for s in outcomes(n_s):
            b = ScoreBatch(1, w, centre)
            b.update(n_s, n_c, c[None, :], (c + s)[None, :], rho0)
            total += pc * multinomial.pmf(s, n_s, p_s) * np.exp(b.log_e_lam[0])
    return total


@pytest.mark.parametrize("rho0", [1.0, 1.1, 1.5])
@pytest.mark.parametrize("n_s,n_c", [(3, 1), (2, 2), (1, 3)])
def test_one_interval_is_an_e_value_under_the_null_exactly(rho0: float, n_s: int, n_c: int) -> None:
    """Every tilt's factor has expectation <= 1 wherever the canary's share slower than each
    scored boundary is at most rho0 times stable's: equal versions, the extreme null
    (``S_c = min(1, rho0 S_s)``), and a canary that is faster."""
    w = step_scores(3, [0, 1])
    p_s = np.array([0.5, 0.3, 0.2])
    surv_s = np.cumsum(p_s[::-1])[::-1]
    surv_c = np.minimum(1.0, rho0 * surv_s)
    surv_c[0] = 1.0
    extreme = surv_c - np.append(surv_c[1:], 0.0)
    faster = np.array([0.7, 0.2, 0.1])
    for p_c in (p_s, extreme, faster):
        for centre in (0.0, 0.35, 0.9):
            mean = _exact_mean(p_s, p_c, n_s, n_c, w, centre, rho0)
            assert (mean <= 1.0 + 1e-9).all(), (p_c, centre, mean.max())


def test_equal_versions_at_rho0_1_have_expectation_below_1_and_near_it() -> None:
    """At rho0 = 1 the factor is the likelihood ratio of a tilt of the canary's odds, so its
    expectation under equal versions is at most 1 and not far below (the test is not slack)."""
    w = step_scores(3, [0, 1])
    p = np.array([0.4, 0.4, 0.2])
    mean = _exact_mean(p, p, 3, 2, w, 0.4, 1.0)
    assert (mean <= 1.0 + 1e-9).all()
    assert mean[:10].min() > 0.95


def test_a_slower_canary_grows_the_evidence() -> None:
    w = step_scores(3, [0, 1])
    p_s, p_c = np.array([0.5, 0.3, 0.2]), np.array([0.3, 0.4, 0.3])
    assert _exact_mean(p_s, p_c, 2, 2, w, 0.35, 1.0).max() > 1.05


def _aa(rows: int, intervals: int, rho0: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    p = np.array([0.3, 0.2, 0.3, 0.15, 0.05])
    b = ScoreBatch(rows, step_scores(5, [1, 3]), 0.35)
    for _ in range(intervals):
        n = rng.poisson(200, size=rows)
        n_c = rng.binomial(n, rng.uniform(0.05, 0.5))
        n_s = n - n_c
        hc = rng.multinomial(n_c, p).astype(float)
        hs = rng.multinomial(n_s, p).astype(float)
        b.update(n_s, n_c, hc, hc + hs, rho0)
    return float(np.mean(b.max_log_e >= math.log(100.0)))


def test_seeded_aa_rate_is_below_alpha() -> None:
    """Equal versions, looked at after every one of 120 intervals: the share of 4,000 rollouts
    ever crossing 1/alpha (alpha 1 %). Seeded; Ville's bound is 1 %, the measured rate about
    0.3 %, so the margin cannot flake."""
    assert _aa(4000, 120, 1.0, 11) < 0.008
    assert _aa(2000, 120, 1.1, 12) < 0.005


def test_intervals_without_both_versions_add_nothing() -> None:
    b = ScoreBatch(2, step_scores(3, [0]), 0.5)
    b.update([10, 0], [0, 5], [[0, 0, 0], [2, 2, 1]], [[5, 3, 2], [2, 2, 1]])
    assert (b.log_e_lam == 0.0).all()


def test_bad_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="start at 0"):
        ScoreBatch(1, [0.0, 1.0, 0.5], 0.0)
    with pytest.raises(ValueError, match="start at 0"):
        ScoreBatch(1, [0.2, 1.0], 0.0)
    with pytest.raises(ValueError, match="step boundaries"):
        step_scores(3, [2])
    with pytest.raises(ValueError, match="rho0"):
        ScoreBatch(1, [0.0, 1.0], 0.5).update(1, 1, [[0, 1]], [[1, 1]], 0.9)


def test_state_round_trips_exactly() -> None:
    b = ScoreBatch(1, step_scores(4, [0, 2]), 0.4)
    b.update(100, 20, [[5, 5, 5, 5]], [[40, 30, 30, 20]], 1.1)
    st = json.loads(json.dumps(b.row_state(0)))
    c = ScoreBatch(1, step_scores(4, [0, 2]), 0.0)
    c.load_row_state(0, st)
    assert (c.log_e_lam == b.log_e_lam).all() and c.centre[0] == 0.4
    assert c.max_log_e[0] == b.max_log_e[0]
    st["log_e"] = pack_f64(np.zeros(3))
    with pytest.raises(ValueError, match="different layout"):
        c.load_row_state(0, st)


def test_median_shift_is_found_sooner_than_by_the_rate_ratio_test() -> None:
    """Half of stable's requests slower than the boundary, the canary's 54 %: the score test
    uses the requests that are not slower too, the Poisson model of the rate-ratio test does
    not. Seeded, 300 rollouts: the score test crosses in a clearly smaller median interval."""
    rng = np.random.default_rng(5)
    rows, t_n = 300, 200
    rate = RateRatioBatch(rows, 1.0, Grid.make(1.0, alt_scale=(0.05, 0.2, 1.0)))
    score = ScoreBatch(rows, step_scores(2, [0]), 0.5)
    first = {"rate": np.full(rows, t_n), "score": np.full(rows, t_n)}
    for t in range(t_n):
        n_s, n_c = np.full(rows, 900), np.full(rows, 100)
        xs, xc = rng.binomial(n_s, 0.5), rng.binomial(n_c, 0.54)
        rate.update(n_s, xs, n_c, xc)
        score.update(n_s, n_c, np.c_[n_c - xc, xc], np.c_[n_s - xs + n_c - xc, xs + xc])
        for name, le in (("rate", rate.log_e()), ("score", score.log_e())):
            hit = (le >= math.log(100.0)) & (first[name] == t_n)
            first[name][hit] = t
    assert np.median(first["score"]) < 0.75 * np.median(first["rate"])


def test_latency_log_e_weights_body_and_tail() -> None:
    rows = np.log(np.array([[4.0], [10.0]]))
    score = np.log(np.array([40.0]))
    got = math.exp(float(latency_log_e(rows, score, [0])[0]))
    assert got == pytest.approx(BODY_WEIGHT * (40.0 + 4.0) / 2 + (1 - BODY_WEIGHT) * 10.0)
    assert math.exp(float(latency_log_e(rows, None, [])[0])) == pytest.approx(7.0)
    assert math.exp(float(latency_log_e(rows, score, [0, 1])[0])) == pytest.approx((40 + 7) / 2)


def _vc(counts: list[float]) -> VersionCounts:
    bounds = (50.0, 100.0, 200.0, math.inf)
    return VersionCounts(
        requests=counts[-1], errors=0.0, bounds_ms=bounds, bucket_counts=tuple(counts)
    )


def test_judge_tests_the_body_with_the_score_test_and_says_so() -> None:
    j = SequentialLatencyJudge("latency", 0.01, 0.0, (0.5, 0.99))
    # stable: 50 % slower than 100 ms; canary 62 %; the tail alike.
    for _ in range(40):
        j.update(_vc([250, 500, 990, 1000]), _vc([19, 38, 99, 100]))
    v = j.verdict()
    assert j.body_rows == [0] and j.score is not None
    assert v.status is Status.FAIL, v.reason
    assert v.details["decided_by"] == "the score test of the body boundaries"
    assert v.details["body"]["boundaries_ms"] == [100.0]
    assert v.details["body"]["score_e_value"] > v.details["boundaries"][0]["e_value"]
    # the state round-trips, and a judge saved before the score test keeps the old mean
    st = json.loads(json.dumps(j.state()))
    k = SequentialLatencyJudge("latency", 0.01, 0.0, (0.5, 0.99))
    k.load_state(st)
    assert k.verdict().e_value == v.e_value
    for key in ("body_rows", "score", "score_rho0"):
        del st[key]
    old = SequentialLatencyJudge("latency", 0.01, 0.0, (0.5, 0.99))
    old.load_state(st)
    assert old.body_rows == [] and old.score is None  # the judge it was started with
    assert old.verdict().status is Status.FAIL


def test_judge_without_body_quantiles_has_no_score_test() -> None:
    j = SequentialLatencyJudge("latency", 0.01, 0.1, (0.95, 0.99))
    for _ in range(3):
        j.update(_vc([250, 500, 990, 1000]), _vc([25, 50, 99, 100]))
    assert j.body_rows == [] and j.score is None
    assert "body" not in j.verdict().details
