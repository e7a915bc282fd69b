"""Model quality from delayed labels: canary's accuracy no worse than stable's by more than tolerated.

Ground truth arrives late (a fraud label days later, a user's correction minutes later). Each
interval brings, per version, the predictions whose label arrived (``labelled``) and how many of
them the version got right (``correct``); ``VersionCounts.labels[metric]``. The judge works on what
is labelled, like the errors judge on requests: "events" are the *wrong* predictions
(``labelled - correct``), "requests" the labelled ones, and the rate-ratio e-process of
``canaryd.stats.ratio`` tests ``rho = wrong_c / wrong_s <= 1 + tolerance``. Conditioning on each
interval's wrong predictions makes the label delay and the traffic split drop out, even when the
labels of one interval belong to predictions made under an earlier split.

Assumption: whether and when a prediction is labelled does not depend on whether it was right
(labels are not fetched preferentially for mistakes). Under it, the labelled predictions of a
version are a fair sample of its predictions.

The predictions still unlabelled are the version's requests so far minus its labels so far: the
verdict says how many, so "no evidence yet" is visible rather than silent.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from canaryd.observation import VersionCounts
from canaryd.stats.ratio import RateRatioBatch
from canaryd.stats.verdict import Status, Verdict


def _acc(correct: float, labelled: float) -> float:
    return correct / labelled if labelled > 0 else math.nan


def _fmt_pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f} %"


class SequentialQualityJudge:
    """Wrong-prediction rate ratio, canary over stable, on labelled predictions (peeking-safe).

    Fails when the e-value for ``rho > 1 + tolerance`` reaches ``1/alpha``; passes when the
    confidence sequence shows ``rho < 1 + tolerance``. ``canary_events``/``stable_events`` are the
    wrong predictions, ``*_samples`` the labelled ones.
    """

    judge_name: ClassVar[str] = "sequential"
    peeking_safe: ClassVar[bool] = True

    def __init__(self, metric: str, alpha: float, tolerance: float, critical: bool = True) -> None:
        self.metric = metric
        self.alpha = alpha
        self.tolerance = tolerance
        self.critical = critical
        self.engine = RateRatioBatch(1, 1.0 + tolerance)
        self.predictions = [0.0, 0.0]
        """Requests (predictions) per version since the rollout started: stable, canary."""
        self.skipped = 0

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None:
        self.predictions[0] += stable.requests
        self.predictions[1] += canary.requests
        ls, lc = stable.labels.get(self.metric), canary.labels.get(self.metric)
        if ls is None or lc is None:
            self.skipped += 1
            return
        self.engine.update(
            ls.labelled, ls.labelled - ls.correct, lc.labelled, lc.labelled - lc.correct
        )

    def verdict(self) -> Verdict:
        e = self.engine
        ns, nc = (float(x) for x in e.requests[0])
        xs, xc = (float(x) for x in e.events[0])
        acc_s = _acc(ns - xs, ns)
        acc_c = _acc(nc - xc, nc)
        unl_s = max(0.0, self.predictions[0] - ns)
        unl_c = max(0.0, self.predictions[1] - nc)
        rho0 = e.grid.rho0
        details: dict[str, Any] = {
            "canary_accuracy": acc_c,
            "stable_accuracy": acc_s,
            "canary_labelled": nc,
            "stable_labelled": ns,
            "canary_unlabelled": unl_c,
            "stable_unlabelled": unl_s,
            "max_wrong_ratio_tolerated": rho0,
            "alpha": self.alpha,
        }
        if self.skipped:
            details["skipped_intervals"] = self.skipped
        base: dict[str, Any] = {
            "metric": self.metric,
            "judge": "sequential",
            "critical": self.critical,
            "canary_samples": nc,
            "stable_samples": ns,
            "canary_events": xc,
            "stable_events": xs,
            "threshold": 1.0 / self.alpha,
            "details": details,
        }
        pending = (
            f"{unl_c:.0f} canary and {unl_s:.0f} stable predictions not labelled yet"
            if unl_c or unl_s
            else "every prediction labelled"
        )
        if nc <= 0 or ns <= 0:
            who = "canary" if nc <= 0 else "stable"
            return Verdict(
                status=Status.INCONCLUSIVE,
                reason=f"no {who} predictions labelled yet ({pending})",
                **base,
            )
        e_now = float(math.exp(min(e.log_e()[0], 700.0)))
        e_max = float(math.exp(min(e.max_log_e[0], 700.0)))
        lo, hi = (float(a[0]) for a in e.confidence_sequence(self.alpha))
        est = float(e.estimate()[0])
        base.update(e_value=e_now, interval=(lo, hi), estimate=None if math.isnan(est) else est)
        points = 100 * (acc_c - acc_s)
        acc_txt = (
            f"accuracy {_fmt_pct(acc_c)} vs {_fmt_pct(acc_s)} ({points:+.1f} points) on "
            f"{nc:.0f} canary and {ns:.0f} stable labelled predictions"
        )
        if e_max >= 1.0 / self.alpha:
            return Verdict(
                status=Status.FAIL,
                reason=(
                    f"canary accuracy is worse than tolerated: {acc_txt}; wrong predictions "
                    f"{_ratio(est)}x stable's rate [{_ratio(lo)}, {_ratio(hi)}], tolerated "
                    f"{rho0:.3g}x; {pending}"
                ),
                **base,
            )
        if xs + xc == 0:
            return Verdict(
                status=Status.CONTINUE,
                reason=f"no wrong predictions yet: {acc_txt}; {pending}",
                **base,
            )
        if bool(e.non_inferior(self.alpha)[0]):
            return Verdict(
                status=Status.PASS,
                reason=(
                    f"canary accuracy shown no worse than tolerated (wrong predictions < "
                    f"{_ratio(hi)}x stable's rate): {acc_txt}; {pending}"
                ),
                **base,
            )
        return Verdict(
            status=Status.CONTINUE,
            reason=(
                f"not yet shown either way: {acc_txt}; wrong-prediction ratio "
                f"{_ratio(lo)}..{_ratio(hi)} still includes {rho0:.3g}; {pending}"
            ),
            **base,
        )

    def state(self) -> dict[str, Any]:
        return {
            "engine": self.engine.row_state(0),
            "predictions": list(self.predictions),
            "skipped": self.skipped,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.engine.load_row_state(0, state["engine"])
        self.predictions = [float(x) for x in state["predictions"]]
        self.skipped = int(state["skipped"])


def _ratio(x: float) -> str:
    if math.isnan(x):
        return "-"
    return "inf" if math.isinf(x) else f"{x:.3g}"
