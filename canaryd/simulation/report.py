"""Simulation reports: PNG plots of one run and an HTML page that explains every decision."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from canaryd.durations import format_duration
from canaryd.simulation.engine import SimulationResult, Trace

_COLORS = {
    "promote": "tab:green",
    "rollback": "tab:red",
    "pause": "tab:orange",
    "set_weight": "tab:blue",
}


def _minutes(ts: list[float]) -> list[float]:
    return [t / 60.0 for t in ts]


def _markers(ax: plt.Axes, trace: Trace) -> None:
    for t, action, _ in trace.decisions:
        if action == "set_weight":
            continue
        ax.axvline(t / 60.0, color=_COLORS.get(action, "grey"), linestyle="--", linewidth=1.2)
    for t in trace.no_data:
        ax.axvspan((t - 60) / 60.0, t / 60.0, color="grey", alpha=0.15, linewidth=0)


def write_plots(trace: Trace, out: Path) -> list[str]:
    """Write weight, error rate, p99 and evidence plots; return their file names."""
    names: list[str] = []
    x = _minutes(trace.t)

    fig, ax = plt.subplots(figsize=(8, 2.8))
    # The canary's share is set at t=0 and changes only at interval ends.
    start = trace.weight[:1] if trace.weight else [0]
    ax.step([0.0, *x], [start[0], *trace.weight], where="post", color="tab:blue")
    for t, action, _ in trace.decisions:
        ax.scatter(
            [t / 60.0],
            [
                100
                if action == "promote"
                else 0
                if action == "rollback"
                else trace.weight[min(range(len(trace.t)), key=lambda i: abs(trace.t[i] - t))]
                if trace.t
                else 0
            ],
            color=_COLORS.get(action, "grey"),
            zorder=3,
            s=18,
        )
    _markers(ax, trace)
    ax.set(title="Canary weight", xlabel="minutes", ylabel="% of traffic", ylim=(-3, 103))
    names.append(_save(fig, out, "weight.png"))

    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.plot(x, [100 * v for v in trace.stable_error_rate], label="stable", color="tab:gray")
    ax.plot(x, [100 * v for v in trace.canary_error_rate], label="canary", color="tab:purple")
    _markers(ax, trace)
    ax.set(title="Error rate per interval", xlabel="minutes", ylabel="% of requests")
    ax.legend(loc="upper left")
    names.append(_save(fig, out, "errors.png"))

    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.plot(x, trace.stable_p99_ms, label="stable p99", color="tab:gray")
    ax.plot(x, trace.canary_p99_ms, label="canary p99", color="tab:purple")
    _markers(ax, trace)
    ax.set(title="p99 latency per interval (histogram_quantile)", xlabel="minutes", ylabel="ms")
    ax.legend(loc="upper left")
    names.append(_save(fig, out, "latency.png"))

    fig, ax = plt.subplots(figsize=(8, 2.8))
    for i, (metric, series) in enumerate(sorted(trace.e_values.items())):
        color = f"C{i}"
        ax.plot(
            x[: len(series)],
            [math.log10(v) if v and v > 0 else math.nan for v in series],
            label=f"{metric} e-value",
            color=color,
        )
        thr = trace.thresholds.get(metric)
        if thr:
            ax.axhline(math.log10(thr), color=color, linestyle=":", linewidth=1)
    _markers(ax, trace)
    ax.set(
        title="Evidence against the canary (log10 e-value; dotted: rollback threshold)",
        xlabel="minutes",
        ylabel="log10 e",
    )
    ax.legend(loc="upper left")
    names.append(_save(fig, out, "evidence.png"))
    return names


def _save(fig: plt.Figure, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def write_report(result: SimulationResult, out: Path) -> Path:
    """Write ``report.html``, the plots of run 0 and ``result.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    images = write_plots(result.trace, out)
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    run = result.runs[0]
    rows = "".join(
        f"<tr><td>{html.escape(format_duration(s['t']))}</td><td>{s['weight']}%</td>"
        f"<td>{html.escape(s['reason'])}</td></tr>"
        for s in run.steps
    )
    verdicts = "".join(
        f"<tr><td>{html.escape(v.metric)}</td><td>{html.escape(v.judge)}</td>"
        f"<td class='{v.status.value}'>{v.status.value}</td>"
        f"<td>{'' if v.estimate is None else f'{v.estimate:.3g}'}</td>"
        f"<td>{'' if v.interval is None else f'[{v.interval[0]:.3g}, {v.interval[1]:.3g}]'}</td>"
        f"<td>{'' if v.e_value is None else f'{v.e_value:.3g}'}</td>"
        f"<td>{html.escape(v.reason)}</td></tr>"
        for v in run.verdicts
    )
    outcomes = ", ".join(f"{k}: {n}" for k, n in result.outcomes.items() if n)
    figs = "".join(f"<img src='{n}' alt='{n}'>" for n in images)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>canaryd simulation: {html.escape(result.scenario)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 900px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; width: 100%; margin: 1em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }}
.fail {{ color: #b00; font-weight: bold; }} .pass {{ color: #070; font-weight: bold; }}
img {{ width: 100%; margin: 0.5em 0; }}
</style></head><body>
<h1>canaryd simulation</h1>
<p><b>Scenario</b> {html.escape(result.scenario)} &middot; <b>policy</b> {html.escape(result.policy)}
&middot; <b>runs</b> {len(result.runs)} ({html.escape(outcomes)})</p>
<h2>Run 0: {html.escape(run.outcome)}{"" if run.decided_at_s is None else " at " + format_duration(run.decided_at_s)}</h2>
<p>{run.canary_requests:.0f} canary requests, {run.canary_errors:.0f} canary errors,
final weight {run.final_weight}%.</p>
{figs}
<h2>Decisions</h2><table><tr><th>time</th><th>weight</th><th>reason</th></tr>{rows}</table>
<h2>Last verdicts</h2><table><tr><th>metric</th><th>judge</th><th>status</th><th>estimate</th>
<th>interval</th><th>e-value</th><th>reason</th></tr>{verdicts}</table>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
