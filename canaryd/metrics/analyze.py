"""``canaryd analyze``: judge a past window of real Prometheus data with a policy's judges.

The window ``[start, end)`` is cut into steps of the policy's analysis interval (a last partial
step is dropped). Each step is one batched fetch (one instant query per metric kind at the step
end); usable steps are fed to the policy's judges in order, no-data steps are listed with their
reason and skipped, exactly as the controller does.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from canaryd.errors import InputError
from canaryd.metrics.source import MetricSource, fetch_request_for
from canaryd.observation import Observation
from canaryd.policy.model import CanaryPolicy


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


def analyze_window(
    source: MetricSource,
    policy: CanaryPolicy,
    *,
    stable: str,
    canary: str,
    start_s: float,
    end_s: float,
) -> dict[str, Any]:
    """Run the policy's judges over every interval of ``[start_s, end_s)``; JSON-ready result."""
    from canaryd.stats.factory import build_judges

    judges = build_judges(policy)
    request = fetch_request_for(policy, "analyze", stable, canary)
    no_data: list[dict[str, Any]] = []
    used = 0
    errors_measured = True
    steps = windows(start_s, end_s, policy.spec.analysis.interval)
    for a, b in steps:
        obs: Observation = source.fetch([request], a, b)[request.key]
        if not obs.usable:
            no_data.append({"start": a, "end": b, "reason": obs.no_data_reason})
            continue
        assert obs.stable is not None and obs.canary is not None
        if not obs.errors_measured:
            errors_measured = False
        for j in judges:
            j.update(obs.stable, obs.canary)
        used += 1
    verdicts = []
    kinds = {m.name: m.kind for m in policy.spec.analysis.metrics}
    for j in judges:
        d = j.verdict().to_dict()
        if not errors_measured and kinds.get(d["metric"]) == "errors":
            d["reason"] = "errors are not measured by this source (counted as 0); " + d["reason"]
        verdicts.append(d)
    return {
        "verdicts": verdicts,
        "intervals": len(steps),
        "usable_intervals": used,
        "no_data": no_data,
    }


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def render_table(result: dict[str, Any]) -> str:
    """The verdict table a person reads, then the no-data intervals."""
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
    for nd in result["no_data"]:
        lines.append(f"  no data [{_fmt(nd['start'])}, {_fmt(nd['end'])}): {nd['reason']}")
    return "\n".join(lines)


@click.command("analyze")
@click.option("--prometheus", "prometheus_url", required=True, help="Prometheus base URL.")
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
def analyze(
    prometheus_url: str,
    policy_path: Path,
    name: str | None,
    stable: str,
    canary: str,
    start: str,
    end: str,
    as_json: bool,
) -> None:
    """Judge stable vs canary over a past window of Prometheus data with a policy's judges.

    Exits 0 when no critical metric fails, 1 on a failing critical metric, 2 on bad input.
    """
    from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource
    from canaryd.policy.loader import load_policy_file

    start_s, end_s = parse_time(start), parse_time(end)
    if end_s <= start_s:
        raise click.BadParameter("--end must be after --start")
    try:
        loaded = load_policy_file(policy_path)
    except InputError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    if name is not None:
        loaded = [lp for lp in loaded if lp.policy.name == name]
    if len(loaded) != 1:
        what = (
            f"no policy named {name!r}" if name else f"{len(loaded)} policies, pick one with --name"
        )
        click.echo(f"{policy_path}: {what}", err=True)
        sys.exit(2)
    policy = loaded[0].policy
    with PrometheusSource(PrometheusConfig(url=prometheus_url)) as source:
        result = analyze_window(
            source, policy, stable=stable, canary=canary, start_s=start_s, end_s=end_s
        )
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(render_table(result))
    failing = [v for v in result["verdicts"] if v["status"] == "fail" and v.get("critical", True)]
    sys.exit(1 if failing else 0)
