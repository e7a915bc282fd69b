"""The LLM and classifier scenarios: who fails, what the verdicts say, bad scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.controller import Action
from canaryd.errors import ScenarioError
from canaryd.simulation.commands import policy_for
from canaryd.simulation.engine import simulate
from canaryd.simulation.scenario import load_scenario
from canaryd.stats.verdict import Status

ROOT = Path(__file__).resolve().parents[3]
SIM = ROOT / "simulations"
ML = [
    "llm-ttft-regression",
    "llm-longer-answers",
    "classifier-class-drift",
    "classifier-accuracy-drop",
]
RUNS = 50


@pytest.mark.parametrize("name", ML)
def test_the_failure_is_named_by_the_right_metric_only(name: str) -> None:
    """Every run rolls back on one of the metrics the scenario names, never on the others."""
    sc, base = load_scenario(SIM / f"{name}.yaml")
    assert sc.expect is not None
    policy = policy_for(sc.policy, sc.policy_name, base, None)
    result = simulate(sc, policy, base, runs=RUNS, seed=20261125)
    assert result.outcomes["rolled_back"] == RUNS, result.outcomes
    for run in result.runs:
        rollback = next(d for d in run.decisions if d.action is Action.ROLLBACK)
        failing = {v.metric for v in rollback.verdicts if v.critical and v.status is Status.FAIL}
        assert set(sc.expect["failingAnyOf"]) & failing, (run.seed, failing)
        assert not failing & set(sc.expect["notFailing"]), (run.seed, failing)


@pytest.mark.parametrize(
    ("name", "phrases"),
    [
        ("llm-vllm", ["promoted", "time to first token", "inter-token latency", "answer length"]),
        (
            "llm-ttft-regression",
            ["rolled_back", "ttft: fail", "time to first token is longer than tolerated",
             "for the first token"],
        ),
        (
            "llm-longer-answers",
            ["rolled_back", "output-length: fail", "% longer (median", "tokens),",
             "per-token latency unchanged", "prompts unchanged"],
        ),
        (
            "classifier-class-drift",
            ["rolled_back", "predicted class `fraud`: ", "x stable's share ["],
        ),
        (
            "classifier-accuracy-drop",
            ["rolled_back", "canary accuracy is worse than tolerated", "points",
             "predictions not labelled yet"],
        ),
        ("classifier", ["promoted", "predicted-class", "accuracy"]),
    ],
)  # fmt: skip
def test_simulate_prints_verdicts_a_model_owner_reads(name: str, phrases: list[str]) -> None:
    out = CliRunner().invoke(main, ["simulate", str(SIM / f"{name}.yaml"), "--seed", "3"])
    # One run: the exit code is the outcome's (0 promoted, 1 rolled back).
    assert out.exit_code == (1 if "rolled_back" in phrases else 0), out.output
    for p in phrases:
        assert p in out.output, (p, out.output)
    assert "_ms" not in out.output and "le_" not in out.output  # no code names in the prose


def test_longer_answers_are_not_a_latency_regression() -> None:
    out = CliRunner().invoke(main, ["simulate", str(SIM / "llm-longer-answers.yaml")])
    reason = next(line for line in out.output.splitlines() if "canary is worse" in line)
    assert "output-length" in reason
    assert "ttft: fail" not in reason and "inter-token: fail" not in reason
    assert "latency is longer" not in reason


def test_chaos_restarts_change_nothing_for_the_ml_judges() -> None:
    for name in ("llm-longer-answers", "classifier-accuracy-drop"):
        sc, base = load_scenario(SIM / f"{name}.yaml")
        policy = policy_for(sc.policy, sc.policy_name, base, None)
        plain = simulate(sc, policy, base, runs=6, seed=8)
        chaos = simulate(sc, policy, base, runs=6, seed=8, chaos_restarts=4)
        assert plain.to_dict() == chaos.to_dict()


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


LLM = (
    "duration: 1h\ntraffic: {rps: 5}\nbuckets: vllm\nstable:\n  errorRate: 0.01\n"
    "  llm:\n    promptTokens: {lognormal: {median: 100, sigma: 0.5}}\n"
    "    outputTokens: {lognormal: {median: 100, sigma: 0.5}}\n    maxTokens: 512\n"
    "    ttft: {lognormal: {medianMs: 200, sigma: 0.5}}\n"
    "    timePerToken: {lognormal: {medianMs: 20, sigma: 0.2}}\n"
)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  latency: {lognormal: {medianMs: 80, sigma: 0.5}}\n", "remove stable.latency"),
        (
            "canary:\n  latency: {lognormal: {medianMs: 80, sigma: 0.5}}\n",
            "give canary.llm instead",
        ),
        (
            "  categories:\n    cls: {a: 0.5, b: 0.4}\n",
            "stable.categories.cls: shares must sum to 1, got 0.9",
        ),
        (
            "  categories:\n    cls: {a: 0.5, b: 0.5}\ncanary:\n  categories:\n"
            "    other: {a: 1.0}\n",
            "canary.categories.other: stable.categories has no 'other' to change",
        ),
        ("canary:\n  accuracy: 0.9\n", "stable.accuracy: a canary accuracy needs stable.accuracy"),
    ],
)
def test_bad_ml_scenarios_are_located_errors(tmp_path: Path, extra: str, expected: str) -> None:
    p = _write(tmp_path, LLM + extra)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    assert expected in str(exc.value), str(exc.value)
    assert str(exc.value).startswith(f"{p}:")


def test_an_incomplete_stable_llm_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, LLM.replace("    maxTokens: 512\n", ""))
    with pytest.raises(
        ScenarioError, match=r"stable\.llm\.maxTokens: the stable version.s llm needs it"
    ):
        load_scenario(p)


def test_a_policy_metric_the_scenario_cannot_feed_is_named(tmp_path: Path) -> None:
    plain = _write(
        tmp_path,
        "duration: 1h\ntraffic: {rps: 5}\nstable:\n  errorRate: 0.01\n"
        "  latency: {lognormal: {medianMs: 80, sigma: 0.5}}\n",
    )
    out = CliRunner().invoke(
        main, ["simulate", str(plain), "--policy", str(ROOT / "policies" / "llm-vllm.yaml")]
    )
    assert out.exit_code == 3  # a usage or configuration error
    assert (
        "stable.llm: the policy's metric 'ttft' (kind ttft) reads vLLM's histograms" in out.output
    )
    assert "Traceback" not in out.output
    out = CliRunner().invoke(
        main, ["simulate", str(plain), "--policy", str(ROOT / "policies" / "classifier-drift.yaml")]
    )
    assert out.exit_code == 3
    assert "stable.categories.predicted-class" in out.output and "stable.accuracy" in out.output


def test_openmetrics_export_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    om = tmp_path / "x.om"
    out = CliRunner().invoke(
        main, ["simulate", str(SIM / "llm-vllm.yaml"), "--openmetrics", str(om)]
    )
    assert out.exit_code == 3 and "not preset 'vllm'" in out.output and not om.exists()
    out = CliRunner().invoke(
        main, ["simulate", str(SIM / "classifier.yaml"), "--openmetrics", str(om)]
    )
    assert out.exit_code == 3 and "predicted-class, accuracy" in out.output
