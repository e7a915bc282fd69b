"""VersionCounts: every field is validated, and every field round-trips through JSON."""

from __future__ import annotations

import json
import math

import pytest

from canaryd.observation import Histogram, LabelCounts, Observation, VersionCounts

B = (10.0, 100.0, math.inf)
GOOD = VersionCounts(
    10,
    1,
    B,
    (3, 8, 10),
    histograms={
        "ttft": Histogram(B, (2, 9, 10), "vllm:time_to_first_token_seconds"),
        "inter_token": Histogram(B, (0, 4, 7), "vllm:inter_token_latency_seconds", per_token=True),
    },
    categories={"cls": {"a": 7.0, "b": 3.0}},
    labels={"acc": LabelCounts(40, 44)},
)


def test_valid_counts_have_no_problem() -> None:
    assert GOOD.problem() is None


@pytest.mark.parametrize(
    ("counts", "why"),
    [
        (
            VersionCounts(1, 0, histograms={"ttft": Histogram(B, (2, 1, 3))}),
            "ttft histogram: histogram buckets are not cumulative (partial bucket set or reset)",
        ),
        (
            VersionCounts(1, 0, histograms={"ttft": Histogram((10.0, 5.0, math.inf), (1, 1, 1))}),
            "ttft histogram: histogram bounds are not increasing",
        ),
        (
            VersionCounts(1, 0, histograms={"generation_tokens": Histogram((10.0,), (1,))}),
            "generation_tokens histogram: histogram lacks the +Inf bucket",
        ),
        (
            VersionCounts(1, 0, histograms={"ttft": Histogram(B, (1, 2))}),
            "ttft histogram: histogram bounds and counts differ in length",
        ),
        (
            VersionCounts(1, 0, histograms={"ttft": Histogram(B, (1, math.nan, 3))}),
            "ttft histogram: NaN in the counts",
        ),
        (
            VersionCounts(1, 0, histograms={"ttft": Histogram(B, (-1, 2, 3))}),
            "ttft histogram: negative increment (counter reset)",
        ),
        (
            VersionCounts(1, 0, categories={"cls": {"a": -2.0}}),
            "cls: negative count of category 'a' (counter reset)",
        ),
        (
            VersionCounts(1, 0, categories={"cls": {"a": math.nan}}),
            "cls: count of category 'a' is nan",
        ),
        (
            VersionCounts(1, 0, labels={"acc": LabelCounts(5, 4)}),
            "acc: more correct (5) than labelled (4) predictions",
        ),
        (
            VersionCounts(1, 0, labels={"acc": LabelCounts(-1, 4)}),
            "acc: negative label count (counter reset)",
        ),
        (
            VersionCounts(1, 0, labels={"acc": LabelCounts(1, math.inf)}),
            "acc: NaN or Inf in the label counts",
        ),
    ],
)
def test_every_field_is_validated(counts: VersionCounts, why: str) -> None:
    assert counts.problem() == why
    obs = Observation(0, 60, GOOD, counts).validated()
    assert obs.no_data_reason == f"canary: {why}"


def test_labels_may_exceed_the_intervals_requests() -> None:
    # Labels arrive late: they belong to earlier predictions.
    assert VersionCounts(2, 0, labels={"acc": LabelCounts(30, 31)}).problem() is None


def test_json_round_trip_is_exact() -> None:
    back = VersionCounts.from_dict(json.loads(json.dumps(GOOD.to_dict())))
    assert back == GOOD
    assert back.histograms["inter_token"].per_token


def test_unknown_signal_is_refused() -> None:
    d = GOOD.to_dict()
    d["histograms"]["tpot"] = d["histograms"].pop("ttft")
    with pytest.raises(ValueError, match="unknown histogram signal 'tpot'"):
        VersionCounts.from_dict(d)
