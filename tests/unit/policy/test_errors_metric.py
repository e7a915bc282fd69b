"""``source.errorsMetric``: the kserve preset's error counter, configured in the policy.

KServe exports a latency histogram and no error counter. Without ``errorsMetric`` errors are
not measured, and the cluster, ``simulate`` and ``validate`` all say so the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.metrics.presets import PresetOptions, build_queries
from canaryd.policy.loader import load_policies_text
from canaryd.policy.model import Source
from canaryd.simulation.engine import simulate
from canaryd.simulation.scenario import load_scenario

from .support import REPO, variant

KSERVE = variant("    metrics:\n", "    source: {preset: kserve}\n    metrics:\n")
MEASURED = KSERVE.replace(
    "{preset: kserve}", "{preset: kserve, errorsMetric: predict_errors_total}"
)


def test_the_policy_names_the_counter_and_the_query_reads_it() -> None:
    q = build_queries(
        Source(preset="kserve", errors_metric="predict_errors_total"), ["n"], ["a"], 60
    )
    assert q.errors is not None and "predict_errors_total{" in q.errors
    assert build_queries(Source(preset="kserve"), ["n"], ["a"], 60).errors is None
    # The policy wins over the daemon's deployment-wide default.
    q = build_queries(
        Source(preset="kserve", errors_metric="mine_total"),
        ["n"],
        ["a"],
        60,
        PresetOptions(kserve_errors_metric="theirs_total"),
    )
    assert q.errors is not None and "mine_total{" in q.errors and "theirs_total" not in q.errors


def test_errors_metric_is_refused_where_it_would_be_ignored(tmp_path: Path) -> None:
    text = variant(
        "    metrics:\n", "    source: {preset: istio, errorsMetric: x_total}\n    metrics:\n"
    )
    f = tmp_path / "p.yaml"
    f.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(f)], catch_exceptions=False)
    assert result.exit_code == 1
    assert f"{f}:17:" in result.output
    assert "errorsMetric is only used with preset 'kserve', not 'istio'" in result.output
    with pytest.raises(ValueError):
        Source(preset="kserve", errors_metric='x{job="y"}')


def test_validate_warns_when_errors_are_not_measured(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(KSERVE)
    result = CliRunner().invoke(main, ["validate", "--strict", str(f)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "spec.analysis.metrics[0]: errors are not measured" in result.stdout
    f.write_text(MEASURED)
    result = CliRunner().invoke(main, ["validate", "--strict", str(f)], catch_exceptions=False)
    assert result.exit_code == 0, result.stdout


def test_the_simulator_does_not_count_errors_the_cluster_cannot_see() -> None:
    sc, base = load_scenario(REPO / "simulations" / "error-regression.yaml")
    (blind,) = [p.policy for p in load_policies_text(KSERVE, "blind.yaml")]
    (seen,) = [p.policy for p in load_policies_text(MEASURED, "seen.yaml")]
    r_blind = simulate(sc, blind, base, runs=5, seed=1)
    r_seen = simulate(sc, seen, base, runs=5, seed=1)
    # Measured, the quadrupled error rate is seen (this short policy promotes after its steps,
    # so not every run); blind, the rollout holds, as it would in the cluster.
    assert r_seen.outcomes["rolled_back"] >= 1
    assert r_blind.outcomes["in_progress"] == 5
    reasons = [v.reason for r in r_blind.runs for d in r.decisions for v in d.verdicts]
    assert any("does not measure errors" in why for why in reasons)
