"""``canaryd plan``: the schedule and floors it starts from, its exit codes and its errors."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.exitcodes import ExitCode
from canaryd.policy.loader import load_policy
from canaryd.simulation.plan import Baseline, Planner, baseline_from_flags, schedule_of

ROOT = Path(__file__).resolve().parents[3]
EDGE = ROOT / "policies" / "edge-low-traffic.yaml"

SMALL = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: small}}
spec:
  target: {{namespace: ns, inferenceService: m}}
  router: {{type: kserve}}
  steps: {{weights: [10, 50], minDwell: 5m, minCanaryRequests: 100}}
  analysis:
    interval: 1m
    alpha: 0.01
    metrics:
      - {{name: errors, kind: errors, judge: sequential, maxRelativeIncrease: 0.2}}
      - {{name: latency, kind: latency, judge: sequential, maxRelativeIncrease: 0.2,
         quantiles: [0.5, 0.9]}}
    source: {{preset: knative}}
  promotion:
    criterion: afterSteps
    maxDuration: {max_duration}
{mde}
"""


def small(tmp_path: Path, max_duration: str = "1h", mde: str = "") -> Path:
    p = tmp_path / "small.yaml"
    p.write_text(SMALL.format(max_duration=max_duration, mde=mde), encoding="utf-8")
    return p


def test_the_schedule_follows_the_steps_and_a_shortfall_extends_the_horizon() -> None:
    policy = load_policy(EDGE, None)
    s = schedule_of(policy, 0.2, baseline_from_flags(0.005, 80, 0.5, "knative"))
    # 0.2 rps x 20 % x 3h = 432 >= minCanaryRequests 300: minDwell sets both steps' length.
    assert s.steps_end_s == 6 * 3600
    assert s.canary_share[0] == 0.2 and s.canary_share[-1] == 0.5
    # errors x3 needs more canary requests than the steps bring: the rollout pauses at its
    # last step and a failing metric still rolls it back until maxDuration.
    assert s.horizon_s == policy.spec.promotion.max_duration
    assert "pauses at its last step" in s.horizon_why
    assert len(s.canary_share) * s.interval_s == s.horizon_s


def test_the_horizon_names_maxduration_when_it_ends_the_rollout_first(tmp_path: Path) -> None:
    flat = baseline_from_flags(0.005, 80, 0.5, "knative")
    # At 50 rps both 5m steps are met by 10m; a 6m maxDuration ends the rollout before that.
    s = schedule_of(load_policy(small(tmp_path, "6m"), None), 50, flat)
    assert (s.steps_end_s, s.horizon_s) == (600, 360)
    assert s.horizon_why == "maxDuration, which ends the rollout before the end of the steps (10m)"
    s = schedule_of(load_policy(small(tmp_path, "1h"), None), 50, flat)
    assert s.horizon_s == 600 and s.horizon_why.startswith("the end of the steps")
    # A minDetectableEffect hold that maxDuration cuts short says so; one it does not, not.
    hold = "    minDetectableEffect: {errors: 1.5}\n    onInsufficientEvidence: hold"
    s = schedule_of(load_policy(small(tmp_path, "20m", hold), None), 50, flat)
    assert s.horizon_s == 1200
    assert s.horizon_why.endswith(
        "holds at its last step, and maxDuration ends it before it has them"
    )
    s = schedule_of(load_policy(small(tmp_path, "1h", hold), None), 50, flat)
    assert s.horizon_s < 3600 and s.horizon_why.endswith("holds at its last step until it has them")


def test_the_floor_falls_as_the_effect_grows_and_is_never_met_inside_the_tolerance() -> None:
    policy = load_policy(EDGE, None)
    pl = Planner(policy, 0.2, baseline_from_flags(0.005, 80, 0.5, "knative"), 10, 0)
    times = [pl.error_floor_s(r) for r in (1.5, 2, 3, 5)]
    assert all(a > b for a, b in itertools.pairwise(times))
    assert pl.error_floor_s(1.1) == math.inf  # inside maxRelativeIncrease 0.2
    lat = [pl.latency_floor_s(x) for x in (5, 10, 25, 50)]
    assert all(a >= b for a, b in itertools.pairwise(lat)) and lat[-1] < lat[0]


def test_on_too_few_stable_pods_the_floor_is_that_of_the_widened_null() -> None:
    # One stable pod: the judges test against rho0 x podSpread for the whole rollout, so no
    # test they run detects errors x2 or a +10 % median, and the floor (which picks what plan
    # tries) says so instead of quoting alike-pods floors the judges cannot reach.
    from dataclasses import replace

    from canaryd.simulation.scenario import Pods

    policy = load_policy(EDGE, None)
    flat = baseline_from_flags(0.005, 80, 0.5, "knative")
    pl = Planner(policy, 0.2, flat, 10, 0)
    one = Planner(policy, 0.2, replace(flat, pods=Pods(stable=1, canary=1)), 10, 0)
    three = Planner(policy, 0.2, replace(flat, pods=Pods(stable=3, canary=1)), 10, 0)
    assert math.isfinite(pl.error_floor_s(3)) and one.error_floor_s(3) == math.inf
    assert math.isfinite(one.error_floor_s(10)) and one.error_floor_s(10) > pl.error_floor_s(10)
    assert three.error_floor_s(3) == pl.error_floor_s(3)  # estimated, not assumed
    assert one.latency_floor_s(50) > pl.latency_floor_s(50)
    assert one.latency_floor_s(100) == math.inf  # x2 slower: within the assumed x3


def test_a_pod_spread_of_1_is_said_as_pods_alike_not_less_than_x1(tmp_path: Path) -> None:
    from dataclasses import replace

    from canaryd.simulation.plan import pod_assumptions
    from canaryd.simulation.scenario import Pods

    errors = "kind: errors, judge: sequential, maxRelativeIncrease: 0.2"
    text = small(tmp_path).read_text().replace(errors + "}", errors + ", podSpread: 1}")
    assert "podSpread: 1" in text
    (tmp_path / "one.yaml").write_text(text)
    policy = load_policy(tmp_path / "one.yaml", None)
    flat = baseline_from_flags(0.005, 80, 0.5, "knative")
    notes = pod_assumptions(policy, replace(flat, pods=Pods(stable=1, canary=1)))
    assert len(notes) == 2 and "less than x1" not in notes[0]
    assert "errors assumes pods of one version are alike in error rate (podSpread 1)" in notes[0]
    assert "latency assumes pods differ by less than x3 in latency (podSpread)" in notes[1]


def test_plan_reports_every_line_and_exits_0(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["plan", str(small(tmp_path)), "--traffic", "50", "--runs", "10"]
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("plan for policy small at 50 rps (error rate 0.5 %")
    assert lines[1] == "steps 10% -> 50%, interval 1m, maxDuration 1h"
    heads = [line.split(":")[0] for line in lines]
    for head in ("healthy canary", "errors", "latency", "errors x2"):
        assert head in heads, res.output
    assert "healthy canary: promoted in 10m (median; 10 of 10 runs promoted)" in lines
    assert not any(line.startswith("warning") for line in lines)


def test_plan_json_is_the_same_plan(tmp_path: Path) -> None:
    args = ["plan", str(small(tmp_path)), "--traffic", "50", "--runs", "10"]
    text = CliRunner().invoke(main, args).output
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert doc["healthy"] == {"runs": 10, "promoted": 10, "median_promotion_s": 600.0}
    sim = doc["errors"]["detected_at_power"]
    assert f"x{sim:g} (" in text
    chosen = next(t for t in doc["errors"]["trials"] if t["effect"] == sim)
    assert chosen["detected"] >= 9  # the 90 % it was chosen for
    assert doc["warnings"] == []


def test_pods_with_a_shadow_policy_is_a_usage_error_on_the_flag() -> None:
    policy = str(ROOT / "policies" / "shadow-istio.yaml")
    res = CliRunner().invoke(main, ["plan", policy, "--traffic", "20", "--pods", "4"])
    assert res.exit_code == ExitCode.USAGE, res.output
    assert "Invalid value for '--pods': policy 'sentiment-shadow' starts with a shadow phase" in (
        res.output
    )
    assert "plan it without --pods" in res.output
    assert "--scenario" not in res.output and "Traceback" not in res.output


def test_pods_are_simulated_and_cost_what_the_pod_aware_judges_cost(tmp_path: Path) -> None:
    # The same policy and traffic, with each version on its own alike replicas: the judges
    # then widen their null by stable's spread, so the smallest detectable ratio can only grow.
    base = ["plan", str(small(tmp_path)), "--traffic", "50", "--runs", "10", "--json"]
    pooled = json.loads(CliRunner().invoke(main, base).output)
    res = CliRunner().invoke(main, [*base, "--pods", "1"])
    assert res.exit_code in (0, 1), res.output
    one = json.loads(res.output)
    assert one["baseline"].endswith(", 1 stable pod vs 1 canary pod (alike)")
    assert one["errors"]["detected_at_power"] >= pooled["errors"]["detected_at_power"]
    # x4 for one stable pod: a canary less than x4 off is never rolled back.
    assert one["errors"]["detected_at_power"] > 4
    assert len(one["pod_assumptions"]) == 2 and pooled["pod_assumptions"] == []
    assert "errors assumes pods differ by less than x4 in error rate" in one["pod_assumptions"][0]
    text = CliRunner().invoke(main, [*base[:-1], "--pods", "4:2"]).output
    assert "4 stable pods vs 2 canary pods (alike)" in text.splitlines()[0]
    assert "podSpread" not in text  # four stable pods show their spread
    one_text = CliRunner().invoke(main, [*base[:-1], "--pods", "1"]).output
    assert (
        "note: 1 stable pod cannot show how much pods differ, so latency assumes pods differ by "
        "less than x3 in latency (podSpread)"
    ) in one_text


def test_a_policy_that_cannot_meet_its_own_mde_warns_and_exits_1(tmp_path: Path) -> None:
    # errors x1.5 on ~1 rps within 1h: far fewer canary requests than it takes.
    p = small(
        tmp_path, mde="    minDetectableEffect: {errors: 1.5}\n    onInsufficientEvidence: hold"
    )
    res = CliRunner().invoke(main, ["plan", str(p), "--traffic", "1", "--runs", "10"])
    assert res.exit_code == ExitCode.WORSE, res.output
    assert "minDetectableEffect errors x1.5: NOT met" in res.output
    assert "warning: this policy cannot detect its own minDetectableEffect errors x1.5" in (
        res.output
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--traffic", "0"], "--traffic"),
        (["--traffic", "ten"], "--traffic"),
        (["--traffic", "5", "--error-rate", "1.5"], "--error-rate"),
        (["--traffic", "5", "--runs", "3"], "--runs"),
        (["--traffic", "5", "--pods", "0"], "--pods"),
        (["--traffic", "5", "--pods", "3:x"], "--pods"),
        (["--traffic", "5", "--pods", "3:1:2"], "--pods"),
        ([], "--traffic"),
    ],
)
def test_bad_flags_exit_3_without_a_traceback(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    res = CliRunner().invoke(main, ["plan", str(small(tmp_path)), *args])
    assert res.exit_code == ExitCode.USAGE
    assert expected in res.output and "Traceback" not in res.output


def test_bad_files_exit_3_naming_the_file(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "nope.yaml"
    res = runner.invoke(main, ["plan", str(missing), "--traffic", "5"])
    assert res.exit_code == ExitCode.USAGE and str(missing) in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.format(max_duration="5", mde=""), encoding="utf-8")
    res = runner.invoke(main, ["plan", str(bad), "--traffic", "5"])
    assert res.exit_code == ExitCode.USAGE and f"{bad}:" in res.output
    assert "maxDuration" in res.output and "Traceback" not in res.output
    csv = tmp_path / "lat.csv"
    csv.write_text("latency_ms\n10\n20\n", encoding="utf-8")
    sc = tmp_path / "sc.yaml"
    sc.write_text(
        "duration: 1h\ntraffic: {rps: 1}\n"
        "stable: {errorRate: 0.01, latency: {empiricalCsv: lat.csv}}\n",
        encoding="utf-8",
    )
    res = runner.invoke(
        main, ["plan", str(small(tmp_path)), "--traffic", "5", "--scenario", str(sc)]
    )
    assert res.exit_code == ExitCode.USAGE
    assert f"{sc}: stable.latency: plan scales" in res.output


def test_a_scenario_gives_the_baseline(tmp_path: Path) -> None:
    sc = tmp_path / "sc.yaml"
    sc.write_text(
        "duration: 1h\ntraffic: {rps: 1}\nbuckets: knative\n"
        "stable: {errorRate: 0.02, latency: {gamma: {shape: 2, meanMs: 50}}}\n",
        encoding="utf-8",
    )
    res = CliRunner().invoke(
        main,
        ["plan", str(small(tmp_path)), "--traffic", "50", "--runs", "10", "--scenario", str(sc)],
    )
    assert res.exit_code == 0, res.output
    assert "(error rate 2 %, latency gamma)" in res.output.splitlines()[0]


def test_a_scaled_baseline_is_that_many_times_slower() -> None:
    import numpy as np

    b = baseline_from_flags(0.01, 80, 0.5, "istio")
    assert isinstance(b, Baseline)
    q = np.asarray([0.5, 0.9])
    canary = b.slower(1.25)
    assert canary.latency is not None and b.latency is not None
    slow = canary.latency.ppf(q, Path("."))
    assert np.allclose(slow, 1.25 * b.latency.ppf(q, Path(".")))


def test_a_latency_mde_is_checked_as_the_shift_that_makes_its_tail_that_much_heavier(
    tmp_path: Path,
) -> None:
    p = small(tmp_path, mde="    minDetectableEffect: {latency: 2.0}")
    res = CliRunner().invoke(main, ["plan", str(p), "--traffic", "50", "--runs", "10", "--json"])
    doc = json.loads(res.output)
    (check,) = doc["min_detectable_effect"]
    assert check["metric"] == "latency" and check["trial"]["runs"] == 10
    # Lognormal sigma 0.5: p90's tail twice as heavy (20 %) is the whole distribution ~20 %
    # slower (z 1.2816 -> 0.8416: a factor exp(0.5 x 0.44) = 1.246).
    assert 24 < check["trial"]["shift_pct"] < 25.5
    assert "makes p90's tail x2" in check["note"]
    assert res.exit_code == (0 if check["met"] else 1)


def test_unmeasured_errors_are_said_not_judged(tmp_path: Path) -> None:
    p = tmp_path / "kserve.yaml"
    p.write_text(
        SMALL.format(max_duration="1h", mde="").replace("preset: knative", "preset: kserve"),
        encoding="utf-8",
    )
    res = CliRunner().invoke(main, ["plan", str(p), "--traffic", "50", "--runs", "10"])
    assert res.exit_code == 0, res.output
    assert "errors: not judged by a critical errors metric (or not measured)" in res.output
    assert "errors x2" not in res.output


def test_paused_ends_stops_judging_a_run_at_its_first_pause() -> None:
    from canaryd.controller import Action
    from canaryd.simulation.engine import simulate
    from canaryd.simulation.scenario import load_scenario

    sc, base = load_scenario(ROOT / "simulations" / "low-traffic.yaml")
    policy = load_policy(EDGE, None)
    full = simulate(sc, policy, base, runs=2, seed=3)
    cut = simulate(sc, policy, base, runs=2, seed=3, paused_ends=True)
    for a, b in zip(full.runs, cut.runs, strict=True):
        assert (a.outcome, a.decided_at_s, a.steps) == (b.outcome, b.decided_at_s, b.steps)
        assert b.decisions[-1].action is Action.PAUSE
        # The full run judged on while paused (its canary kept serving); the cut one stopped.
        assert b.canary_requests < a.canary_requests


def test_an_ml_policy_plans_from_a_scenario_with_its_signals_and_names_what_is_missing() -> None:
    policy = ROOT / "policies" / "classifier-drift.yaml"
    res = CliRunner().invoke(main, ["plan", str(policy), "--traffic", "10"])
    assert res.exit_code == ExitCode.USAGE and "Traceback" not in res.output
    assert f"{policy}: stable.accuracy: the policy's quality metric 'accuracy' needs " in (
        res.output
    )
    assert "(give them in a --scenario file)" in res.output
    sc = ROOT / "simulations" / "classifier.yaml"
    res = CliRunner().invoke(
        main, ["plan", str(policy), "--traffic", "10", "--runs", "10", "--scenario", str(sc)]
    )
    assert res.exit_code in (0, 1), res.output
    assert "minDetectableEffect accuracy x1.25: not checked by plan (metric kind quality)" in (
        res.output
    )
    assert "labelled canary predictions" in res.output


def test_a_shadow_phase_comes_first_in_the_schedule_and_the_steps_line() -> None:
    policy = ROOT / "policies" / "shadow-istio.yaml"
    res = CliRunner().invoke(main, ["plan", str(policy), "--traffic", "10", "--runs", "10"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[1].startswith("steps shadow 10m (10% mirrored) -> 10% -> 50%")
    s = schedule_of(load_policy(policy, None), 10, baseline_from_flags(0.005, 80, 0.5, "istio"))
    assert s.canary_share[0] == 0.1 and s.stable_share[0] == 1.0  # mirrored copies, no user


def test_an_llm_policy_plans_from_its_scenario_by_slowing_its_tokens() -> None:
    # The shipped vLLM policy could not be planned at all: without a scenario plan asked for
    # one, and with the shipped scenario it refused stable.llm's derived latency.
    policy = ROOT / "policies" / "llm-vllm.yaml"
    res = CliRunner().invoke(main, ["plan", str(policy), "--traffic", "8"])
    assert res.exit_code == ExitCode.USAGE and "Traceback" not in res.output
    assert "e.g. simulations/llm-vllm.yaml)" in res.output
    sc = ROOT / "simulations" / "llm-vllm.yaml"
    args = ["plan", str(policy), "--traffic", "8", "--runs", "10", "--scenario", str(sc)]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    assert plan["latency_metric"] == "ttft"
    assert plan["latency_shift_is"] == "time to first token and time per token"
    assert "an LLM with time to first token lognormal median 350 ms" in plan["baseline"]
    # A +x % shift slows the first token and every next one: its floor is the ttft
    # histogram's, and the simulated ttft judge detects it (seeded: +10 % in 10 of 10).
    found = plan["latency_shift_pct"]["detected_at_power"]
    assert found is not None and found <= 25
    text = CliRunner().invoke(main, args).output
    assert "ttft: smallest shift of time to first token and time per token detected" in text
