"""Pauses, with their reasons, in ``simulate`` and ``replay`` output (text, JSON, report), and
``replay``'s clock: timestamps for epoch traces, durations for relative ones."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

from click.testing import CliRunner

from canaryd.cli import main
from canaryd.metrics.replay import write_trace
from canaryd.observation import Observation, VersionCounts

ROOT = Path(__file__).resolve().parents[3]
LOW = ROOT / "simulations" / "low-traffic.yaml"
EVIDENCE = "paused: not enough evidence: detecting errors x3 needs about "

POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: short}
spec:
  target: {namespace: ns, inferenceService: m}
  router: {type: kserve}
  steps: {weights: [10, 50], minDwell: 5m, minCanaryRequests: 100}
  analysis:
    interval: 1m
    metrics:
      - {name: errors, kind: errors, judge: sequential, maxRelativeIncrease: 0.2}
  promotion:
    minDetectableEffect: {errors: 3.0}
    onInsufficientEvidence: pause
"""


def test_simulate_shows_the_pause_and_its_reason_in_text_json_and_report(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    text = runner.invoke(main, ["simulate", str(LOW)])
    assert text.exit_code == 2
    paused = [line for line in text.output.splitlines() if EVIDENCE in line]
    assert len(paused) == 1 and paused[0].split()[:2] == ["6h", "50%"], text.output
    assert re.search(
        r"needs about \d+ canary requests, seen \d+ \(stable's error rate so far [\d.]+ %\)$",
        paused[0],
    ), paused[0]
    doc = json.loads(runner.invoke(main, ["simulate", str(LOW), "--json"]).output)
    step = doc["results"][0]["steps"][-1]
    assert step["t"] == 6 * 3600 and step["reason"].startswith(EVIDENCE)
    report = tmp_path / "r.html"
    res = runner.invoke(main, ["simulate", str(LOW), "--report", str(report)])
    assert res.exit_code == 2
    assert html.escape(step["reason"]) in report.read_text(encoding="utf-8")


def _trace(path: Path, start: float, n: int) -> Path:
    bounds = (50.0, 100.0, math.inf)
    write_trace(
        path,
        [
            Observation(
                t - 60,
                t,
                VersionCounts(900, 9, bounds, (400.0, 800.0, 900.0)),
                VersionCounts(100, 1, bounds, (45.0, 90.0, 100.0)),
            )
            for t in (start + 60 * i for i in range(1, n + 1))
        ],
    )
    return path


def test_replay_shows_the_pause_with_timestamps_for_an_epoch_trace(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    start = 1424959500.0  # 2015-02-26T14:05:00Z
    trace = _trace(tmp_path / "t.csv", start, 30)
    res = CliRunner().invoke(main, ["replay", str(trace), "--policy", str(policy)])
    assert res.exit_code == 2, res.output
    lines = res.output.splitlines()
    assert "  2015-02-26T14:05:00Z   10%  started the canary at 10% (revision canary)" in lines
    paused = [line for line in lines if EVIDENCE in line]
    assert len(paused) == 1 and paused[0].startswith("  2015-02-26T14:15:00Z   50%  ")
    assert lines[2].startswith("run 0: paused at 2015-02-26T14:15:00Z; ")
    doc = json.loads(
        CliRunner().invoke(main, ["replay", str(trace), "--policy", str(policy), "--json"]).output
    )
    assert doc["decided_at"] == "2015-02-26T14:15:00Z"
    assert doc["steps"][-1]["time"] == "2015-02-26T14:15:00Z"
    assert doc["steps"][-1]["reason"].startswith(EVIDENCE)


def test_replay_of_a_relative_trace_keeps_durations(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    trace = _trace(tmp_path / "t.csv", 0.0, 30)
    res = CliRunner().invoke(main, ["replay", str(trace), "--policy", str(policy)])
    lines = res.output.splitlines()
    assert lines[2].startswith("run 0: paused at 10m; "), res.output
    assert "        0s   10%  started the canary at 10% (revision canary)" in lines
    assert any(line.startswith("       10m   50%  " + EVIDENCE) for line in lines)
    doc = json.loads(
        CliRunner().invoke(main, ["replay", str(trace), "--policy", str(policy), "--json"]).output
    )
    assert "decided_at" not in doc and "time" not in doc["steps"][0]


def test_a_paused_run_counts_the_canary_at_the_pause_and_at_the_end() -> None:
    # A paused rollout goes on serving the canary at its weight: the run's line once gave the
    # end-of-scenario count as if it were the pause's ("paused at 6h; 3619 canary requests").
    res = CliRunner().invoke(main, ["simulate", str(LOW)])
    line = res.output.splitlines()[2]
    m = re.match(r"run 0: paused at 6h; (\d+) canary requests by then; by the end (\d+) ", line)
    assert m is not None and int(m[1]) < int(m[2]), line
    doc = json.loads(CliRunner().invoke(main, ["simulate", str(LOW), "--json"]).output)
    run = doc["results"][0]
    assert round(run["decided_canary_requests"]) == int(m[1])
    assert round(run["canary_requests"]) == int(m[2])
