"""The studies in ``analysis/`` at reduced size: their targets, asserted with margins.

Each test runs a study's core function seeded, so results are reproducible; the margins are
several standard errors wide (expected values from the full-size runs in analysis/results/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ANALYSIS = Path(__file__).resolve().parents[3] / "analysis"
sys.path.insert(0, str(ANALYSIS))

import baselines  # noqa: E402
import calibration  # noqa: E402
import early_promotion  # noqa: E402
import power  # noqa: E402
import shadow  # noqa: E402
import studylib  # noqa: E402


def test_aa_false_rollbacks_pooled_bound() -> None:
    # 20 cells x 500 rollouts = 10,000 A/A rollouts, every-interval looks over 60 minutes.
    cells = calibration.run_cells(
        500,
        horizon=60,
        seed=5,
        rps_list=(2.0, 20.0),
        error_rates=(0.01, 0.05),
        latencies=(studylib.lognormal(80, 0.5, "knative"),),
        classic=False,
    )
    k, n, rate, upper = calibration.pooled(cells)
    assert n == 10_000
    assert upper <= 0.015, (k, n, rate, upper)
    assert rate <= 0.01


def test_repeated_z_test_inflates() -> None:
    infl = calibration.looks_inflation(3000, seed=3)
    # DESIGN.md: 14 % / 19 % / 25 % at 5 / 10 / 20 looks.
    assert 0.10 < infl["z"][10] < 0.28
    assert infl["z"][5] > 0.09
    assert infl["z"][20] > infl["z"][10] > infl["z"][5]
    assert infl["mw_raw"][10] > 0.10


def _effect(name: str) -> power.Effect:
    return next(e for e in power.effects() if e.name == name)


def test_detection_and_delay_errors_x3() -> None:
    row = power.measure(_effect("errors x3"), 1000, seed=21)
    assert row.detection >= 0.99
    assert row.ratio <= 2.0, row.ratio


def test_delay_errors_x2_within_twice_the_floor() -> None:
    row = power.measure(_effect("errors x2"), 1000, seed=22)
    assert row.detection >= 0.99
    assert row.ratio <= 2.0, row.ratio


def test_finer_interval_keeps_the_floor_and_shortens_the_delay() -> None:
    # The same traffic judged every 15 s: the floor is a property of the traffic, not of the
    # looks; the delay over it shrinks (results/power.md, granularity table: 1.10x at seed 301).
    e = _effect("errors x2")
    f1 = power.floor_of(e, studylib.weights("steps", 120))
    f4 = power.floor_of(e, studylib.weights("steps", 480, step_every=4), looks=4)
    assert abs(f4 - f1) / f1 < 0.01
    row = power.measure(e, 1000, seed=23, looks=4)
    assert row.detection >= 0.99
    assert row.ratio <= 1.3, row.ratio
    assert row.median_minutes % 0.25 == 0


def test_knowing_the_effect_is_an_e_process_and_decides_first() -> None:
    # The granularity section's reference test: the likelihood ratio at the true ratio. A/A it
    # is an e-process (seeded 0.47 % of 3,000 rollouts at alpha 1 %); on the same traffic it
    # decides no later than the judge, whose prior does not know the effect.
    rng = np.random.default_rng(31)
    w = studylib.weights("steps", 120)
    tr = studylib.gen_errors(rng, studylib.gen_requests(rng, 3000, 20.0, w), 0.005, 0.005)
    assert tr.x_s is not None and tr.x_c is not None
    aa = studylib.oracle_crossing(tr.n_s, tr.x_s, tr.n_c, tr.x_c, 1.0, 2.0, 0.01)
    assert np.mean(aa >= 0) <= 0.01
    e = _effect("errors x2")
    judge = power.measure(e, 500, seed=32, looks=4)
    knowing = power.measure(e, 500, seed=32, looks=4, oracle=True)
    assert knowing.detection >= 0.99 and knowing.oracle and not judge.oracle
    assert knowing.median_requests < judge.median_requests
    assert knowing.floor == judge.floor


def test_median_shifts_meet_the_latency_target_with_the_body_score_test() -> None:
    # Issue #10 item 4: median shifts within 1.5x the floor. The shipped judge (the body's
    # score test beside the boundaries' rate-ratio tests) at one look a minute, 300 seeded
    # rollouts: results/power.md has ~0.9-1.0x at 2,000; the judge before the score test,
    # on the same traffic, ~1.5-1.9x.
    for name in ("latency median +5%", "latency median +10%", "latency median +25%"):
        e = _effect(name)
        row = power.measure(e, 300, seed=41)
        before = power.measure(e, 300, seed=41, before=True)
        assert row.detection >= 0.99
        assert row.ratio <= 1.3, (name, row.ratio)
        assert row.median_requests < before.median_requests, name


def test_latency_judge_with_the_score_test_is_calibrated_a_a() -> None:
    # 3,000 A/A rollouts on the knative layout, every interval for 120 min: Ville's bound is
    # alpha (1 %); seeded, the rate is a few tenths of a percent.
    rng = np.random.default_rng(43)
    w = studylib.weights("steps", 120)
    stable = studylib.lognormal(80, 0.5, "knative")
    tr = studylib.gen_latency(rng, studylib.gen_requests(rng, 3000, 20.0, w), stable, stable)
    hit = studylib.latency_crossing(tr, stable.boundaries(), 1.0, 0.01)
    assert np.mean(hit >= 0) <= 0.008


def test_floor_matches_design_example() -> None:
    # DESIGN.md: 20 rps, 5 -> 50 % by 5 per minute, errors 0.5 % -> 1.5 %: about 960.
    row_floor = power.floor_of(_effect("errors x3"), studylib.weights("steps", 120))
    assert 900 < row_floor < 1020


def test_baselines_canaryd_vs_repeated_z() -> None:
    res = baselines.run(300, kayenta_rollouts=3, seed=9)
    get = {(o.method, o.scenario): o for o in res}
    seq, z = "canaryd sequential", "repeated z-test (5%)"
    assert get[(z, "A/A")].rate > 0.2
    assert get[(seq, "A/A")].rate <= 0.02
    assert get[(seq, "errors x2")].rate >= 0.9
    assert get[(seq, "latency median +25%")].rate >= 0.99


def test_vectorized_histogram_quantile_matches_promql() -> None:
    from canaryd.stats.histogram import histogram_quantile

    d = studylib.lognormal(80, 0.5)
    rng = np.random.default_rng(1)
    h = rng.multinomial(rng.integers(0, 50, 200), d.probs())
    got = studylib.histogram_quantile_v(0.99, d.bounds, h)
    want = [histogram_quantile(0.99, d.bounds, np.cumsum(x)) for x in h]
    np.testing.assert_allclose(got, want, equal_nan=True)


def test_early_promotion_beats_fixed_schedule() -> None:
    rows = early_promotion.run(40, seed=4, rps_list=(20.0, 200.0), min_requests=(5000,))
    for row in rows:
        assert row.promoted == 40
        assert row.median_s < 0.9 * row.fixed_s, row


def test_shadow_phase_with_copies_of_stables_inputs_stays_calibrated() -> None:
    # 2 error rates x 2 input shares x 2 mirrors x 2 tolerances x 400 = 6,400 A/A rollouts
    # through a shadow phase, then 10 %.
    cells = shadow.run_cells(
        400, seed=6, rps_list=(20.0,), error_rates=(0.005, 0.05), input_shares=(0.0, 1.0)
    )
    k, n, rate, upper = shadow.pooled(cells)
    assert n == 6_400
    assert upper <= 0.015, (k, n, rate, upper)
    # Input-driven failures (every failure on a copy is also stable's) are no worse than
    # independent ones: the copies' failures are under-dispersed, not over-dispersed.
    _, _, independent, _ = shadow.pooled(cells, input_share=0.0)
    k_corr, n_corr, correlated, up_corr = shadow.pooled(cells, input_share=1.0)
    assert up_corr <= 0.015, (k_corr, n_corr)
    assert correlated <= independent + 0.005
