"""Warnings about valid but risky policies (``canaryd validate`` prints them; --strict fails)."""

from __future__ import annotations

from canaryd.durations import format_duration
from canaryd.errors import Problem
from canaryd.policy.loader import LoadedPolicy


def lint(loaded: LoadedPolicy) -> list[Problem]:
    """Warnings for one loaded policy."""
    p = loaded.policy
    spec = p.spec
    out: list[Problem] = []

    def warn(path: str, message: str) -> None:
        out.append(Problem(loaded.file, loaded.line, None, f"{p.name}: {path}", message, "warning"))

    for i, m in enumerate(spec.analysis.metrics):
        if not m.peeking_safe:
            warn(
                f"spec.analysis.metrics[{i}].judge",
                f"{m.judge!r} is a fixed-horizon test re-run every "
                f"{format_duration(spec.analysis.interval)}; it is not peeking-safe and its "
                "false-rollback rate grows with every look (use judge: sequential)",
            )
    steps = spec.steps.resolved()
    for i, s in enumerate(steps):
        if s.min_dwell is not None and s.min_dwell < spec.analysis.interval:
            warn(
                f"spec.steps (step {i + 1})",
                f"minDwell {format_duration(s.min_dwell)} is shorter than the analysis interval "
                f"{format_duration(spec.analysis.interval)}: the step can end unanalysed",
            )
    if spec.no_data.timeout < spec.analysis.interval:
        warn(
            "spec.noData.timeout",
            "shorter than one analysis interval: a single late scrape triggers the action",
        )
    if spec.on_failure == "pause":
        warn("spec.onFailure", "a failing canary keeps its traffic until a human acts")
    return out
