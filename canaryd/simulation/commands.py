"""``canaryd simulate`` and ``canaryd replay``."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from canaryd.controller import RolloutController
from canaryd.durations import format_duration
from canaryd.errors import InputError
from canaryd.policy.loader import load_policy
from canaryd.policy.model import CanaryPolicy
from canaryd.simulation.defaults import default_policy
from canaryd.simulation.engine import RunResult, SimulationResult, Trace, simulate
from canaryd.simulation.scenario import load_scenario

_Sample = tuple[float, list[float], list[float], list[float], list[float]]


def _fail(exc: InputError) -> None:
    for p in exc.problems:
        click.echo(str(p), err=True)
    sys.exit(1)


def policy_for(
    scenario_policy: str | None, name: str | None, base: Path, override: Path | None
) -> CanaryPolicy:
    if override is not None:
        return load_policy(override, name)
    if scenario_policy is not None:
        return load_policy(base / scenario_policy, name)
    return default_policy()


def _summary(result: SimulationResult) -> str:
    lines = [
        f"scenario {result.scenario} with policy {result.policy}: "
        f"{len(result.runs)} run(s) in {result.elapsed_s:.2f}s"
    ]
    lines.append("outcomes: " + ", ".join(f"{k} {n}" for k, n in result.outcomes.items() if n))
    run = result.runs[0]
    when = "" if run.decided_at_s is None else f" at {format_duration(run.decided_at_s)}"
    lines.append(
        f"run 0: {run.outcome}{when}; {run.canary_requests:.0f} canary requests, "
        f"{run.canary_errors:.0f} errors, final weight {run.final_weight}%"
    )
    lines.append("decisions:")
    for s in run.steps:
        lines.append(f"  {format_duration(s['t']):>8}  {s['weight']:>3}%  {s['reason']}")
    if run.verdicts:
        lines.append("last verdicts:")
        lines.extend(f"  {v.summary()}" for v in run.verdicts)
    if len(result.runs) > 1:
        decided = sorted(r.decided_at_s for r in result.runs if r.decided_at_s is not None)
        if decided:
            lines.append(f"median decision time: {format_duration(decided[len(decided) // 2])}")
    return "\n".join(lines)


@click.command("simulate")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, path_type=Path),
    help="Policy file (overrides the scenario's).",
)
@click.option("--policy-name", help="Which policy, when the file holds several.")
@click.option("--runs", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.html and plots of run 0 here.",
)
@click.option(
    "--chaos-restarts",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Destroy and restore each run's controller from its state K times.",
)
@click.option(
    "--openmetrics",
    "openmetrics_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write run 0's series as OpenMetrics for promtool backfilling.",
)
def simulate_cmd(
    scenario: Path,
    policy_path: Path | None,
    policy_name: str | None,
    runs: int,
    seed: int,
    as_json: bool,
    report_dir: Path | None,
    chaos_restarts: int,
    openmetrics_path: Path | None,
) -> None:
    """Run SCENARIO through the same controller and judges the daemon uses."""
    try:
        sc, base = load_scenario(scenario)
        policy = policy_for(sc.policy, policy_name or sc.policy_name, base, policy_path)
    except InputError as exc:
        _fail(exc)
        return
    sink = None
    samples: list[_Sample] = []
    if openmetrics_path is not None:

        def sink(t, req, err, hs, hc):  # type: ignore[no-untyped-def]
            samples.append((t, req.tolist(), err.tolist(), hs.tolist(), hc.tolist()))

    show_bar = runs > 1 and not as_json and sys.stderr.isatty()
    total = int(sc.duration // sc.tick)
    bar = click.progressbar(length=total, label=f"simulating {runs} runs", file=sys.stderr)
    try:
        with bar if show_bar else contextlib.nullcontext():
            result = simulate(
                sc,
                policy,
                base,
                runs=runs,
                seed=seed,
                chaos_restarts=chaos_restarts,
                progress=bar.update if show_bar else None,
                tick_sink=sink,
                scenario_name=sc.name or scenario.stem,
            )
    except InputError as exc:
        _fail(exc)
        return
    if openmetrics_path is not None:
        _write_openmetrics(openmetrics_path, samples, sc.bounds_ms(), policy, sc.start.timestamp())
    if report_dir is not None:
        from canaryd.simulation.report import write_report

        path = write_report(result, report_dir)
        if not as_json:
            click.echo(f"report: {path}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(_summary(result))


def _write_openmetrics(
    path: Path,
    samples: list[_Sample],
    bounds: tuple[float, ...],
    policy: CanaryPolicy,
    epoch_s: float,
) -> None:
    """Run 0's counters, timestamped from the scenario's ``start`` wall time."""
    from canaryd.metrics.openmetrics import TickSample, write_openmetrics

    # Counters start at 0 when the scenario starts: without that sample Prometheus would
    # extrapolate the first interval's increase() instead of counting it.
    zeros = tuple(0.0 for _ in bounds)
    ticks = [
        TickSample(epoch_s, "stable", 0.0, 0.0, bounds, zeros),
        TickSample(epoch_s, "canary", 0.0, 0.0, bounds, zeros),
    ]
    for t, req, err, hs, hc in samples:
        ticks.append(TickSample(epoch_s + t, "stable", req[0], err[0], bounds, tuple(hs)))
        ticks.append(TickSample(epoch_s + t, "canary", req[1], err[1], bounds, tuple(hc)))
    preset = policy.spec.analysis.source.preset
    with path.open("w", encoding="utf-8") as out:
        write_openmetrics(
            out,
            ticks,
            preset="knative" if preset == "knative" else "istio",
            namespace=policy.spec.target.namespace,
        )


@click.command("replay")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--policy", "policy_path", required=True, type=click.Path(exists=True, path_type=Path)
)
@click.option("--policy-name", help="Which policy, when the file holds several.")
@click.option("--json", "as_json", is_flag=True)
def replay_cmd(trace: Path, policy_path: Path, policy_name: str | None, as_json: bool) -> None:
    """Replay a recorded per-interval trace (open loop) through a policy's decisions."""
    from canaryd.metrics.replay import read_trace

    try:
        policy = load_policy(policy_path, policy_name)
        observations = read_trace(trace)
    except InputError as exc:
        _fail(exc)
        return
    ctrl = RolloutController(policy)
    state = ctrl.new_state("stable", "canary")
    t0 = observations[0].start_s if observations else 0.0
    d, state = ctrl.step(state, t0)
    decisions = [d]
    for obs in observations:
        if state.phase.terminal:
            break
        d, state = ctrl.step(state, obs.end_s, obs)
        decisions.append(d)
    run = RunResult.from_state(state, 0, list(decisions[-1].verdicts), decisions)
    if as_json:
        click.echo(json.dumps(run.to_dict(), indent=2))
        return
    result = SimulationResult(trace.name, policy.name, [run], trace=Trace())
    click.echo(_summary(result))
