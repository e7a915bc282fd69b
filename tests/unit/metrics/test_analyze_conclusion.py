"""How ``analyze`` turns final verdicts into a gate's conclusion, and when it stops early."""

from __future__ import annotations

import math

from canaryd.metrics.analyze import Conclusion, analyze_window, conclude, no_data_runs
from canaryd.metrics.replay import TraceSource
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.model import CanaryPolicy
from canaryd.stats.verdict import Status, Verdict


def policy(**promotion: object) -> CanaryPolicy:
    return CanaryPolicy.model_validate(
        {
            "apiVersion": "canaryd.io/v1alpha1",
            "kind": "CanaryPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "target": {"namespace": "ns", "inferenceService": "m"},
                "analysis": {"metrics": [{"name": "errors", "kind": "errors"}]},
                **({"promotion": promotion} if promotion else {}),
            },
        }
    )


def v(status: Status, critical: bool = True) -> Verdict:
    return Verdict("errors", "sequential", status, "why", critical=critical, stable_samples=1e4)


def test_rules_in_order() -> None:
    p = policy()
    assert conclude(p, [v(Status.FAIL)], usable=0, canary_requests=0).outcome == "worse"
    assert conclude(p, [v(Status.CONTINUE)], usable=0, canary_requests=0).outcome == "no_data"
    stopped = conclude(p, [v(Status.CONTINUE)], usable=3, canary_requests=10, stopped="gone")
    assert stopped == Conclusion("inconclusive", "the window was not analysed to its end: gone")
    assert conclude(p, [v(Status.INCONCLUSIVE)], usable=3, canary_requests=9).outcome == (
        "inconclusive"
    )
    # A non-critical failure or inconclusive metric does not decide the gate.
    quiet = [v(Status.CONTINUE), v(Status.FAIL, critical=False)]
    assert conclude(p, quiet, usable=3, canary_requests=9).outcome == "no_worse"
    assert conclude(p, [v(Status.PASS)], usable=3, canary_requests=9) == Conclusion(
        "no_worse", "every critical metric is shown no worse than tolerated"
    )


def test_the_policys_promotion_rules_hold_the_gate() -> None:
    strict = policy(criterion="nonInferiority")
    assert conclude(strict, [v(Status.CONTINUE)], usable=3, canary_requests=9).outcome == (
        "inconclusive"
    )
    assert conclude(strict, [v(Status.PASS)], usable=3, canary_requests=9).outcome == "no_worse"
    mde = policy(minDetectableEffect={"errors": 2.0})
    few = conclude(mde, [v(Status.CONTINUE)], usable=3, canary_requests=10)
    assert few.outcome == "inconclusive" and few.reason.startswith("not enough evidence")
    many = conclude(mde, [v(Status.CONTINUE)], usable=3, canary_requests=1e9)
    assert many.outcome == "no_worse"


def test_exit_codes_and_fail_on() -> None:
    assert Conclusion("no_worse", "").exit_code() == 0
    assert Conclusion("worse", "").exit_code() == 1
    assert Conclusion("inconclusive", "").exit_code() == 2
    assert Conclusion("no_data", "").exit_code() == 2
    assert Conclusion("no_data", "").exit_code("inconclusive") == 1
    assert Conclusion("no_worse", "").exit_code("inconclusive") == 0


BOUNDS = (50.0, 100.0, math.inf)


def obs(t: float, canary_errors: float = 1) -> Observation:
    return Observation(
        t,
        t + 60,
        VersionCounts(1000, 5, BOUNDS, (500.0, 900.0, 1000.0)),
        VersionCounts(100, canary_errors, BOUNDS, (50.0, 90.0, 100.0)),
    )


def test_stop_ends_the_window_at_the_first_interval_it_names() -> None:
    # Three intervals with data, then a gap of five the source cannot answer.
    source = TraceSource([obs(0), obs(60), obs(120)])
    asked: list[float] = []

    def stop(o: Observation) -> str | None:
        asked.append(o.start_s)
        return "Prometheus stopped answering" if len(asked) == 2 else None

    got = analyze_window(source, policy(), stable="s", canary="c", start_s=0, end_s=480, stop=stop)
    assert asked == [180, 240]
    assert got["intervals"] == 8 and got["usable_intervals"] == 3
    assert len(got["no_data"]) == 2 and got["stopped"] == "Prometheus stopped answering"
    assert got["outcome"] == "inconclusive"


def test_a_failure_on_part_of_the_window_is_still_worse() -> None:
    source = TraceSource([obs(t, canary_errors=40) for t in range(0, 600, 60)])
    got = analyze_window(
        source, policy(), stable="s", canary="c", start_s=0, end_s=1200, stop=lambda o: "gone"
    )
    assert got["stopped"] == "gone" and got["outcome"] == "worse"


def test_consecutive_no_data_with_one_reason_is_one_run() -> None:
    nd = [
        {"start": 0.0, "end": 60.0, "reason": "a"},
        {"start": 60.0, "end": 120.0, "reason": "a"},
        {"start": 120.0, "end": 180.0, "reason": "b"},
        {"start": 240.0, "end": 300.0, "reason": "b"},
    ]
    assert no_data_runs(nd) == [
        (0.0, 120.0, 2, "a"),
        (120.0, 180.0, 1, "b"),
        (240.0, 300.0, 1, "b"),
    ]
