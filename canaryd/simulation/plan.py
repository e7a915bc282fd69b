"""``canaryd plan``: what a policy can detect with a given traffic, before the rollout starts.

Two sources answer the question, and the answer is the second:

1. **Floors** (``canaryd.stats.bounds``): along the deterministic schedule of the policy's steps
   at a constant ``rps`` (each step lasts ``max(minDwell, minCanaryRequests / canary rps)``,
   rounded up to whole intervals; a shadow phase first, at its mirror share), the expected
   conditional information of each interval is summed until it reaches ``log(1/alpha)``. The
   floor is the time no level-alpha test can beat on average; it picks where to look.
2. **A seeded simulation** through ``canaryd.simulation.engine.simulate``, the decision loop
   ``simulate`` and the daemon use: ``runs`` rollouts with the canary's error rate multiplied
   (or its latency distribution scaled), counted as detected when the canary is rolled back (or
   paused as worse, with ``onFailure: pause``) before ``maxDuration``. The smallest effect of a
   fixed grid detected in at least ``POWER`` of the runs is reported.

The floors' horizon is the time a regressed canary can still be stopped: the end of the steps
when the policy would promote then, else ``maxDuration`` (a ``minDetectableEffect`` shortfall
holds or pauses the rollout at its last step, and a failing metric still rolls back a paused
rollout; ``criterion: nonInferiority`` never promotes a regressed canary), and ``maxDuration``
whenever it ends the rollout first; ``Schedule.horizon_why`` names the bound. The simulation needs
no such rule: each run is judged until it is promoted (the regression got through), rolled
back, or ``maxDuration``. A rollout ``window`` is honoured by the simulation (its clock starts
at the scenario's ``start``), not by the floors. Stable's error rate and latency come from flags
or from a scenario file, whose other stable fields (class shares, accuracy), labels and start
carry over, so a policy's ML metrics are simulated too (unchanged in the canary).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from canaryd.controller import Action, RolloutController
from canaryd.controller.controller import evidence_requests
from canaryd.durations import format_duration
from canaryd.errors import InputError, Problem
from canaryd.policy.model import HISTOGRAM_KINDS, CanaryPolicy, Metric
from canaryd.simulation.engine import RunResult, simulate
from canaryd.simulation.scenario import (
    Canary,
    Latency,
    Llm,
    LogNormal,
    Pods,
    Scenario,
    Traffic,
)
from canaryd.simulation.vllm import LLM_LATENCY_BOUNDS_MS
from canaryd.stats.bounds import interval_information
from canaryd.stats.factory import pod_spread_of
from canaryd.stats.pods import MIN_SPREAD_PODS, assumed_spread_text

POWER = 0.9
"""The detection probability ``plan`` reports effects at."""
ERROR_RATIOS: tuple[float, ...] = (1.25, 1.5, 2, 2.5, 3, 4, 5, 7, 10, 15, 20, 30, 50, 100)
"""Canary/stable error-rate ratios tried, smallest first."""
LATENCY_SHIFTS_PCT: tuple[float, ...] = (5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300)
"""Latency shifts tried (the whole distribution scaled: the median +x %), smallest first."""

Kind = Literal["errors", "latency"]


@dataclass(frozen=True)
class Baseline:
    """The stable version ``plan`` assumes: its error rate, latency and histogram buckets."""

    error_rate: float
    latency: Latency | None
    """End-to-end latency; None for an LLM, whose latency is derived from ``llm``."""
    buckets: str | list[float]
    base: Path = Path(".")
    """Where a scenario's relative paths are read from."""
    template: Scenario | None = None
    """The scenario file it came from: its stable version (class shares, accuracy), labels and
    start carry over to every simulated rollout, unchanged for both versions."""
    pods: Pods | None = None
    """Each version on its own replicas (``--pods``, or the scenario's ``pods``); None: one
    exchangeable pool, as when the metric source cannot tell pods apart. The pod-aware judges'
    delay depends on how many stable pods report (DESIGN-NOTES.md, "Few stable pods")."""
    llm: Llm | None = None
    """An LLM served by vLLM (a scenario's ``stable.llm``): its time to first token and time
    per token are what ``plan`` slows down."""

    def describe(self) -> str:
        if self.llm is not None:
            assert self.llm.ttft is not None and self.llm.time_per_token is not None
            text = (
                f"error rate {100 * self.error_rate:g} %, an LLM with time to first token "
                f"{_shape(self.llm.ttft)} and time per token {_shape(self.llm.time_per_token)}"
            )
        else:
            assert self.latency is not None
            text = f"error rate {100 * self.error_rate:g} %, latency {_shape(self.latency)}"
        if self.pods is not None:
            pd = self.pods
            alike = pd.latency_cv == 0 and pd.error_rate_spread == 1
            text += (
                f", {pd.stable} stable pod{'s' if pd.stable != 1 else ''} vs {pd.canary} "
                f"canary pod{'s' if pd.canary != 1 else ''}"
                + (
                    " (alike)"
                    if alike
                    else f" (latency CV {pd.latency_cv:g}, error rates x{pd.error_rate_spread:g})"
                )
            )
        return text

    def distribution(self, kind: str) -> Latency | None:
        """What a latency-like metric of ``kind`` reads, per request: end-to-end latency, or
        an LLM's time to first token or time per token (None: not modelled here)."""
        if self.llm is None:
            return self.latency if kind == "latency" else None
        return {"ttft": self.llm.ttft, "inter-token": self.llm.time_per_token}.get(kind)

    def slower(self, factor: float) -> Canary:
        """A canary ``factor`` times slower: every request's latency, or an LLM's time to
        first token and time per token (so its end-to-end latency too)."""
        if self.llm is not None:
            assert self.llm.ttft is not None and self.llm.time_per_token is not None
            return Canary(
                llm=Llm(
                    ttft=_scaled(self.llm.ttft, factor),
                    time_per_token=_scaled(self.llm.time_per_token, factor),
                )
            )
        assert self.latency is not None
        return Canary(latency=_scaled(self.latency, factor))


def _shape(lat: Latency) -> str:
    if lat.lognormal is not None:
        return f"lognormal median {lat.lognormal.median_ms:g} ms, sigma {lat.lognormal.sigma:g}"
    return "gamma" if lat.gamma is not None else "pareto"


def _scaled(lat: Latency, factor: float) -> Latency:
    """``lat`` with every draw ``factor`` times larger."""
    if lat.lognormal is not None:
        ln = lat.lognormal
        return Latency(lognormal=LogNormal(median_ms=ln.median_ms * factor, sigma=ln.sigma))
    if lat.gamma is not None:
        g = lat.gamma
        upd = (
            {"scale_ms": g.scale_ms * factor}
            if g.scale_ms is not None
            else {"mean_ms": (g.mean_ms or 0.0) * factor}
        )
        return Latency(gamma=g.model_copy(update=upd))
    assert lat.pareto is not None
    return Latency(pareto=lat.pareto.model_copy(update={"scale_ms": lat.pareto.scale_ms * factor}))


def baseline_from_flags(error_rate: float, median_ms: float, sigma: float, preset: str) -> Baseline:
    """A lognormal baseline; the buckets of the policy's preset (knative's, else istio's)."""
    return Baseline(
        error_rate,
        Latency(lognormal=LogNormal(median_ms=median_ms, sigma=sigma)),
        "knative" if preset == "knative" else "istio",
    )


def baseline_from_scenario(sc: Scenario, path: Path) -> Baseline:
    """The stable version of a scenario file; ``InputError`` when ``plan`` cannot shift it.

    An LLM (``stable.llm``) is slowed through its time to first token and time per token, the
    distributions its ``ttft`` and ``inter-token`` histograms are drawn from."""

    def problem(where: str, message: str) -> InputError:
        return InputError([Problem(str(path), None, None, where, message)])

    llm = sc.stable.llm
    lat = sc.stable.latency
    if llm is not None:
        scaled = {"stable.llm.ttft": llm.ttft, "stable.llm.timePerToken": llm.time_per_token}
    elif lat is not None:
        scaled = {"stable.latency": lat}
    else:
        raise problem("stable", "plan needs stable.latency, or stable.llm for an LLM")
    for where, dist in scaled.items():
        assert dist is not None  # the scenario model requires both of an llm's
        if dist.empirical_csv is not None:
            raise problem(
                where,
                "plan scales the stable latency to shift it: expected lognormal, gamma or "
                "pareto, got empiricalCsv",
            )
    assert sc.stable.error_rate is not None  # the scenario model requires it
    return Baseline(
        sc.stable.error_rate,
        None if llm is not None else lat,
        sc.buckets,
        path.parent,
        sc,
        sc.pods,
        llm,
    )


# --- the deterministic schedule and the floors ------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The policy's traffic split per interval at constant rps, up to the detection horizon."""

    interval_s: float
    canary_share: list[float]
    """Per interval: canary requests / total requests (a shadow phase: the mirror share)."""
    stable_share: list[float]
    steps_end_s: float
    """When the last step's minDwell and minCanaryRequests are met."""
    horizon_s: float
    """Until when a regressed canary can still be stopped (see the module docstring)."""
    horizon_why: str


def schedule_of(policy: CanaryPolicy, rps: float, baseline: Baseline) -> Schedule:
    """The schedule at ``rps`` with stable as ``baseline`` (which sets what an MDE needs)."""
    spec = policy.spec
    interval = spec.analysis.interval
    canary: list[float] = []
    stable: list[float] = []

    def intervals(min_s: float, min_requests: float, share: float) -> int:
        need_s = max(min_s, min_requests / (rps * share) if share > 0 else math.inf)
        return max(1, math.ceil(need_s / interval - 1e-9))

    seen = (
        0.0  # canary requests by the end of the steps (mirrored ones count, as in the controller)
    )
    shadow = spec.steps.shadow
    if shadow is not None:
        m = spec.steps.mirror_percent() / 100.0
        k = intervals(shadow.duration, shadow.min_canary_requests, m)
        canary += [m] * k
        stable += [1.0] * k
        seen += k * interval * rps * m
    steps = RolloutController(policy).steps
    for s in steps:
        assert s.min_dwell is not None and s.min_canary_requests is not None
        w = s.weight / 100.0
        k = intervals(s.min_dwell, s.min_canary_requests, w)
        canary += [w] * k
        stable += [1.0 - w] * k
        seen += k * interval * rps * w
    steps_end = len(canary) * interval
    max_s = spec.promotion.max_duration
    last = steps[-1].weight / 100.0
    # The reason names the bound reached first: the end of the steps (or of a
    # minDetectableEffect hold), or maxDuration, which ends every rollout.
    if spec.promotion.criterion == "nonInferiority":
        horizon = max_s
        why = (
            "criterion nonInferiority: a worse canary is never promoted, so it is judged until "
            "maxDuration"
        )
    elif steps_end > max_s:
        horizon = max_s
        why = (
            "maxDuration, which ends the rollout before the end of the steps "
            f"({format_duration(steps_end)})"
        )
    else:
        horizon, why = steps_end, "the end of the steps, when a healthy canary is promoted"
        for name, mde in spec.promotion.min_detectable_effect.items():
            metric = next(m for m in spec.analysis.metrics if m.name == name)
            p_s = event_rate(metric, baseline)
            if p_s is None:
                continue  # a metric plan does not model (its line says so)
            need = evidence_requests(policy, metric, mde, steps[-1].weight, p_s)
            if seen < need:
                what = (
                    "labelled canary predictions" if metric.kind == "quality" else "canary requests"
                )
                rate = (
                    ""
                    if metric.kind in HISTOGRAM_KINDS
                    else f" at stable's planned {100 * p_s:.2g} %"
                )
                why = (
                    f"minDetectableEffect {name} x{mde:g} needs about {need:.0f} {what}{rate}, "
                    f"{seen:.0f} by the end of the steps: the rollout "
                )
                if spec.promotion.on_insufficient_evidence == "hold":
                    more = math.ceil((need - seen) / (rps * last) / interval - 1e-9) * interval
                    horizon = steps_end + more
                    why += (
                        "holds at its last step, and maxDuration ends it before it has them"
                        if horizon > max_s
                        else "holds at its last step until it has them"
                    )
                else:
                    horizon = max_s
                    why += "pauses at its last step until maxDuration"
                break
    horizon = min(horizon, max_s)
    n = max(1, math.ceil(horizon / interval - 1e-9))
    while len(canary) < n:
        canary.append(last)
        stable.append(1.0 - last)
    return Schedule(interval, canary[:n], stable[:n], steps_end, horizon, why)


def event_rate(metric: Metric, baseline: Baseline) -> float | None:
    """Stable's rate of the event ``metric`` counts: an error, a request slower than its top
    quantile, a wrong prediction (with a scenario's ``accuracy``); None for others."""
    if metric.kind == "errors":
        return baseline.error_rate
    if metric.kind in HISTOGRAM_KINDS:
        return 1.0 - max(metric.quantiles)
    accuracy = baseline.template.stable.accuracy if baseline.template is not None else None
    if metric.kind == "quality" and accuracy is not None:
        return 1.0 - accuracy
    return None


def floor_time(
    sched: Schedule, rps: float, p_stable: float, rho1: float, rho0: float, alpha: float
) -> float:
    """Seconds until the expected information reaches ``log(1/alpha)`` (inf: not by the horizon)."""
    if rho1 <= rho0 or p_stable <= 0 or p_stable * rho1 >= 1:
        return math.inf
    target = math.log(1.0 / alpha)
    info = 0.0
    n = rps * sched.interval_s
    for i, (c, s) in enumerate(zip(sched.canary_share, sched.stable_share, strict=True)):
        gain = interval_information(n * s, n * c, p_stable, rho1, rho0)
        if gain > 0 and info + gain >= target:
            return (i + (target - info) / gain) * sched.interval_s
        info += gain
    return math.inf


def _critical(policy: CanaryPolicy, kind: Kind) -> Metric | None:
    return next((m for m in policy.spec.analysis.metrics if m.kind == kind and m.critical), None)


WHOLE_DISTRIBUTION = "the whole distribution"
"""``Plan.latency_shift_is`` for a baseline without an LLM: every request is slower."""

LATENCY_KINDS = ("latency", "ttft", "inter-token")
"""Metric kinds a latency shift is planned for, in the order one is chosen."""


def latency_metric(policy: CanaryPolicy, baseline: Baseline) -> Metric | None:
    """The critical latency-like metric the latency shift is planned for: end-to-end
    latency, else (an LLM) time to first token, else time per token; None if none is modelled
    by ``baseline``."""
    for kind in LATENCY_KINDS:
        for m in policy.spec.analysis.metrics:
            if m.kind == kind and m.critical and baseline.distribution(kind) is not None:
                return m
    return None


def latency_events(
    metric: Metric, baseline: Baseline, bounds: Sequence[float], factor: float, spread: float = 1.0
) -> list[tuple[float, float, float]]:
    """``(stable, canary, widened)`` shares slower than each tested boundary ``b``, the canary
    ``factor`` x slower; ``widened`` is stable's share slower than ``b / spread``, what a pod
    ``spread`` x slower than stable may show (``stats.pods.latency_log_h``).

    Each of the metric's quantiles is tested at the finite bucket boundary nearest stable's
    quantile (buckets are all Prometheus keeps).
    """
    import numpy as np

    finite = np.asarray([b for b in bounds if math.isfinite(b)], dtype=float)
    lat = baseline.distribution(metric.kind)
    assert lat is not None, metric.kind
    out = []
    for q in metric.quantiles:
        at_q = float(lat.ppf(np.asarray([q]), baseline.base)[0])
        b = float(finite[np.argmin(np.abs(finite - at_q))])
        p_s, p_c, p_w = (
            1.0 - lat.cdf(np.asarray([b, b / factor, b / spread]), baseline.base)
        ).tolist()
        out.append((p_s, p_c, p_w))
    return out


# --- simulation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One simulated effect: how many runs stopped the canary as worse by maxDuration (before
    it was promoted), and when."""

    kind: str
    effect: float
    runs: int
    detected: int
    times_s: list[float]

    @property
    def rate(self) -> float:
        return self.detected / self.runs

    @property
    def shown(self) -> float:
        """The effect as the grid and the output give it: a ratio, or a latency shift in %."""
        return round(100 * (self.effect - 1), 6) if self.kind == "latency" else self.effect

    @property
    def median_s(self) -> float | None:
        """The median detection time over all runs (undetected ones count as never); None
        when at most half the runs detected."""
        if self.detected * 2 <= self.runs:
            return None
        return sorted(self.times_s)[self.runs // 2]

    def to_dict(self) -> dict[str, Any]:
        """``effect``: the error ratio, or the latency factor (with ``shift_pct``, the +x %)."""
        shift = {"shift_pct": self.shown} if self.kind == "latency" else {}
        return {
            "effect": self.effect,
            **shift,
            "runs": self.runs,
            "detected": self.detected,
            "median_detection_s": self.median_s,
        }


def detected_at(run: RunResult) -> float | None:
    """When the run stopped the canary as worse (rolled back, or paused as worse)."""
    for d in run.decisions:
        if d.action is Action.ROLLBACK or (
            d.action is Action.PAUSE and d.reason.startswith("canary is worse")
        ):
            return d.t
    return None


@dataclass(frozen=True)
class Search:
    """One effect kind's answer: the floor's smallest effect, the simulated one, the trials."""

    floor: float | None
    """The smallest grid effect whose floor falls within the horizon (None: none does)."""
    found: float | None
    """The smallest grid effect detected in ``POWER`` of the runs (None: none tried was)."""
    trials: list[Trial]

    @property
    def chosen(self) -> Trial | None:
        return next((t for t in self.trials if t.shown == self.found), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "floor": self.floor,
            "detected_at_power": self.found,
            "trials": [t.to_dict() for t in self.trials],
        }


@dataclass
class Planner:
    """Floors and cached seeded simulations of one policy at one traffic level."""

    policy: CanaryPolicy
    rps: float
    baseline: Baseline
    runs: int
    seed: int
    sched: Schedule = field(init=False)
    _trials: dict[tuple[str, float], Trial] = field(init=False, default_factory=dict)
    simulated_runs: int = field(init=False, default=0)
    healthy_runs: list[RunResult] = field(init=False, default_factory=list)
    """The healthy trial's runs (its outcomes and reasons)."""

    def __post_init__(self) -> None:
        self.sched = schedule_of(self.policy, self.rps, self.baseline)

    def scenario(self, kind: str, effect: float, duration_s: float) -> Scenario:
        """The scenario of one trial: constant ``rps``, the canary ``effect`` worse from t=0."""
        interval = self.policy.spec.analysis.interval
        b = self.baseline
        canary = Canary()
        if kind == "errors":
            canary = Canary(error_rate=min(1.0, b.error_rate * effect))
        elif kind == "latency":
            canary = b.slower(effect)
        template = b.template
        if template is None:  # flags: an LLM comes only from a scenario
            assert b.latency is not None
            template = Scenario.model_validate(
                {
                    "duration": f"{interval:.0f}s",
                    "tick": f"{interval:.0f}s",
                    "traffic": {"rps": self.rps},
                    "buckets": b.buckets,
                    "stable": {"errorRate": b.error_rate, "latency": b.latency.model_dump()},
                }
            )
        return template.model_copy(
            update={
                "name": f"plan-{kind}-{effect:g}",
                "duration": math.ceil(duration_s / interval) * interval,
                "tick": interval,
                "traffic": Traffic(rps=self.rps),
                "canary": canary,
                "incidents": [],
                "metrics_outage": [],
                "pods": b.pods,
            }
        )

    def trial(self, kind: str, effect: float) -> Trial:
        """Seeded runs with the canary ``effect`` worse (``healthy``: no change), by maxDuration."""
        key = (kind, effect)
        if key not in self._trials:
            # Every run is judged until it is promoted, rolled back or maxDuration: a promoted
            # run ends at once, so only the undecided ones cost the full horizon.
            sc = self.scenario(kind, effect, self.policy.spec.promotion.max_duration)
            result = simulate(
                sc,
                self.policy,
                self.baseline.base,
                runs=self.runs,
                seed=self.seed,
                paused_ends=kind == "healthy",
            )
            self.simulated_runs += self.runs
            times = [t for r in result.runs if (t := detected_at(r)) is not None]
            times = [t for t in times if t <= self.policy.spec.promotion.max_duration]
            self._trials[key] = Trial(kind, effect, self.runs, len(times), times)
            if kind == "healthy":
                self.healthy_runs = result.runs
        return self._trials[key]

    # -- floors ----------------------------------------------------------------------------

    def error_floor_s(self, ratio: float) -> float:
        m = _critical(self.policy, "errors")
        if m is None or not self.policy.spec.analysis.source.measures_errors:
            return math.inf
        alpha = self.policy.spec.analysis.alpha_for(m)
        p = self.baseline.error_rate
        rho0 = (1.0 + m.tolerance) * self.assumed_spread(m)
        return floor_time(self.sched, self.rps, p, ratio, rho0, alpha)

    def assumed_spread(self, metric: Metric) -> float:
        """The ``podSpread`` the metric's judge widens its null by for the whole rollout, on
        fewer than ``MIN_SPREAD_PODS`` stable pods (1 otherwise: more pods' spread is
        estimated, and the floor is that of alike pods)."""
        pods = self.baseline.pods
        if pods is None or pods.stable >= MIN_SPREAD_PODS or metric.judge != "sequential":
            return 1.0
        return pod_spread_of(metric)

    def latency_floor_s(self, shift_pct: float) -> float:
        m = latency_metric(self.policy, self.baseline)
        if m is None:
            return math.inf
        alpha = self.policy.spec.analysis.alpha_for(m)
        bounds = self._bounds(m.kind)
        best = math.inf
        factor, spread = 1.0 + shift_pct / 100.0, self.assumed_spread(m)
        for p_s, p_c, p_w in latency_events(m, self.baseline, bounds, factor, spread):
            if p_s <= 0:
                continue
            # The judge's null: a share of up to stable's slower than b / podSpread, that is
            # rho0 x p_w / p_s (1 with alike pods, or with 3 or more stable pods).
            rho0 = (1.0 + m.tolerance) * max(1.0, p_w / p_s)
            t = floor_time(self.sched, self.rps, p_s, p_c / p_s, rho0, alpha)
            best = min(best, t)
        return best

    def _bounds(self, kind: str) -> tuple[float, ...]:
        """The histogram buckets a metric of ``kind`` is judged on."""
        if kind in LLM_LATENCY_BOUNDS_MS:
            return LLM_LATENCY_BOUNDS_MS[kind]
        return self.scenario("healthy", 1.0, self.sched.interval_s).bounds_ms()

    # -- search ----------------------------------------------------------------------------

    def smallest(self, kind: Kind) -> Search:
        """The smallest grid effect detected in ``POWER`` of the runs, searched from the floor.

        canaryd needs more than the floor, so the search starts at the first effect whose floor
        is at most half the horizon, then walks down while detected, or up until detected.
        """
        grid = ERROR_RATIOS if kind == "errors" else LATENCY_SHIFTS_PCT
        if kind == "errors":
            grid = tuple(r for r in grid if self.baseline.error_rate * r < 1.0)
        floor_of = self.error_floor_s if kind == "errors" else self.latency_floor_s
        floors = [floor_of(e) for e in grid]
        horizon = self.sched.horizon_s
        ok = [i for i, t in enumerate(floors) if t <= horizon]
        if not ok:
            return Search(None, None, [])
        i_floor = ok[0]
        tried: list[Trial] = []

        def detected(i: int) -> bool:
            effect = grid[i] if kind == "errors" else 1.0 + grid[i] / 100.0
            t = self.trial(kind, effect)
            tried.append(t)
            return t.rate >= POWER

        i = next((i for i in ok if floors[i] <= horizon / 2), i_floor)
        if detected(i):
            while i - 1 >= i_floor and detected(i - 1):
                i -= 1
            return Search(grid[i_floor], grid[i], tried)
        while i + 1 < len(grid):
            i += 1
            if detected(i):
                return Search(grid[i_floor], grid[i], tried)
        return Search(grid[i_floor], None, tried)

    def mde_shift(self, metric: Metric, mde: float) -> float | None:
        """The latency factor whose tail event at the highest quantile is ``mde`` x stable's."""
        import numpy as np

        q = max(metric.quantiles)
        lat = self.baseline.distribution(metric.kind)
        if lat is None:
            return None
        target = 1.0 - mde * (1.0 - q)
        if target <= 0:
            return None
        b = float(lat.ppf(np.asarray([q]), self.baseline.base)[0])
        at = float(lat.ppf(np.asarray([target]), self.baseline.base)[0])
        return None if at <= 0 else b / at


@dataclass
class MdeCheck:
    metric: str
    mde: float
    trial: Trial | None
    note: str = ""

    @property
    def met(self) -> bool:
        return self.trial is None or self.trial.rate >= POWER

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "min_detectable_effect": self.mde,
            "met": self.met,
            "trial": None if self.trial is None else self.trial.to_dict(),
            "note": self.note,
        }


@dataclass
class Plan:
    """Everything ``canaryd plan`` prints."""

    policy: str
    rps: float
    baseline: str
    runs: int
    seed: int
    steps: list[int]
    shadow: str
    """``"shadow 10m (5% mirrored) -> "`` before the steps, or ``""``."""
    interval_s: float
    max_duration_s: float
    horizon_s: float
    horizon_why: str
    healthy: Trial
    healthy_promoted: int
    healthy_median_s: float | None
    healthy_other: str
    errors: Search | None
    latency: Search | None
    latency_metric: str | None
    """The metric the latency shift is planned for (``latency_metric``)."""
    latency_shift_is: str
    """What the shift slows: the whole distribution, or an LLM's times per token."""
    errors_x2: Trial | None
    errors_x2_floor_s: float
    mde: list[MdeCheck]
    simulations: int = 0
    simulated_runs: int = 0
    elapsed_s: float = 0.0

    assumptions: list[str] = field(default_factory=list)
    """What the judges assume about pods they cannot measure (fewer than 3 stable pods)."""

    @property
    def warnings(self) -> list[str]:
        out = []
        for c in self.mde:
            if not c.met and c.trial is not None:
                out.append(
                    f"warning: this policy cannot detect its own minDetectableEffect "
                    f"{c.metric} x{c.mde:g} in time (by {format_duration(self.horizon_s)})"
                    f" at {self.rps:g} rps: detected in {c.trial.detected} of {c.trial.runs} runs "
                    f"(needs {POWER:.0%})"
                )
        return out

    def lines(self) -> list[str]:
        dur = format_duration
        out = [
            f"plan for policy {self.policy} at {self.rps:g} rps ({self.baseline}); "
            f"{self.runs} seeded runs per effect, seed {self.seed}",
            f"steps {self.shadow}{' -> '.join(f'{w}%' for w in self.steps)}, "
            f"interval {dur(self.interval_s)}, "
            f"maxDuration {dur(self.max_duration_s)}",
            f"detection horizon {dur(self.horizon_s)}: {self.horizon_why}",
        ]
        out.append(self._healthy_line())
        out.append(self._effect_line("errors", self.errors, lambda e: f"x{e:g}", "error ratio"))
        if self.latency_metric is None or self.latency_shift_is == WHOLE_DISTRIBUTION:
            label, what = "latency", "median shift"
        else:
            label, what = self.latency_metric, f"shift of {self.latency_shift_is}"
        out.append(self._effect_line(label, self.latency, lambda e: f"+{e:g} %", what))
        if self.errors_x2 is not None:
            t = self.errors_x2
            fl = (
                dur(self.errors_x2_floor_s)
                if math.isfinite(self.errors_x2_floor_s)
                else "beyond the horizon"
            )
            med = t.median_s
            when = (
                f"detected in {dur(med)} (median)"
                if med is not None
                else f"not detected in most runs by the horizon {dur(self.horizon_s)}"
            )
            out.append(f"errors x2: {when}; {t.detected} of {t.runs} runs detected; floor {fl}")
        for c in self.mde:
            if c.trial is None:
                out.append(f"minDetectableEffect {c.metric} x{c.mde:g}: {c.note}")
            else:
                out.append(
                    f"minDetectableEffect {c.metric} x{c.mde:g}: "
                    f"{'met' if c.met else 'NOT met'} ({c.trial.detected} of {c.trial.runs} runs "
                    f"detected{c.note})"
                )
        out.extend(self.assumptions)
        out.extend(self.warnings)
        out.append(
            f"({self.simulations} simulations, {self.simulated_runs} runs, {self.elapsed_s:.1f}s)"
        )
        return out

    def _healthy_line(self) -> str:
        dur = format_duration
        n = self.healthy.runs
        if self.healthy_median_s is not None:
            return (
                f"healthy canary: promoted in {dur(self.healthy_median_s)} (median; "
                f"{self.healthy_promoted} of {n} runs promoted)"
            )
        return (
            f"healthy canary: not promoted ({self.healthy_promoted} of {n} runs promoted); "
            f"{self.healthy_other}"
        )

    def _effect_line(
        self, kind: str, search: Search | None, fmt: Callable[[float], str], what: str
    ) -> str:
        dur = format_duration(self.horizon_s)
        if search is None:
            return f"{kind}: not judged by a critical {kind} metric (or not measured)"
        if search.floor is None:
            return f"{kind}: no {what} on the grid is detectable within {dur} even by the floor"
        chosen = search.chosen
        if chosen is None:
            return (
                f"{kind}: no {what} up to {fmt(search.trials[-1].shown)} is detected in "
                f"{POWER:.0%} of runs within {dur} (floor {fmt(search.floor)})"
            )
        return (
            f"{kind}: smallest {what} detected with {POWER:.0%} probability in {dur}: "
            f"{fmt(chosen.shown)} ({chosen.detected} of {chosen.runs} runs; floor "
            f"{fmt(search.floor)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "rps": self.rps,
            "baseline": self.baseline,
            "runs": self.runs,
            "seed": self.seed,
            "power": POWER,
            "steps": self.steps,
            "interval_s": self.interval_s,
            "max_duration_s": self.max_duration_s,
            "horizon_s": self.horizon_s,
            "horizon_why": self.horizon_why,
            "healthy": {
                "runs": self.healthy.runs,
                "promoted": self.healthy_promoted,
                "median_promotion_s": self.healthy_median_s,
            },
            "errors": None if self.errors is None else self.errors.to_dict(),
            "latency_shift_pct": None if self.latency is None else self.latency.to_dict(),
            "latency_metric": self.latency_metric,
            "latency_shift_is": self.latency_shift_is,
            "errors_x2": None
            if self.errors_x2 is None
            else {
                **self.errors_x2.to_dict(),
                "floor_s": self.errors_x2_floor_s
                if math.isfinite(self.errors_x2_floor_s)
                else None,
            },
            "min_detectable_effect": [c.to_dict() for c in self.mde],
            "pod_assumptions": self.assumptions,
            "warnings": self.warnings,
            "simulations": self.simulations,
            "simulated_runs": self.simulated_runs,
            "elapsed_s": self.elapsed_s,
        }


def pod_assumptions(policy: CanaryPolicy, baseline: Baseline) -> list[str]:
    """One note per pod-aware metric when the baseline has too few stable pods to measure how
    much pods differ: the ``podSpread`` its judge assumes instead, and what that costs."""
    pods = baseline.pods
    if pods is None or pods.stable >= MIN_SPREAD_PODS:
        return []
    out = []
    for m in policy.spec.analysis.metrics:
        if m.judge != "sequential" or m.kind not in ("errors", "latency"):
            continue
        if m.kind == "errors" and not policy.spec.analysis.source.measures_errors:
            continue
        measure = "error rate" if m.kind == "errors" else "latency"
        spread = pod_spread_of(m)
        head = (
            f"note: {pods.stable} stable pod{'s' if pods.stable != 1 else ''} cannot show how "
            f"much pods differ, so {m.name} assumes"
        )
        tail = (
            ": its false-rollback guarantee rests on that"
            if spread <= 1.0
            else " and rolls back only a canary worse than that; replicas known to be alike "
            "can declare less"
        )
        out.append(f"{head} {assumed_spread_text(spread, measure)}{tail}")
    return out


def _shadow_text(policy: CanaryPolicy) -> str:
    sh = policy.spec.steps.shadow
    if sh is None:
        return ""
    mirror = policy.spec.steps.mirror_percent()
    return f"shadow {format_duration(sh.duration)} ({mirror:g}% mirrored) -> "


def make_plan(policy: CanaryPolicy, rps: float, baseline: Baseline, runs: int, seed: int) -> Plan:
    """Floors, then seeded simulations: what ``policy`` detects at ``rps`` (see the module)."""
    import time

    started = time.perf_counter()
    pl = Planner(policy, rps, baseline, runs, seed)
    healthy = pl.trial("healthy", 1.0)
    promoted = [r.decided_at_s for r in pl.healthy_runs if r.outcome == "promoted"]
    median = None
    if promoted and len(promoted) * 2 > len(pl.healthy_runs):
        ordered = sorted(t for t in promoted if t is not None) + [math.inf] * (
            len(pl.healthy_runs) - len(promoted)
        )
        median = ordered[len(pl.healthy_runs) // 2]
    other = ""
    if median is None and pl.healthy_runs:
        run0 = pl.healthy_runs[0]
        last = next((d for d in reversed(run0.decisions) if d.action is not Action.HOLD), None)
        when = "" if run0.decided_at_s is None else f" at {format_duration(run0.decided_at_s)}"
        other = f"run 0 {run0.outcome}{when}" + ("" if last is None else f": {last.reason}")
    measured = policy.spec.analysis.source.measures_errors
    errors = pl.smallest("errors") if _critical(policy, "errors") and measured else None
    lat_metric = latency_metric(policy, baseline)
    latency = pl.smallest("latency") if lat_metric is not None else None
    x2 = pl.trial("errors", 2.0) if errors is not None else None
    checks: list[MdeCheck] = []
    for name, mde in policy.spec.promotion.min_detectable_effect.items():
        metric = next(m for m in policy.spec.analysis.metrics if m.name == name)
        if metric.kind == "errors":
            checks.append(MdeCheck(name, mde, pl.trial("errors", mde)))
        elif metric.kind in LATENCY_KINDS:
            factor = pl.mde_shift(metric, mde)
            if factor is None:
                checks.append(MdeCheck(name, mde, None, "not checked: outside the distribution"))
            else:
                note = f"; latency +{100 * (factor - 1):.0f} % makes p{100 * max(metric.quantiles):g}'s tail x{mde:g}"
                checks.append(MdeCheck(name, mde, pl.trial("latency", factor), note))
        else:
            checks.append(
                MdeCheck(name, mde, None, f"not checked by plan (metric kind {metric.kind})")
            )
    return Plan(
        policy=policy.name,
        rps=rps,
        baseline=baseline.describe(),
        runs=runs,
        seed=seed,
        steps=[s.weight for s in RolloutController(policy).steps],
        shadow=_shadow_text(policy),
        interval_s=policy.spec.analysis.interval,
        max_duration_s=policy.spec.promotion.max_duration,
        horizon_s=pl.sched.horizon_s,
        horizon_why=pl.sched.horizon_why,
        healthy=healthy,
        healthy_promoted=len(promoted),
        healthy_median_s=median,
        healthy_other=other,
        errors=errors,
        latency=latency,
        latency_metric=None if lat_metric is None else lat_metric.name,
        latency_shift_is=(
            "time to first token and time per token"
            if baseline.llm is not None
            else WHOLE_DISTRIBUTION
        ),
        errors_x2=x2,
        errors_x2_floor_s=pl.error_floor_s(2.0) if errors is not None else math.inf,
        mde=checks,
        assumptions=pod_assumptions(policy, baseline),
        simulations=len(pl._trials),
        simulated_runs=pl.simulated_runs,
        elapsed_s=time.perf_counter() - started,
    )
