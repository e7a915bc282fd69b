"""The simulator's shadow phase: mirrored canary requests as a share of all traffic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.simulation.commands import policy_for
from canaryd.simulation.engine import simulate
from canaryd.simulation.scenario import Canary, load_scenario

ROOT = Path(__file__).resolve().parents[3]
RUNS = 50
SEED = 20261125


def _run(name: str, runs: int = RUNS, **kw: object):  # type: ignore[no-untyped-def]
    sc, base = load_scenario(ROOT / "simulations" / f"{name}.yaml")
    policy = policy_for(sc.policy, sc.policy_name, base, None)
    return sc, policy, simulate(sc, policy, base, runs=runs, seed=SEED, **kw)  # type: ignore[arg-type]


def test_a_shadow_failure_never_reaches_a_user() -> None:
    _, policy, result = _run("shadow-fail")
    assert policy.spec.steps.shadow is not None
    assert result.outcomes["rolled_back"] == RUNS
    in_shadow = [r for r in result.runs if [s["weight"] for s in r.steps] == [0, 0]]
    assert len(in_shadow) >= 0.96 * RUNS
    for r in in_shadow:
        assert r.impact.user_requests == 0 and r.impact.user_errors == 0
        assert r.impact.shadow_requests == r.canary_requests > 0
        assert r.decided_at_s is not None and r.decided_at_s <= policy.spec.steps.shadow.duration
        assert "no user was exposed" in r.steps[-1]["reason"]
        assert r.decisions[-1].impact == r.impact
    for r in result.runs:
        if r not in in_shadow:  # caught only at 10 %: its users are counted
            assert r.impact.user_requests > 0


def test_a_canary_that_passes_shadow_is_judged_again_on_users() -> None:
    _, policy, result = _run("shadow-pass-then-fail")
    assert policy.spec.steps.shadow is not None
    rolled = [r for r in result.runs if [s["weight"] for s in r.steps] == [0, 10, 0]]
    assert len(rolled) >= 0.96 * RUNS
    for r in rolled:
        passed_at = r.steps[1]["t"]
        assert passed_at >= policy.spec.steps.shadow.duration
        assert r.steps[1]["reason"].startswith("shadow passed")
        # The shadow's copies count zero; the users are those served at 10 % until the rollback.
        assert r.impact.shadow_requests >= policy.spec.steps.shadow.min_canary_requests
        assert r.impact.user_requests + r.impact.shadow_requests == r.canary_requests
        assert r.impact.user_errors + r.impact.shadow_errors == r.canary_errors
        assert r.decided_at_s is not None
        live_s = r.decided_at_s - passed_at
        # 20 rps x 10 %: about 2 user requests a second reached the canary, no more.
        assert 1.5 * live_s <= r.impact.user_requests <= 2.5 * live_s


def test_mirrored_share_and_stable_serving_everything() -> None:
    """In shadow every request is served by stable and mirrorPercent of them are copied."""
    sc, policy, _ = _run("shadow-fail", runs=1)
    intervals: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    mirrored: dict[float, np.ndarray] = {}

    def sink(t, req, err, hs, hc):  # type: ignore[no-untyped-def]
        intervals[t] = (req, err)

    def msink(t, cum):  # type: ignore[no-untyped-def]
        mirrored[t] = cum

    sc2 = sc.model_copy(update={"canary": Canary()})  # as healthy as stable: passes the shadow
    res = simulate(sc2, policy, Path("."), runs=1, seed=3, tick_sink=sink, mirror_sink=msink)
    shadow_end = res.runs[0].steps[1]["t"] if len(res.runs[0].steps) > 1 else sc.duration
    t = max(x for x in intervals if x <= shadow_end)
    stable_req, canary_req = intervals[t][0]
    assert canary_req == mirrored[t][0]  # every canary request was a mirrored copy
    share = policy.spec.steps.mirror_percent() / 100
    assert abs(canary_req / stable_req - share) < 4 * np.sqrt(share * (1 - share) / stable_req)


def test_policies_without_shadow_draw_nothing_more() -> None:
    """A policy without a shadow phase sees the traffic it saw before shadow support existed."""
    sc, base = load_scenario(ROOT / "simulations" / "error-regression.yaml")
    policy = policy_for(sc.policy, sc.policy_name, base, None)
    calls: list[float] = []
    res = simulate(sc, policy, base, runs=3, seed=1, mirror_sink=lambda t, c: calls.append(t))
    assert calls == []
    for r in res.runs:
        assert r.impact.shadow_requests == 0
        assert r.impact.user_requests == r.canary_requests


def test_chaos_restarts_do_not_change_a_shadow_rollout(tmp_path: Path) -> None:
    path = ROOT / "simulations" / "shadow-pass-then-fail.yaml"
    out = []
    for chaos in ("0", "4"):
        res = CliRunner().invoke(
            main,
            [
                "simulate",
                str(path),
                "--runs",
                "5",
                "--seed",
                "7",
                "--json",
                "--chaos-restarts",
                chaos,
            ],
        )
        assert res.exit_code == 0, res.output  # several runs: the summary, not a CI verdict
        out.append(json.loads(res.output)["results"])
    assert out[0] == out[1]
    assert all("impact" in r for r in out[0])


def test_simulate_reports_the_user_impact() -> None:
    res = CliRunner().invoke(main, ["simulate", str(ROOT / "simulations" / "shadow-fail.yaml")])
    assert res.exit_code == 1, res.output  # one run, rolled back: "worse" for a CI gate
    assert "user impact: the canary served 0 user requests (0 failed)" in res.output
