"""Replay traces built from real traffic: NAB's NYC taxi demand and EC2 request latency.

The Numenta Anomaly Benchmark (NAB) series are aggregates, one number per time bucket, not
per-request data, so a trace for ``canaryd replay`` (``canaryd/metrics/replay.py``) needs a
per-request model. This module's, per analysis interval ``[t, t + interval_s)`` of the trace:

- **Clock.** The trace's ``t_seconds`` are epoch seconds on the EC2 series' clock (NAB's
  timestamps are read as UTC). ``Placement.start_s`` is the first interval's start there, and
  ``Placement.taxi_start_s`` the taxi time that maps to it (the taxi series covers 2014-07 ..
  2015-01, the EC2 one 14 days of 2014-03: the two are independent shapes, placed apart).
- **Requests.** Poisson with rate ``mean_rps * taxi(t') / mean(taxi)`` per second, ``taxi(t')``
  the taxi count linearly interpolated at the interval's midpoint on the taxi clock: the series'
  mean maps to ``mean_rps`` and its daily and weekly cycle, holidays and storms come with it.
- **Split.** Each request is the canary's with probability ``w``, the share the nominal
  ``schedule`` gives at the interval's start (the trace is open loop: it cannot follow the
  controller). With ``pods`` (``simulation.scenario.Pods``) each version's requests are then
  spread evenly (multinomially) over its pods; all pods serve the same version, and each draws
  its own error-rate multiplier and latency scale exactly as the simulator does
  (``simulation.pods.PodDraws``: log-uniform in x1/spread .. x spread, lognormal with mean 1 and
  CV ``latencyCv``; documented ranges CV 0.05-0.3, spread 1-2).
- **Latency.** Per request lognormal with sigma ``sigma`` (fixed, 0.5 by default) and median
  ``m(t) * exp(-sigma^2 / 2)``, so that its *mean* is ``m(t)``, the EC2 mean latency linearly
  interpolated at the interval's midpoint (repeated EC2 timestamps count as their mean; gaps are
  interpolated across). A pod multiplies the median by its scale. Requests are counted into the
  cumulative ``le_<ms>`` buckets of ``bounds`` (knative's by default).
- **Errors.** Binomial per request, independent of latency, at ``error_rate`` times the pod's
  multiplier, times ``incident_error_ratio`` while the interval's midpoint lies in one of the
  EC2 series' labelled anomaly windows (both versions alike: a shared incident), capped at 1.
- **History.** With ``history_s`` the trace starts that long before the canary, with stable
  rows only (all traffic to stable, the same model): ``canaryd replay`` gives the last
  ``spec.analysis.history`` of them to the judges, as the daemon reads Prometheus before a
  rollout. ``Placement.start_s`` stays the canary's first interval.
- **Regressions** (``Regression``, the canary only, from the first interval): errors times
  ``error_ratio``; the median times ``median_factor``; a tail-only shift with the canary's
  sigma ``sigma`` (the median kept).

Draws are seeded: ``build(nab, model, placement, seed)`` is a pure function of its arguments.
Traffic draws come from ``[seed, 1]``, pod effects from ``[seed, 2]`` (``PodDraws``' own stream).

Measured with this model through ``policies/llm-kserve.yaml`` (``analysis/realtraces.py``,
``analysis/results/realtraces.md``): A/A with a random split 0 of 1,500 rolled back, starting
inside the labelled windows 0 of 800; with a pod split and no history 0.25-5.0 % per cell
(three of four point estimates above the policy's alpha 0.01), with 2 h of stable's history
see the study's table; errors x2 / x3, median +25 %
and a tail-only shift rolled back in 81 / 99 / 98 / 99 % of rollouts.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from canaryd.errors import Problem, TraceError
from canaryd.metrics.replay import BEFORE_CANARY, write_trace
from canaryd.observation import Observation, PodCounts, VersionCounts
from canaryd.policy.model import CanaryPolicy
from canaryd.simulation.pods import PodDraws
from canaryd.simulation.scenario import KNATIVE_BUCKETS_MS, Pods

FloatArray = npt.NDArray[np.float64]

TAXI = "nyc_taxi.csv"
EC2 = "ec2_request_latency_system_failure.csv"
WINDOWS = "anomaly_windows.json"
"""File names in a NAB directory (as in NAB's ``data/realKnownCause`` and ``labels``)."""

KNATIVE_BOUNDS: tuple[float, ...] = (*KNATIVE_BUCKETS_MS, math.inf)


@dataclass(frozen=True)
class Series:
    """One NAB series: strictly increasing epoch seconds, a value each, its labelled windows."""

    name: str
    times_s: FloatArray
    values: FloatArray
    windows: tuple[tuple[float, float], ...]

    def at(self, t_s: npt.ArrayLike) -> FloatArray:
        """Values linearly interpolated at ``t_s`` (clamped to the first and last value)."""
        t = np.asarray(t_s, dtype=np.float64)
        return np.asarray(np.interp(t, self.times_s, self.values), dtype=np.float64)

    def in_window(self, t_s: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Whether each time lies in a labelled window (both ends included)."""
        t = np.asarray(t_s, dtype=np.float64)
        out = np.zeros(t.shape, dtype=bool)
        for a, b in self.windows:
            out |= (t >= a) & (t <= b)
        return out

    @property
    def span_s(self) -> tuple[float, float]:
        return float(self.times_s[0]), float(self.times_s[-1])


@dataclass(frozen=True)
class Nab:
    """The two NAB series a trace is built from."""

    taxi: Series
    ec2: Series


def _epoch(text: str) -> float:
    """NAB's ``YYYY-MM-DD HH:MM:SS[.ffffff]``, read as UTC."""
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC).timestamp()


def _read_series(path: Path, windows: Sequence[tuple[float, float]]) -> Series:
    """A ``timestamp,value`` CSV; repeated timestamps become their mean. TraceError if bad."""
    problems: list[Problem] = []
    times: list[float] = []
    values: list[float] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise TraceError([Problem(str(path), None, None, "", exc.strerror or str(exc))]) from None
    if not rows or [c.strip() for c in rows[0]] != ["timestamp", "value"]:
        raise TraceError([Problem(str(path), 1, None, "header", "expected 'timestamp,value'")])
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            problems.append(Problem(str(path), line, None, "", "expected 2 columns"))
            continue
        try:
            t = _epoch(row[0])
        except ValueError:
            problems.append(
                Problem(str(path), line, 1, "timestamp", f"expected a time, got {row[0]!r}")
            )
            continue
        try:
            v = float(row[1])
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or v < 0:
            problems.append(
                Problem(str(path), line, 2, "value", f"expected a number >= 0, got {row[1]!r}")
            )
            continue
        if times and t < times[-1]:
            problems.append(
                Problem(str(path), line, 1, "timestamp", "timestamps must not decrease")
            )
            continue
        times.append(t)
        values.append(v)
    if not problems and len(times) < 2:
        problems.append(Problem(str(path), len(rows), None, "", "expected at least 2 rows"))
    if problems:
        raise TraceError(problems)
    t_arr = np.asarray(times)
    uniq, inverse = np.unique(t_arr, return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(values))
    means = sums / np.bincount(inverse)
    return Series(path.name, uniq.astype(np.float64), means.astype(np.float64), tuple(windows))


def load_nab(directory: str | Path) -> Nab:
    """Read ``nyc_taxi.csv``, the EC2 latency CSV and ``anomaly_windows.json`` from a directory.

    The windows file maps ``realKnownCause/<file>`` to ``[[start, end], ...]`` (NAB's
    ``combined_windows.json``). Every problem is a ``TraceError`` naming the file and line.
    """
    base = Path(directory)
    wpath = base / WINDOWS
    try:
        raw = json.loads(wpath.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TraceError([Problem(str(wpath), None, None, "", exc.strerror or str(exc))]) from None
    except json.JSONDecodeError as exc:
        raise TraceError([Problem(str(wpath), exc.lineno, exc.colno, "", exc.msg)]) from None

    def windows(name: str) -> list[tuple[float, float]]:
        key = f"realKnownCause/{name}"
        spans = raw.get(key) if isinstance(raw, dict) else None
        if not isinstance(spans, list):
            raise TraceError([Problem(str(wpath), None, None, key, "expected a list of windows")])
        out = []
        for i, span in enumerate(spans):
            try:
                a, b = (_epoch(s) for s in span)
            except (TypeError, ValueError, AttributeError):
                raise TraceError(
                    [Problem(str(wpath), None, None, f"{key}[{i}]", "expected [start, end] times")]
                ) from None
            if b < a:
                raise TraceError(
                    [
                        Problem(
                            str(wpath),
                            None,
                            None,
                            f"{key}[{i}]",
                            "the window ends before it starts",
                        )
                    ]
                )
            out.append((a, b))
        return out

    return Nab(
        taxi=_read_series(base / TAXI, windows(TAXI)), ec2=_read_series(base / EC2, windows(EC2))
    )


@dataclass(frozen=True)
class Regression:
    """The canary's regression, from its first interval (the defaults: none, an A/A trace)."""

    error_ratio: float = 1.0
    median_factor: float = 1.0
    sigma: float | None = None
    """The canary's lognormal sigma (a tail-only shift keeps the median); None: the model's."""

    def __post_init__(self) -> None:
        if not (self.error_ratio > 0 and self.median_factor > 0):
            raise ValueError("error_ratio and median_factor must be > 0")
        if self.sigma is not None and not self.sigma > 0:
            raise ValueError("sigma must be > 0")


@dataclass(frozen=True)
class TraceModel:
    """The per-request model's parameters (see the module docstring)."""

    duration_s: float = 2 * 3600.0
    interval_s: float = 60.0
    mean_rps: float = 20.0
    schedule: tuple[tuple[float, float], ...] = ((0.0, 0.10),)
    """(seconds since the trace's start, canary share in [0, 1]), starting at 0, increasing."""
    error_rate: float = 0.01
    incident_error_ratio: float = 1.0
    sigma: float = 0.5
    bounds: tuple[float, ...] = KNATIVE_BOUNDS
    pods: Pods | None = None
    regression: Regression = field(default_factory=Regression)
    history_s: float = 0.0
    """Stable-only traffic before the canary starts (the trace's leading stable rows, which
    ``canaryd replay`` reads as stable's history); a whole number of intervals."""

    def __post_init__(self) -> None:
        if not (self.history_s >= 0 and float(self.history_s / self.interval_s).is_integer()):
            raise ValueError("history_s must be a non-negative whole number of intervals")
        if not self.schedule or self.schedule[0][0] != 0.0:
            raise ValueError("schedule must start at 0 s")
        if any(b[0] <= a[0] for a, b in zip(self.schedule, self.schedule[1:], strict=False)):
            raise ValueError("schedule times must increase")
        if any(not 0.0 <= w <= 1.0 for _, w in self.schedule):
            raise ValueError("schedule shares must lie in [0, 1]")
        if not (self.bounds and math.isinf(self.bounds[-1])):
            raise ValueError("bounds must end with +Inf")
        if not (self.duration_s >= self.interval_s > 0 and self.mean_rps > 0 and self.sigma > 0):
            raise ValueError("duration_s >= interval_s > 0, mean_rps > 0 and sigma > 0 needed")
        if not (0.0 <= self.error_rate <= 1.0 and self.incident_error_ratio > 0):
            raise ValueError("error_rate in [0, 1] and incident_error_ratio > 0 needed")

    def share_at(self, since_start_s: npt.ArrayLike) -> FloatArray:
        """The schedule's canary share at each time since the trace's start."""
        at = np.asarray([a for a, _ in self.schedule])
        shares = np.asarray([w for _, w in self.schedule])
        idx = np.searchsorted(at, since_start_s, side="right") - 1
        return np.asarray(shares[np.clip(idx, 0, None)], dtype=np.float64)


def nominal_schedule(policy: CanaryPolicy) -> tuple[tuple[float, float], ...]:
    """The policy's steps as a schedule: each step for its ``minDwell``, the last one on.

    The controller may hold a step longer (``minCanaryRequests`` not yet met); the trace keeps
    its nominal shares then. The judges compare rates interval by interval, so the share only
    moves how many canary requests there are, not what they say.
    """
    out: list[tuple[float, float]] = []
    t = 0.0
    for step in policy.spec.steps.resolved():
        out.append((t, step.weight / 100.0))
        t += float(step.min_dwell or 0.0)
    return tuple(out)


@dataclass(frozen=True)
class Placement:
    """Where a trace lies on the two series' clocks (epoch seconds)."""

    start_s: float
    taxi_start_s: float


def placements(
    nab: Nab,
    count: int,
    seed: int,
    duration_s: float,
    *,
    incidents: bool = False,
    history_s: float = 0.0,
) -> list[Placement]:
    """``count`` seeded placements, uniform over each series' span that holds ``duration_s``
    (and ``history_s`` before it).

    With ``incidents`` both starts lie inside a labelled window of their series (uniform over
    the windows' lengths), so that the trace's first part is an incident on both versions.
    """
    rng = np.random.default_rng([seed, 3])

    def draw(series: Series) -> float:
        lo, hi = series.span_s
        lo += history_s
        if incidents:
            spans = [(max(a, lo), min(b, hi - duration_s)) for a, b in series.windows]
            spans = [(a, b) for a, b in spans if b > a]
            if not spans:
                raise ValueError(f"{series.name}: no labelled window holds {duration_s:g} s")
            lengths = np.asarray([b - a for a, b in spans])
            k = int(rng.choice(len(spans), p=lengths / lengths.sum()))
            a, b = spans[k]
            return float(rng.uniform(a, b))
        if hi - duration_s <= lo:
            raise ValueError(f"{series.name} is shorter than {duration_s:g} s")
        return float(rng.uniform(lo, hi - duration_s))

    out = []
    for _ in range(count):
        ec2 = draw(nab.ec2)
        out.append(Placement(start_s=ec2, taxi_start_s=draw(nab.taxi)))
    return out


def _bucket_probs(median_ms: FloatArray, sigma: float, bounds: tuple[float, ...]) -> FloatArray:
    """Per-bucket probabilities ``(..., len(bounds))`` of a lognormal with these medians."""
    finite = np.asarray(bounds[:-1], dtype=np.float64)
    cdf = ndtr(np.log(finite / median_ms[..., None]) / sigma)
    cdf = np.concatenate([cdf, np.ones((*cdf.shape[:-1], 1))], axis=-1)
    zeros = np.zeros((*cdf.shape[:-1], 1))
    probs = np.clip(np.diff(np.concatenate([zeros, cdf], axis=-1), axis=-1), 0.0, None)
    return np.asarray(probs / probs.sum(axis=-1, keepdims=True), dtype=np.float64)


def _starts(model: TraceModel) -> FloatArray:
    """Each interval's start, seconds since the canary's start (the history's are < 0)."""
    n_int = int(model.duration_s // model.interval_s)
    n_hist = round(model.history_s / model.interval_s)
    return np.asarray(np.arange(-n_hist, n_int) * model.interval_s, dtype=np.float64)


def request_rate(nab: Nab, model: TraceModel, placement: Placement) -> FloatArray:
    """Each interval's Poisson rate of requests per second (both versions together)."""
    mid = _starts(model) + model.interval_s / 2
    taxi = nab.taxi.at(placement.taxi_start_s + mid)
    return np.asarray(model.mean_rps * taxi / float(nab.taxi.values.mean()), dtype=np.float64)


def build(nab: Nab, model: TraceModel, placement: Placement, seed: int) -> list[Observation]:
    """The trace's observations, one per interval (see the module docstring for the model)."""
    rng = np.random.default_rng([seed, 1])
    since = _starts(model)
    n_int = len(since)
    mid = np.asarray(since + model.interval_s / 2, dtype=np.float64)
    rate = request_rate(nab, model, placement)
    mean_ms = nab.ec2.at(placement.start_s + mid)
    incident = nab.ec2.in_window(placement.start_s + mid)
    p_err = model.error_rate * np.where(incident, model.incident_error_ratio, 1.0)
    n = rng.poisson(rate * model.interval_s)
    n_c = rng.binomial(n, np.where(since < 0, 0.0, model.share_at(np.maximum(since, 0.0))))
    n_by = (n - n_c, n_c)
    reg = model.regression
    sigmas = (model.sigma, model.sigma if reg.sigma is None else reg.sigma)
    median = mean_ms * math.exp(-(model.sigma**2) / 2)  # the lognormal's mean is mean_ms
    medians = (median, median * reg.median_factor)
    err_ratio = (1.0, reg.error_ratio)
    spec = model.pods
    draws = None if spec is None else PodDraws(spec, 1, seed, model.bounds)
    per_version: list[list[VersionCounts]] = []
    for v in (0, 1):
        k = 1 if draws is None else draws.counts[v]
        mult = np.ones(k) if draws is None else draws.error_multiplier[v][0]
        scale = np.ones(k) if draws is None else draws.latency_scale[v][0]
        if draws is None:
            n_pods = n_by[v][:, None]
        else:
            n_pods = rng.multinomial(n_by[v], np.full(k, 1.0 / k))
        p = np.clip(p_err[:, None] * err_ratio[v] * mult[None, :], 0.0, 1.0)
        x_pods = rng.binomial(n_pods, p)
        probs = _bucket_probs(medians[v][:, None] * scale[None, :], sigmas[v], model.bounds)
        h_pods = rng.multinomial(n_pods, probs)
        cum = np.cumsum(h_pods, axis=-1)
        rows = []
        for i in range(n_int):
            pods: tuple[PodCounts, ...] = ()
            if draws is not None:
                pods = tuple(
                    PodCounts(
                        draws.names[v][j],
                        float(n_pods[i, j]),
                        float(x_pods[i, j]),
                        tuple(float(c) for c in cum[i, j]),
                    )
                    for j in range(k)
                )
            rows.append(
                VersionCounts(
                    float(n_pods[i].sum()),
                    float(x_pods[i].sum()),
                    model.bounds,
                    tuple(float(c) for c in cum[i].sum(axis=0)),
                    pods=pods,
                )
            )
        per_version.append(rows)
    t0 = placement.start_s
    return [
        Observation(
            t0 + since[i], t0 + since[i] + model.interval_s, per_version[0][i], per_version[1][i]
        )
        if since[i] >= 0
        else Observation(
            t0 + since[i],
            t0 + since[i] + model.interval_s,
            per_version[0][i],
            no_data_reason=BEFORE_CANARY,
        )
        for i in range(n_int)
    ]


def write(path: str | Path, nab: Nab, model: TraceModel, placement: Placement, seed: int) -> Path:
    """Build the trace and write it as a ``canaryd replay`` CSV; return the path."""
    write_trace(path, build(nab, model, placement, seed))
    return Path(path)
