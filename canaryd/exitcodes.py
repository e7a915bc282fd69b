"""The exit codes of ``canaryd analyze``, ``replay`` and ``simulate --runs 1``, for CI gates.

One table for every command that judges a canary, so a pipeline can branch on the code alone:

====  ============================================================================
0     no worse: the canary was promoted, or no critical metric failed and the
      evidence the policy asks for is there
1     worse: a critical metric failed, the canary was (or would be) rolled back
2     inconclusive or no data: not enough evidence either way (missing data,
      Prometheus unreachable, a paused or unfinished rollout); never a pass
3     usage or configuration error: a bad flag, a policy, scenario or trace file
      that does not load (the message names the file and line)
====  ============================================================================

``analyze --fail-on inconclusive`` turns 2 into 1, for gates that must see the canary shown
no worse before they go on.

``canaryd plan`` judges a policy, not a canary, with the same numbers: 0 the plan was made and
the policy can detect its own ``minDetectableEffect`` in time (or states none), 1 it cannot
(a ``warning:`` line says which effect and how often it was detected), 3 a bad flag or a
policy or scenario file that does not load. It never exits 2.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    NO_WORSE = 0
    WORSE = 1
    INCONCLUSIVE = 2
    USAGE = 3


HELP = (
    "Exit codes: 0 no worse / promoted, 1 worse / rolled back, 2 inconclusive or no data, "
    "3 usage or configuration error."
)
"""The one-line form of the table, for ``--help`` texts."""


PLAN_HELP = (
    "Exit codes: 0 planned, 1 the policy cannot detect its own minDetectableEffect in time, "
    "3 usage or configuration error."
)
"""The exit codes of ``canaryd plan``, for its ``--help``."""


def for_outcome(outcome: str) -> ExitCode:
    """The exit code of a finished (or unfinished) rollout, by ``RunResult.outcome``.

    ``promoted`` is 0; ``rolled_back`` and ``failed`` are 1; ``paused`` and ``in_progress``
    (the rollout never reached a decision) are 2.
    """
    if outcome == "promoted":
        return ExitCode.NO_WORSE
    if outcome in ("rolled_back", "failed"):
        return ExitCode.WORSE
    return ExitCode.INCONCLUSIVE
