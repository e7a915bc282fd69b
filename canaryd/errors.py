"""Exception classes. Each carries the context a user needs to act on it."""

from __future__ import annotations

from dataclasses import dataclass


class CanarydError(Exception):
    """Base class of every error canaryd raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem found in an input file: where it is and what was expected."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        prefix = f"{self.path}: " if self.path else ""
        tag = "" if self.severity == "error" else f"{self.severity}: "
        return f"{where}: {tag}{prefix}{self.message}"


class InputError(CanarydError):
    """A file (policy, scenario, trace) is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PolicyError(InputError):
    """A policy document is invalid."""


class ScenarioError(InputError):
    """A simulation scenario is invalid."""


class TraceError(InputError):
    """A recorded trace file is invalid."""


class HistogramLayoutError(CanarydError):
    """Two histograms cannot be compared: their bucket boundaries share no usable layout."""


class RoutingError(CanarydError):
    """A traffic router refused or failed to apply a change."""


class ConflictError(CanarydError):
    """An optimistic-concurrency write lost: the object changed since it was read."""


class NotFoundError(CanarydError):
    """The object a rollout refers to no longer exists."""


class MetricsError(CanarydError):
    """A metric source could not produce data (the controller sees this as no-data)."""
