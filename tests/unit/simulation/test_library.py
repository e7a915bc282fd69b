"""The scenario library: each bundled scenario reaches its expected outcome over 50 seeded runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from canaryd.simulation.commands import policy_for
from canaryd.simulation.engine import simulate
from canaryd.simulation.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = sorted((ROOT / "simulations").glob("*.yaml"))
RUNS = 50


def test_library_covers_the_required_cases() -> None:
    names = {p.stem for p in SCENARIOS}
    required = {
        "healthy",
        "error-regression",
        "latency-regression",
        "tail-regression",
        "slow-creep",
        "shared-incident",
        "low-traffic",
        "diurnal",
        "prometheus-outage",
        "intermittent-errors",
        "llm-10pct",
        "models-sentiment",
        "models-embeddings",
        "shadow-fail",
        "shadow-pass-then-fail",
    }
    assert required <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_reaches_expected_outcome(path: Path) -> None:
    sc, base = load_scenario(path)
    assert sc.expect is not None, f"{path.name} states no expectation"
    policy = policy_for(sc.policy, sc.policy_name, base, None)
    result = simulate(sc, policy, base, runs=RUNS, seed=20261125)
    share = result.outcomes[sc.expect["outcome"]] / RUNS
    assert share >= sc.expect["atLeast"], (path.name, result.outcomes)
    if "inShadow" in sc.expect:
        # Rolled back in the shadow phase: the canary never had weight, and served no user.
        shadow = [
            r
            for r in result.runs
            if r.outcome == "rolled_back" and all(s["weight"] == 0 for s in r.steps)
        ]
        assert all(r.impact.user_requests == 0 and r.impact.shadow_requests > 0 for r in shadow)
        assert len(shadow) / RUNS >= sc.expect["inShadow"], (path.name, len(shadow))
    if "atWeight" in sc.expect:
        # Rolled back from this step: the last weight before the final 0.
        at = [
            r
            for r in result.runs
            if r.outcome == "rolled_back"
            and len(r.steps) >= 2
            and r.steps[-2]["weight"] == sc.expect["atWeight"]
        ]
        assert len(at) / RUNS >= sc.expect["atLeast"], (path.name, [r.steps for r in result.runs])
