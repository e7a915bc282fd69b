"""Judges primed with stable's history from before the canary (``spec.analysis.history``)."""

from __future__ import annotations

import json
import math

import pytest

from canaryd.controller import RolloutController
from canaryd.observation import Observation, PodCounts, VersionCounts
from canaryd.policy.model import CanaryPolicy
from canaryd.stats.sequential import SequentialErrorsJudge, SequentialLatencyJudge
from canaryd.stats.verdict import Status

BOUNDS = (25.0, 50.0, 100.0, 250.0, 500.0, math.inf)


def _vc(cum: tuple[float, ...], bounds: tuple[float, ...] = BOUNDS) -> VersionCounts:
    return VersionCounts(cum[-1], 0.0, bounds, cum)


# Busy history: stable's p90 is the 250 ms boundary (10 % slower than it, 40 % slower than 100).
HISTORY = _vc((500.0, 3000.0, 6000.0, 9000.0, 9900.0, 10000.0))
# The first stable interval of the canary is a quiet one: 99 % faster than 100 ms.
QUIET = _vc((60.0, 80.0, 99.0, 100.0, 100.0, 100.0))


def test_boundaries_come_from_history_and_testing_starts_at_once() -> None:
    j = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.9))
    j.prime(HISTORY)
    assert j.from_history and j.layout == BOUNDS
    # nearest stable's p50 and p90 in the history: 100 ms (60 %) and 250 ms (90 %)
    assert [j.layout[k] for k in j.chosen] == [100.0, 250.0]
    j.update(QUIET, QUIET)
    v = j.verdict()
    assert v.stable_samples == 100.0 and v.canary_samples == 100.0  # the first interval counts
    assert v.details["boundaries_chosen_from"] == "stable's 10000 requests before the canary"
    assert "before the canary" in j.history_note()


def test_without_history_the_first_stable_requests_choose_and_are_not_tested() -> None:
    j = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.9))
    j.update(QUIET, QUIET)
    assert j.verdict().status is Status.INCONCLUSIVE  # waiting for selection_requests
    big = _vc(tuple(x * 10 for x in QUIET.bucket_counts))
    j.update(big, big)
    assert not j.from_history
    assert [j.layout[k] for k in j.chosen] == [25.0, 100.0]  # the quiet traffic's quantiles
    j.update(QUIET, QUIET)
    assert "during the canary" in j.verdict().details["boundaries_chosen_from"]


def test_too_little_history_is_dropped_and_said() -> None:
    j = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.99))  # needs 1000 requests
    j.prime(QUIET)
    assert j.layout is None and not j.pending_s
    assert "only 100 stable requests before the canary (fewer than 1000)" in j.history_note()


def test_a_canary_layout_without_some_history_boundaries_is_narrowed() -> None:
    j = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.9))
    j.prime(HISTORY)
    bounds = (50.0, 100.0, 250.0, math.inf)  # no 25 or 500 ms bucket
    canary = _vc((80.0, 99.0, 100.0, 100.0), bounds)
    j.update(QUIET, canary)
    assert j.layout == bounds and [j.layout[k] for k in j.chosen] == [100.0, 250.0]
    assert j.verdict().canary_samples == 100.0

    k = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.9))
    k.prime(HISTORY)
    k.update(QUIET, _vc((80.0, 100.0, 100.0), (50.0, 250.0, math.inf)))  # lacks 100 ms
    assert any("lacks the boundaries chosen" in why for why in k.skipped)


def test_primed_latency_judge_round_trips() -> None:
    j = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.9))
    j.prime(HISTORY)
    j.update(QUIET, QUIET)
    j2 = SequentialLatencyJudge("latency", 0.01, 0.1, (0.5, 0.9))
    j2.load_state(json.loads(json.dumps(j.state())))
    # repr: a boundary nobody exceeded has a NaN ratio, and NaN != NaN
    assert repr(j2.verdict()) == repr(j.verdict()) and j2.history_note() == j.history_note()


def _pods(prefix: str, rates: list[float], n: float) -> tuple[PodCounts, ...]:
    return tuple(PodCounts(f"{prefix}-{i}", n, round(n * r)) for i, r in enumerate(rates))


def _version(pods: tuple[PodCounts, ...]) -> VersionCounts:
    return VersionCounts(sum(p.requests for p in pods), sum(p.errors for p in pods), pods=pods)


def test_error_history_seeds_the_pod_spread_not_the_test() -> None:
    stable_now = _version(_pods("s", [0.002] * 4, 1000))
    canary_now = _version(_pods("c", [0.006], 250))
    cold = SequentialErrorsJudge("errors", 0.01, 0.0)
    cold.update(stable_now, canary_now)
    assert cold.pods.warming()[0]  # 2 events per pod: how pods differ is not known yet
    warm = SequentialErrorsJudge("errors", 0.01, 0.0)
    warm.prime(_version(_pods("s", [0.002] * 4, 100_000)))  # 200 events per pod before
    warm.update(stable_now, canary_now)
    assert not warm.pods.warming()[0]
    assert warm.verdict().stable_samples == 4000.0  # history is not a baseline for the test
    assert "spread of stable's 4 pods" in warm.history_note()
    again = SequentialErrorsJudge("errors", 0.01, 0.0)
    again.load_state(json.loads(json.dumps(warm.state())))
    assert again.verdict() == warm.verdict() and again.history_note() == warm.history_note()
    # One or two pods show no spread: the history taught nothing about pods, and says nothing.
    for k in (1, 2):
        few = SequentialErrorsJudge("errors", 0.01, 0.0)
        few.prime(_version(_pods("s", [0.002] * k, 100_000)))
        assert few.history_note() == ""


POLICY = {
    "apiVersion": "canaryd.io/v1alpha1",
    "kind": "CanaryPolicy",
    "metadata": {"name": "p"},
    "spec": {
        "target": {"inferenceService": "m", "namespace": "ns"},
        "analysis": {
            "metrics": [
                {"name": "errors", "kind": "errors"},
                {"name": "latency", "kind": "latency", "quantiles": [0.5, 0.9]},
            ]
        },
    },
}


def test_controller_primes_once_and_notes_what_was_taken() -> None:
    c = RolloutController(CanaryPolicy.model_validate(POLICY))
    _, st = c.step(c.new_state("s", "c"), 0.0)
    st = c.prime(st, HISTORY)
    assert st.pre_canary_requests == 10000.0
    assert "latency boundaries from stable's 10,000 requests" in st.pre_canary_note
    assert c.prime(st, QUIET) is st  # once per evidence
    _, st = c.step(st, 60.0, Observation(0.0, 60.0, QUIET, QUIET))
    assert st.judges["latency"]["from_history"] is True
    restarted = c.restart_evidence(st, 60.0, "edited")
    assert restarted.pre_canary_requests is None  # fresh judges read the history again


def test_controller_refuses_unusable_history_and_says_why() -> None:
    c = RolloutController(CanaryPolicy.model_validate(POLICY))
    st = c.new_state("s", "c")
    bad = VersionCounts(-5.0, 0.0)
    primed = c.prime(st, bad)
    assert primed.pre_canary_requests == 0.0
    assert "counter reset" in primed.pre_canary_note
    missing = c.prime(st, None, "Prometheus unreachable")
    assert missing.pre_canary_note == (
        "no stable history before the canary (Prometheus unreachable)"
    )


@pytest.mark.parametrize("phase", ["pending", "progressing"])
def test_old_documents_read_history_only_before_the_start(phase: str) -> None:
    from canaryd.controller import RolloutState

    doc = RolloutState().to_dict()
    doc["phase"] = phase
    for k in ("pre_canary_requests", "pre_canary_note"):
        doc.pop(k)
    st = RolloutState.from_dict(doc)
    assert st.pre_canary_requests == (None if phase == "pending" else 0.0)
