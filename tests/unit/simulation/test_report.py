"""The simulation report: one file, the policy's quantiles, robust scales, marks and inputs.

Chromium renders it in tests/integration/browser; these tests read the HTML itself.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.policy.model import CanaryPolicy
from canaryd.simulation.defaults import DEFAULT_POLICY_DOC
from canaryd.simulation.engine import RunResult, SimulationResult, Trace, simulate
from canaryd.simulation.report import (
    ReportInputs,
    error_scale,
    latency_scale,
    render_report,
    sample_runs,
    weighted_quantile,
    wilson,
)
from canaryd.simulation.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[3]
SIM = ROOT / "simulations"


def _policy(quantiles: list[float]) -> CanaryPolicy:
    doc = yaml.safe_load(yaml.safe_dump(DEFAULT_POLICY_DOC))
    doc["spec"]["analysis"]["metrics"][1]["quantiles"] = quantiles
    return CanaryPolicy.model_validate(doc)


def _report(scenario: str, policy: CanaryPolicy, runs: int = 1) -> tuple[str, SimulationResult]:
    path = SIM / f"{scenario}.yaml"
    sc, base = load_scenario(path)
    result = simulate(sc, policy, base, runs=runs, seed=2)
    inputs = ReportInputs(
        policy=policy,
        source=str(path),
        scenario=sc,
        scenario_text=path.read_text(encoding="utf-8"),
        seed=2,
    )
    return render_report(result, inputs), result


def _figures(page: str) -> list[str]:
    return re.findall(r'<figure class="plot" id="fig-([^"]+)">', page)


def test_latency_plots_are_the_quantiles_the_policy_tests() -> None:
    page, result = _report("error-regression", _policy([0.5, 0.9]))
    figs = _figures(page)
    assert [f for f in figs if f.startswith("latency")] == ["latency-p50", "latency-p90"]
    assert "p90 latency per interval" in page and "p99" not in " ".join(figs)
    assert result.trace.quantiles == (0.5, 0.9)
    assert len(result.trace.canary_latency_ms[0.9]) == len(result.trace.t)


def test_one_file_with_nothing_to_fetch() -> None:
    page, _ = _report("error-regression", _policy([0.5, 0.99]), runs=6)
    # No script, no external stylesheet, image, font or frame: every reference is a fragment.
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert "<iframe" not in page and "@import" not in page
    refs = re.findall(r'(?:href|src)\s*=\s*"([^"]*)"', page)
    assert all(r.startswith("#") for r in refs), refs
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", page))
    # Inline SVG, no XML prolog or doctype per figure, and ids unique across figures.
    assert page.count("<?xml") == 0 and page.count("<!DOCTYPE svg") == 0
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_the_error_scale_is_not_set_by_the_first_intervals_spike() -> None:
    trace = Trace()
    n = 40
    trace.t = [60.0 * (i + 1) for i in range(n)]
    trace.stable_requests = [1000.0] * n
    trace.stable_errors = [5.0] * n
    # The first interval at a 5 % split: 40 canary requests, 10 errors (25 %).
    trace.canary_requests = [40.0] + [200.0] * (n - 1)
    trace.canary_errors = [10.0] + [2.0] * (n - 1)
    trace.stable_error_rate = [
        e / r for e, r in zip(trace.stable_errors, trace.stable_requests, strict=True)
    ]
    trace.canary_error_rate = [
        e / r for e, r in zip(trace.canary_errors, trace.canary_requests, strict=True)
    ]
    top = error_scale(trace)
    assert top is not None
    assert 1.0 < top < 3.0  # percent: the 1 % intervals fill the plot, the 25 % spike is off it
    trace.stable_latency_ms = {0.99: [100.0] * n}
    trace.canary_latency_ms = {0.99: [5000.0] + [110.0] * (n - 1)}
    lat = latency_scale(trace, 0.99)
    assert lat is not None and 110 < lat < 200


def test_off_scale_points_are_counted_in_the_legend() -> None:
    page, result = _report("error-regression", _policy([0.5, 0.99]))
    top = error_scale(result.trace)
    assert top is not None
    over = sum(
        1
        for v in [*result.trace.stable_error_rate, *result.trace.canary_error_rate]
        if math.isfinite(v) and 100 * v > top
    )
    if over:
        assert f"off scale ({over})" in page


def test_changes_steps_and_inputs_are_in_the_page() -> None:
    policy = _policy([0.5, 0.99])
    page, result = _report("error-regression", policy)
    assert "10m: canary change: errorRate 2%" in page
    assert "shaded bands: the steps of run 0" in page
    # The policy as run loads back to the same policy; the scenario is there as written.
    pre = re.search(r"<pre class='input' id='policy'>(.*?)</pre>", page, re.S)
    assert pre is not None
    import html

    assert CanaryPolicy.model_validate(yaml.safe_load(html.unescape(pre.group(1)))) == policy
    scen = re.search(r"<pre class='input' id='scenario'>(.*?)</pre>", page, re.S)
    assert scen is not None
    assert html.unescape(scen.group(1)) == (SIM / "error-regression.yaml").read_text()
    # Every decision of run 0 is in the table.
    for s in result.runs[0].steps:
        assert html.escape(s["reason"]) in page


def test_the_policy_section_says_how_durations_are_written_and_shows_pod_spread() -> None:
    doc = yaml.safe_load(yaml.safe_dump(DEFAULT_POLICY_DOC))
    doc["spec"]["analysis"]["metrics"][1]["podSpread"] = 1.5
    policy = CanaryPolicy.model_validate(doc)
    page, _ = _report("error-regression", policy)
    head = re.search(r"<summary>Policy as run (.*?)</summary>", page, re.S)
    assert head is not None
    assert "durations in seconds" not in head.group(1)
    assert "durations as a policy writes them, e.g. 5m" in head.group(1)
    assert "podSpread where the policy sets it" in head.group(1)
    pre = re.search(r"<pre class='input' id='policy'>(.*?)</pre>", page, re.S)
    assert pre is not None
    import html

    shown = yaml.safe_load(html.unescape(pre.group(1)))
    assert shown["spec"]["steps"]["minDwell"] == "5m"
    metrics = shown["spec"]["analysis"]["metrics"]
    assert [m.get("podSpread") for m in metrics] == [None, 1.5]


def test_several_runs_show_the_spread_times_and_samples() -> None:
    page, result = _report("error-regression", _policy([0.5, 0.99]), runs=8)
    figs = _figures(page)
    assert figs[:3] == ["outcomes", "decision-times", "samples"]
    assert "95% CI" in page
    picked = sample_runs(result.runs)
    assert picked[0] == 0
    rows = re.findall(r"<table class='samples'>.*?</table>", page, re.S)
    assert len(rows) == 1 and rows[0].count("<tr>") == len(picked) + 1


def _run(outcome: str, t: float | None) -> RunResult:
    return RunResult(0, outcome, t, 0.0, 0.0, 0, [], [])


def test_sample_runs_are_run_0_then_fastest_median_slowest_per_outcome() -> None:
    runs = [_run("promoted", 50)] + [_run("rolled_back", t) for t in (30, 10, 20, 40)]
    runs += [_run("promoted", 70), _run("in_progress", None)]
    assert sample_runs(runs) == [0, 5, 2, 1, 4, 6]
    assert len(sample_runs([_run("promoted", float(i)) for i in range(100)], limit=2)) == 2


def test_weighted_quantile_and_wilson() -> None:
    assert weighted_quantile([1, 2, 3], [1, 1, 98], 0.5) == 3
    assert weighted_quantile([1, 2, 3], [98, 1, 1], 0.9) == 1
    assert math.isnan(weighted_quantile([math.nan], [1], 0.5))
    lo, hi = wilson(50, 50)
    assert hi == 1.0 and 0.92 < lo < 0.94


def test_report_flag_takes_a_file_or_a_directory(tmp_path: Path) -> None:
    scenario = str(SIM / "error-regression.yaml")
    as_file = tmp_path / "one" / "mine.html"
    res = CliRunner().invoke(main, ["simulate", scenario, "--report", str(as_file)])
    assert res.exit_code == 1, res.output
    assert [p.name for p in as_file.parent.iterdir()] == ["mine.html"]
    res = CliRunner().invoke(main, ["simulate", scenario, "--report", str(tmp_path / "dir")])
    assert (tmp_path / "dir" / "report.html").is_file()
    assert f"report: {tmp_path / 'dir' / 'report.html'}" in res.stderr


def test_replay_report_starts_its_clock_at_the_trace(tmp_path: Path) -> None:
    from canaryd.metrics.replay import write_trace
    from canaryd.observation import Observation, VersionCounts

    bounds = (50.0, 100.0, math.inf)
    t0 = 1_700_000_000
    obs = [
        Observation(
            t0 + t - 60,
            t0 + t,
            VersionCounts(900, 4, bounds, (400.0, 800.0, 900.0)),
            VersionCounts(100, 30, bounds, (40.0, 80.0, 100.0)),
        )
        for t in range(60, 1800, 60)
    ]
    trace = tmp_path / "trace.csv"
    write_trace(trace, obs)
    out = tmp_path / "replay.html"
    res = CliRunner().invoke(
        main,
        [
            "replay",
            str(trace),
            "--policy",
            str(ROOT / "policies" / "llm-kserve.yaml"),
            "--report",
            str(out),
        ],
    )
    assert res.exit_code == 1, res.output
    page = out.read_text()
    assert "canaryd replay: " in page
    first = re.search(r"<h2>Decisions of run 0</h2><table><tr>.*?</tr><tr><td>([^<]*)</td>", page)
    assert first is not None and first.group(1) == "0s"
    # The report's clock starts at the trace; the text prints the trace's own epoch times.
    assert "decisions:\n  2023-11-14T22:13:20Z   10%" in res.stdout
    assert {"weight", "errors", "latency-p50", "latency-p99", "evidence"} <= set(_figures(page))
