"""``canaryd simulate``, ``canaryd replay`` and ``canaryd plan``.

``canaryd plan`` (the logic in ``simulation.plan``) says what a policy can detect at a traffic
level before a rollout; its exit codes are in ``canaryd.exitcodes`` too.

``simulate`` and ``replay`` exit with the codes of ``canaryd.exitcodes`` (``simulate`` only
with ``--runs 1``; a study of many runs exits 0 when it ran): 0 promoted, 1 rolled back, 2
paused or undecided, 3 a bad flag or an input file that does not load. This module imports only what ``--help`` needs; the
engine (numpy, scipy, pandas) and the report (matplotlib) are imported when a command runs.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from canaryd.durations import format_duration
from canaryd.errors import InputError, Problem
from canaryd.exitcodes import HELP as EXIT_CODES_HELP
from canaryd.exitcodes import PLAN_HELP, ExitCode, for_outcome

if TYPE_CHECKING:
    from canaryd.observation import VersionCounts
    from canaryd.policy.model import CanaryPolicy
    from canaryd.simulation.engine import RunResult, SimulationResult
    from canaryd.simulation.scenario import Scenario

FC = TypeVar("FC", bound=Callable[..., object] | click.Command)
_Sample = tuple[float, list[float], list[float], list[float], list[float]]


def _fail(exc: InputError) -> NoReturn:
    for p in exc.problems:
        click.echo(str(p), err=True)
    sys.exit(ExitCode.USAGE)


@contextlib.contextmanager
def _writing(option: str, path: Path) -> Iterator[None]:
    """An output the user named (``--report``, ``--openmetrics``) that cannot be written is
    their input error: one line and exit 3 (USAGE), not a traceback and an outcome's exit 1."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.filename is not None and Path(exc.filename) != path:
            why += f" ({exc.filename})"
        click.echo(f"{option} {path}: cannot write: {why}", err=True)
        sys.exit(ExitCode.USAGE)


def policy_for(
    scenario_policy: str | None, name: str | None, base: Path, override: Path | None
) -> CanaryPolicy:
    from canaryd.policy.loader import load_policy
    from canaryd.simulation.defaults import default_policy

    if override is not None:
        return load_policy(override, name)
    if scenario_policy is not None:
        return load_policy(base / scenario_policy, name)
    return default_policy()


EPOCH_TIMES_FROM_S = 1e9
"""A trace whose first time is at least this (2001-09-09) holds absolute epoch seconds."""


def timestamp(t: float) -> str:
    """``t`` epoch seconds as ISO 8601 UTC (``2015-02-26T14:05:00Z``)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clock(origin_s: float, absolute: bool) -> Callable[[float], str]:
    """How a summary prints a time: a timestamp, or the duration since ``origin_s``."""
    if absolute:
        return timestamp
    return lambda t: format_duration(t - origin_s)


def _summary(result: SimulationResult, origin_s: float = 0.0, absolute: bool = False) -> str:
    """The text of ``simulate`` and ``replay``: times since ``origin_s``, or timestamps."""
    when_of = _clock(origin_s, absolute)
    lines = [
        f"scenario {result.scenario} with policy {result.policy}: "
        f"{len(result.runs)} run(s) in {result.elapsed_s:.2f}s"
    ]
    lines.append("outcomes: " + ", ".join(f"{k} {n}" for k, n in result.outcomes.items() if n))
    run = result.runs[0]
    when = "" if run.decided_at_s is None else f" at {when_of(run.decided_at_s)}"
    lines.append(f"run 0: {run.outcome}{when}; {run.counts_text()}")
    lines.append(f"  {run.impact.summary()}")
    if run.history_note:
        lines.append(f"  history: {run.history_note}")
    lines.append("decisions:")
    for s in run.steps:
        lines.append(f"  {when_of(s['t']):>8}  {s['weight']:>3}%  {s['reason']}")
    if run.verdicts:
        lines.append("last verdicts:")
        lines.extend(f"  {v.summary()}" for v in run.verdicts)
    if len(result.runs) > 1:
        decided = sorted(r.decided_at_s for r in result.runs if r.decided_at_s is not None)
        if decided:
            lines.append(f"median decision time: {format_duration(decided[len(decided) // 2])}")
    return "\n".join(lines)


def _report_option(what: str) -> Callable[[FC], FC]:
    return click.option(
        "--report",
        "report_path",
        type=click.Path(path_type=Path),
        help=f"Write one self-contained HTML report of {what} (a FILE.html, or DIR/report.html).",
    )


@click.command("simulate", epilog=EXIT_CODES_HELP + " With --runs > 1: 0 when the study ran.")
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
@_report_option("the runs")
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
    report_path: Path | None,
    chaos_restarts: int,
    openmetrics_path: Path | None,
) -> None:
    """Run SCENARIO through the same controller and judges the daemon uses."""
    from canaryd.progress import Progress
    from canaryd.simulation.engine import simulate
    from canaryd.simulation.scenario import load_scenario

    try:
        sc, base = load_scenario(scenario)
        policy = policy_for(sc.policy, policy_name or sc.policy_name, base, policy_path)
    except InputError as exc:
        _fail(exc)
    _check_custom_metrics(scenario, sc, policy)
    sink = None
    samples: list[_Sample] = []
    mirrored: dict[float, list[float]] = {}
    mirror_sink = None
    if openmetrics_path is not None and policy.spec.steps.shadow is not None:

        def mirror_sink(t, cum):  # type: ignore[no-untyped-def]
            mirrored[t] = cum.tolist()

    if openmetrics_path is not None:
        unsupported = _openmetrics_unsupported(policy, sc)
        if unsupported:
            click.echo(f"{scenario}: --openmetrics: {unsupported}", err=True)
            sys.exit(ExitCode.USAGE)

        def sink(t, req, err, hs, hc):  # type: ignore[no-untyped-def]
            samples.append((t, req.tolist(), err.tolist(), hs.tolist(), hc.tolist()))

    bar = None
    if runs > 1 and not as_json and sys.stderr.isatty():
        intervals = int(sc.duration // sc.tick) // max(
            1, round(policy.spec.analysis.interval / sc.tick)
        )
        bar = Progress(runs * intervals, f"simulating {runs} runs", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        if bar is not None:
            stack.enter_context(bar)
        try:
            result = simulate(
                sc,
                policy,
                base,
                runs=runs,
                seed=seed,
                chaos_restarts=chaos_restarts,
                progress=bar.update if bar is not None else None,
                tick_sink=sink,
                scenario_name=sc.name or scenario.stem,
                mirror_sink=mirror_sink,
            )
        except InputError as exc:
            _fail(exc)
    if openmetrics_path is not None:
        from canaryd.simulation.engine import warmup_seconds

        warmup = result.runs[0].warmup
        with _writing("--openmetrics", openmetrics_path):
            _write_openmetrics(
                openmetrics_path,
                samples,
                sc.bounds_ms(),
                policy,
                sc.start.timestamp(),
                mirrored,
                None if warmup is None else (warmup_seconds(sc, policy), warmup),
            )
    if report_path is not None:
        from canaryd.simulation.report import ReportInputs, write_report

        with _writing("--report", report_path):
            path = write_report(
                result,
                report_path,
                ReportInputs(
                    policy=policy,
                    source=str(scenario),
                    kind="simulation",
                    scenario=sc,
                    scenario_text=scenario.read_text(encoding="utf-8"),
                    seed=seed,
                    chaos_restarts=chaos_restarts,
                ),
            )
        if not as_json:
            click.echo(f"report: {path}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(_summary(result))
    sys.exit(for_outcome(result.runs[0].outcome) if runs == 1 else ExitCode.NO_WORSE)


def _check_custom_metrics(scenario: Path, sc: Scenario, policy: CanaryPolicy) -> None:
    """A ``custom`` metric is simulated from the scenario's ``custom`` values (its value comes
    from the user's own PromQL in the cluster). One the scenario does not model would keep
    every run inconclusive: a critical one is refused (exit 3) with the syntax to add, a
    non-critical one is named in a warning line."""
    modelled = set(sc.stable.custom or {})
    custom = [m for m in policy.spec.analysis.metrics if m.kind == "custom"]
    missing = [m for m in custom if m.name not in modelled]
    critical = [m.name for m in missing if m.critical]
    if critical:
        click.echo(
            f"{scenario}: the scenario does not model custom metric(s) {', '.join(critical)}: "
            "as critical metrics they would keep every run inconclusive. Add their "
            f"per-interval values, e.g. stable: {{custom: {{{critical[0]}: {{mean: 0.6, "
            "sd: 0.05}}}} (and canary changes with custom: ...), or make them critical: false",
            err=True,
        )
        sys.exit(ExitCode.USAGE)
    for m in missing:
        click.echo(
            f"{scenario}: warning: the scenario does not model custom metric {m.name!r}; it "
            "stays inconclusive in every run (it is not critical, so it blocks nothing)",
            err=True,
        )


def _openmetrics_unsupported(policy: CanaryPolicy, sc: Scenario) -> str:
    """Why ``--openmetrics`` cannot export what this policy reads in this scenario ("" when
    it can).

    A warm-up (``warmup_seconds``) is exported as stable's counters over exactly its own
    stretch before t=0, so it is refused when the daemon would read another one: a scenario
    ``warmup`` other than the policy's ``analysis.history``, including none while the policy
    reads some (the daemon would be primed with an empty history, the simulator not at all).
    Scenario ``pods`` are refused: the series are written per revision, so the daemon would
    judge without the per-pod counts the simulator's judges had.
    """
    from canaryd.policy.model import SEQUENTIAL_ONLY_KINDS
    from canaryd.simulation.engine import warmup_seconds

    preset = policy.spec.analysis.source.preset
    if preset not in ("istio", "knative"):
        return (
            f"exports the istio and knative presets' series only, not preset {preset!r} "
            "(simulate with a policy of one of those presets)"
        )
    ml = [m.name for m in policy.spec.analysis.metrics if m.kind in SEQUENTIAL_ONLY_KINDS]
    if ml:
        return (
            f"cannot export the series of metric(s) {', '.join(ml)}: their PromQL templates "
            "name series the simulator does not know"
        )
    warm_s, history = warmup_seconds(sc, policy), policy.spec.analysis.history
    if warm_s != history:
        return (
            f"the scenario's warmup ({format_duration(warm_s)}) is not the policy's "
            f"analysis.history ({format_duration(history)}): the daemon would read stable's "
            "history over a window the simulator did not draw (make them equal, or set both "
            "to 0s)"
        )
    if sc.pods is not None:
        return (
            "cannot export per-pod counts (scenario pods): the series are written per "
            "revision, so the daemon would judge without the pods the simulator's judges saw "
            "(drop the scenario's pods to export)"
        )
    return ""


def _write_openmetrics(
    path: Path,
    samples: list[_Sample],
    bounds: tuple[float, ...],
    policy: CanaryPolicy,
    epoch_s: float,
    mirrored: dict[float, list[float]],
    warmup: tuple[float, VersionCounts] | None = None,
) -> None:
    """Run 0's counters, timestamped from the scenario's ``start`` wall time.

    With a shadow phase (``mirrored`` holds the canary's cumulative mirrored requests and
    errors per tick) and the istio preset, the source-reported requests are written too, so
    that Prometheus tells the mirrored copies apart as it would in a mesh.

    ``warmup`` (seconds, stable's counts) is run 0's warm-up: stable's counters are 0 at
    ``start - seconds`` and hold the warm-up's totals at ``start``, and every later stable
    sample carries them (counters are cumulative). A window is counted between its edge
    samples (``canaryd.metrics.presets``), so the daemon's history window ``[start - seconds,
    start)`` reads exactly the warm-up's counts, and every analysis window exactly its own.
    The canary has no history: its counters start at 0 at ``start``.
    """
    from canaryd.metrics.openmetrics import Preset, TickSample, write_openmetrics

    # Counters start at 0 when their series starts, so that a window's start edge is a sample.
    zeros = tuple(0.0 for _ in bounds)
    ticks = []
    base_req = base_err = 0.0
    base_hist = zeros
    if warmup is not None:
        seconds, stable = warmup
        if stable.bounds_ms != bounds or stable.pods:
            raise ValueError("the warm-up's histogram layout or pods do not match the series")
        ticks.append(TickSample(epoch_s - seconds, "stable", 0.0, 0.0, bounds, zeros))
        base_req, base_err, base_hist = stable.requests, stable.errors, stable.bucket_counts
    ticks += [
        TickSample(epoch_s, "stable", base_req, base_err, bounds, base_hist),
        TickSample(epoch_s, "canary", 0.0, 0.0, bounds, zeros),
    ]
    for t, req, err, hs, hc in samples:
        m_req, m_err = mirrored.get(t, (0.0, 0.0))
        cum_hs = tuple(b + x for b, x in zip(base_hist, hs, strict=True))
        ticks.append(
            TickSample(epoch_s + t, "stable", base_req + req[0], base_err + err[0], bounds, cum_hs)
        )
        ticks.append(
            TickSample(epoch_s + t, "canary", req[1], err[1], bounds, tuple(hc), m_req, m_err)
        )
    preset: Preset = "knative" if policy.spec.analysis.source.preset == "knative" else "istio"
    path.parent.mkdir(parents=True, exist_ok=True)  # as --report does
    with path.open("w", encoding="utf-8") as out:
        write_openmetrics(
            out,
            ticks,
            preset=preset,
            namespace=policy.spec.target.namespace,
            source_reports=bool(mirrored) and preset == "istio",
        )


def _shifted(run: RunResult, origin_s: float) -> RunResult:
    """The run with every time relative to ``origin_s`` (a report's t=0)."""
    return replace(
        run,
        decided_at_s=None if run.decided_at_s is None else run.decided_at_s - origin_s,
        steps=[{**s, "t": s["t"] - origin_s} for s in run.steps],
    )


@click.command("replay", epilog=EXIT_CODES_HELP)
@click.argument("trace", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--policy", "policy_path", required=True, type=click.Path(exists=True, path_type=Path)
)
@click.option("--policy-name", help="Which policy, when the file holds several.")
@click.option("--json", "as_json", is_flag=True)
@_report_option("the replay")
def replay_cmd(
    trace: Path,
    policy_path: Path,
    policy_name: str | None,
    as_json: bool,
    report_path: Path | None,
) -> None:
    """Replay a recorded per-interval trace (open loop) through a policy's decisions.

    Times print as ISO 8601 UTC timestamps when the trace's times are epoch seconds (its first
    at or after 2001-09-09), else as durations since the trace's first interval.
    """
    from canaryd.controller import Action, RolloutController
    from canaryd.metrics.replay import read_trace, split_history
    from canaryd.policy.loader import load_policy
    from canaryd.simulation.engine import RunResult, SimulationResult, Trace, trace_quantiles

    try:
        policy = load_policy(policy_path, policy_name)
        history, observations = split_history(read_trace(trace), policy.spec.analysis.history)
    except InputError as exc:
        _fail(exc)
    ctrl = RolloutController(policy)
    state = ctrl.new_state("stable", "canary")
    t0 = observations[0].start_s if observations else 0.0
    d, state = ctrl.step(state, t0)
    if policy.spec.analysis.history > 0:
        state = ctrl.prime(state, history, "the trace has no stable-only rows before the canary")
    decisions = [d]
    series = Trace(quantiles=trace_quantiles(policy))
    series.decisions.append((0.0, d.action.value, d.reason))
    weight = d.weight or 0
    for obs in observations:
        if state.phase.terminal:
            break
        d, state = ctrl.step(state, obs.end_s, obs)
        decisions.append(d)
        weight = d.weight if d.weight is not None else weight
        # The report's clock starts at the trace's first interval.
        series.record(obs.end_s - t0, weight, obs, replace(d, t=d.t - t0))
        if d.action is not Action.HOLD:
            series.decisions.append((d.t - t0, d.action.value, d.reason))
    run = RunResult.from_state(state, 0, list(decisions[-1].verdicts), decisions)
    result = SimulationResult(trace.name, policy.name, [run], trace=series)
    if report_path is not None:
        from canaryd.simulation.report import ReportInputs, write_report

        shown = replace(result, runs=[_shifted(run, t0)])
        with _writing("--report", report_path):
            path = write_report(
                shown, report_path, ReportInputs(policy=policy, source=str(trace), kind="replay")
            )
        if not as_json:
            click.echo(f"report: {path}", err=True)
    absolute = t0 >= EPOCH_TIMES_FROM_S
    if as_json:
        out = run.to_dict()
        if absolute:
            for step in out["steps"]:
                step["time"] = timestamp(step["t"])
            if run.decided_at_s is not None:
                out["decided_at"] = timestamp(run.decided_at_s)
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(_summary(result, origin_s=t0, absolute=absolute))
    sys.exit(for_outcome(run.outcome))


def _plan_hint(p: Problem, scenario_path: Path | None) -> str:
    """What to give ``plan`` when the stable version it made up from flags lacks a field."""
    if scenario_path is not None:
        return ""
    if p.path.startswith("stable.llm"):
        return " (give a --scenario file that has it, e.g. simulations/llm-vllm.yaml)"
    return " (give them in a --scenario file)"


def _check_rps(value: float) -> float:
    """``--traffic`` within what a scenario may model (``scenario.MAX_RPS``)."""
    from canaryd.simulation.scenario import MAX_RPS

    if value > MAX_RPS:
        raise click.BadParameter(
            f"expected at most {MAX_RPS:,.0f} requests per second, got {value:g}"
        )
    return value


def _parse_pods(value: str) -> tuple[int, int]:
    """``--pods STABLE[:CANARY]`` as replica counts (canary 1 when omitted)."""
    from canaryd.simulation.scenario import MAX_SIMULATED_PODS

    parts = value.split(":")
    try:
        counts = [int(x) for x in parts]
    except ValueError:
        counts = []
    if len(counts) not in (1, 2) or not all(1 <= c <= MAX_SIMULATED_PODS for c in counts):
        raise click.BadParameter(
            f"expected STABLE or STABLE:CANARY replica counts from 1 to {MAX_SIMULATED_PODS}, "
            f"got {value!r}"
        )
    return counts[0], counts[1] if len(counts) == 2 else 1


@click.command("plan", epilog=PLAN_HELP)
@click.argument("policy_path", metavar="POLICY_FILE", type=click.Path(path_type=Path))
@click.option(
    "--traffic",
    "rps",
    required=True,
    type=click.FloatRange(min=0.0, min_open=True),
    callback=lambda _ctx, _param, v: _check_rps(v),
    help="Total requests per second to the model (the canary's share follows the steps).",
)
@click.option("--name", "policy_name", help="Which policy, when the file holds several.")
@click.option(
    "--runs",
    default=40,
    show_default=True,
    type=click.IntRange(min=10, max=10_000),
    help="Seeded simulated rollouts per effect tried.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--error-rate",
    default=0.005,
    show_default=True,
    type=click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True),
    help="Stable's error rate.",
)
@click.option(
    "--latency-median-ms",
    default=80.0,
    show_default=True,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Stable's median latency (lognormal).",
)
@click.option(
    "--latency-sigma",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0.0, max=5.0, min_open=True),
    help="Sigma of stable's lognormal latency.",
)
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(path_type=Path),
    help="Take stable's error rate, latency and buckets from this scenario file instead.",
)
@click.option(
    "--pods",
    "pods_arg",
    metavar="STABLE[:CANARY]",
    callback=lambda _ctx, _param, v: None if v is None else _parse_pods(v),
    help="Simulate each version on its own alike replicas (canary default 1), as KServe runs "
    "them and as the pod-aware judges see them; overrides a scenario's pods.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def plan_cmd(
    policy_path: Path,
    rps: float,
    policy_name: str | None,
    runs: int,
    seed: int,
    error_rate: float,
    latency_median_ms: float,
    latency_sigma: float,
    scenario_path: Path | None,
    pods_arg: tuple[int, int] | None,
    as_json: bool,
) -> None:
    """Before a rollout: what POLICY_FILE can detect at --traffic RPS, and how fast.

    The smallest error ratio and latency shift (the whole distribution slower: median +x %)
    detected with 90 % probability before maxDuration, the median time to detect errors x2,
    and how long a healthy canary takes to promote: floors first, then seeded simulations
    through the same decision loop as simulate. Warns (exit 1) when the policy cannot detect
    its own minDetectableEffect in time.
    """
    from canaryd.policy.loader import load_policy
    from canaryd.simulation.plan import baseline_from_flags, baseline_from_scenario, make_plan
    from canaryd.simulation.scenario import load_scenario

    try:
        policy = load_policy(policy_path, policy_name)
        if scenario_path is not None:
            sc, _ = load_scenario(scenario_path)
            baseline = baseline_from_scenario(sc, scenario_path)
        else:
            baseline = baseline_from_flags(
                error_rate,
                latency_median_ms,
                latency_sigma,
                policy.spec.analysis.source.preset,
            )
        if pods_arg is not None:
            from canaryd.simulation.scenario import Pods

            if policy.spec.steps.shadow is not None:
                raise click.BadParameter(
                    f"policy {policy.name!r} starts with a shadow phase (spec.steps.shadow), "
                    "and pods are not modelled with mirrored copies: plan it without --pods",
                    param_hint="'--pods'",
                )
            baseline = replace(baseline, pods=Pods(stable=pods_arg[0], canary=pods_arg[1]))
        try:
            plan = make_plan(policy, rps, baseline, runs, seed)
        except InputError as exc:
            # The simulator names its generated scenario "scenario": name the real input.
            where = str(scenario_path) if scenario_path is not None else str(policy_path)
            raise InputError(
                [
                    replace(p, file=where, message=p.message + _plan_hint(p, scenario_path))
                    if p.file == "scenario"
                    else p
                    for p in exc.problems
                ]
            ) from None
    except InputError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        click.echo("\n".join(plan.lines()))
    sys.exit(ExitCode.WORSE if plan.warnings else ExitCode.NO_WORSE)
