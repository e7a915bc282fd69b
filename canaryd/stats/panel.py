"""A rollout's judges, fed one observation per interval, and how their verdicts combine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from canaryd.observation import Observation, VersionCounts
from canaryd.policy.model import CanaryPolicy
from canaryd.stats.factory import build_judges
from canaryd.stats.judge import Judge, UsesHistory
from canaryd.stats.verdict import Status, Verdict


@dataclass(frozen=True)
class Assessment:
    """What the verdicts of one interval add up to.

    - ``failing``: critical metrics whose judges say the canary is worse (roll back);
    - ``inconclusive``: critical metrics without enough data (never a pass);
    - ``all_pass``: every critical metric has shown non-inferiority.
    """

    verdicts: tuple[Verdict, ...]

    @property
    def failing(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.critical and v.status is Status.FAIL]

    @property
    def inconclusive(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.critical and v.status is Status.INCONCLUSIVE]

    @property
    def all_pass(self) -> bool:
        crit = [v for v in self.verdicts if v.critical]
        return bool(crit) and all(v.status is Status.PASS for v in crit)

    def explain(self) -> str:
        return "; ".join(v.summary() for v in self.verdicts)


def assess(verdicts: Sequence[Verdict]) -> Assessment:
    return Assessment(tuple(verdicts))


class JudgePanel:
    """The judges of one rollout. Usable observations update every judge; others none."""

    def __init__(self, policy: CanaryPolicy) -> None:
        self.judges: list[Judge] = build_judges(policy)
        self._error_metrics = {m.name for m in policy.spec.analysis.metrics if m.kind == "errors"}
        self.unmeasured: set[str] = set()
        """Error metrics whose source reported that errors are not measured at all."""

    def observe(self, observation: Observation) -> str | None:
        """Feed one interval; return the no-data reason when it could not be used.

        A source that cannot measure errors (``Observation.errors_measured`` false, e.g. the
        kserve preset without an error counter) reports zero errors; those zeros are not
        evidence, so error judges are not fed and say so.
        """
        obs = observation.validated()
        if not obs.usable:
            return obs.no_data_reason or "no data"
        assert obs.stable is not None and obs.canary is not None
        blind = not observation.errors_measured
        for judge in self.judges:
            if blind and judge.metric in self._error_metrics:
                self.unmeasured.add(judge.metric)
                continue
            judge.update(obs.stable, obs.canary)
        return None

    def prime(self, stable: VersionCounts) -> str:
        """Give stable's pre-canary counts to every judge that uses history (``UsesHistory``);
        returns what they took, as one sentence ("" when none took anything)."""
        notes = []
        for judge in self.judges:
            if isinstance(judge, UsesHistory):
                judge.prime(stable)
                note = judge.history_note()
                if note:
                    notes.append(note)
        return "; ".join(notes)

    def verdicts(self) -> list[Verdict]:
        out = []
        for j in self.judges:
            v = j.verdict()
            if j.metric in self.unmeasured and v.status is not Status.FAIL:
                v = replace(
                    v,
                    status=Status.INCONCLUSIVE,
                    reason="the metric source does not measure errors for this preset "
                    "(zeros are not evidence)",
                )
            out.append(v)
        return out

    def state(self) -> dict[str, Any]:
        doc: dict[str, Any] = {j.metric: j.state() for j in self.judges}
        if self.unmeasured:
            doc[_UNMEASURED] = sorted(self.unmeasured)
        return doc

    def load_state(self, state: dict[str, Any]) -> None:
        for j in self.judges:
            if j.metric in state:
                j.load_state(state[j.metric])
        self.unmeasured = set(state.get(_UNMEASURED, ()))


_UNMEASURED = "_unmeasured"
"""Reserved key in the panel state (metric names are not allowed to start with '_')."""
