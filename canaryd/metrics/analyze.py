"""``canaryd analyze``: judge a past window of real Prometheus data with a policy's judges.

The window ``[start, end)`` is cut into steps of the policy's analysis interval (a last partial
step is dropped). Each step is one batched fetch (one instant query per metric kind at the step
end); usable steps are fed to the policy's judges (the controller's ``JudgePanel``) in order,
no-data steps are listed with their reason and skipped, exactly as the controller does.

The conclusion is a CI gate (``canaryd.exitcodes``):

- **worse** (exit 1): a critical metric fails. The judges are anytime-valid, so a failure seen
  on part of the window is a failure.
- **no data** / **inconclusive** (exit 2): no interval had data; Prometheus stopped answering
  before the end of the window; a critical metric has too little data; the policy's
  ``nonInferiority`` criterion is not met yet; or fewer canary requests were seen than the
  policy's ``minDetectableEffect`` needs (the controller's own rules for holding a promotion).
- **no worse** (exit 0): none of the above.

Before the first interval, one trivial query checks that Prometheus answers at all (with the
source's bounded retries): a closed port or a wrong URL is one line and exit 2 (3 when the
server answers that the URL or the credentials are wrong), in well under a second, rather than
every interval failing in turn. If Prometheus stops answering mid-window, the analysis stops at
that interval instead of retrying every remaining one.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from canaryd.errors import InputError
from canaryd.exitcodes import HELP as EXIT_CODES_HELP
from canaryd.exitcodes import ExitCode
from canaryd.metrics.source import MetricSource, fetch_request_for
from canaryd.observation import Observation
from canaryd.policy.model import CanaryPolicy

if TYPE_CHECKING:
    from canaryd.stats.verdict import Verdict

StopCheck = Callable[[Observation], str | None]
"""Called after each no-data interval: a reason to stop analysing the window, or None."""


def parse_time(text: str) -> float:
    """Unix seconds from ``1700000000``/``1700000000.5`` or RFC 3339 (``2024-05-01T12:00:00Z``)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither unix seconds nor an RFC 3339 timestamp"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def windows(start_s: float, end_s: float, interval_s: float) -> list[tuple[float, float]]:
    """Consecutive ``[t, t + interval)`` windows inside ``[start_s, end_s)``."""
    n = math.floor((end_s - start_s) / interval_s + 1e-9)
    return [(start_s + i * interval_s, start_s + (i + 1) * interval_s) for i in range(n)]


@dataclass(frozen=True)
class Conclusion:
    """What the window adds up to: ``no_worse``, ``worse``, ``inconclusive`` or ``no_data``."""

    outcome: str
    reason: str

    def exit_code(self, fail_on: str = "worse") -> ExitCode:
        """The gate's exit code; ``fail_on="inconclusive"`` counts 2 as a failure (1)."""
        if self.outcome == "worse":
            return ExitCode.WORSE
        if self.outcome in ("inconclusive", "no_data"):
            return ExitCode.WORSE if fail_on == "inconclusive" else ExitCode.INCONCLUSIVE
        return ExitCode.NO_WORSE


def conclude(
    policy: CanaryPolicy,
    verdicts: Sequence[Verdict],
    *,
    usable: int,
    canary_requests: float,
    stopped: str | None = None,
) -> Conclusion:
    """The gate's conclusion from the final verdicts (see the module docstring for the rules)."""
    from canaryd.controller import RolloutController
    from canaryd.stats.panel import assess

    a = assess(verdicts)
    if a.failing:
        return Conclusion("worse", "canary is worse: " + "; ".join(v.summary() for v in a.failing))
    if usable == 0:
        return Conclusion(
            "no_data", "no interval had usable data" + (f"; {stopped}" if stopped else "")
        )
    if stopped:
        return Conclusion("inconclusive", f"the window was not analysed to its end: {stopped}")
    if a.inconclusive:
        names = ", ".join(f"{v.metric} ({v.reason})" for v in a.inconclusive)
        return Conclusion("inconclusive", f"inconclusive: {names}")
    spec = policy.spec
    if spec.promotion.criterion == "nonInferiority" and not a.all_pass:
        return Conclusion(
            "inconclusive",
            "not every critical metric is shown no worse than tolerated yet "
            "(promotion.criterion nonInferiority)",
        )
    if spec.promotion.min_detectable_effect:
        ctrl = RolloutController(policy)
        final = ctrl.steps[-1].weight
        for name, mde in spec.promotion.min_detectable_effect.items():
            metric = next(m for m in spec.analysis.metrics if m.name == name)
            verdict = next((v for v in verdicts if v.metric == name), None)
            need = ctrl.required_requests(metric, mde, verdict, final)
            if canary_requests < need:
                return Conclusion(
                    "inconclusive",
                    f"not enough evidence: detecting {name} x{mde:g} needs about {need:.0f} "
                    f"canary requests, seen {canary_requests:.0f}"
                    f"{ctrl.event_rate_text(metric, verdict)} (promotion.minDetectableEffect)",
                )
    if a.all_pass:
        return Conclusion("no_worse", "every critical metric is shown no worse than tolerated")
    return Conclusion("no_worse", "no critical metric is worse")


def analyze_window(
    source: MetricSource,
    policy: CanaryPolicy,
    *,
    stable: str,
    canary: str,
    start_s: float,
    end_s: float,
    stop: StopCheck | None = None,
) -> dict[str, Any]:
    """Run the policy's judges over every interval of ``[start_s, end_s)``; JSON-ready result.

    ``stop`` is asked after every no-data interval whether to give up on the rest of the window
    (the CLI asks whether Prometheus still answers); the intervals not fetched are counted in
    ``intervals`` but not in ``no_data``, and ``stopped`` says why.
    """
    from canaryd.stats.panel import JudgePanel

    panel = JudgePanel(policy)
    request = fetch_request_for(policy, "analyze", stable, canary)
    no_data: list[dict[str, Any]] = []
    used = 0
    canary_requests = 0.0
    stopped: str | None = None
    steps = windows(start_s, end_s, policy.spec.analysis.interval)
    for a, b in steps:
        obs: Observation = source.fetch([request], a, b)[request.key]
        why = panel.observe(obs)
        if why is None:
            used += 1
            assert obs.canary is not None
            canary_requests += obs.canary.requests
            continue
        no_data.append({"start": a, "end": b, "reason": why})
        if stop is not None:
            stopped = stop(obs)
            if stopped is not None:
                break
    verdicts = panel.verdicts()
    c = conclude(policy, verdicts, usable=used, canary_requests=canary_requests, stopped=stopped)
    return {
        "outcome": c.outcome,
        "reason": c.reason,
        "verdicts": [v.to_dict() for v in verdicts],
        "intervals": len(steps),
        "usable_intervals": used,
        "canary_requests": canary_requests,
        "no_data": no_data,
        "stopped": stopped,
    }


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def no_data_runs(no_data: Sequence[dict[str, Any]]) -> list[tuple[float, float, int, str]]:
    """Consecutive no-data intervals with the same reason, as ``(start, end, count, reason)``."""
    runs: list[tuple[float, float, int, str]] = []
    for nd in no_data:
        if runs and runs[-1][1] == nd["start"] and runs[-1][3] == nd["reason"]:
            a, _, n, why = runs[-1]
            runs[-1] = (a, nd["end"], n + 1, why)
        else:
            runs.append((nd["start"], nd["end"], 1, nd["reason"]))
    return runs


def render_table(result: dict[str, Any]) -> str:
    """The verdict table a person reads, the no-data intervals (grouped), then the result."""
    rows = [["metric", "judge", "status", "estimate", "interval", "evidence", "reason"]]
    for v in result["verdicts"]:
        interval = (
            "-"
            if v["interval"] is None
            else f"[{_fmt(v['interval'][0])}, {_fmt(v['interval'][1])}]"
        )
        if v.get("e_value") is not None:
            evidence = f"e={_fmt(v['e_value'])}"
        elif v.get("p_value") is not None:
            evidence = f"p={_fmt(v['p_value'])}"
        else:
            evidence = "-"
        rows.append(
            [
                v["metric"],
                v["judge"],
                v["status"],
                _fmt(v["estimate"]),
                interval,
                evidence,
                v["reason"],
            ]
        )
    lines = [_table(rows), ""]
    lines.append(f"{result['usable_intervals']} of {result['intervals']} interval(s) had data.")
    for a, b, n, why in no_data_runs(result["no_data"]):
        count = "" if n == 1 else f" ({n} intervals)"
        lines.append(f"  no data {_when(a)} .. {_when(b)}{count}: {why}")
    if result.get("stopped"):
        lines.append(f"  stopped: {result['stopped']}")
    return "\n".join(lines)


def _check_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    u = urllib.parse.urlsplit(value)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise click.BadParameter(
            f"expected an http(s) URL such as http://prometheus.monitoring:9090, got {value!r}"
        )
    return value


@click.command("analyze", epilog=EXIT_CODES_HELP)
@click.option(
    "--prometheus",
    "prometheus_url",
    required=True,
    callback=_check_url,
    help="Prometheus base URL (credentials: the $CANARYD_PROMETHEUS_* files, as `canaryd run`).",
)
@click.option(
    "--policy",
    "policy_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Policy file.",
)
@click.option("--name", default=None, help="Policy name, when the file holds several.")
@click.option("--stable", required=True, help="Stable revision name.")
@click.option("--canary", required=True, help="Canary revision name.")
@click.option("--start", "start", required=True, help="Window start: RFC 3339 or unix seconds.")
@click.option("--end", "end", required=True, help="Window end: RFC 3339 or unix seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--fail-on",
    type=click.Choice(["worse", "inconclusive"]),
    default="worse",
    show_default=True,
    help="inconclusive: exit 1 (not 2) when the canary is not shown no worse or there is no data.",
)
def analyze(
    prometheus_url: str,
    policy_path: Path,
    name: str | None,
    stable: str,
    canary: str,
    start: str,
    end: str,
    as_json: bool,
    fail_on: str,
) -> None:
    """Judge stable vs canary over a past window of Prometheus data with a policy's judges.

    The last line says what the window adds up to: no worse (exit 0), worse (1), inconclusive
    or no data (2); a bad flag or policy exits 3.
    """
    from canaryd.metrics.connection import PrometheusDefaults
    from canaryd.metrics.prometheus import PrometheusSource
    from canaryd.policy.loader import load_policy_file

    start_s, end_s = parse_time(start), parse_time(end)
    if end_s <= start_s:
        raise click.BadParameter("--end must be after --start")
    try:
        loaded = load_policy_file(policy_path)
    except InputError as exc:
        click.echo(str(exc), err=True)
        sys.exit(ExitCode.USAGE)
    if name is not None:
        loaded = [lp for lp in loaded if lp.policy.name == name]
    if len(loaded) != 1:
        what = (
            f"no policy named {name!r}" if name else f"{len(loaded)} policies, pick one with --name"
        )
        click.echo(f"{policy_path}: {what}", err=True)
        sys.exit(ExitCode.USAGE)
    policy = loaded[0].policy
    interval = policy.spec.analysis.interval
    if not windows(start_s, end_s, interval):
        raise click.BadParameter(
            f"the window is shorter than the policy's analysis interval ({interval:g}s)",
            param_hint="--start/--end",
        )
    try:  # --prometheus is the server; its credentials come as for `canaryd run`
        defaults = PrometheusDefaults.from_settings(url=prometheus_url)
        config = defaults.resolve(
            policy.spec.analysis.source.model_copy(update={"prometheus": None})
        )
    except ValueError as exc:
        click.echo(f"canaryd analyze: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    assert config is not None
    problems = config.problems()
    if problems:
        click.echo(f"canaryd analyze: Prometheus {config.url}: {'; '.join(problems)}", err=True)
        sys.exit(ExitCode.USAGE)
    with PrometheusSource(config) as source:
        down = source.probe(end_s)
        if down is not None:
            if down.retryable:
                c = Conclusion(
                    "no_data", f"cannot reach Prometheus at {prometheus_url}: {down.reason}"
                )
            else:
                click.echo(
                    f"canaryd analyze: Prometheus at {prometheus_url} refused a trivial query: "
                    f"{down.reason} (check --prometheus)",
                    err=True,
                )
                sys.exit(ExitCode.USAGE)
            result: dict[str, Any] = {
                "outcome": c.outcome,
                "reason": c.reason,
                "verdicts": [],
                "intervals": len(windows(start_s, end_s, interval)),
                "usable_intervals": 0,
                "canary_requests": 0.0,
                "no_data": [],
                "stopped": c.reason,
            }
            code = c.exit_code(fail_on)
            result["exit_code"] = int(code)
            if as_json:
                click.echo(json.dumps(result, indent=2))
            counted = ", --fail-on inconclusive" if code == ExitCode.WORSE else ""
            click.echo(
                f"canaryd analyze: {c.reason}; no data (exit {int(code)}{counted})", err=True
            )
            sys.exit(code)

        def stop(obs: Observation) -> str | None:
            if not source.last_stats.failures:
                return None
            err = source.probe(obs.end_s)
            if err is None:
                return None
            return f"Prometheus stopped answering at {_when(obs.start_s)}: {err.reason}"

        result = analyze_window(
            source,
            policy,
            stable=stable,
            canary=canary,
            start_s=start_s,
            end_s=end_s,
            stop=stop,
        )
    c = Conclusion(result["outcome"], result["reason"])
    code = c.exit_code(fail_on)
    result["exit_code"] = int(code)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(render_table(result))
        counted = ", --fail-on inconclusive" if c.outcome != "worse" and code == 1 else ""
        outcome = c.outcome.replace("_", " ")
        click.echo(f"result: {outcome}: {c.reason} (exit {int(code)}{counted})")
    sys.exit(code)
