"""The Judge protocol: one stateful judge per metric per rollout."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from canaryd.observation import VersionCounts
from canaryd.stats.verdict import Verdict


class Judge(Protocol):
    """Accumulates per-interval counts for one metric and judges canary against stable.

    ``update`` is called once per analysis interval with usable counts (intervals with no data
    are never passed in). ``verdict`` may be called at any time. ``state`` returns a
    JSON-serializable document from which ``load_state`` restores the judge *exactly*, so a
    restarted daemon goes on with the same evidence and makes bit-identical decisions.
    """

    metric: str
    critical: bool
    judge_name: ClassVar[str]
    peeking_safe: ClassVar[bool]
    """True when the judge's error rate holds however often it is looked at."""

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None: ...

    def verdict(self) -> Verdict: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class UsesHistory(Protocol):
    """A judge that learns something from stable's counts *before* the canary started.

    ``prime`` is called at most once, before the first ``update``, with stable's counts over the
    history window (``spec.analysis.history``): the canary had no traffic then, so nothing the
    judge takes from them can depend on the canary's outcomes. What a judge may take is what
    describes stable alone (where its latency boundaries lie, how much its pods differ); never
    stable's rates as a comparison baseline, since the test compares concurrent traffic only.
    ``history_note`` says what the judge took, for verdicts and the decision history ("" when
    nothing).
    """

    def prime(self, stable: VersionCounts) -> None: ...

    def history_note(self) -> str: ...
