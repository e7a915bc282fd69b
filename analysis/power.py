"""Power: detection rate and delay of the sequential judges, against the two-sample floor.

Run: ``.venv/bin/python analysis/power.py [--quick]``. Writes ``analysis/results/power.md``
and ``.png``. Also tables of the rollback prior's scale (``Grid.make(alt_scale)``) and of
mixtures of scales; of the analysis interval, beside the test that knows the effect (what the
counts themselves allow); and of the latency judge before and after the body's score test.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as c

from canaryd.stats.bounds import interval_information, two_sample_floor
from canaryd.stats.ratio import ALT_SCALE, LATENCY_ALT_SCALE
from canaryd.stats.sequential import BODY_WEIGHT

ALPHA = 0.01
RPS = 20.0
P_STABLE = 0.005
HORIZON = 120
SEED = 7_2026
STABLE_LAT = c.lognormal(80, 0.5, "knative")
CREEP_END = 3.0  # the canary error ratio grows linearly from 1 to this over the horizon
ALT_SCALES = (0.25, 0.35, 0.5, 0.7, 1.0, 2.0)
FLOOR_MULTIPLE = 4.0  # small effects run until 4x their floor is expected (at least HORIZON)


@dataclass
class Effect:
    name: str
    kind: str  # errors | latency | tail | creep
    tolerance: float
    ratio: float = 1.0  # errors: canary/stable error ratio
    canary_lat: c.LatencyDist | None = None
    floor_boundary: str = ""  # latency: "p50" or "p99"
    extra: dict[str, float] = field(default_factory=dict)


def effects() -> list[Effect]:
    out = [Effect(f"errors x{r:g}", "errors", 0.0, r) for r in (1.5, 2.0, 3.0)]
    out += [Effect(f"errors x{r:g} (tol 0.2)", "errors", 0.2, r) for r in (1.4, 2.0, 3.0)]
    out += [
        Effect(
            f"latency median +{d}%",
            "latency",
            0.0,
            canary_lat=c.lognormal(80 * (1 + d / 100), 0.5, "knative"),
            floor_boundary="p50",
        )
        for d in (5, 10, 25)
    ]
    out.append(
        Effect(
            "tail only: sigma 0.5 -> 0.8",
            "tail",
            0.0,
            canary_lat=c.lognormal(80, 0.8, "knative"),
            floor_boundary="p99",
        )
    )
    out.append(Effect(f"slow creep x1 -> x{CREEP_END:g} over {HORIZON} min", "creep", 0.0))
    return out


def creep_ratio(t_n: int) -> np.ndarray:
    return 1.0 + (CREEP_END - 1.0) * (np.arange(t_n) + 1) / t_n


def creep_floor(schedule: list[tuple[float, float]], ratios: np.ndarray, alpha: float) -> float:
    """Two-sample floor with a ratio that changes per interval (interpolated in the interval)."""
    target = math.log(1 / alpha)
    info = canary = 0.0
    for (n_s, n_c), r in zip(schedule, ratios, strict=True):
        gain = interval_information(n_s, n_c, P_STABLE, float(r), 1.0)
        if info + gain >= target:
            return canary + n_c * (target - info) / gain
        info += gain
        canary += n_c
    return math.inf


def floor_of(e: Effect, w: np.ndarray, looks: int = 1) -> float:
    """The two-sample floor of ``e`` along the expected schedule of canary shares ``w`` (one per
    look, ``looks`` per minute)."""
    sched = c.expected_schedule(RPS / looks, w)
    if e.kind == "errors":
        return two_sample_floor(sched, P_STABLE, e.ratio, ALPHA, 1 + e.tolerance)
    if e.kind == "creep":
        return creep_floor(sched, creep_ratio(len(w)), ALPHA)
    k, ps, rho1 = floor_boundary(e)
    e.extra = {"boundary_ms": STABLE_LAT.bounds[k], "p_stable": ps, "rho1": rho1}
    return two_sample_floor(sched, ps, rho1, ALPHA, 1.0)


def floor_boundary(e: Effect) -> tuple[int, float, float]:
    """A latency effect's floor boundary: its index, stable's share slower than it and the
    canary's ratio of shares there (p50 for median shifts, p99 for the tail change)."""
    assert e.canary_lat is not None
    ks = STABLE_LAT.boundaries()
    k = ks[0] if e.floor_boundary == "p50" else ks[1]
    ps = float(1 - STABLE_LAT.cdf()[k])
    return k, ps, float(1 - e.canary_lat.cdf()[k]) / ps


def traffic(e: Effect, rollouts: int, w: np.ndarray, seed: int, looks: int = 1) -> c.Traffic:
    rng = np.random.default_rng(seed)
    tr = c.gen_requests(rng, rollouts, RPS / looks, w)
    if e.kind == "errors":
        return c.gen_errors(rng, tr, P_STABLE, P_STABLE * e.ratio)
    if e.kind == "creep":
        return c.gen_errors(rng, tr, P_STABLE, P_STABLE * creep_ratio(len(w)))
    assert e.canary_lat is not None
    return c.gen_latency(rng, tr, STABLE_LAT, e.canary_lat)


def crossing(
    e: Effect,
    tr: c.Traffic,
    alt_scale: float | tuple[float, ...] | None = None,
    before: bool = False,
    oracle: bool = False,
) -> np.ndarray:
    """The judge's first failing interval per rollout; ``oracle``: that of the test that knows
    the effect (``studylib.oracle_crossing`` on the floor's own counts: the errors, or the
    exceedances at the floor's boundary)."""
    if oracle:
        if e.kind == "errors":
            assert tr.x_s is not None and tr.x_c is not None
            return c.oracle_crossing(
                tr.n_s, tr.x_s, tr.n_c, tr.x_c, 1 + e.tolerance, e.ratio, ALPHA
            )
        if e.kind not in ("latency", "tail"):
            raise ValueError(f"no oracle for a {e.kind} effect")
        assert tr.h_s is not None and tr.h_c is not None
        k, _, rho1 = floor_boundary(e)
        xs, xc = c.exceedances(tr.h_s, k), c.exceedances(tr.h_c, k)
        return c.oracle_crossing(tr.n_s, xs, tr.n_c, xc, 1.0, rho1, ALPHA)
    if e.kind in ("errors", "creep"):
        return c.errors_crossing(tr, 1 + e.tolerance, ALPHA, alt_scale)
    ks = STABLE_LAT.boundaries()
    if before:
        scale = BEFORE_ALT_SCALE if alt_scale is None else alt_scale
        return c.latency_crossing(tr, ks, 1 + e.tolerance, ALPHA, scale, body_rows=None)
    centre = 1.0 - float(STABLE_LAT.cdf()[ks[0]])  # the judge centres on stable's share slower
    return c.latency_crossing(tr, ks, 1 + e.tolerance, ALPHA, alt_scale, centre=centre)


@dataclass
class Row:
    effect: Effect
    rollouts: int
    detected: int
    median_requests: float
    q25: float
    q75: float
    median_minutes: float
    floor: float
    alt_scale: float | tuple[float, ...]
    floor_end: float  # expected canary requests at the end of the interval holding the floor
    horizon: int
    detected_120: int
    looks: int = 1
    oracle: bool = False
    """The delay of the test that knows the effect (``crossing``), not the judge's."""

    @property
    def detection_120(self) -> float:
        return self.detected_120 / self.rollouts

    @property
    def ratio_end(self) -> float:
        return self.median_requests / self.floor_end

    @property
    def detection(self) -> float:
        return self.detected / self.rollouts

    @property
    def ratio(self) -> float:
        return self.median_requests / self.floor


def horizon_for(e: Effect) -> int:
    """HORIZON, or longer when the floor lies beyond it: until FLOOR_MULTIPLE x floor."""
    if e.kind == "creep":
        return HORIZON
    w = c.weights("steps", 10 * HORIZON)
    cum = np.cumsum([n_c for _, n_c in c.expected_schedule(RPS, w)])
    f = floor_of(e, c.weights("steps", HORIZON))
    need = int(np.searchsorted(cum, FLOOR_MULTIPLE * f)) + 1
    return max(HORIZON, min(need, 10 * HORIZON))


def measure(
    e: Effect,
    rollouts: int,
    seed: int,
    alt_scale: float | tuple[float, ...] | None = None,
    horizon: int | None = None,
    looks: int = 1,
    before: bool = False,
    oracle: bool = False,
) -> Row:
    """Detection and delay of ``e`` over ``rollouts`` seeded rollouts.

    ``horizon`` in minutes (None: ``horizon_for``). ``looks``: judged this many times a minute
    (an ``analysis.interval`` of 60/looks s); the traffic and the canary's steps (every minute)
    are the same whatever ``looks``, so only the decision granularity changes. ``oracle``: the
    test that knows the effect instead of the judge, on the same seeded traffic.
    """
    horizon = horizon_for(e) if horizon is None else horizon
    w = c.weights("steps", horizon * looks, step_every=looks)
    tr = traffic(e, rollouts, w, seed, looks)
    when = crossing(e, tr, alt_scale, before, oracle)
    req = c.canary_at(tr, when)
    det = req[~np.isnan(req)]
    mins = (when[when >= 0] + 1) / looks
    q = np.percentile(det, [25, 50, 75]) if det.size else [math.nan] * 3
    floor = floor_of(e, w, looks)
    cum = np.cumsum([n_c for _, n_c in c.expected_schedule(RPS / looks, w)])
    i = int(np.searchsorted(cum, floor - 1e-9))
    floor_end = float(cum[min(i, len(cum) - 1)])
    return Row(
        e,
        rollouts,
        int(det.size),
        float(q[1]),
        float(q[0]),
        float(q[2]),
        float(np.median(mins)) if mins.size else math.nan,
        floor,
        (LATENCY_ALT_SCALE if e.kind in ("latency", "tail") else ALT_SCALE)
        if alt_scale is None
        else alt_scale,
        floor_end,
        horizon,
        int(np.sum((when >= 0) & (when < HORIZON * looks))),
        looks,
        oracle,
    )


def run(rollouts: int, seed: int = SEED) -> list[Row]:
    return [measure(e, rollouts, seed + i) for i, e in enumerate(effects())]


def prior_study(rollouts: int, seed: int = SEED + 100) -> list[Row]:
    es = [e for e in target_effects() if e.kind != "tail"]
    return [measure(e, rollouts, seed + i, s) for i, e in enumerate(es) for s in ALT_SCALES]


MIXTURES: tuple[tuple[float, ...], ...] = (
    (0.1, 0.3, 1.0),
    (0.05, 0.15, 0.5),
    (0.05, 0.2, 1.0),
    (0.2, 0.5, 1.0, 2.0),
)
"""Equal-weight mixtures of half-normal rollback priors tried against issue #10 item 4's
targets (errors <= 1.3x, latency <= 1.5x the floor)."""


def target_effects() -> list[Effect]:
    """The effects issue #10 item 4 sets delay targets for (tolerance 0)."""
    return [e for e in effects() if e.kind in ("errors", "latency", "tail") and e.tolerance == 0]


def per_effect(rows: list[Row], cell: Callable[[Row], str], floor: bool = False) -> list[list[str]]:
    """One table row per effect (in ``rows``' order): its name, its floor if ``floor``, then
    ``cell`` of each of its rows."""
    out = []
    for name in dict.fromkeys(r.effect.name for r in rows):
        sub = [r for r in rows if r.effect.name == name]
        out.append([name] + ([f"{sub[0].floor:.0f}"] if floor else []) + [cell(r) for r in sub])
    return out


def mixture_study(rollouts: int, seed: int = SEED + 200) -> list[Row]:
    es = target_effects()
    return [measure(e, rollouts, seed + i, m) for i, e in enumerate(es) for m in MIXTURES]


LOOKS = (1, 2, 4)
"""Judged once, twice and four times a minute (``analysis.interval`` 60 s, 30 s and 15 s)."""


def granularity_study(rollouts: int, seed: int = SEED + 300) -> list[Row]:
    """The delay targets' effects judged at each of ``LOOKS``: how much of the delay over the
    raw floor is the interval (a decision waits for the interval's end) and how much the test."""
    es = target_effects()
    return [
        measure(e, rollouts, seed + i, looks=k, oracle=o)
        for i, e in enumerate(es)
        for k in LOOKS
        for o in (False, True)
    ]


def slashed(scales: tuple[float, ...]) -> str:
    """Prior scales as the tables name them: ``0.05/0.2/1``."""
    return "/".join(f"{x:g}" for x in scales)


def target_of(e: Effect) -> float:
    """Issue #10 item 4's delay target for ``e``: 1.3x the floor for errors, 1.5x for latency."""
    return 1.3 if e.kind == "errors" else 1.5


BEFORE_ALT_SCALE: tuple[float, ...] = (0.05, 0.2, 1.0)
"""The latency rollback prior before the body's score test (ratio.py's LATENCY_ALT_SCALE then)."""


def body_study(rollouts: int, seed: int = SEED + 400) -> list[Row]:
    """The latency targets' effects judged as before the score test (the boundaries'
    rate-ratio e-values alone, averaged, under ``BEFORE_ALT_SCALE``) and as shipped, on the
    same seeded traffic, at 60 s and at 15 s."""
    es = [e for e in target_effects() if e.kind != "errors"]
    return [
        measure(e, rollouts, seed + 10 * i + k, looks=k, before=before)
        for i, e in enumerate(es)
        for k in (1, max(LOOKS))
        for before in (True, False)
    ]


def body_text(rows: list[Row], n: int) -> str:
    head = ["effect"] + [
        f"{'before' if before else 'shipped'}, {60 // k} s"
        for k in (1, max(LOOKS))
        for before in (True, False)
    ]
    tab = per_effect(rows, lambda r: f"{r.ratio:.2f}")
    return f"""## The body and the tail (issue #10 item 4)

Median delay / raw floor, {n} rollouts per cell, the same seeded traffic for both judges.
"Before": the latency judge as it was, the mean of the p50 and p99 boundaries' rate-ratio
e-values under the mixture {slashed(BEFORE_ALT_SCALE)}. "Shipped": the body (the p50 boundary)
also tested by the score test (`canaryd/stats/score.py`), which conditions on each interval's
request counts instead of its events, so the requests *not* slower than the boundary count too
(at stable's median they carry as much information as those slower, which the Poisson model of
the rate-ratio test, and its two-sample floor, discard); the body's e-value is the mean of the
score test's and the p50 rate-ratio's, weighted {BODY_WEIGHT:g} against the p99 boundary's
(rate-ratio prior LATENCY_ALT_SCALE = {slashed(LATENCY_ALT_SCALE)}). The floor is the
rate-ratio test's, so a test that uses what it leaves out can come in under 1x.

{c.md_table(head, tab)}
"""


def granularity_text(rows: list[Row], n: int) -> str:
    def cell(r: Row) -> str:
        if r.oracle:
            return f"{r.ratio:.2f}"
        return f"{r.ratio:.2f} ({r.ratio_end:.2f}), {r.median_minutes:g} min"

    tab = per_effect(rows, cell, floor=True)
    head = ["effect", "floor (canary req.)"] + [
        f"{what} {60 // k} s" for k in LOOKS for what in ("interval", "knowing the effect,")
    ]
    finest = [r for r in rows if r.looks == max(LOOKS) and not r.oracle]
    over = [r for r in finest if r.ratio > target_of(r.effect)]
    missed = [f"{r.effect.name} {r.ratio:.2f}x" for r in over]
    verdict = (
        "every effect is within its target (errors 1.3x, latency 1.5x)"
        if not missed
        else "these are outside their targets (errors 1.3x, latency 1.5x): " + ", ".join(missed)
    )
    coarse = [r for r in rows if r.looks == min(LOOKS) and not r.oracle]
    coarse_over = ", ".join(
        f"{r.effect.name} {r.ratio:.2f}x" for r in coarse if r.ratio > target_of(r.effect)
    )
    knew = {(r.effect.name, r.looks): r for r in rows if r.oracle}
    beyond_counts = ", ".join(
        f"{r.effect.name} {knew[(r.effect.name, r.looks)].ratio:.2f}x"
        for r in coarse
        if knew[(r.effect.name, r.looks)].ratio > target_of(r.effect)
    )
    tail_floor = ", ".join(
        f"{r.floor:.0f} canary requests, of which some "
        f"{r.floor * r.effect.extra['p_stable'] * r.effect.extra['rho1']:.1f} are expected "
        f"slower than stable's p99, and the end of its {60 // max(LOOKS)} s interval holds "
        f"{r.ratio / r.ratio_end:.2f}x the floor"
        for r in finest
        if r.effect.kind == "tail"
    )
    return f"""## Decision granularity (issue #10 item 4)

Median delay / raw floor (/ the floor at the end of its interval in brackets), and the median
minutes to rollback; {n} rollouts per cell, the same traffic and steps (every minute), the
judge run at the end of every 60 s, 30 s or 15 s interval. At one look a minute the median
delay is a whole number of minutes, so a ratio moves by the canary requests of one minute
between seeds (the table above and this one use different seeds). At {60 // max(LOOKS)} s,
against the raw floor, {verdict}. At {60 // min(LOOKS)} s these are not: {coarse_over or "none"}.
The tail-only change is the one at its target's edge: a floor of {tail_floor}, so the judge
must decide in the floor's own interval in most rollouts, from a handful of slow requests.

"Knowing the effect": on the same seeded traffic, the test that knows the regression in
advance - the likelihood ratio of the true ratio against no change, at the floor's boundary
alone (the errors, or the exceedances at p50 / p99), at the full alpha, decided at the same
interval ends (`studylib.oracle_crossing`). It is an e-process as the judges' mixtures are, and
the one whose evidence grows fastest *on those counts*; no judge can run it, because it would
have to know the regression before it happens. At {60 // min(LOOKS)} s it too misses
{beyond_counts or "nothing"}: there no per-interval test on those counts meets the target, the
interval is the limit. For median shifts the shipped judge beats it: its score test uses the
requests not slower than the p50 boundary too, which these counts (and the floor) leave out
(last section).

{c.md_table(head, tab)}
"""


def mixture_text(mix: list[Row], n: int) -> str:
    tab = per_effect(mix, lambda r: f"{r.ratio:.2f} ({r.ratio_end:.2f})")
    head = ["effect"] + [f"mixture {slashed(m)}" for m in MIXTURES]
    return f"""## Mixtures of priors (issue #10 item 4: errors <= 1.3x, latency <= 1.5x the floor)

Median delay / floor (at the end of the floor's interval in brackets), {n} rollouts per cell,
same setup, tolerance 0; each column an equal-weight mixture of half-normal priors with those
scales, against the single half-normals of the table above. Mass on small scales helps the
small latency shifts and costs the larger error ratios; latency +25 % and the tail change
do not move with the prior here, because at one look a minute their floor is a fraction of one
interval (brackets: against the floor at that interval's end). Shorter intervals (the
granularity section below) show what is left once the interval is not the limit. The judges
use ALT_SCALE {ALT_SCALE:g}
for errors (its single half-normal is the best error column). For latency the prior is that of
the boundaries' rate-ratio tests only, beside the body's score test (last section), so here it
moves the tail change most; the judges use {slashed(LATENCY_ALT_SCALE)} (LATENCY_ALT_SCALE),
chosen on the tail change at 15 s (1.57x against 1.94x for 0.05/0.2/1, 1,000 rollouts).

{c.md_table(head, tab)}
"""


def write(rows: list[Row], prior: list[Row], rollouts: int, prior_n: int, secs: float) -> str:
    table = []
    for r in rows:
        e = r.effect
        target_det = e.kind != "errors" or e.ratio - 1 >= 2 * e.tolerance - 1e-9
        table.append(
            [
                e.name,
                f"{e.tolerance:g}",
                "yes" if target_det else "",
                c.pct(r.detection_120, 1),
                f"{r.horizon}",
                f"{r.detected}/{r.rollouts}",
                c.pct(r.detection, 1),
                c.pct(c.cp_lower(r.detected, r.rollouts), 1),
                f"{r.median_requests:.0f}",
                f"{r.q25:.0f}-{r.q75:.0f}",
                f"{r.median_minutes:.0f}",
                f"{r.floor:.0f}",
                f"**{r.ratio:.2f}**" if e.kind in ("errors", "latency") else f"{r.ratio:.2f}",
                f"{r.ratio_end:.2f}",
            ]
        )
    ptab = per_effect(prior, lambda r: f"{r.ratio:.2f} ({c.pct(r.detection, 1)})", floor=True)
    lat = [r for r in rows if r.effect.kind in ("latency", "tail")]
    lat_txt = "; ".join(
        f"{r.effect.name}: boundary {r.effect.extra['boundary_ms']:g} ms, stable share slower "
        f"{r.effect.extra['p_stable']:.4f}, ratio {r.effect.extra['rho1']:.3f}"
        for r in lat
    )
    return f"""# Power: detection and delay against the two-sample floor

Setup: {rollouts} seeded rollouts per effect (seed {SEED}), {RPS:g} rps (Poisson per one-minute
interval), canary weight 5 % -> 50 % by 5 points per interval then 50 %, horizon {HORIZON} intervals,
alpha = {ALPHA}, judge evaluated after every interval. Errors: stable 0.5 %, canary 0.5 % x ratio
(tolerance 0 tests rho0 = 1; tolerance 0.2 tests rho0 = 1.2 with ratios >= 2x the tolerance,
i.e. >= 1.4). Latency: stable {STABLE_LAT.name} over knative buckets, canary as named; the latency
judge tests the boundaries nearest stable's p50 and p99 (80 ms and 250 ms, from the known stable
CDF): the p50 boundary (the body) with the score test and its rate-ratio test, averaged, weighted
{BODY_WEIGHT:g} against the p99 boundary's rate-ratio test (`latency_log_e`). Slow creep: the canary's error ratio grows linearly from 1 to {CREEP_END:g} over the
horizon (per interval). Rollback prior: half-normal on log(rho/rho0), scale ALT_SCALE = {ALT_SCALE:g}
for errors; for latency LATENCY_ALT_SCALE = {slashed(LATENCY_ALT_SCALE)} (ratio.py defaults); the
score test's prior is log-uniform over its tilts (score.py).

**Floor** = `two_sample_floor` along the same expected schedule at the same alpha (and rho0): the
canary requests at which the expected conditional information reaches log(1/alpha). For latency
it is computed on the exceedance rate at the boundary named below (p50 for median shifts, p99 for
the tail-only change): {lat_txt}. Creep: the same floor with the per-interval ratio.
**Delay** = cumulative canary requests at the end of the interval in which the judge fails
(decisions are only taken at interval ends, which adds up to one interval of canary requests -
up to 600 at 50 % - to every delay; the floor is interpolated inside its interval).

Targets: detection >= 99 % for regressions >= 2x the tolerance; median delay <= 2x the floor for
error and median-latency shifts (bold). Wall time {secs:.0f} s.

{c.md_table(["effect", "tolerance", ">= 2x tolerance", "detected in 120 min", "horizon (min)", "detected in horizon", "rate", "lower 95%", "median delay (canary req.)", "IQR", "median minutes", "floor (canary req.)", "delay / floor", "delay / floor at interval end"], table)}

"horizon": {HORIZON} minutes, or longer for effects whose floor lies beyond it (until {FLOOR_MULTIPLE:g}x the
floor of canary requests is expected; the rollout stays at 50 %). Delays and detection rates are
over that horizon. "floor at interval end": the expected canary requests at the end of the interval
in which the floor is reached - the earliest a per-interval decision can come (it matters when the
floor is a fraction of one interval, as for latency +25 % and the tail change).

## Sensitivity to the rollback prior's scale (`Grid.make(rho0, alt_scale=...)`)

Median delay / floor (detection rate in brackets), {prior_n} rollouts per cell, same setup, tolerance 0.
The prior scale does not affect validity (every mixture is an e-process); it moves power between
small and large effects.

{c.md_table(["effect", "floor"] + [f"alt_scale {s:g}" for s in ALT_SCALES], ptab)}
"""


def plot(rows: list[Row], prior: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    names = [r.effect.name for r in rows]
    y = np.arange(len(rows))
    a1.barh(
        y,
        [r.ratio for r in rows],
        color=[
            "tab:blue"
            if r.effect.kind == "errors"
            else "tab:purple"
            if r.effect.kind in ("latency", "tail")
            else "tab:orange"
            for r in rows
        ],
    )
    a1.errorbar(
        [r.ratio for r in rows],
        y,
        xerr=[[r.ratio - r.q25 / r.floor for r in rows], [r.q75 / r.floor - r.ratio for r in rows]],
        fmt="none",
        color="k",
        lw=1,
    )
    for yi, r in zip(y, rows, strict=True):
        a1.text(0.05, yi, f"det {c.pct(r.detection, 1)}", va="center", fontsize=7, color="w")
    a1.axvline(2.0, color="red", ls="--", lw=1, label="target 2x floor")
    a1.axvline(1.0, color="k", lw=1)
    a1.set_yticks(y, names, fontsize=8)
    a1.invert_yaxis()
    a1.set_xlabel("median delay / two-sample floor (IQR bars)")
    a1.legend(fontsize=8)
    for e_name in dict.fromkeys(r.effect.name for r in prior):
        sub = [r for r in prior if r.effect.name == e_name]
        a2.plot([r.alt_scale for r in sub], [r.ratio for r in sub], "o-", label=e_name)
    a2.axhline(2.0, color="red", ls="--", lw=1)
    a2.set_xscale("log", base=2)
    a2.set_xlabel("alt_scale of the half-normal prior on log(rho/rho0)")
    a2.set_ylabel("median delay / floor")
    a2.set_title("prior scale sensitivity")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    quick = c.parse_quick(__doc__ or "")
    rollouts = 300 if quick else 2000
    prior_n = 200 if quick else 1000
    t0 = time.perf_counter()
    rows = run(rollouts)
    prior = prior_study(prior_n)
    mix = mixture_study(prior_n)
    fine = granularity_study(prior_n)
    body = body_study(prior_n)
    secs = time.perf_counter() - t0
    c.RESULTS.mkdir(exist_ok=True)
    name = "power-quick" if quick else "power"
    (c.RESULTS / f"{name}.md").write_text(
        write(rows, prior, rollouts, prior_n, secs)
        + "\n"
        + mixture_text(mix, prior_n)
        + "\n"
        + granularity_text(fine, prior_n)
        + "\n"
        + body_text(body, prior_n),
        encoding="utf-8",
    )
    plot(rows, prior, c.RESULTS / f"{name}.png")
    for r in rows:
        print(f"{r.effect.name:40s} det {r.detection:.3f}  delay/floor {r.ratio:.2f}")
    print(f"wall {secs:.0f} s")


if __name__ == "__main__":
    main()
