"""The CI-gate exit codes of ``simulate --runs 1`` and ``replay``, and exit 3 for usage errors.

0 promoted, 1 rolled back, 2 paused or undecided, 3 usage or configuration error.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.exitcodes import ExitCode, for_outcome
from canaryd.metrics.replay import write_trace
from canaryd.observation import Observation, VersionCounts

ROOT = Path(__file__).resolve().parents[3]
SIM = ROOT / "simulations"
POLICY = ROOT / "policies" / "llm-kserve.yaml"


def test_every_outcome_has_a_code() -> None:
    assert [
        for_outcome(o) for o in ("promoted", "rolled_back", "failed", "paused", "in_progress")
    ] == [
        ExitCode.NO_WORSE,
        ExitCode.WORSE,
        ExitCode.WORSE,
        ExitCode.INCONCLUSIVE,
        ExitCode.INCONCLUSIVE,
    ]


@pytest.mark.parametrize(
    ("scenario", "outcome", "code"),
    [
        ("healthy", "promoted", 0),
        ("error-regression", "rolled_back", 1),
        ("prometheus-outage", "paused", 2),
    ],
)
def test_simulate_one_run_exits_with_its_outcome(scenario: str, outcome: str, code: int) -> None:
    res = CliRunner().invoke(main, ["simulate", str(SIM / f"{scenario}.yaml")])
    assert f"outcomes: {outcome} 1" in res.stdout
    assert res.exit_code == code


def test_an_undecided_run_is_2(tmp_path: Path) -> None:
    short = tmp_path / "short.yaml"
    short.write_text(
        "duration: 10m\ntraffic: {rps: 20}\n"
        "stable: {errorRate: 0.01, latency: {lognormal: {medianMs: 80, sigma: 0.5}}}\n"
    )
    res = CliRunner().invoke(main, ["simulate", str(short)])
    assert "outcomes: in_progress 1" in res.stdout
    assert res.exit_code == 2


def test_a_study_of_many_runs_exits_0_when_it_ran() -> None:
    res = CliRunner().invoke(
        main, ["simulate", str(SIM / "error-regression.yaml"), "--runs", "3", "--json"]
    )
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "no-such-scenario.yaml"],
        ["simulate", str(SIM / "healthy.yaml"), "--runs", "0"],
        ["simulate", str(SIM / "healthy.yaml"), "--no-such-flag"],
        ["replay", "trace.csv"],
        ["no-such-command"],
    ],
)
def test_usage_errors_are_3(args: list[str]) -> None:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 3, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Error:" in res.output


def _trace(path: Path, n: int, canary_errors: float) -> Path:
    bounds = (50.0, 100.0, math.inf)
    write_trace(
        path,
        [
            Observation(
                t - 60,
                t,
                VersionCounts(900, 4, bounds, (400.0, 800.0, 900.0)),
                VersionCounts(200, canary_errors, bounds, (90.0, 180.0, 200.0)),
            )
            for t in range(60, 60 * (n + 1), 60)
        ],
    )
    return path


@pytest.mark.parametrize(
    ("n", "canary_errors", "code", "outcome"),
    [(40, 1, 0, "promoted"), (5, 1, 2, "in_progress"), (30, 30, 1, "rolled_back")],
)
def test_replay_exits_with_its_outcome(
    tmp_path: Path, n: int, canary_errors: float, code: int, outcome: str
) -> None:
    trace = _trace(tmp_path / "t.csv", n, canary_errors)
    res = CliRunner().invoke(main, ["replay", str(trace), "--policy", str(POLICY)])
    assert f"outcomes: {outcome} 1" in res.stdout, res.output
    assert res.exit_code == code


def test_replay_with_a_broken_trace_is_3_with_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("t_seconds,version,requests,errors\n0,stable,10,20\n0,canary,10,1\n")
    res = CliRunner().invoke(main, ["replay", str(bad), "--policy", str(POLICY)])
    assert res.exit_code == 3
    assert f"{bad}:2:" in res.stderr
