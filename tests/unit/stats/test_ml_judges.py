"""The ML-aware judges: LLM signals, category shares, delayed-label quality."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from canaryd.observation import Histogram, LabelCounts, VersionCounts
from canaryd.policy.model import OTHER_CATEGORY, CanaryPolicy
from canaryd.stats.categorical import SELECTION_OUTCOMES, CategoryShares, SequentialCategoricalJudge
from canaryd.stats.factory import build_judges
from canaryd.stats.llm import SignalJudge
from canaryd.stats.quality import SequentialQualityJudge
from canaryd.stats.verdict import Status, Verdict

TOKENS = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, math.inf)
TPOT_MS = (10.0, 25.0, 50.0, 75.0, 100.0, math.inf)
TTFT_MS = (100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, math.inf)


def _hist(
    rng: np.random.Generator, n: int, bounds: tuple[float, ...], median: float, sigma: float
) -> Histogram:
    cdf = stats.lognorm(s=sigma, scale=median).cdf(np.asarray(bounds[:-1]))
    p = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    counts = rng.multinomial(n, p / p.sum())
    return Histogram(bounds, tuple(float(x) for x in np.cumsum(counts)))


def _llm(
    rng: np.random.Generator,
    n: int,
    ttft: float = 300.0,
    tpot: float = 30.0,
    tokens: float = 220.0,
    prompt: float = 400.0,
    per_token: bool = False,
) -> VersionCounts:
    itl = _hist(rng, n, TPOT_MS, tpot, 0.25)
    if per_token:
        itl = Histogram(
            itl.bounds, itl.cumulative, "vllm:inter_token_latency_seconds", per_token=True
        )
    return VersionCounts(
        float(n),
        0.0,
        histograms={
            "ttft": _hist(rng, n, TTFT_MS, ttft, 0.5),
            "inter_token": itl,
            "generation_tokens": _hist(rng, n, TOKENS, tokens, 0.6),
            "prompt_tokens": _hist(rng, n, TOKENS, prompt, 0.8),
        },
    )


def _feed(judge: object, rng: np.random.Generator, intervals: int, **canary: float) -> Verdict:
    for _ in range(intervals):
        judge.update(_llm(rng, 450), _llm(rng, 50, **canary))  # type: ignore[attr-defined]
    return judge.verdict()  # type: ignore[attr-defined,no-any-return]


def test_longer_answers_are_named_as_such_with_per_token_latency_unchanged() -> None:
    rng = np.random.default_rng(1)
    j = SignalJudge("output-length", "output-length", 0.002, 0.2, (0.5, 0.9))
    v = _feed(j, rng, 40, tokens=330.0)
    assert v.status is Status.FAIL
    assert re.match(r"answers \d+ % longer \(median \d+ vs \d+ tokens\)", v.reason), v.reason
    assert "per-token latency unchanged" in v.reason
    assert "prompts unchanged" in v.reason
    assert "ms" not in v.reason.split("per-token")[0]  # lengths are in tokens, not ms
    assert "canary_p50_tokens" in v.details and "boundaries" in v.details
    assert v.details["boundaries"][0]["unit"] == "tokens"


def test_ttft_regression_reads_as_time_to_first_token() -> None:
    rng = np.random.default_rng(2)
    j = SignalJudge("ttft", "ttft", 0.002, 0.1, (0.5, 0.9))
    v = _feed(j, rng, 30, ttft=420.0)
    assert v.status is Status.FAIL
    assert v.reason.startswith("time to first token is longer than tolerated")
    assert "wait more than" in v.reason and "for the first token" in v.reason
    # the same judge on a healthy canary does not fail
    healthy = _feed(SignalJudge("ttft", "ttft", 0.002, 0.1, (0.5, 0.9)), rng, 30)
    assert healthy.status is not Status.FAIL


def test_per_token_inter_token_latency_is_never_judged() -> None:
    rng = np.random.default_rng(3)
    j = SignalJudge("inter-token", "itl", 0.002, 0.1, (0.5, 0.9))
    for _ in range(20):
        j.update(_llm(rng, 450, per_token=True), _llm(rng, 50, tpot=60.0, per_token=True))
    v = j.verdict()
    assert v.status is Status.INCONCLUSIVE
    assert "vllm:inter_token_latency_seconds" in v.reason and "vLLM >= 0.11" in v.reason


def test_signal_judge_state_round_trip_is_exact() -> None:
    rng = np.random.default_rng(4)
    a = SignalJudge("output-length", "len", 0.005, 0.2, (0.5, 0.9))
    for _ in range(12):
        a.update(_llm(rng, 300), _llm(rng, 60, tokens=260.0))
    b = SignalJudge("output-length", "len", 0.005, 0.2, (0.5, 0.9))
    b.load_state(json.loads(json.dumps(a.state())))
    assert b.verdict().to_dict() == a.verdict().to_dict()
    s, c = _llm(rng, 300), _llm(rng, 60)
    a.update(s, c)
    b.update(s, c)
    assert b.state() == a.state()


# --- categories --------------------------------------------------------------------------
SHARES = {"legit": 0.95, "fraud": 0.03, "review": 0.02}


def _cats(rng: np.random.Generator, n: int, shares: dict[str, float]) -> dict[str, float]:
    counts = rng.multinomial(n, list(shares.values()))
    return {k: float(x) for k, x in zip(shares, counts, strict=True) if x > 0}


def _vcat(counts: dict[str, float]) -> VersionCounts:
    return VersionCounts(sum(counts.values()), 0.0, categories={"cls": counts})


def test_one_class_tripled_is_named_with_estimate_and_interval() -> None:
    rng = np.random.default_rng(5)
    j = SequentialCategoricalJudge("cls", 0.003, 0.2, noun="predicted class")
    moved = {"legit": 0.89, "fraud": 0.09, "review": 0.02}
    for _ in range(60):
        j.update(_vcat(_cats(rng, 900, SHARES)), _vcat(_cats(rng, 100, moved)))
    v = j.verdict()
    assert v.status is Status.FAIL
    assert "predicted class `fraud`: " in v.reason and "x stable's share [" in v.reason
    row = next(r for r in v.details["categories"] if r["category"] == "fraud")
    lo, hi = row["interval"]
    assert lo <= 3.0 <= hi and lo > 1.2
    assert "`review`" not in v.reason  # unchanged classes are not named


def test_a_a_shares_rarely_fail_and_pass_when_shown_equal() -> None:
    rng = np.random.default_rng(6)
    fails = 0
    for _ in range(40):
        j = SequentialCategoricalJudge("cls", 0.01, 0.2, categories=list(SHARES))
        for _ in range(30):
            j.update(_vcat(_cats(rng, 900, SHARES)), _vcat(_cats(rng, 100, SHARES)))
        fails += j.verdict().status is Status.FAIL
    assert fails <= 2
    big = SequentialCategoricalJudge("cls", 0.01, 0.5, categories=["a", "b"])
    for _ in range(40):
        big.update(
            _vcat(_cats(rng, 5000, {"a": 0.5, "b": 0.5})),
            _vcat(_cats(rng, 5000, {"a": 0.5, "b": 0.5})),
        )
    assert big.verdict().status is Status.PASS


def test_categories_are_learned_from_stable_then_frozen_and_late_ones_pooled() -> None:
    j = SequentialCategoricalJudge("cls", 0.01, 0.2, noun="class")
    j.update(_vcat({"a": 60.0, "b": 40.0}), _vcat({"a": 6.0, "b": 4.0}))
    v = j.verdict()
    assert v.status is Status.INCONCLUSIVE and f"{SELECTION_OUTCOMES} stable outcomes" in v.reason
    j.update(_vcat({"a": 60.0, "b": 40.0}), _vcat({"a": 6.0, "b": 4.0}))  # 200 seen: frozen
    assert j.slots == ("a", "b", OTHER_CATEGORY)
    for _ in range(30):
        j.update(_vcat({"a": 60.0, "b": 40.0}), _vcat({"a": 3.0, "b": 3.0, "new": 4.0}))
    v = j.verdict()
    assert v.status is Status.FAIL
    assert "other classes (`new`)" in v.reason
    assert v.details["pooled_as_other"] == ["new"]


def test_split_changes_between_intervals_are_absorbed() -> None:
    # A/A with the canary's share jumping between 5 % and 60 %: shares must not look moved.
    rng = np.random.default_rng(7)
    engine = CategoryShares(400, 3, 0.0)
    p = np.array([0.7, 0.2, 0.1])
    for t in range(40):
        w = 0.05 if t % 2 else 0.6
        n = rng.poisson(1000, 400)
        nc = rng.binomial(n, w)
        engine.update(rng.multinomial(n - nc, p), rng.multinomial(nc, p))
    assert float(np.mean(engine.max_log_e >= math.log(100))) <= 0.02


def test_categorical_state_round_trip_is_exact() -> None:
    rng = np.random.default_rng(8)
    a = SequentialCategoricalJudge("cls", 0.01, 0.2)
    for _ in range(10):
        a.update(_vcat(_cats(rng, 300, SHARES)), _vcat(_cats(rng, 30, SHARES)))
    b = SequentialCategoricalJudge("cls", 0.01, 0.2)
    b.load_state(json.loads(json.dumps(a.state())))
    assert b.verdict().to_dict() == a.verdict().to_dict()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from("abcd"), st.integers(0, 50)),
            st.dictionaries(st.sampled_from("abcde"), st.integers(0, 50)),
        ),
        max_size=8,
    )
)
def test_categorical_judge_never_crashes(rows: list[tuple[dict[str, int], dict[str, int]]]) -> None:
    j = SequentialCategoricalJudge("cls", 0.01, 0.2, categories=["a", "b"])
    for s, c in rows:
        j.update(
            _vcat({k: float(v) for k, v in s.items()}), _vcat({k: float(v) for k, v in c.items()})
        )
        assert isinstance(j.verdict(), Verdict)


# --- quality -------------------------------------------------------------------------------
def _vq(requests: float, correct: float, labelled: float) -> VersionCounts:
    return VersionCounts(requests, 0.0, labels={"acc": LabelCounts(correct, labelled)})


def test_accuracy_drop_fails_and_reports_points_and_unlabelled() -> None:
    rng = np.random.default_rng(9)
    j = SequentialQualityJudge("acc", 0.005, 0.1)
    for _ in range(120):
        ls, lc = 800, 200
        j.update(
            _vq(1000, float(rng.binomial(ls, 0.92)), ls),
            _vq(300, float(rng.binomial(lc, 0.90)), lc),
        )
    v = j.verdict()
    assert v.status is Status.FAIL
    assert "canary accuracy is worse than tolerated" in v.reason
    assert "points" in v.reason and "not labelled yet" in v.reason
    assert v.details["canary_unlabelled"] == 120 * 100
    assert v.canary_events == v.canary_samples - round(
        v.details["canary_accuracy"] * v.canary_samples
    )


def test_quality_is_inconclusive_until_labels_arrive() -> None:
    j = SequentialQualityJudge("acc", 0.005, 0.1)
    j.update(_vq(1000, 0, 0), _vq(100, 0, 0))
    v = j.verdict()
    assert v.status is Status.INCONCLUSIVE
    assert "no canary predictions labelled yet" in v.reason
    assert "100 canary and 1000 stable predictions not labelled yet" in v.reason


def test_policy_builds_the_ml_judges() -> None:
    doc = {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "CanaryPolicy",
        "metadata": {"name": "m"},
        "spec": {
            "target": {"namespace": "n", "inferenceService": "m"},
            "analysis": {
                "source": {"preset": "vllm"},
                "metrics": [
                    {"name": "ttft", "kind": "ttft"},
                    {"name": "itl", "kind": "inter-token"},
                    {"name": "len", "kind": "output-length"},
                    {"name": "fin", "kind": "finish-reason"},
                    {
                        "name": "cls",
                        "kind": "categorical",
                        "query": 'sum by ({version_label}, predicted_class) (x{ns="{namespace}"})',
                        "categoryLabel": "predicted_class",
                    },
                    {
                        "name": "acc",
                        "kind": "quality",
                        "correctQuery": 'sum by ({version_label}) (c{ns="{namespace}"})',
                        "labelledQuery": 'sum by ({version_label}) (l{ns="{namespace}"})',
                    },
                ],
            },
        },
    }
    judges = build_judges(CanaryPolicy.model_validate(doc))
    kinds = [type(j).__name__ for j in judges]
    assert kinds == [
        "SignalJudge",
        "SignalJudge",
        "SignalJudge",
        "SequentialCategoricalJudge",
        "SequentialCategoricalJudge",
        "SequentialQualityJudge",
    ]
    fin = judges[3]
    assert isinstance(fin, SequentialCategoricalJudge)
    assert fin.slots == ("stop", "length", "abort", "error", "repetition", OTHER_CATEGORY)
    assert fin.noun == "finish reason"
    cls = judges[4]
    assert isinstance(cls, SequentialCategoricalJudge) and cls.noun == "predicted class"
    assert judges[0].inner.quantiles == (0.5, 0.9)  # type: ignore[attr-defined]


@pytest.mark.parametrize("qs", [0.01, 0.3, 0.8])
@pytest.mark.parametrize(("nc", "ns"), [(40, 360), (100, 100)])
def test_binomial_e_value_is_conservative_at_the_tolerance_boundary(
    qs: float, nc: int, ns: int
) -> None:
    """E[mixture LR] <= 1 when the canary's share sits exactly at (1 + tol) x stable's, given
    the versions' totals (binomial counts: the exact law, summed over every outcome)."""
    from canaryd.stats.ratio import Grid, loglik_increment

    rho0 = 1.2
    grid = Grid.make(rho0)
    xc = np.arange(nc + 1)
    xs = np.arange(ns + 1)
    pc = stats.binom.pmf(xc, nc, min(1.0, rho0 * qs))
    ps = stats.binom.pmf(xs, ns, qs)
    grid_c, grid_s = np.meshgrid(xc, xs, indexing="ij")
    rows = grid_s.size
    ll = loglik_increment(
        grid.log_rho, np.full(rows, ns), grid_s.ravel(), np.full(rows, nc), grid_c.ravel()
    )
    mix = np.exp(ll + grid.log_w_alt[None, :]).sum(axis=1) / np.exp(ll[:, grid.centre])
    expected = float((pc[:, None] * ps[None, :]).ravel() @ mix)
    assert expected <= 1.0 + 1e-9, expected


def test_a_high_cardinality_label_keeps_the_state_small() -> None:
    from canaryd.policy.model import MAX_CATEGORIES
    from canaryd.stats.categorical import MAX_POOLED_NAMES

    j = SequentialCategoricalJudge("cls", 0.01, 0.2)
    many = {f"c{i}": 10.0 for i in range(40)}
    j.update(_vcat(many), _vcat(many))  # 400 stable outcomes: the categories are chosen
    assert j.slots is not None and len(j.slots) == MAX_CATEGORIES + 1
    for t in range(20):
        fresh = {f"u{t}-{i}": 1.0 for i in range(50)}  # a new value every time (an id label)
        j.update(_vcat({**many, **fresh}), _vcat(many))
    state = json.dumps(j.state())
    assert len(j.seen_s) == MAX_CATEGORIES + MAX_POOLED_NAMES + 1  # tested, named pooled, (other)
    assert len(state) < 200_000
    assert isinstance(j.verdict(), Verdict)


def test_a_real_per_token_slowdown_is_reported_beside_the_length() -> None:
    rng = np.random.default_rng(11)
    j = SignalJudge("output-length", "output-length", 0.002, 0.2, (0.5, 0.9))
    for _ in range(40):
        j.update(_llm(rng, 900), _llm(rng, 300, tokens=330.0, tpot=40.0))
    v = j.verdict()
    assert v.status is Status.FAIL
    assert re.search(r"per-token latency \+\d+ % \(p50", v.reason), v.reason
    assert "prompts unchanged" in v.reason
