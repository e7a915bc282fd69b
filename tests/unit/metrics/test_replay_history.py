"""A trace's leading stable-only rows are stable's history: `canaryd replay` primes with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.errors import TraceError
from canaryd.metrics.replay import BEFORE_CANARY, read_trace, split_history

POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: p}
spec:
  target: {namespace: ns, inferenceService: m}
  steps: {weights: [10, 50], minDwell: 5m, minCanaryRequests: 10}
  analysis:
    interval: 60s
    history: 10m
    metrics:
      - {name: latency, kind: latency, quantiles: [0.5, 0.9], maxRelativeIncrease: 0.1}
"""
HEADER = "t_seconds,version,requests,errors,le_50,le_100,le_250,le_inf\n"
# Busy stable history (p90 at 250 ms), then quiet intervals with a canary.
BUSY = "stable,1000,0,300,600,900,1000\n"
QUIET = ("stable,100,0,80,99,100,100\n", "canary,10,0,8,10,10,10\n")


def _trace(tmp_path: Path, history: int, canary: int = 5) -> Path:
    rows = [f"{60 * i},{BUSY}" for i in range(history)]
    for i in range(history, history + canary):
        rows += [f"{60 * i},{QUIET[0]}", f"{60 * i},{QUIET[1]}"]
    path = tmp_path / "trace.csv"
    path.write_text(HEADER + "".join(rows))
    return path


def test_leading_stable_rows_are_history_and_the_last_history_window_is_summed(
    tmp_path: Path,
) -> None:
    obs = read_trace(_trace(tmp_path, history=15))
    assert [o.no_data_reason == BEFORE_CANARY for o in obs[:16]] == [True] * 15 + [False]
    history, rest = split_history(obs, 600.0)  # 10 of the 15 history intervals
    assert history is not None and history.requests == 10_000
    assert history.bucket_counts == (3000.0, 6000.0, 9000.0, 10000.0)
    assert len(rest) == 5 and rest[0].start_s == 900.0


def test_replay_chooses_boundaries_from_the_history_and_says_so(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    out = CliRunner().invoke(main, ["replay", str(_trace(tmp_path, 15)), "--policy", str(policy)])
    assert "history: latency boundaries from stable's 10,000 requests before the canary" in (
        out.output
    ), out.output
    doc = json.loads(
        CliRunner()
        .invoke(main, ["replay", str(_trace(tmp_path, 15)), "--policy", str(policy), "--json"])
        .output
    )
    assert doc["history"]["stable_requests"] == 10_000
    verdict = next(v for v in doc["verdicts"] if v["metric"] == "latency")
    # 100 and 250 ms: the busy history's p60 and p90, not the quiet canary hour's
    assert [b["le_ms"] for b in verdict["details"]["boundaries"]] == [100.0, 250.0]


def test_replay_without_history_rows_says_so(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    out = CliRunner().invoke(
        main, ["replay", str(_trace(tmp_path, 0)), "--policy", str(policy), "--json"]
    )
    doc = json.loads(out.output)
    assert doc["history"] == {
        "stable_requests": 0.0,
        "note": "no stable history before the canary (the trace has no stable-only rows "
        "before the canary)",
    }


def test_a_trace_of_stable_rows_only_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no canary row"):
        read_trace(_trace(tmp_path, history=3, canary=0))
