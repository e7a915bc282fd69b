"""The closed-loop traffic simulator: many seeded runs of one scenario, vectorized across runs.

Each tick draws, for every run at once, Poisson requests, a binomial canary share at the
run's *current* canary weight (set by its controller: the loop is closed), binomial errors
and multinomial latency buckets. Ticks are summed into analysis intervals exactly as
Prometheus ``increase()`` over the interval would report them, and each run's
``RolloutController`` - the daemon's controller - decides on them.

ML-aware scenarios (an ``llm``, class ``categories``, an ``accuracy``) add their signals from
``canaryd.simulation.signals`` on its own random stream: vLLM's histograms and finish reasons
(an LLM's end-to-end latency then follows from its answers), counts per class, delayed labels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from canaryd.controller import (
    Action,
    Decision,
    Phase,
    RolloutController,
    RolloutState,
    UserImpact,
)
from canaryd.errors import Problem, ScenarioError
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.model import CanaryPolicy
from canaryd.simulation.pods import PodDraws
from canaryd.simulation.scenario import MAX_RPS, CustomValue, Latency, Scenario
from canaryd.simulation.shadow import draw_mirrored, mirror_fractions
from canaryd.simulation.signals import MlSignals
from canaryd.stats.verdict import Verdict

FloatArray = npt.NDArray[np.float64]

OUTCOMES = ("promoted", "rolled_back", "paused", "in_progress", "failed")


@dataclass
class RunResult:
    """One run's outcome, in the shape ``canaryd simulate --json`` prints."""

    seed: int
    outcome: str
    decided_at_s: float | None
    canary_requests: float
    canary_errors: float
    final_weight: int
    steps: list[dict[str, Any]]
    verdicts: list[Verdict]
    decisions: list[Decision] = field(default_factory=list)
    impact: UserImpact = field(default_factory=UserImpact)
    """User requests the canary served (and failed), and mirrored ones (no user)."""
    history_requests: float | None = None
    """Stable requests of the history before the canary that primed the judges (None: not
    read, e.g. ``analysis.history: 0s``)."""
    history_note: str = ""
    """What the judges took from that history, or why there was none."""
    warmup: VersionCounts | None = None
    """Stable's counts drawn as this run's warm-up (``warmup_seconds`` before t=0, given to
    ``RolloutController.prime``); None when none was drawn. ``--openmetrics`` writes run 0's
    as the counters' history. Not in ``to_dict``: ``history`` there says what it primed."""

    @classmethod
    def from_state(
        cls,
        state: RolloutState,
        seed: int,
        verdicts: list[Verdict],
        decisions: list[Decision],
        warmup: VersionCounts | None = None,
    ) -> RunResult:
        """A run's result from its final state and the decisions that led there
        (``warmup``: the counts that primed it, if it was primed by a warm-up)."""
        if state.phase.terminal:
            decided_at = state.decided_at
        elif state.phase is Phase.PAUSED:
            decided_at = next((d.t for d in reversed(decisions) if d.action is Action.PAUSE), None)
        else:
            decided_at = None
        return cls(
            seed=seed,
            outcome=outcome_of(state.phase),
            decided_at_s=decided_at,
            canary_requests=state.canary_requests,
            canary_errors=state.canary_errors,
            final_weight=100 if state.phase is Phase.PROMOTED else state.weight,
            steps=[{"t": h.t, "weight": h.weight, "reason": h.reason} for h in state.history],
            verdicts=verdicts,
            decisions=decisions,
            impact=state.impact,
            history_requests=state.pre_canary_requests,
            history_note=state.pre_canary_note,
            warmup=warmup,
        )

    @property
    def decided_requests(self) -> float | None:
        """Canary requests (user and mirrored) up to the decision of ``decided_at_s``, as its
        ``impact`` counted them; None without one. A paused run goes on serving the canary
        at its weight, so ``canary_requests`` (at the scenario's end) is then larger."""
        d = next((d for d in reversed(self.decisions) if d.t == self.decided_at_s), None)
        if self.decided_at_s is None or d is None:
            return None
        return d.impact.user_requests + d.impact.shadow_requests

    def counts_text(self) -> str:
        """ "1200 canary requests, 3 errors, final weight 50%", saying how many of the
        requests came before the decision where the run went on after it (a pause)."""
        total = (
            f"{self.canary_requests:.0f} canary requests, {self.canary_errors:.0f} errors, "
            f"final weight {self.final_weight}%"
        )
        then = self.decided_requests
        if then is None or self.canary_requests - then < 0.5:
            return total
        return f"{then:.0f} canary requests by then; by the end {total}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "outcome": self.outcome,
            "decided_at_s": self.decided_at_s,
            "decided_canary_requests": self.decided_requests,
            "canary_requests": self.canary_requests,
            "canary_errors": self.canary_errors,
            "final_weight": self.final_weight,
            "impact": self.impact.to_dict(),
            "history": {"stable_requests": self.history_requests, "note": self.history_note},
            "steps": self.steps,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


DEFAULT_TRACE_QUANTILES = (0.5, 0.99)
"""Latency quantiles a trace records when the policy tests no latency metric."""


def trace_quantiles(policy: CanaryPolicy) -> tuple[float, ...]:
    """The latency quantiles the policy's latency metrics test, in order (a report plots these)."""
    qs = {q for m in policy.spec.analysis.metrics if m.kind == "latency" for q in m.quantiles}
    return tuple(sorted(qs)) or DEFAULT_TRACE_QUANTILES


@dataclass
class Trace:
    """Per-interval series of one run, for reports.

    Every series has one value per interval end in ``t`` (NaN where the interval had no data);
    ``stable_latency_ms[q]`` and ``canary_latency_ms[q]`` hold ``histogram_quantile(q, ...)``
    of each interval for every ``q`` in ``quantiles``.
    """

    quantiles: tuple[float, ...] = DEFAULT_TRACE_QUANTILES
    t: list[float] = field(default_factory=list)
    weight: list[int] = field(default_factory=list)
    stable_requests: list[float] = field(default_factory=list)
    canary_requests: list[float] = field(default_factory=list)
    stable_errors: list[float] = field(default_factory=list)
    canary_errors: list[float] = field(default_factory=list)
    stable_error_rate: list[float] = field(default_factory=list)
    canary_error_rate: list[float] = field(default_factory=list)
    stable_latency_ms: dict[float, list[float]] = field(default_factory=dict)
    canary_latency_ms: dict[float, list[float]] = field(default_factory=dict)
    e_values: dict[str, list[float]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    decisions: list[tuple[float, str, str]] = field(default_factory=list)
    no_data: list[float] = field(default_factory=list)

    def record(self, t: float, weight: int, obs: Observation, d: Decision) -> None:
        """Append one interval: its counts (or NaN for no data) and the decision taken on it."""
        from canaryd.stats.histogram import histogram_quantile

        self.t.append(t)
        self.weight.append(weight)
        nan = math.nan
        if obs.usable and obs.stable is not None and obs.canary is not None:
            s, c = obs.stable, obs.canary
            counts = (s.requests, c.requests, s.errors, c.errors)
            for q in self.quantiles:
                self.stable_latency_ms.setdefault(q, []).append(
                    histogram_quantile(q, s.bounds_ms, s.bucket_counts) if s.requests else nan
                )
                self.canary_latency_ms.setdefault(q, []).append(
                    histogram_quantile(q, c.bounds_ms, c.bucket_counts) if c.requests else nan
                )
        else:
            self.no_data.append(t)
            counts = (nan, nan, nan, nan)
            for q in self.quantiles:
                self.stable_latency_ms.setdefault(q, []).append(nan)
                self.canary_latency_ms.setdefault(q, []).append(nan)
        sr, cr, se, ce = counts
        self.stable_requests.append(sr)
        self.canary_requests.append(cr)
        self.stable_errors.append(se)
        self.canary_errors.append(ce)
        self.stable_error_rate.append(se / sr if sr else nan)
        self.canary_error_rate.append(ce / cr if cr else nan)
        for v in d.verdicts:
            self.e_values.setdefault(v.metric, [nan] * (len(self.t) - 1))
            self.e_values[v.metric].append(v.e_value if v.e_value is not None else nan)
            if v.threshold is not None:
                self.thresholds[v.metric] = v.threshold
        for series in self.e_values.values():
            while len(series) < len(self.t):
                series.append(nan)


@dataclass
class SimulationResult:
    scenario: str
    policy: str
    runs: list[RunResult]
    trace: Trace
    elapsed_s: float = 0.0

    @property
    def outcomes(self) -> dict[str, int]:
        counts = dict.fromkeys(OUTCOMES, 0)
        for r in self.runs:
            counts[r.outcome] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "runs": len(self.runs),
            "outcomes": self.outcomes,
            "results": [r.to_dict() for r in self.runs],
            "last_verdicts": [v.to_dict() for v in self.runs[0].verdicts] if self.runs else [],
        }


def outcome_of(phase: Phase) -> str:
    return {
        Phase.PROMOTED: "promoted",
        Phase.ROLLED_BACK: "rolled_back",
        Phase.PAUSED: "paused",
        Phase.FAILED: "failed",
    }.get(phase, "in_progress")


class _World:
    """Time-dependent truth of a scenario: traffic, error rates and bucket probabilities."""

    def __init__(self, sc: Scenario, base: Path) -> None:
        self.sc = sc
        self.base = base
        self.bounds = sc.bounds_ms()
        self._finite = np.asarray(self.bounds[:-1])
        self._probs: dict[tuple[int, float], FloatArray] = {}
        self._trace_t: FloatArray | None = None
        self._trace_rps: FloatArray | None = None
        if sc.traffic.csv is not None:
            self._load_traffic(base / sc.traffic.csv)

    def _load_traffic(self, path: Path) -> None:
        try:
            df = pd.read_csv(path)
        except UnicodeDecodeError as exc:
            raise ScenarioError(
                [Problem(str(path), None, None, "", f"not UTF-8 text ({exc.reason})")]
            ) from None
        except (OSError, ValueError) as exc:
            raise ScenarioError([Problem(str(path), None, None, "", str(exc))]) from None
        if list(df.columns[:2]) != ["t_seconds", "rps"]:
            raise ScenarioError(
                [
                    Problem(
                        str(path),
                        1,
                        1,
                        "",
                        f"expected columns t_seconds,rps, got {list(df.columns)}",
                    )
                ]
            )
        for col, lo, hi in (("t_seconds", -1e12, 1e12), ("rps", 0.0, MAX_RPS)):
            values = pd.to_numeric(df[col], errors="coerce")
            bad = df[~((values >= lo) & (values <= hi))]
            if len(bad):
                row = int(bad.index[0]) + 2
                raise ScenarioError(
                    [
                        Problem(
                            str(path),
                            row,
                            None,
                            col,
                            f"expected a number from {lo:g} to {hi:g}, got {bad[col].iloc[0]}",
                        )
                    ]
                )
        self._trace_t = df["t_seconds"].to_numpy(dtype=float)
        self._trace_rps = df["rps"].to_numpy(dtype=float)

    def rps(self, t: float) -> float:
        tr = self.sc.traffic
        if self._trace_t is not None and self._trace_rps is not None:
            return float(np.interp(t, self._trace_t, self._trace_rps))
        assert tr.rps is not None
        if tr.diurnal is None:
            return tr.rps
        d = tr.diurnal
        return tr.rps * (1.0 + d.amplitude * math.sin(2 * math.pi * (t + d.phase) / d.period))

    def latency_factor(self, t: float) -> float:
        """What incidents multiply both versions' latencies by at ``t`` (1 without one)."""
        return self._incident(t)[1]

    def _incident(self, t: float) -> tuple[float | None, float]:
        rate: float | None = None
        factor = 1.0
        for inc in self.sc.incidents:
            if inc.at <= t < inc.at + inc.for_:
                if inc.error_rate is not None:
                    rate = inc.error_rate if rate is None else max(rate, inc.error_rate)
                factor *= inc.latency_factor
        return rate, factor

    def error_rates(self, t: float) -> tuple[float, float]:
        sc = self.sc
        assert sc.stable.error_rate is not None
        s = sc.stable.error_rate
        c = sc.canary.error_rate if sc.canary.error_rate is not None else s
        for ch in sc.canary.changes:
            if ch.error_rate is None or t < ch.at:
                continue
            if ch.ramp and t < ch.at + ch.ramp:
                c = c + (ch.error_rate - c) * (t - ch.at) / ch.ramp
            else:
                c = ch.error_rate
        rate, _ = self._incident(t)
        if rate is not None:
            s, c = rate, rate
        return s, c

    def custom_values(self, t: float) -> tuple[dict[str, CustomValue], dict[str, CustomValue]]:
        """Both versions' custom-metric models at ``t``, by metric name (the canary inherits
        stable's and each change replaces the metrics it names from its ``at``)."""
        sc = self.sc
        stable = dict(sc.stable.custom or {})
        canary = {**stable, **(sc.canary.custom or {})}
        for ch in sc.canary.changes:
            if ch.custom is not None and t >= ch.at:
                canary.update(ch.custom)
        return stable, canary

    def _latencies(self, t: float) -> tuple[tuple[int, Latency], tuple[int, Latency]]:
        sc = self.sc
        assert sc.stable.latency is not None
        stable = (0, sc.stable.latency)
        canary = (1, sc.canary.latency) if sc.canary.latency is not None else stable
        for i, ch in enumerate(sc.canary.changes):
            if ch.latency is not None and t >= ch.at:
                canary = (2 + i, ch.latency)
        return stable, canary

    def latencies(self, t: float) -> tuple[tuple[int, Latency], tuple[int, Latency]]:
        """Both versions' latency distributions at ``t``, each with a key naming it."""
        return self._latencies(t)

    def bucket_probs(self, t: float) -> tuple[FloatArray, FloatArray]:
        _, factor = self._incident(t)
        out = []
        for key, lat in self._latencies(t):
            cache_key = (key, factor)
            if cache_key not in self._probs:
                cdf = np.clip(lat.cdf(self._finite / factor, self.base), 0.0, 1.0)
                cdf = np.maximum.accumulate(cdf)
                probs = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
                self._probs[cache_key] = np.clip(probs, 0.0, None) / np.clip(probs, 0.0, None).sum()
            out.append(self._probs[cache_key])
        return out[0], out[1]

    def outage(self, start: float, end: float) -> bool:
        return any(o.at < end and start < o.at + o.for_ for o in self.sc.metrics_outage)


ProgressFn = Callable[[int, int], None]
"""``progress(worked, skipped)`` after each interval, in run-intervals: ``worked`` runs were
stepped, and ``skipped`` intervals will never be (runs that just reached a decision skip the
rest of the scenario). Over a whole call they add up to ``runs x intervals``."""


def warmup_seconds(scenario: Scenario, policy: CanaryPolicy) -> float:
    """How long a warm-up ``simulate`` draws before t=0: the scenario's ``warmup``, by default
    the policy's ``analysis.history`` (the window the daemon reads); 0 for none."""
    return policy.spec.analysis.history if scenario.warmup is None else scenario.warmup


def _warm_up(
    world: _World,
    pods: PodDraws | None,
    ml: MlSignals | None,
    rng: np.random.Generator,
    seconds: float,
    runs: int,
    base: Path,
) -> list[VersionCounts]:
    """Stable's counts over ``seconds`` before the canary, per run: all traffic to stable at
    the scenario's t=0 conditions, drawn at once (the sum of per-tick Poisson and multinomial
    draws at a constant rate has this distribution), on its own random stream so that the
    rollout's own draws are those of a run without a warm-up."""
    bounds = world.bounds
    n = rng.poisson(world.rps(0.0) * seconds, runs)
    ps, _ = world.error_rates(0.0)
    factor = world.latency_factor(0.0)
    if pods is not None:
        by_pod = pods.split(rng, n, 0)
        errs = pods.errors(rng, by_pod, ps, 0)
        key, lat = world.latencies(0.0)[0]
        hists = pods.buckets(rng, by_pod, 0, key, lat, factor, base)
        return [
            VersionCounts(
                float(n[r]),
                float(errs[r].sum()),
                bounds,
                tuple(np.cumsum(hists[r].sum(axis=0)).tolist()),
                pods=pods.counts_of(0, by_pod[r], errs[r], hists[r]),
            )
            for r in range(runs)
        ]
    if ml is not None and ml.llm:
        bs, _ = ml.latency_probs(0.0, factor, bounds)
    else:
        bs, _ = world.bucket_probs(0.0)
    es = rng.binomial(n, ps)
    hs = np.cumsum(rng.multinomial(n, bs), axis=1)
    return [
        VersionCounts(float(n[r]), float(es[r]), bounds, tuple(hs[r].tolist())) for r in range(runs)
    ]


def simulate(
    scenario: Scenario,
    policy: CanaryPolicy,
    base: Path,
    runs: int = 1,
    seed: int = 0,
    chaos_restarts: int = 0,
    progress: ProgressFn | None = None,
    tick_sink: Callable[[float, FloatArray, FloatArray, FloatArray, FloatArray], None]
    | None = None,
    scenario_name: str = "",
    mirror_sink: Callable[[float, FloatArray], None] | None = None,
    paused_ends: bool = False,
) -> SimulationResult:
    """Run ``runs`` closed-loop rollouts of ``policy`` through ``scenario``.

    The same seed gives the same result. ``chaos_restarts`` destroys each run's controller at
    that many random interval ends and rebuilds it from its JSON-serialized state; the
    outcome must not change (the restarts use their own random stream).
    ``tick_sink(t, req, err, hist_s, hist_c)`` receives run 0's cumulative counters per tick;
    ``mirror_sink(t, [requests, errors])`` the cumulative mirrored part of run 0's canary
    counters (called only for a policy with a shadow phase, see ``simulation.shadow``).
    ``progress`` (see ``ProgressFn``) measures the work in run-intervals, the unit the cost
    grows with: every undecided run costs a controller step per interval.
    ``paused_ends``: stop stepping a run once it pauses (nothing resumes it here), for callers
    that want the time of the first decision only (``canaryd plan``'s healthy canary); by
    default a paused run is judged on, as the daemon judges it, and can still roll back.
    """
    import time as _time

    started = _time.perf_counter()
    if runs < 1:
        raise ValueError("runs must be at least 1")
    interval = policy.spec.analysis.interval
    # As in the cluster: kserve without an errorsMetric counts no errors (zeros, not evidence).
    measures_errors = policy.spec.analysis.source.measures_errors
    tick = scenario.tick
    per = interval / tick
    if abs(per - round(per)) > 1e-9 or round(per) < 1:
        raise ScenarioError(
            [
                scenario.problem(
                    "tick",
                    f"the analysis interval ({interval:g}s) must be a whole "
                    f"number of ticks ({tick:g}s)",
                )
            ]
        )
    ticks_per_interval = round(per)
    n_ticks = int(scenario.duration // tick)
    world = _World(scenario, base)
    ml = MlSignals.build(scenario, policy, base, runs, seed, tick)
    bounds = world.bounds
    k = len(bounds)
    pods = None
    if scenario.pods is not None:
        if policy.spec.steps.shadow is not None:
            raise ScenarioError(
                [
                    scenario.problem(
                        "pods",
                        f"pods are not modelled with a shadow phase (mirrored copies), and "
                        f"policy {policy.name!r} has one (spec.steps.shadow): expected a "
                        "scenario without pods, or a policy without shadow",
                    )
                ]
            )
        pods = PodDraws(scenario.pods, runs, seed, bounds)
        n_pods = pods.counts
        pod_req = [np.zeros((runs, kp)) for kp in n_pods]
        pod_err = [np.zeros((runs, kp)) for kp in n_pods]
        pod_hist = [np.zeros((runs, kp, k)) for kp in n_pods]
    rng = np.random.default_rng(seed)
    chaos_rng = np.random.default_rng([seed, 1])
    # Custom metrics the scenario models, each drawn on its own stream (the others' draws,
    # and so every earlier result, stay as they were).
    custom_names = [
        m.name
        for m in policy.spec.analysis.metrics
        if m.kind == "custom" and m.name in (scenario.stable.custom or {})
    ]
    custom_rng = np.random.default_rng([seed, 3])
    n_intervals = n_ticks // ticks_per_interval
    chaos_at: list[set[int]] = [
        set(
            chaos_rng.choice(
                max(n_intervals, 1), size=min(chaos_restarts, n_intervals), replace=False
            ).tolist()
        )
        if chaos_restarts
        else set()
        for _ in range(runs)
    ]
    epoch = scenario.start
    controllers = [RolloutController(policy, epoch=epoch) for _ in range(runs)]
    states = [c.new_state("stable", "canary") for c in controllers]
    weights = np.zeros(runs)
    last_decision: list[list[Decision]] = [[] for _ in range(runs)]
    last_verdicts: list[list[Verdict]] = [[] for _ in range(runs)]
    trace = Trace(quantiles=trace_quantiles(policy))

    def done(st: RolloutState) -> bool:
        return st.phase.terminal or (paused_ends and st.phase is Phase.PAUSED)

    def apply(r: int, d: Decision, st: RolloutState) -> None:
        states[r] = st
        if d.weight is not None:
            weights[r] = d.weight
        if d.verdicts:
            last_verdicts[r] = list(d.verdicts)
        if d.action is not Action.HOLD or d.event:
            last_decision[r].append(d)
        if r == 0 and d.action is not Action.HOLD:
            trace.decisions.append((d.t, d.action.value, d.reason))

    for r in range(runs):
        d, st = controllers[r].step(states[r], 0.0)
        apply(r, d, st)
    warm_s = warmup_seconds(scenario, policy)
    history: list[VersionCounts | None] = [None] * runs
    if warm_s > 0:
        history = [*_warm_up(world, pods, ml, np.random.default_rng([seed, 4]), warm_s, runs, base)]
        for r in range(runs):
            states[r] = controllers[r].prime(states[r], history[r])

    req = np.zeros((runs, 2))
    err = np.zeros((runs, 2))
    hist = np.zeros((runs, 2, k))
    mirrored = np.zeros((runs, 2))  # the canary's mirrored requests and errors this interval
    cum_mirrored = np.zeros(2)
    cum_req = np.zeros(2)
    cum_err = np.zeros(2)
    cum_hist = np.zeros((2, k))
    interval_index = 0
    for i in range(n_ticks):
        t0 = i * tick
        t1 = t0 + tick
        lam = world.rps(t0) * tick
        n = rng.poisson(lam, runs)
        share = np.where(
            [s.phase is Phase.PROMOTED for s in states],
            1.0,
            np.where([s.phase is Phase.ROLLED_BACK for s in states], 0.0, weights / 100.0),
        )
        nc = rng.binomial(n, share)
        ns = n - nc
        ps, pc = world.error_rates(t0)
        if pods is not None:
            by_pod = (pods.split(rng, ns, 0), pods.split(rng, nc, 1))
            errs = (pods.errors(rng, by_pod[0], ps, 0), pods.errors(rng, by_pod[1], pc, 1))
            es, ec = errs[0].sum(axis=1), errs[1].sum(axis=1)
        else:
            es = rng.binomial(ns, ps)
            ec = rng.binomial(nc, pc)
        fractions = mirror_fractions(policy, states)
        if fractions is not None:  # a shadow phase: the canary also gets mirrored copies
            nm, em = draw_mirrored(rng, n, fractions, pc)
            mirrored[:, 0] += nm
            mirrored[:, 1] += em
            nc, ec = nc + nm, ec + em
            if mirror_sink is not None:
                cum_mirrored += (nm[0], em[0])
                mirror_sink(t1, cum_mirrored.copy())
        if ml is not None and ml.llm:
            # An LLM's end-to-end latency comes from its answers (see simulation/signals.py).
            bs, bc = ml.latency_probs(t0, world.latency_factor(t0), bounds)
        else:
            bs, bc = world.bucket_probs(t0)
        if ml is not None:
            ml.tick(t0, world.latency_factor(t0), (ns, nc), (es, ec))
        if pods is not None:
            factor = world.latency_factor(t0)
            hists = tuple(
                pods.buckets(rng, by_pod[v], v, key, lat, factor, base)
                for v, (key, lat) in enumerate(world.latencies(t0))
            )
            for v in (0, 1):
                pod_req[v] += by_pod[v]
                pod_err[v] += errs[v]
                pod_hist[v] += hists[v]
            hs, hc = hists[0].sum(axis=1), hists[1].sum(axis=1)
        else:
            hs = rng.multinomial(ns, bs)
            hc = rng.multinomial(nc, bc)
        req[:, 0] += ns
        req[:, 1] += nc
        err[:, 0] += es
        err[:, 1] += ec
        hist[:, 0] += hs
        hist[:, 1] += hc
        if tick_sink is not None:
            cum_req += (ns[0], nc[0])
            cum_err += (es[0], ec[0])
            cum_hist[0] += hs[0]
            cum_hist[1] += hc[0]
            tick_sink(
                t1, cum_req.copy(), cum_err.copy(), np.cumsum(cum_hist[0]), np.cumsum(cum_hist[1])
            )
        if (i + 1) % ticks_per_interval:
            continue
        start = t1 - interval
        outage = world.outage(start, t1)
        cs = np.cumsum(hist, axis=2)
        custom: list[list[dict[str, float]]] = [[{}, {}] for _ in range(runs)]
        if custom_names:
            models = world.custom_values(t1)
            for v in (0, 1):
                for name in custom_names:
                    cv = models[v][name]
                    draws = custom_rng.normal(cv.mean, cv.sd, runs) if cv.sd else [cv.mean] * runs
                    for r in range(runs):
                        custom[r][v][name] = float(draws[r])
        worked = skipped = 0
        for r in range(runs):
            st = states[r]
            if done(st):
                continue
            worked += 1
            if interval_index in chaos_at[r]:
                restored = RolloutState.from_dict(json.loads(json.dumps(st.to_dict())))
                controllers[r] = RolloutController(policy, epoch=epoch)
                st = restored
            if outage:
                obs = Observation(start, t1, no_data_reason="Prometheus unreachable (outage)")
            else:
                shadow = st.in_shadow  # the whole interval: phases change at interval ends
                per_pod: list[dict[str, Any]] = [{}, {}]
                if pods is not None:
                    per_pod = [
                        {"pods": pods.counts_of(v, pod_req[v][r], pod_err[v][r], pod_hist[v][r])}
                        for v in (0, 1)
                    ]
                obs = Observation(
                    start,
                    t1,
                    VersionCounts(
                        float(req[r, 0]),
                        float(err[r, 0]),
                        bounds,
                        tuple(cs[r, 0].tolist()),
                        values=custom[r][0],
                        **(ml.fields(r, 0) if ml is not None else {}),
                        **per_pod[0],
                    ),
                    VersionCounts(
                        float(req[r, 1]),
                        float(err[r, 1]),
                        bounds,
                        tuple(cs[r, 1].tolist()),
                        mirrored_requests=float(mirrored[r, 0]) if shadow else None,
                        mirrored_errors=float(mirrored[r, 1]) if shadow else None,
                        values=custom[r][1],
                        **(ml.fields(r, 1) if ml is not None else {}),
                        **per_pod[1],
                    ),
                    errors_measured=measures_errors,
                )
            d, st = controllers[r].step(st, t1, obs)
            apply(r, d, st)
            if done(st):
                skipped += n_intervals - interval_index - 1
            if r == 0:
                trace.record(t1, int(weights[0]), obs, d)
        req[:] = 0
        err[:] = 0
        hist[:] = 0
        mirrored[:] = 0
        if pods is not None:
            for v in (0, 1):
                pod_req[v][:] = 0
                pod_err[v][:] = 0
                pod_hist[v][:] = 0
        if ml is not None:
            ml.reset()
        interval_index += 1
        if progress is not None:
            progress(worked, skipped)
        if all(done(s) for s in states):
            break
    results = [
        RunResult.from_state(states[r], seed, last_verdicts[r], last_decision[r], history[r])
        for r in range(runs)
    ]
    return SimulationResult(
        scenario=scenario_name or (scenario.name or "scenario"),
        policy=policy.name,
        runs=results,
        trace=trace,
        elapsed_s=_time.perf_counter() - started,
    )
