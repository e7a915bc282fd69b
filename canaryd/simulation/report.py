"""The report of a simulation or replay: one self-contained HTML file a person can attach.

Everything is inside the file: the plots are inline SVG (matplotlib, text kept as text), the
style is inline, there is no script and no link, image, font or stylesheet to fetch. What it
shows:

- for several runs: the spread of outcomes (with 95 % Wilson intervals), the distribution of
  decision times by outcome, and the weight trajectories and final reasons of a few sample
  runs (the fastest, median and slowest run of each outcome, and run 0);
- for run 0 (the only run whose per-interval series the engine keeps): the canary weight, the
  error rates, the latency at every quantile the policy's latency metrics test (not always
  p99) and the evidence, with the steps shaded, the scenario's injected changes, incidents and
  metric outages marked, and intervals without data greyed;
- the decision table, the last verdicts, and the policy (as run: every default filled in) and
  the scenario (as written) embedded.

Axis scales are robust: the y-limit of a per-interval rate or latency plot comes from the
request-weighted 90th percentile of each series and the cumulative values, not from the
maximum, so one noisy interval with few canary requests (the first interval at a 5 % split)
does not flatten everything else. Points above the limit are drawn as triangles on the top
edge and counted in the legend.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canaryd.durations import format_duration
from canaryd.simulation.engine import OUTCOMES, RunResult, SimulationResult, Trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from canaryd.policy.model import CanaryPolicy
    from canaryd.simulation.scenario import Change, Scenario

OUTCOME_COLORS = {
    "promoted": "#2ca02c",
    "rolled_back": "#d62728",
    "paused": "#ff7f0e",
    "in_progress": "#7f7f7f",
    "failed": "#8c564b",
}
_ACTION_COLORS = {"promote": "#2ca02c", "rollback": "#d62728", "pause": "#ff7f0e"}
STABLE_COLOR = "#555555"
CANARY_COLOR = "#9467bd"
MAX_SAMPLE_RUNS = 12


@dataclass(frozen=True)
class ReportInputs:
    """What the report embeds and marks besides the result itself.

    ``scenario`` (None for a replay) gives the injected changes, incidents and outages to mark;
    ``scenario_text`` is the scenario file as written; ``source`` names what was run (the
    scenario or trace file); ``seed`` and ``chaos_restarts`` are shown in the header.
    """

    policy: CanaryPolicy
    source: str
    kind: str = "simulation"
    scenario: Scenario | None = None
    scenario_text: str | None = None
    seed: int | None = None
    chaos_restarts: int = 0


# -- robust scales ---------------------------------------------------------------------------


def weighted_quantile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """The ``q`` quantile of finite ``values`` with non-negative ``weights`` (NaN if none)."""
    pairs = sorted(
        (v, w)
        for v, w in zip(values, weights, strict=True)
        if math.isfinite(v) and math.isfinite(w) and w > 0
    )
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return math.nan
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= q * total:
            return v
    return pairs[-1][0]


def robust_top(
    series: Sequence[tuple[Sequence[float], Sequence[float]]],
    always: Sequence[float] = (),
    q: float = 0.9,
    pad: float = 1.3,
) -> float | None:
    """An upper y-limit: ``pad`` x the largest of each (values, weights) series' weighted
    ``q`` quantile and of the ``always`` values (which must stay visible); None if nothing."""
    tops = [weighted_quantile(v, w, q) for v, w in series]
    tops += [a for a in always if math.isfinite(a)]
    tops = [t for t in tops if math.isfinite(t)]
    if not tops:
        return None
    top = max(tops) * pad
    return top if top > 0 else None


def cumulative_rate(events: Sequence[float], totals: Sequence[float]) -> list[float]:
    """Running ``sum(events) / sum(totals)`` (no-data intervals, NaN, add nothing)."""
    out: list[float] = []
    e = n = 0.0
    for a, b in zip(events, totals, strict=True):
        if math.isfinite(a) and math.isfinite(b):
            e += a
            n += b
        out.append(e / n if n > 0 else math.nan)
    return out


def error_scale(trace: Trace) -> float | None:
    """The error plot's upper limit in percent (see the module docstring).

    The cumulative rates count as series too, weighted by the requests they rest on (their
    first point is the first interval's rate, spike and all); only their final values, the
    best-measured, are always kept in view.
    """
    cum_s = cumulative_rate(trace.stable_errors, trace.stable_requests)
    cum_c = cumulative_rate(trace.canary_errors, trace.canary_requests)
    n_s = _running_total(trace.stable_requests)
    n_c = _running_total(trace.canary_requests)
    final = [next((v for v in reversed(c) if math.isfinite(v)), math.nan) for c in (cum_s, cum_c)]
    top = robust_top(
        [
            (trace.stable_error_rate, trace.stable_requests),
            (trace.canary_error_rate, trace.canary_requests),
            (cum_s, n_s),
            (cum_c, n_c),
        ],
        always=final,
    )
    return None if top is None else 100.0 * top


def _running_total(xs: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for x in xs:
        if math.isfinite(x):
            acc += x
        out.append(acc)
    return out


def latency_scale(trace: Trace, q: float) -> float | None:
    """The upper limit in ms of the plot of quantile ``q``."""
    return robust_top(
        [
            (trace.stable_latency_ms.get(q, []), trace.stable_requests),
            (trace.canary_latency_ms.get(q, []), trace.canary_requests),
        ]
    )


# -- plotting helpers ------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Figure, name: str) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog, no metadata, unique ids."""
    plt = _plt()
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    # matplotlib numbers its element ids per figure (figure_1, patch_1, ...): prefix them and
    # every reference to them, so ids stay unique in a page of several figures.
    text = re.sub(r'\bid="([^"]+)"', rf'id="{name}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{name}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{name}-\1"', text)
    return f'<figure class="plot" id="fig-{name}">{text}</figure>'


def _figure(plt: Any, height: float) -> tuple[Figure, Axes]:
    """A 9-inch wide figure with fixed margins in inches, so stacked plots' x-axes line up."""
    fig, ax = plt.subplots(figsize=(9, height))
    left, right, bottom, top = 0.8, 0.2, 0.5, 0.35
    fig.subplots_adjust(
        left=left / 9, right=1 - right / 9, bottom=bottom / height, top=1 - top / height
    )
    return fig, ax


def _minutes(ts: Sequence[float]) -> list[float]:
    return [t / 60.0 for t in ts]


def _steps_of(run: RunResult, end_s: float) -> list[tuple[float, float, int]]:
    """``(start, end, weight)`` of each step of a run, in seconds.

    History records that keep the weight (a pause, a resume, a closing window) do not start a
    new step: they are listed in the decisions table, not shaded as steps.
    """
    pts: list[tuple[float, int]] = []
    for s in run.steps:
        if not pts or int(s["weight"]) != pts[-1][1]:
            pts.append((float(s["t"]), int(s["weight"])))
    out = []
    for i, (t, w) in enumerate(pts):
        t_end = pts[i + 1][0] if i + 1 < len(pts) else end_s
        if t_end > t or i + 1 == len(pts):
            out.append((t, max(t_end, t), w))
    return out


def _change_label(ch: Change) -> str:
    parts = []
    if ch.error_rate is not None:
        parts.append(f"errorRate {100 * ch.error_rate:.3g}%")
    if ch.latency is not None:
        lat = ch.latency
        if lat.lognormal is not None:
            parts.append(f"latency lognormal median {lat.lognormal.median_ms:g} ms")
        elif lat.gamma is not None:
            parts.append("latency gamma")
        elif lat.pareto is not None:
            parts.append("latency pareto")
        else:
            parts.append("latency from CSV")
    if ch.ramp:
        parts.append(f"ramp {format_duration(ch.ramp)}")
    return "canary change: " + ", ".join(parts)


class _Marks:
    """What every time plot of run 0 shares: steps, injected changes, incidents, no-data."""

    def __init__(self, result: SimulationResult, inputs: ReportInputs, end_s: float) -> None:
        self.trace = result.trace
        self.steps = _steps_of(result.runs[0], end_s) if result.runs else []
        done = bool(result.runs) and result.runs[0].outcome in ("promoted", "rolled_back")
        # After a promotion or rollback there is no step left to shade.
        self.shaded = self.steps[:-1] if done else self.steps
        self.interval = inputs.policy.spec.analysis.interval
        sc = inputs.scenario
        self.changes = (
            [] if sc is None else [(c.at, c.ramp, _change_label(c)) for c in sc.canary.changes]
        )
        self.incidents = (
            []
            if sc is None
            else [
                (
                    i.at,
                    i.at + i.for_,
                    "incident"
                    + ("" if i.error_rate is None else f" errorRate {100 * i.error_rate:.3g}%")
                    + ("" if i.latency_factor == 1 else f" latency x{i.latency_factor:g}"),
                )
                for i in sc.incidents
            ]
        )
        self.outages = [] if sc is None else [(o.at, o.at + o.for_) for o in sc.metrics_outage]

    def draw(self, ax: Axes, label_steps: bool = False) -> None:
        for i, (a, b, w) in enumerate(self.shaded):
            ax.axvspan(a / 60, b / 60, color="#1f77b4", alpha=0.05 if i % 2 else 0.11, lw=0)
            if label_steps and b > a:
                ax.annotate(
                    f"{w}%",
                    xy=((a + b) / 120, 1.0),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="#1f77b4",
                )
        for a, b, _ in self.incidents:
            ax.axvspan(a / 60, b / 60, color="#d62728", alpha=0.10, lw=0)
        for a, b in self.outages:
            ax.axvspan(a / 60, b / 60, facecolor="none", edgecolor="#999999", hatch="///", lw=0)
        for t in self.trace.no_data:
            ax.axvspan((t - self.interval) / 60, t / 60, color="#999999", alpha=0.18, lw=0)
        for at, ramp, _ in self.changes:
            ax.axvline(at / 60, color="#e377c2", lw=1.5, ls="-")
            if ramp:
                ax.axvspan(at / 60, (at + ramp) / 60, color="#e377c2", alpha=0.06, lw=0)
        for t, action, _ in self.trace.decisions:
            if action in _ACTION_COLORS:
                ax.axvline(t / 60, color=_ACTION_COLORS[action], ls="--", lw=1.2)

    def legend_note(self) -> str:
        parts = ["shaded bands: the steps of run 0 (canary weight on top of the weight plot)"]
        if self.changes:
            parts.append(
                "pink line: the injected canary change ("
                + "; ".join(f"{format_duration(a)}: {lab}" for a, _, lab in self.changes)
                + ")"
            )
        if self.incidents:
            parts.append(
                "red band: incident hitting both versions ("
                + "; ".join(
                    f"{format_duration(a)}-{format_duration(b)} {lab}"
                    for a, b, lab in self.incidents
                )
                + ")"
            )
        if self.outages:
            parts.append("hatched: metrics outage in the scenario")
        if self.trace.no_data:
            parts.append(f"grey: intervals without usable data ({len(self.trace.no_data)})")
        parts.append("dashed lines: promote (green), rollback (red), pause (orange)")
        return "; ".join(parts) + "."


def _clip_plot(
    ax: Axes, x: Sequence[float], y: Sequence[float], top: float | None, **kw: Any
) -> int:
    """Plot ``y``; values above ``top`` are drawn as triangles on the top edge. Returns how many."""
    ax.plot(x, y, **kw)
    if top is None:
        return 0
    over = [(xi, yi) for xi, yi in zip(x, y, strict=True) if math.isfinite(yi) and yi > top]
    if over:
        ax.scatter(
            [p[0] for p in over],
            [top * 0.985] * len(over),
            marker="^",
            s=22,
            color=kw.get("color", "black"),
            zorder=4,
            clip_on=False,
        )
    return len(over)


def _time_figure(plt: Any, height: float = 2.5) -> tuple[Figure, Axes]:
    fig, ax = _figure(plt, height)
    ax.set_xlabel("minutes")
    ax.grid(axis="y", color="#eeeeee")
    return fig, ax


def _weight_plot(plt: Any, result: SimulationResult, marks: _Marks, end_s: float) -> str:
    fig, ax = _time_figure(plt)
    marks.draw(ax, label_steps=True)
    run = result.runs[0]
    xs, ys = [], []
    for a, b, w in marks.steps:
        xs += [a / 60, b / 60]
        ys += [w, w]
    if run.steps and run.outcome == "promoted":
        ys[-2:] = [100, 100]
    if xs:
        ax.plot(xs, ys, color="#1f77b4", lw=2)
    ax.set(ylabel="% of traffic", ylim=(-3, 105), xlim=(0, end_s / 60))
    ax.set_title("Canary weight, run 0", loc="left", fontsize=10, pad=12)
    return _svg(fig, "weight")


def _error_plot(plt: Any, trace: Trace, marks: _Marks, end_s: float) -> str:
    fig, ax = _time_figure(plt)
    marks.draw(ax)
    x = _minutes(trace.t)
    top = error_scale(trace)
    cum_s = cumulative_rate(trace.stable_errors, trace.stable_requests)
    cum_c = cumulative_rate(trace.canary_errors, trace.canary_requests)
    pct = [100 * v for v in trace.stable_error_rate]
    pcc = [100 * v for v in trace.canary_error_rate]
    over = _clip_plot(ax, x, pct, top, color=STABLE_COLOR, lw=0.8, alpha=0.6, label="stable")
    over += _clip_plot(ax, x, pcc, top, color=CANARY_COLOR, lw=0.8, alpha=0.6, label="canary")
    ax.plot(x, [100 * v for v in cum_s], color=STABLE_COLOR, lw=2, label="stable, cumulative")
    ax.plot(x, [100 * v for v in cum_c], color=CANARY_COLOR, lw=2, label="canary, cumulative")
    if top is not None:
        ax.set_ylim(0, top)
    if over:
        ax.scatter([], [], marker="^", color="black", label=f"off scale ({over})")
    ax.set(ylabel="% of requests", xlim=(0, end_s / 60))
    ax.set_title("Error rate per interval (thin) and cumulative (thick)", loc="left", fontsize=10)
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    return _svg(fig, "errors")


def _latency_plots(
    plt: Any, trace: Trace, marks: _Marks, end_s: float, tested: dict[float, list[str]]
) -> list[str]:
    out = []
    for q in trace.quantiles:
        fig, ax = _time_figure(plt)
        marks.draw(ax)
        x = _minutes(trace.t)
        top = latency_scale(trace, q)
        tag = f"p{100 * q:g}"
        s = trace.stable_latency_ms.get(q, [])
        c = trace.canary_latency_ms.get(q, [])
        over = _clip_plot(ax, x, s, top, color=STABLE_COLOR, lw=1.2, label=f"stable {tag}")
        over += _clip_plot(ax, x, c, top, color=CANARY_COLOR, lw=1.2, label=f"canary {tag}")
        if top is not None:
            ax.set_ylim(0, top)
        if over:
            ax.scatter([], [], marker="^", color="black", label=f"off scale ({over})")
        by = tested.get(q)
        what = f"tested by {', '.join(by)}" if by else "not tested by this policy"
        ax.set(ylabel="ms", xlim=(0, end_s / 60))
        ax.set_title(
            f"{tag} latency per interval (histogram_quantile; {what})", loc="left", fontsize=10
        )
        ax.legend(loc="upper right", fontsize=7, ncol=3)
        out.append(_svg(fig, f"latency-{tag}"))
    return out


def _evidence_plot(plt: Any, trace: Trace, marks: _Marks, end_s: float) -> str | None:
    series = {m: s for m, s in sorted(trace.e_values.items()) if any(math.isfinite(v) for v in s)}
    if not series:
        return None
    fig, ax = _time_figure(plt)
    marks.draw(ax)
    x = _minutes(trace.t)
    for i, (metric, s) in enumerate(series.items()):
        color = f"C{i}"
        ax.plot(
            x[: len(s)],
            [math.log10(v) if v > 0 else math.nan for v in s],
            color=color,
            label=f"{metric}",
        )
        thr = trace.thresholds.get(metric)
        if thr:
            ax.axhline(math.log10(thr), color=color, ls=":", lw=1)
    ax.set(ylabel="log10 e-value", xlim=(0, end_s / 60))
    ax.set_title(
        "Evidence against the canary (dotted: rollback threshold 1/alpha)", loc="left", fontsize=10
    )
    ax.legend(loc="upper left", fontsize=7)
    return _svg(fig, "evidence")


# -- several runs ----------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k/n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def sample_runs(runs: Sequence[RunResult], limit: int = MAX_SAMPLE_RUNS) -> list[int]:
    """Indices of a few telling runs: run 0, then per outcome the fastest, median and slowest."""
    picked: list[int] = [0] if runs else []
    for outcome in OUTCOMES:
        idx = [i for i, r in enumerate(runs) if r.outcome == outcome]
        idx.sort(key=lambda i: (runs[i].decided_at_s is None, runs[i].decided_at_s or 0.0, i))
        for j in (0, len(idx) // 2, len(idx) - 1) if idx else ():
            if idx[j] not in picked:
                picked.append(idx[j])
    return picked[:limit]


def _outcome_plot(plt: Any, result: SimulationResult) -> str:
    counts = result.outcomes
    n = len(result.runs)
    names = [k for k in OUTCOMES if counts[k]]
    fig, ax = _figure(plt, 1.2 + 0.35 * len(names))
    for i, k in enumerate(names):
        lo, hi = wilson(counts[k], n)
        share = counts[k] / n
        ax.barh(i, 100 * share, color=OUTCOME_COLORS[k])
        ax.errorbar(
            100 * share,
            i,
            xerr=[[100 * max(0.0, share - lo)], [100 * max(0.0, hi - share)]],
            color="black",
            capsize=3,
            lw=1,
        )
        inside = hi > 0.55  # no room right of the bar: write on it
        ax.annotate(
            f"{counts[k]} ({100 * share:.1f}%, 95% CI {100 * lo:.1f}-{100 * hi:.1f}%)",
            xy=(1 if inside else 100 * hi + 1, i),
            va="center",
            fontsize=8,
            color="white" if inside else "black",
        )
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel=f"% of {n} runs")
    ax.set_title("Outcomes", loc="left", fontsize=10)
    return _svg(fig, "outcomes")


def _decision_time_plot(plt: Any, result: SimulationResult, end_s: float) -> str | None:
    by: dict[str, list[float]] = {}
    for r in result.runs:
        if r.decided_at_s is not None:
            by.setdefault(r.outcome, []).append(r.decided_at_s / 60)
    if not by:
        return None
    fig, ax = _figure(plt, 2.5)
    hi = max(end_s / 60, *(max(v) for v in by.values()))
    bins = max(10, min(60, int(math.sqrt(len(result.runs)) * 2)))
    names = [k for k in OUTCOMES if k in by]
    ax.hist(
        [by[k] for k in names],
        bins=bins,
        range=(0, hi),
        stacked=True,
        color=[OUTCOME_COLORS[k] for k in names],
        label=[f"{k} ({len(by[k])})" for k in names],
    )
    for k in names:
        v = sorted(by[k])
        ax.axvline(v[len(v) // 2], color=OUTCOME_COLORS[k], ls="--", lw=1)
    ax.set(xlabel="minutes until the decision", ylabel="runs", xlim=(0, hi))
    ax.set_title("When runs were decided (dashed: median per outcome)", loc="left", fontsize=10)
    ax.legend(loc="upper right", fontsize=7)
    return _svg(fig, "decision-times")


def _samples_plot(plt: Any, result: SimulationResult, picked: list[int], end_s: float) -> str:
    fig, ax = _figure(plt, 2.8)
    for k, i in enumerate(picked):
        run = result.runs[i]
        xs, ys = [], []
        for a, b, w in _steps_of(run, end_s):
            xs += [a / 60, b / 60]
            ys += [w, w]
        if run.outcome == "promoted" and ys:
            ys[-2:] = [100, 100]
        # A small vertical offset keeps overlapping trajectories apart.
        ax.plot(
            xs,
            [y + (k % 5 - 2) * 0.6 for y in ys],
            color=OUTCOME_COLORS.get(run.outcome, "black"),
            lw=1.3,
            alpha=0.85,
        )
    for name in OUTCOMES:
        if any(result.runs[i].outcome == name for i in picked):
            ax.plot([], [], color=OUTCOME_COLORS[name], label=name)
    ax.set(xlabel="minutes", ylabel="% of traffic", ylim=(-4, 106), xlim=(0, end_s / 60))
    ax.set_title(f"Canary weight of {len(picked)} sample runs", loc="left", fontsize=10)
    ax.legend(loc="center right", fontsize=7)
    ax.grid(axis="y", color="#eeeeee")
    return _svg(fig, "samples")


# -- the page --------------------------------------------------------------------------------


def _e(x: object) -> str:
    return html.escape(str(x))


def _when(t: float | None) -> str:
    return "-" if t is None else format_duration(t)


def policy_yaml(policy: CanaryPolicy) -> str:
    """The policy as run: every field, defaults filled in (``podSpread`` only where the policy
    sets it: its default depends on the metric's kind), durations as a policy writes them
    (``5m``), so the text loads back as the same policy."""
    import yaml

    doc = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def _verdict_rows(run: RunResult) -> str:
    rows = []
    for v in run.verdicts:
        est = "" if v.estimate is None else f"{v.estimate:.3g}"
        ci = "" if v.interval is None else f"[{v.interval[0]:.3g}, {v.interval[1]:.3g}]"
        ev = "" if v.e_value is None else f"{v.e_value:.3g}"
        rows.append(
            f"<tr><td>{_e(v.metric)}</td><td>{_e(v.judge)}</td>"
            f"<td class='{v.status.value}'>{v.status.value}</td><td>{est}</td><td>{ci}</td>"
            f"<td>{ev}</td><td>{_e(v.reason)}</td></tr>"
        )
    return "".join(rows)


def render_report(result: SimulationResult, inputs: ReportInputs) -> str:
    """The whole HTML page (one string; nothing else is needed to view it)."""
    plt = _plt()
    plt.rcParams.update({"font.size": 8, "axes.spines.top": False, "axes.spines.right": False})
    trace = result.trace
    policy = inputs.policy
    if inputs.scenario is not None:
        end_s = float(inputs.scenario.duration)
    else:
        end_s = max([*trace.t, *(float(s["t"]) for r in result.runs for s in r.steps), 60.0])
    run = result.runs[0]
    marks = _Marks(result, inputs, end_s)
    tested: dict[float, list[str]] = {}
    for m in policy.spec.analysis.metrics:
        if m.kind == "latency":
            for q in m.quantiles:
                tested.setdefault(q, []).append(f"{m.name} ({m.judge})")

    n = len(result.runs)
    outcomes = ", ".join(f"{k} {c}" for k, c in result.outcomes.items() if c)
    head = [
        f"<b>{_e(inputs.kind)}</b> of <code>{_e(inputs.source)}</code>",
        f"<b>policy</b> {_e(policy.name)}",
        f"<b>runs</b> {n} ({_e(outcomes)})",
    ]
    if inputs.seed is not None:
        head.append(f"<b>seed</b> {inputs.seed}")
    if inputs.chaos_restarts:
        head.append(f"<b>chaos restarts</b> {inputs.chaos_restarts} per run")

    parts: list[str] = []
    if n > 1:
        picked = sample_runs(result.runs)
        decided = [r for r in result.runs if r.decided_at_s is not None]
        undecided = n - len(decided)
        parts.append("<h2>All runs</h2>")
        parts.append(_outcome_plot(plt, result))
        dt = _decision_time_plot(plt, result, end_s)
        if dt:
            parts.append(dt)
        if undecided:
            parts.append(
                f"<p>{undecided} run(s) reached no decision within {format_duration(end_s)}.</p>"
            )
        parts.append(_samples_plot(plt, result, picked, end_s))
        rows = "".join(
            f"<tr><td>{i}</td><td class='{_e(r.outcome)}'>{_e(r.outcome)}</td>"
            f"<td>{_when(r.decided_at_s)}</td><td>{r.final_weight}%</td>"
            f"<td>{r.canary_requests:.0f}</td><td>{r.impact.user_requests:.0f} "
            f"({r.impact.user_errors:.0f} failed)</td>"
            f"<td>{_e(r.steps[-1]['reason'] if r.steps else '')}</td></tr>"
            for i, r in ((i, result.runs[i]) for i in picked)
        )
        parts.append(
            "<table class='samples'><tr><th>run</th><th>outcome</th><th>decided at</th>"
            "<th>final weight</th><th>canary requests</th><th>user requests on the canary</th>"
            "<th>last step's reason</th></tr>"
            f"{rows}</table>"
        )
    parts.append(
        f"<h2>Run 0: {_e(run.outcome)}"
        + ("" if run.decided_at_s is None else f" at {format_duration(run.decided_at_s)}")
        + "</h2>"
    )
    parts.append(
        f"<p>{_e(run.counts_text().capitalize())}. "
        f"<b>{_e(run.impact.summary().capitalize())}.</b></p>"
    )
    parts.append(f"<p class='note'>{_e(marks.legend_note())}</p>")
    if run.steps:
        parts.append(_weight_plot(plt, result, marks, end_s))
    if trace.t:
        parts.append(_error_plot(plt, trace, marks, end_s))
        parts.extend(_latency_plots(plt, trace, marks, end_s, tested))
        ev = _evidence_plot(plt, trace, marks, end_s)
        if ev:
            parts.append(ev)
    steps = "".join(
        f"<tr><td>{_e(format_duration(s['t']))}</td><td>{s['weight']}%</td>"
        f"<td>{_e(s['reason'])}</td></tr>"
        for s in run.steps
    )
    parts.append(
        "<h2>Decisions of run 0</h2><table><tr><th>time</th><th>weight</th><th>reason</th></tr>"
        f"{steps}</table>"
    )
    parts.append(
        "<h2>Last verdicts of run 0</h2><table><tr><th>metric</th><th>judge</th><th>status</th>"
        "<th>estimate</th><th>interval</th><th>e-value</th><th>reason</th></tr>"
        f"{_verdict_rows(run)}</table>"
    )
    parts.append(
        "<h2>Inputs</h2><details open><summary>Policy as run "
        f"(<code>{_e(policy.name)}</code>; every default filled in, and podSpread where "
        "the policy sets it; durations as a policy writes them, e.g. 5m)"
        f"</summary><pre class='input' id='policy'>{_e(policy_yaml(policy))}</pre></details>"
    )
    if inputs.scenario_text is not None:
        parts.append(
            f"<details open><summary>Scenario <code>{_e(inputs.source)}</code> as written"
            f"</summary><pre class='input' id='scenario'>{_e(inputs.scenario_text)}</pre>"
            "</details>"
        )
    title = f"canaryd {inputs.kind}: {inputs.source}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{_e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; width: 100%; margin: 1em 0; font-size: 0.85em; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }}
.fail, .rolled_back {{ color: #b00; font-weight: bold; }}
.pass, .promoted {{ color: #070; font-weight: bold; }}
.paused {{ color: #b60; font-weight: bold; }}
figure.plot {{ margin: 0.6em 0; }} figure.plot svg {{ width: 100%; height: auto; }}
.note {{ font-size: 0.85em; color: #555; }}
pre.input {{ background: #f6f6f6; padding: 0.6em; font-size: 0.8em; overflow-x: auto; }}
</style></head><body>
<h1>{_e(title)}</h1>
<p>{" &middot; ".join(head)}</p>
{"".join(parts)}
</body></html>
"""


def report_path(out: Path) -> Path:
    """``out`` itself when it names an ``.html`` file, else ``out/report.html``."""
    return out if out.suffix.lower() in (".html", ".htm") else out / "report.html"


def write_report(result: SimulationResult, out: Path, inputs: ReportInputs) -> Path:
    """Write the report (one file, see the module docstring); return its path."""
    path = report_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result, inputs), encoding="utf-8")
    return path
