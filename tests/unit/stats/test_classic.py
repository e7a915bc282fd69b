"""The classic fixed-horizon judges: regressions fail, A/A does not, thin data is inconclusive."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.observation import VersionCounts
from canaryd.stats.classic import (
    CLASSIC_JUDGES,
    ChiSquareJudge,
    KSJudge,
    MannWhitneyJudge,
    ThresholdJudge,
    WelchTJudge,
    make_classic_judge,
)
from canaryd.stats.verdict import Status, Verdict

INF = math.inf
BOUNDS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, INF)
# A different layout sharing 10, 50, 100, 500, 1000 and +Inf with BOUNDS.
OTHER_BOUNDS = (10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, INF)
# Shares no finite boundary with BOUNDS.
DISJOINT_BOUNDS = (7.0, 70.0, 700.0, INF)

SAMPLE_JUDGES = ("mann-whitney", "ks", "welch-t")
STAT_JUDGES = (*SAMPLE_JUDGES, "chi-square")


def make(name: str, kind: str = "errors", **kw: Any) -> Any:
    kw.setdefault("min_intervals", 5)
    if name == "threshold":
        kw.setdefault("max", 5.0 if kind == "errors" else 400.0)
    return make_classic_judge(name, metric="m", kind=kind, **kw)


def errors_vc(requests: float, errors: float) -> VersionCounts:
    return VersionCounts(requests=float(requests), errors=float(errors))


def latency_vc(
    rng: np.random.Generator, n: int, median_ms: float, bounds: tuple[float, ...] = BOUNDS
) -> VersionCounts:
    lat = rng.lognormal(math.log(median_ms), 0.5, n)
    counts = tuple(float((lat <= b).sum()) for b in bounds)
    return VersionCounts(requests=float(n), errors=0.0, bounds_ms=bounds, bucket_counts=counts)


def feed_errors(
    judge: Any,
    seed: int,
    intervals: int,
    p_stable: float,
    p_canary: float,
    *,
    n: int = 1000,
) -> Verdict:
    rng = np.random.default_rng(seed)
    for _ in range(intervals):
        judge.update(
            errors_vc(n, rng.binomial(n, p_stable)), errors_vc(n, rng.binomial(n, p_canary))
        )
    v: Verdict = judge.verdict()
    return v


def feed_latency(
    judge: Any,
    seed: int,
    intervals: int,
    median_stable: float,
    median_canary: float,
    *,
    n: int = 400,
    stable_bounds: tuple[float, ...] = BOUNDS,
    canary_bounds: tuple[float, ...] = BOUNDS,
) -> Verdict:
    rng = np.random.default_rng(seed)
    for _ in range(intervals):
        judge.update(
            latency_vc(rng, n, median_stable, stable_bounds),
            latency_vc(rng, n, median_canary, canary_bounds),
        )
    v: Verdict = judge.verdict()
    return v


# -- obvious regressions fail ------------------------------------------------------------------


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
def test_error_regression_fails(name: str) -> None:
    v = feed_errors(make(name), seed=1, intervals=12, p_stable=0.01, p_canary=0.10)
    assert v.status == Status.FAIL, v.reason
    assert v.judge == name
    assert v.metric == "m"


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
def test_latency_regression_fails(name: str) -> None:
    v = feed_latency(
        make(name, "latency"), seed=2, intervals=12, median_stable=40, median_canary=160
    )
    assert v.status == Status.FAIL, v.reason


# -- A/A does not fail -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
def test_aa_errors_single_seed_does_not_fail(name: str) -> None:
    v = feed_errors(make(name), seed=3, intervals=20, p_stable=0.01, p_canary=0.01)
    assert v.status == Status.CONTINUE, v.reason


@pytest.mark.parametrize("name", STAT_JUDGES)
def test_aa_errors_false_fail_rate_is_near_nominal(name: str) -> None:
    # 40 independent A/A rollouts, one look each: a level-5% test fails about 2 of them;
    # 8 or more would have probability < 0.1% for a correct test.
    fails = sum(
        feed_errors(make(name), seed=100 + s, intervals=15, p_stable=0.02, p_canary=0.02).status
        == Status.FAIL
        for s in range(40)
    )
    assert fails <= 7


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
def test_aa_latency_does_not_fail(name: str) -> None:
    v = feed_latency(
        make(name, "latency"), seed=4, intervals=15, median_stable=40, median_canary=40
    )
    assert v.status == Status.CONTINUE, v.reason


# -- too little data ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", STAT_JUDGES)
def test_too_few_intervals_is_inconclusive_even_for_a_huge_regression(name: str) -> None:
    j = make(name, min_intervals=5)
    v = feed_errors(j, seed=5, intervals=4, p_stable=0.01, p_canary=0.5)
    assert v.status == Status.INCONCLUSIVE
    assert "too little data" in v.reason
    v = feed_errors(j, seed=6, intervals=1, p_stable=0.01, p_canary=0.5)
    assert v.status == Status.FAIL


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
def test_no_data_at_all_is_inconclusive(name: str) -> None:
    assert make(name).verdict().status == Status.INCONCLUSIVE


def test_threshold_needs_min_intervals_of_conclusive_checks() -> None:
    j = make("threshold", min_intervals=3)
    feed_errors(j, seed=7, intervals=2, p_stable=0.01, p_canary=0.01)
    assert j.verdict().status == Status.INCONCLUSIVE
    feed_errors(j, seed=8, intervals=1, p_stable=0.01, p_canary=0.01)
    assert j.verdict().status == Status.CONTINUE


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
@pytest.mark.parametrize("kind", ["errors", "latency"])
def test_never_pass(name: str, kind: str) -> None:
    # Canary clearly better: still not PASS (fixed-horizon tests cannot show non-inferiority).
    j = make(name, kind)
    if kind == "errors":
        v = feed_errors(j, seed=9, intervals=15, p_stable=0.05, p_canary=0.001)
    else:
        v = feed_latency(j, seed=9, intervals=15, median_stable=160, median_canary=40)
    assert v.status == Status.CONTINUE, v.reason


# -- zero traffic, all errors, NaN -------------------------------------------------------------


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
def test_zero_traffic_intervals_contribute_nothing(name: str) -> None:
    j = make(name)
    for _ in range(10):
        j.update(errors_vc(1000, 10), errors_vc(0, 0))
    v = j.verdict()
    assert v.status == Status.INCONCLUSIVE
    # Interleaving empty intervals does not disturb a real verdict.
    rng = np.random.default_rng(10)
    for _ in range(12):
        j.update(
            errors_vc(1000, rng.binomial(1000, 0.01)), errors_vc(1000, rng.binomial(1000, 0.2))
        )
        j.update(errors_vc(0, 0), errors_vc(0, 0))
    assert j.verdict().status == Status.FAIL


def test_threshold_zero_traffic_is_an_inconclusive_check() -> None:
    j = ThresholdJudge("m", "errors", max=1.0, failure_limit=2)
    j.update(errors_vc(100, 50), errors_vc(0, 0))
    v = j.verdict()
    assert v.status == Status.INCONCLUSIVE
    assert v.details["checks"] == 0
    assert v.details["failed_checks"] == 0
    assert v.details["inconclusive_checks"] == 1


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
def test_all_errors_canary_fails(name: str) -> None:
    j = make(name)
    rng = np.random.default_rng(11)
    for _ in range(10):
        j.update(errors_vc(500, rng.binomial(500, 0.01)), errors_vc(500, 500))
    assert j.verdict().status == Status.FAIL


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
def test_all_errors_both_versions_does_not_crash_or_fail_on_the_comparison(name: str) -> None:
    j = make(name)
    for _ in range(10):
        j.update(errors_vc(500, 500), errors_vc(500, 500))
    v = j.verdict()
    if name == "threshold":
        assert v.status == Status.FAIL  # 100% errors is above the absolute max
    else:
        assert v.status == Status.CONTINUE, v.reason


@pytest.mark.parametrize("name", SAMPLE_JUDGES)
def test_custom_metric_skips_nan_and_missing_values(name: str) -> None:
    j = make(name, "custom", custom_name="gpu_util", min_intervals=5)
    rng = np.random.default_rng(12)
    for i in range(12):
        s = {"gpu_util": float(rng.normal(50, 2))}
        c = {"gpu_util": math.nan if i % 3 == 0 else float(rng.normal(80, 2))}
        if i % 4 == 0:
            c = {}
        j.update(VersionCounts(10, 0, values=s), VersionCounts(10, 0, values=c))
    v = j.verdict()
    assert v.status == Status.FAIL, v.reason
    # 12 intervals, minus NaN (i = 0, 3, 6, 9) and missing (i = 0, 4, 8): 6 canary samples.
    assert v.canary_samples == 6
    assert v.stable_samples == 12


def test_custom_metric_reads_metric_name_by_default() -> None:
    j = MannWhitneyJudge("queue_depth", "custom", min_intervals=3)
    for i in range(6):
        j.update(
            VersionCounts(1, 0, values={"queue_depth": 1.0 + i % 2}),
            VersionCounts(1, 0, values={"queue_depth": 10.0 + i % 2}),
        )
    assert j.verdict().status == Status.FAIL


def test_chi_square_rejects_custom() -> None:
    with pytest.raises(ValueError, match="custom"):
        ChiSquareJudge("m", "custom")


# -- histogram layouts -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*STAT_JUDGES, "threshold"])
def test_different_layouts_are_rebucketed(name: str) -> None:
    v = feed_latency(
        make(name, "latency"),
        seed=13,
        intervals=12,
        median_stable=40,
        median_canary=200,
        canary_bounds=OTHER_BOUNDS,
    )
    assert v.status == Status.FAIL, v.reason
    aa = feed_latency(
        make(name, "latency"),
        seed=14,
        intervals=12,
        median_stable=40,
        median_canary=40,
        canary_bounds=OTHER_BOUNDS,
    )
    assert aa.status == Status.CONTINUE, aa.reason


@pytest.mark.parametrize("name", STAT_JUDGES)
def test_incompatible_layouts_are_inconclusive_and_named(name: str) -> None:
    j = make(name, "latency")
    v = feed_latency(
        j,
        seed=15,
        intervals=10,
        median_stable=40,
        median_canary=400,
        canary_bounds=DISJOINT_BOUNDS,
    )
    assert v.status == Status.INCONCLUSIVE
    assert "share no finite boundary" in v.reason
    assert v.details["skipped_intervals"] == 10


def test_chi_square_layout_change_mid_rollout_coarsens_the_accumulator() -> None:
    j = ChiSquareJudge("m", "latency", min_intervals=5)
    rng = np.random.default_rng(16)
    for _ in range(5):
        j.update(latency_vc(rng, 300, 40), latency_vc(rng, 300, 200))
    for _ in range(5):
        j.update(latency_vc(rng, 300, 40), latency_vc(rng, 300, 200, OTHER_BOUNDS))
    v = j.verdict()
    assert v.status == Status.FAIL
    assert j.state()["bounds_ms"] == [10.0, 50.0, 100.0, 500.0, 1000.0, "+Inf"]


def test_histogram_missing_for_one_version_is_skipped() -> None:
    j = KSJudge("m", "latency", min_intervals=2)
    rng = np.random.default_rng(17)
    j.update(latency_vc(rng, 100, 40), errors_vc(100, 0))
    v = j.verdict()
    assert v.status == Status.INCONCLUSIVE
    assert "no latency histogram" in v.reason


# -- judge-specific behaviour ------------------------------------------------------------------


def test_mann_whitney_maps_kayenta_classes() -> None:
    worse = feed_errors(MannWhitneyJudge("m", min_intervals=5), 18, 12, 0.01, 0.1)
    assert worse.details["kayenta_class"] == "High"
    assert worse.status == Status.FAIL
    lo, hi = worse.interval or (math.nan, math.nan)
    assert worse.estimate is not None
    assert 0 < lo <= worse.estimate <= hi
    assert worse.threshold == pytest.approx(0.25 * abs(worse.estimate))
    assert worse.p_value is not None and worse.p_value < 0.01

    same = feed_errors(MannWhitneyJudge("m", min_intervals=5), 19, 12, 0.01, 0.01)
    assert same.details["kayenta_class"] == "Pass"
    assert same.status == Status.CONTINUE

    better = feed_errors(MannWhitneyJudge("m", min_intervals=5), 20, 12, 0.1, 0.01)
    # Direction is "increase": a better canary is Pass (Low cannot fire), and never a failure.
    assert better.details["kayenta_class"] in ("Pass", "Low")
    assert better.status == Status.CONTINUE


def test_mann_whitney_latency_reports_each_quantile() -> None:
    v = feed_latency(MannWhitneyJudge("m", "latency"), 21, 10, 40, 160)
    assert v.status == Status.FAIL
    assert set(v.details["series"]) == {"p50", "p90", "p99"}
    assert v.details["quantile"] in ("p50", "p90", "p99")


def test_mann_whitney_effect_size_threshold_blocks_small_shifts() -> None:
    # 30% more errors is significant with this much data, but not if 50% is allowed.
    strict = feed_errors(MannWhitneyJudge("m", tolerance=0.0), 22, 30, 0.02, 0.026, n=20000)
    lenient = feed_errors(
        MannWhitneyJudge("m", tolerance=0.0, effect_size_thresholds=(1.0, 1.5)),
        22,
        30,
        0.02,
        0.026,
        n=20000,
    )
    assert strict.status == Status.FAIL
    assert lenient.status == Status.CONTINUE


def test_ks_is_one_sided_toward_larger_canary() -> None:
    larger = feed_errors(KSJudge("m"), 23, 15, 0.01, 0.03)
    smaller = feed_errors(KSJudge("m"), 23, 15, 0.03, 0.01)
    assert larger.status == Status.FAIL
    assert smaller.status == Status.CONTINUE
    assert smaller.p_value is not None and smaller.p_value > 0.5


def test_welch_tolerance_shifts_the_null() -> None:
    # Canary 10% worse, measured precisely.
    strict = feed_errors(WelchTJudge("m", tolerance=0.0), 24, 30, 0.05, 0.055, n=50000)
    tolerant = feed_errors(WelchTJudge("m", tolerance=0.2), 24, 30, 0.05, 0.055, n=50000)
    assert strict.status == Status.FAIL
    assert tolerant.status == Status.CONTINUE
    assert strict.estimate == pytest.approx(1.1, abs=0.03)
    assert strict.interval is not None
    lo, hi = strict.interval
    assert lo < 0.005 < hi  # Welch interval for the difference of means


def test_welch_needs_two_samples_even_if_min_intervals_is_one() -> None:
    j = WelchTJudge("m", min_intervals=1)
    j.update(errors_vc(100, 1), errors_vc(100, 50))
    assert j.verdict().status == Status.INCONCLUSIVE


def test_chi_square_errors_one_sided_and_fisher_for_sparse_counts() -> None:
    better = feed_errors(ChiSquareJudge("m"), 25, 10, 0.05, 0.01)
    assert better.status == Status.CONTINUE
    assert better.details["test"] == "chi-square"
    sparse = ChiSquareJudge("m", min_intervals=1)
    sparse.update(errors_vc(100, 0), errors_vc(100, 6))
    v = sparse.verdict()
    assert v.details["test"] == "fisher-exact"
    assert v.status == Status.FAIL
    assert v.estimate == math.inf
    none = ChiSquareJudge("m", min_intervals=1)
    none.update(errors_vc(100, 0), errors_vc(100, 0))
    assert none.verdict().status == Status.CONTINUE


def test_chi_square_latency_faster_canary_is_not_a_failure() -> None:
    v = feed_latency(ChiSquareJudge("m", "latency"), 26, 10, 160, 40)
    assert v.status == Status.CONTINUE
    assert v.p_value is not None and v.p_value < 1e-6
    assert "not slower" in v.reason


def test_chi_square_latency_sparse_buckets_merge() -> None:
    j = ChiSquareJudge("m", "latency", min_intervals=1)
    rng = np.random.default_rng(27)
    j.update(latency_vc(rng, 6, 40), latency_vc(rng, 6, 40))
    v = j.verdict()
    assert v.status in (Status.CONTINUE, Status.INCONCLUSIVE)
    assert len(v.details["merged_upper_bounds_ms"]) <= 2


def test_threshold_counts_failed_checks_cumulatively() -> None:
    j = ThresholdJudge("m", "errors", max=2.0, failure_limit=3)
    for errors in (5, 0, 5, 0, 0):
        j.update(errors_vc(100, 0), errors_vc(100, errors))
    v = j.verdict()
    assert v.status == Status.CONTINUE
    assert v.details["failed_checks"] == 2
    j.update(errors_vc(100, 0), errors_vc(100, 5))
    assert j.verdict().status == Status.FAIL


def test_threshold_success_rate_and_latency_and_custom() -> None:
    s = ThresholdJudge("m", "errors", success_min=99.0, failure_limit=1)
    s.update(errors_vc(100, 0), errors_vc(1000, 5))  # 99.5% success
    assert s.verdict().status == Status.CONTINUE
    assert s.verdict().estimate == pytest.approx(99.5)
    s.update(errors_vc(100, 0), errors_vc(1000, 20))  # 98% success
    assert s.verdict().status == Status.FAIL

    lat = ThresholdJudge("m", "latency", max=500.0, failure_limit=1, quantile=0.99)
    rng = np.random.default_rng(28)
    lat.update(latency_vc(rng, 100, 40), latency_vc(rng, 1000, 40))
    assert lat.verdict().status == Status.CONTINUE
    assert lat.verdict().details["value"] == "p99 ms"
    lat.update(latency_vc(rng, 100, 40), latency_vc(rng, 1000, 2000))
    assert lat.verdict().status == Status.FAIL

    cu = ThresholdJudge("m", "custom", custom_name="x", min=1.0, failure_limit=1)
    cu.update(VersionCounts(1, 0), VersionCounts(1, 0, values={"x": math.nan}))
    assert cu.verdict().status == Status.INCONCLUSIVE
    cu.update(VersionCounts(1, 0), VersionCounts(1, 0, values={"x": 0.5}))
    assert cu.verdict().status == Status.FAIL


def test_threshold_requires_a_bound() -> None:
    with pytest.raises(ValueError):
        ThresholdJudge("m", "errors")
    with pytest.raises(ValueError):
        ThresholdJudge("m", "latency", success_min=99.0)


# -- protocol, factory, docs -------------------------------------------------------------------


def test_factory_maps_names_to_classes() -> None:
    assert {
        "mann-whitney": MannWhitneyJudge,
        "ks": KSJudge,
        "welch-t": WelchTJudge,
        "chi-square": ChiSquareJudge,
        "threshold": ThresholdJudge,
    } == CLASSIC_JUDGES
    for name, cls in CLASSIC_JUDGES.items():
        extra: dict[str, Any] = {"max": 1.0} if name == "threshold" else {}
        j = make_classic_judge(name, metric="m", kind="errors", critical=False, **extra)
        assert isinstance(j, cls)
        assert j.judge_name == name
        assert j.peeking_safe is False
        assert j.critical is False
        assert j.verdict().critical is False
    with pytest.raises(ValueError, match="unknown classic judge"):
        make_classic_judge("t-test", metric="m")


@pytest.mark.parametrize("cls", list(CLASSIC_JUDGES.values()))
def test_docstrings_warn_about_peeking(cls: type) -> None:
    doc = cls.__doc__ or ""
    assert "re-run" in doc
    assert "14%" in doc and "19%" in doc and "25%" in doc


@pytest.mark.parametrize("kind", ["errors", "latency", "custom"])
def test_bad_constructor_arguments(kind: str) -> None:
    with pytest.raises(ValueError):
        KSJudge("m", "bogus")
    with pytest.raises(ValueError):
        KSJudge("m", kind, alpha=1.5)
    with pytest.raises(ValueError):
        MannWhitneyJudge("m", kind, min_intervals=0)
    with pytest.raises(ValueError):
        MannWhitneyJudge("m", kind, quantiles=(0.0,))


# -- state round trip --------------------------------------------------------------------------

JUDGE_KINDS = [
    (name, kind) for name in (*STAT_JUDGES, "threshold") for kind in ("errors", "latency")
] + [("mann-whitney", "custom"), ("ks", "custom"), ("welch-t", "custom"), ("threshold", "custom")]


def _interval(
    rng: np.random.Generator, kind: str, worse: float
) -> tuple[VersionCounts, VersionCounts]:
    if kind == "errors":
        return errors_vc(500, rng.binomial(500, 0.02)), errors_vc(
            500, rng.binomial(500, 0.02 * worse)
        )
    if kind == "latency":
        bounds = OTHER_BOUNDS if rng.random() < 0.3 else BOUNDS
        return latency_vc(rng, 200, 40), latency_vc(rng, 200, 40 * worse, bounds)
    return (
        VersionCounts(1, 0, values={"m": float(rng.normal(10, 1))}),
        VersionCounts(1, 0, values={"m": float(rng.normal(10 * worse, 1))}),
    )


@pytest.mark.parametrize(("name", "kind"), JUDGE_KINDS)
def test_state_round_trip_gives_identical_verdicts(name: str, kind: str) -> None:
    extra: dict[str, Any] = {}
    if name == "threshold":
        extra = {"max": {"errors": 5.0, "latency": 150.0, "custom": 14.0}[kind]}
    original = make_classic_judge(name, metric="m", kind=kind, min_intervals=3, **extra)
    rng = np.random.default_rng(29)
    for _ in range(6):
        original.update(*_interval(rng, kind, 1.2))
    original.update(*(errors_vc(0, 0), errors_vc(0, 0)))  # an empty interval is state too
    doc = json.loads(json.dumps(original.state(), allow_nan=False))
    restored = make_classic_judge(name, metric="m", kind=kind, min_intervals=3, **extra)
    restored.load_state(doc)
    assert restored.verdict() == original.verdict()
    assert restored.state() == original.state()
    for _ in range(8):
        s, c = _interval(rng, kind, 1.5)
        original.update(s, c)
        restored.update(s, c)
        assert restored.verdict() == original.verdict()


def test_round_trip_with_nan_effect_size_compares_equal() -> None:
    # Stable never errs: Kayenta's mean ratio is NaN. Details must still compare equal (and be
    # JSON) after a restart.
    original = MannWhitneyJudge("m", min_intervals=3)
    for i in range(6):
        original.update(errors_vc(100, 0), errors_vc(100, 1 + i % 3))
    restored = MannWhitneyJudge("m", min_intervals=3)
    restored.load_state(json.loads(json.dumps(original.state())))
    v = original.verdict()
    assert v.details["mean_ratio"] == "NaN"
    assert restored.verdict() == v
    json.dumps(v.to_dict(), allow_nan=False)


def test_load_state_rejects_another_judges_state() -> None:
    ks = KSJudge("m")
    with pytest.raises(ValueError, match="judge"):
        ks.load_state(MannWhitneyJudge("m").state())


# -- property: never raise, always a valid status ----------------------------------------------

counts = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False) | st.integers(
    0, 50
).map(float)


@st.composite
def version_counts(draw: st.DrawFn) -> VersionCounts:
    requests = draw(counts)
    errors = draw(counts)  # may exceed requests: the judges must cope, not crash
    layout = draw(st.sampled_from([BOUNDS, OTHER_BOUNDS, DISJOINT_BOUNDS, ()]))
    if layout:
        incs = draw(st.lists(counts, min_size=len(layout), max_size=len(layout)))
        cum = tuple(float(x) for x in np.cumsum(incs))
    else:
        cum = ()
    values = draw(
        st.dictionaries(st.just("m"), st.floats(allow_nan=True, allow_infinity=True), max_size=1)
    )
    return VersionCounts(requests, errors, tuple(layout), cum, values)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(st.tuples(version_counts(), version_counts()), max_size=8),
    name=st.sampled_from(list(CLASSIC_JUDGES)),
    kind=st.sampled_from(["errors", "latency", "custom"]),
)
def test_judges_never_raise_on_random_counts(
    data: list[tuple[VersionCounts, VersionCounts]], name: str, kind: str
) -> None:
    if name == "chi-square" and kind == "custom":
        return
    judge = make(name, kind, min_intervals=1)
    for s, c in data:
        judge.update(s, c)
        v = judge.verdict()
        assert isinstance(v.status, Status)
        assert v.status != Status.PASS
        json.dumps(v.to_dict(), allow_nan=False)
    json.dumps(judge.state(), allow_nan=False)
