"""A rollout's judges, fed one observation per interval, and how their verdicts combine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from canaryd.observation import Observation
from canaryd.policy.model import CanaryPolicy
from canaryd.stats.factory import build_judges
from canaryd.stats.judge import Judge
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

    def observe(self, observation: Observation) -> str | None:
        """Feed one interval; return the no-data reason when it could not be used."""
        obs = observation.validated()
        if not obs.usable:
            return obs.no_data_reason or "no data"
        assert obs.stable is not None and obs.canary is not None
        for judge in self.judges:
            judge.update(obs.stable, obs.canary)
        return None

    def verdicts(self) -> list[Verdict]:
        return [j.verdict() for j in self.judges]

    def state(self) -> dict[str, Any]:
        return {j.metric: j.state() for j in self.judges}

    def load_state(self, state: dict[str, Any]) -> None:
        for j in self.judges:
            if j.metric in state:
                j.load_state(state[j.metric])
