"""Simulator mechanics: determinism, chaos restarts, outputs, bad scenarios, replay."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.errors import ScenarioError
from canaryd.simulation.defaults import default_policy
from canaryd.simulation.engine import simulate
from canaryd.simulation.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[3]
SIM = ROOT / "simulations"


def test_same_seed_same_result_and_other_seed_differs() -> None:
    sc, base = load_scenario(SIM / "slow-creep.yaml")
    a = simulate(sc, default_policy(), base, runs=20, seed=3).to_dict()
    b = simulate(sc, default_policy(), base, runs=20, seed=3).to_dict()
    c = simulate(sc, default_policy(), base, runs=20, seed=4).to_dict()
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", ["error-regression", "healthy", "prometheus-outage"])
def test_chaos_restarts_change_nothing(name: str) -> None:
    sc, base = load_scenario(SIM / f"{name}.yaml")
    plain = simulate(sc, default_policy(), base, runs=25, seed=8)
    chaos = simulate(sc, default_policy(), base, runs=25, seed=8, chaos_restarts=5)
    assert plain.to_dict() == chaos.to_dict()
    assert [[d.to_dict() for d in r.decisions] for r in plain.runs] == [
        [d.to_dict() for d in r.decisions] for r in chaos.runs
    ]


def test_simulate_json_shape() -> None:
    out = CliRunner().invoke(
        main,
        ["simulate", str(SIM / "error-regression.yaml"), "--runs", "3", "--seed", "1", "--json"],
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["runs"] == 3 and doc["outcomes"]["rolled_back"] == 3
    r = doc["results"][0]
    assert {
        "outcome",
        "decided_at_s",
        "canary_requests",
        "canary_errors",
        "final_weight",
        "steps",
        "verdicts",
    } <= set(r)
    assert r["final_weight"] == 0 and r["steps"][-1]["weight"] == 0
    assert doc["last_verdicts"] and doc["last_verdicts"][0]["metric"] == "errors"


def test_simulate_summary_and_report(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        main, ["simulate", str(SIM / "llm-10pct-regression.yaml"), "--report", str(tmp_path)]
    )
    assert out.exit_code == 1, out.output  # rolled back
    assert "rolled_back" in out.output and "decisions:" in out.output
    # One self-contained file, nothing beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert "canary is worse" in (tmp_path / "report.html").read_text()


def test_bad_scenario_reports_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "duration: 2h\ntraffic: {rps: 20}\nstable:\n  errorRate: 2\n"
        "  latency: {lognormal: {medianMs: 80, sigma: 0.5}}\n"
    )
    with pytest.raises(ScenarioError) as exc:
        load_scenario(bad)
    assert str(exc.value).startswith(f"{bad}:4:14: stable.errorRate:")
    out = CliRunner().invoke(main, ["simulate", str(bad)])
    assert out.exit_code == 3 and "bad.yaml:4:14" in out.output


def test_spellings_from_the_issue_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "lat.csv").write_text("latency_ms\n10\n20\n30\n400\n")
    (tmp_path / "rps.csv").write_text("t_seconds,rps\n0,10\n3600,30\n")
    doc = tmp_path / "s.yaml"
    doc.write_text(
        "duration: 1h\ntick: 10s\ntraffic: {csv: rps.csv}\nbuckets: [10, 50, 100, 500]\n"
        "stable:\n  errorRate: 0.005\n  latency: {gamma: {shape: 2, meanMs: 80}}\n"
        "canary:\n  latency: {empiricalCsv: lat.csv}\n  changes:\n"
        "    - {at: 10m, errorRate: 0.02}\n"
        "    - {at: 30m, latency: {lognormal: {medianMs: 90, sigma: 0.5}}}\n"
        "incidents:\n  - {at: 20m, for: 5m, errorRate: 0.05}\n"
        "metricsOutage: [{at: 40m, for: 3m}]\n"
    )
    sc, base = load_scenario(doc)
    res = simulate(sc, default_policy(), base, runs=2, seed=0)
    assert len(res.runs) == 2
    assert sc.bounds_ms()[-1] == math.inf


def test_replay_trace(tmp_path: Path) -> None:
    from canaryd.metrics.replay import write_trace
    from canaryd.observation import Observation, VersionCounts

    bounds = (50.0, 100.0, math.inf)
    obs = [
        Observation(
            t - 60,
            t,
            VersionCounts(900, 4, bounds, (400.0, 800.0, 900.0)),
            VersionCounts(100, 30, bounds, (40.0, 80.0, 100.0)),
        )
        for t in range(60, 1800, 60)
    ]
    trace = tmp_path / "trace.csv"
    write_trace(trace, obs)
    out = CliRunner().invoke(
        main,
        ["replay", str(trace), "--policy", str(ROOT / "policies" / "llm-kserve.yaml"), "--json"],
    )
    assert out.exit_code == 1, out.output  # rolled back
    doc = json.loads(out.output)
    assert doc["outcome"] == "rolled_back"
    assert doc["decided_at_s"] is not None and doc["steps"][-1]["weight"] == 0


def test_scenario_schema_file_is_current() -> None:
    from canaryd.simulation.scenario import scenario_json_schema

    expected = json.dumps(scenario_json_schema(), indent=2, sort_keys=True, default=str) + "\n"
    assert (SIM / "schema.json").read_text() == expected, "run: canaryd schema --scenario"


@pytest.mark.integration
def test_openmetrics_output_backfills_with_promtool(tmp_path: Path) -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by scripts/install-prometheus"
    om = tmp_path / "sim.om"
    out = CliRunner().invoke(
        main, ["simulate", str(SIM / "error-regression.yaml"), "--openmetrics", str(om)]
    )
    assert out.exit_code == 1, out.output  # rolled back
    text = om.read_text()
    assert text.endswith("# EOF\n")
    assert 'response_code="500"' in text and "istio_request_duration_milliseconds_bucket" in text
    # Timestamps start at the scenario's wall-clock start (2026-01-05T10:00Z).
    assert " 1767607210\n" in text
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert any((tmp_path / "data").iterdir())
