"""Wrong input to ``replay`` and ``simulate``: a located error and exit 3, never a traceback.

``CliRunner(catch_exceptions=False)``: an exception escaping a command fails the test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from canaryd.cli import main
from canaryd.metrics.replay import MAX_T_SECONDS
from canaryd.observation import VersionCounts

ROOT = Path(__file__).resolve().parents[3]
POLICY = ROOT / "policies" / "llm-kserve.yaml"
HEADER = "t_seconds,version,requests,errors,le_100,le_inf\n"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def replay(trace: Path) -> Result:
    return run("replay", trace, "--policy", POLICY)


def test_replay_of_a_binary_file_is_a_located_error(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00" * 40)
    result = replay(trace)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"{trace}: not a UTF-8 text CSV (")


@pytest.mark.parametrize("t", ["1e300", "-1e300", "1.5e11"])
def test_a_trace_time_out_of_range_is_refused(tmp_path: Path, t: str) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(HEADER + f"{t},stable,10,0,5,10\n{t},canary,10,0,5,10\n")
    result = replay(trace)
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        f"{trace}:2:1: t_seconds: expected |t_seconds| <= {MAX_T_SECONDS:g}, got {t}"
    )


def test_le_inf_must_equal_requests(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    rows = "0,stable,10,0,5,10\n0,canary,10,0,5,9\n60,stable,10,0,5,10\n60,canary,10,0,5,10\n"
    trace.write_text(HEADER + rows)
    result = replay(trace)
    assert result.exit_code == 3
    assert result.stderr == (
        f"{trace}:3:6: le_inf: le_inf (9) must equal requests (10): every request is in the "
        "+Inf bucket\n"
    )


def test_a_count_beyond_two_to_the_53_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(HEADER + "0,stable,1e300,0,1e300,1e300\n0,canary,10,0,5,10\n")
    result = replay(trace)
    assert result.exit_code == 3
    assert f"{trace}:2:3: requests: expected a count of at most 2^53, got 1e300" in result.stderr


SCENARIO = """\
duration: 10m
traffic: {{rps: {rps}}}
stable:
  errorRate: 0.01
  latency: {{lognormal: {{medianMs: 80, sigma: 0.5}}}}
"""


@pytest.mark.parametrize(
    ("rps", "message"),
    [
        (".inf", "traffic.rps: input should be a finite number, got inf"),
        (".nan", "traffic.rps: input should be a finite number, got nan"),
        ("1.0e+300", "traffic.rps: input should be less than or equal to 1000000, got 1e+300"),
    ],
)
def test_simulate_refuses_an_absurd_rate_with_its_line(
    tmp_path: Path, rps: str, message: str
) -> None:
    sc = tmp_path / "sc.yaml"
    sc.write_text(SCENARIO.format(rps=rps))
    result = run("simulate", sc, "--policy", POLICY)
    assert result.exit_code == 3
    assert result.stderr == f"{sc}:2:16: {message}\n"


def test_a_misspelled_scenario_field_points_to_the_scenario_readme(tmp_path: Path) -> None:
    sc = tmp_path / "sc.yaml"
    sc.write_text(SCENARIO.format(rps=5).replace("  errorRate:", "  errorRat:"))
    result = run("simulate", sc, "--policy", POLICY)
    assert result.exit_code == 3
    assert (
        f"{sc}:4:3: stable.errorRat: unknown field (check the spelling; see "
        "simulations/README.md)\n"
    ) in result.stderr
    assert "policies/README.md" not in result.stderr and "Traceback" not in result.output


def test_scenario_pods_with_a_shadow_policy_name_the_pods_line(tmp_path: Path) -> None:
    sc = tmp_path / "sc.yaml"
    sc.write_text(SCENARIO.format(rps=5) + "pods: {stable: 4, canary: 1}\n")
    result = run("simulate", sc, "--policy", ROOT / "policies" / "shadow-istio.yaml")
    assert result.exit_code == 3
    assert result.stderr.startswith(
        f"{sc}:6:7: pods: pods are not modelled with a shadow phase (mirrored copies), and "
        "policy 'sentiment-shadow' has one (spec.steps.shadow): expected a scenario without "
        "pods, or a policy without shadow\n"
    ), result.stderr


def test_simulate_of_a_binary_scenario_is_a_located_error(tmp_path: Path) -> None:
    sc = tmp_path / "sc.yaml"
    sc.write_bytes(b"duration: 10m\n\xff\xfe\n")
    result = run("simulate", sc, "--policy", POLICY)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"{sc}: not UTF-8 text (")


def test_a_traffic_trace_with_an_infinite_rate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "traffic.csv").write_text("t_seconds,rps\n0,10\n60,inf\n")
    sc = tmp_path / "sc.yaml"
    sc.write_text(SCENARIO.format(rps="1").replace("{rps: 1}", "{csv: traffic.csv}"))
    result = run("simulate", sc, "--policy", POLICY)
    assert result.exit_code == 3
    assert result.stderr == (
        f"{tmp_path / 'traffic.csv'}:3: rps: expected a number from 0 to 1e+06, got inf\n"
    )


CUSTOM_POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: gpu}}
spec:
  target: {{namespace: models, inferenceService: gpu}}
  steps: {{weights: [10, 50], minDwell: 1m}}
  analysis:
    source: {{preset: knative}}
    metrics:
      - {{name: errors, kind: errors}}
      - name: gpu-util
        kind: custom
        critical: {critical}
        query: 'avg by (revision_name) (gpu{{revision_name=~"{{revisions}}"}})'
"""


def test_simulate_refuses_a_critical_custom_metric_the_scenario_does_not_model(
    tmp_path: Path,
) -> None:
    sc, pol = tmp_path / "sc.yaml", tmp_path / "p.yaml"
    sc.write_text(SCENARIO.format(rps=5))
    pol.write_text(CUSTOM_POLICY.format(critical="true"))
    result = run("simulate", sc, "--policy", pol)
    assert result.exit_code == 3
    assert result.stderr.startswith(
        f"{sc}: the scenario does not model custom metric(s) gpu-util: as critical metrics "
        "they would keep every run inconclusive. Add their per-interval values, e.g. stable: "
        "{custom: {gpu-util: {mean: 0.6, sd: 0.05}}}"
    )


def test_simulate_names_a_non_critical_custom_metric_the_scenario_does_not_model(
    tmp_path: Path,
) -> None:
    sc, pol = tmp_path / "sc.yaml", tmp_path / "p.yaml"
    sc.write_text(SCENARIO.format(rps=5))
    pol.write_text(CUSTOM_POLICY.format(critical="false"))
    result = run("simulate", sc, "--policy", pol)
    assert result.exit_code in (0, 1, 2)  # it ran
    assert result.stderr.splitlines()[0] == (
        f"{sc}: warning: the scenario does not model custom metric 'gpu-util'; it stays "
        "inconclusive in every run (it is not critical, so it blocks nothing)"
    )


CUSTOM_SCENARIO = """duration: 2h
traffic: {{rps: 5}}
stable:
  errorRate: 0.01
  latency: {{lognormal: {{medianMs: 80, sigma: 0.5}}}}
  custom: {{gpu-util: {{mean: 0.60, sd: 0.03}}}}
canary:
  changes: [{changes}]
"""


@pytest.mark.parametrize(
    ("changes", "outcome"),
    [("", "promoted"), ("{at: 0s, custom: {gpu-util: {mean: 0.95, sd: 0.03}}}", "rolled_back")],
)
def test_simulate_models_a_custom_metric_from_the_scenario(
    tmp_path: Path, changes: str, outcome: str
) -> None:
    sc, pol = tmp_path / "sc.yaml", tmp_path / "p.yaml"
    sc.write_text(CUSTOM_SCENARIO.format(changes=changes))
    pol.write_text(CUSTOM_POLICY.format(critical="true"))
    result = run("simulate", sc, "--policy", pol, "--runs", "10", "--json")
    assert result.stderr == ""
    outcomes = json.loads(result.stdout)["outcomes"]
    assert outcomes[outcome] >= 9, outcomes


def test_a_canary_custom_value_needs_a_stable_one(tmp_path: Path) -> None:
    sc, pol = tmp_path / "sc.yaml", tmp_path / "p.yaml"
    sc.write_text(CUSTOM_SCENARIO.format(changes="{at: 5m, custom: {other: {mean: 1}}}"))
    pol.write_text(CUSTOM_POLICY.format(critical="true"))
    result = run("simulate", sc, "--policy", pol)
    assert result.exit_code == 3
    assert "custom metric(s) other have no stable value" in result.stderr


@pytest.mark.parametrize(
    ("counts", "why"),
    [
        (VersionCounts(math.nan, 0.0), "NaN in the counts"),
        (VersionCounts(10.0, float(np.float32("nan"))), "NaN in the counts"),
        (VersionCounts(np.float32("nan"), 0.0), "NaN in the counts"),  # type: ignore[arg-type]
        (VersionCounts(10.0, 1.0, (100.0, math.inf), (math.nan, 10.0)), "NaN in the counts"),
        (VersionCounts(math.inf, 0.0), "infinite count"),
        (VersionCounts(10.0, -math.inf), "infinite count"),
        (VersionCounts(10.0, -1.0), "negative increment (counter reset)"),
    ],
)
def test_nan_is_reported_as_nan_never_as_a_counter_reset(counts: VersionCounts, why: str) -> None:
    assert counts.problem() == why
