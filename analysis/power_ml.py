"""Power of the ML judges: detection and delay against the information floors.

Run: ``.venv/bin/python analysis/power_ml.py [--quick]``. Writes ``analysis/results/power_ml.md``
and ``.png``.

Two parts. (1) Vectorized, as ``power.py``: thousands of rollouts of each failure through the
judges' engines, delay as a multiple of the two-sample floor (and, for categories, of the
one-sample floor of the KL divergence between the two categorical distributions). (2) The real
closed loop: each failure scenario of ``simulations/`` through ``canaryd simulate``'s engine
(controller, judges, the policy's steps and promotion), where detection must reach 99 %.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlstudy as m
import studylib as c

from canaryd.stats.bounds import one_sample_floor_buckets, two_sample_floor

SEED = 8_2026
LLM_RPS = 8.0
CLF_RPS = 100.0
LLM_ALPHA = 0.01 / 5  # policies/llm-vllm.yaml: five metrics of weight 1
CLF_ALPHA = 0.01 / 4  # policies/classifier-drift.yaml: four metrics
LLM_STEPS = ((0.10, 10), (0.25, 10), (0.50, 10))
CLF_STEPS = ((0.10, 15), (0.25, 15), (0.50, 30))
LLM_HORIZON = 120
CLF_HORIZON = 180
QUANTILES = (0.5, 0.9)
FINISH = ("stop", "length", "abort", "error")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Effect:
    name: str
    kind: str  # histogram | categorical | quality
    tolerance: float
    alpha: float
    rps: float
    steps: tuple[tuple[float, int], ...]
    horizon: int
    decided_by: int  # minutes: the policy's steps end (afterSteps promotes then)
    stable: object = None
    canary: object = None
    extra: dict[str, object] = field(default_factory=dict)


def _finish_shares(median: float) -> tuple[float, ...]:
    cut = m.p_cut(median)
    err, abort = 0.003, 0.01
    ok = 1.0 - err
    return ((1 - abort) * (1 - cut) * ok, (1 - abort) * cut * ok, abort * ok, err)


def _end(steps: tuple[tuple[float, int], ...]) -> int:
    return sum(minutes for _, minutes in steps)


def effects() -> list[Effect]:
    llm = {"alpha": LLM_ALPHA, "rps": LLM_RPS, "steps": LLM_STEPS, "horizon": LLM_HORIZON, "decided_by": _end(LLM_STEPS)}  # fmt: skip
    clf = {"alpha": CLF_ALPHA, "rps": CLF_RPS, "steps": CLF_STEPS, "horizon": CLF_HORIZON, "decided_by": _end(CLF_STEPS)}  # fmt: skip
    return [
        Effect("TTFT +40 % (350 -> 490 ms)", "histogram", 0.1, stable=m.ttft(350), canary=m.ttft(490), **llm),  # type: ignore[arg-type]
        Effect("time per token +20 % (30 -> 36 ms)", "histogram", 0.1, stable=m.tpot(30), canary=m.tpot(36), **llm),  # type: ignore[arg-type]
        Effect("answers +50 % (220 -> 330 tokens)", "histogram", 0.2, stable=m.answer_tokens(220), canary=m.answer_tokens(330), **llm),  # type: ignore[arg-type]
        Effect("finish reasons of answers +50 % (`length` x3.6)", "categorical", 0.25, stable=_finish_shares(220), canary=_finish_shares(330), **llm),  # type: ignore[arg-type]
        Effect("class `fraud` share x3 (3 % -> 9 %)", "categorical", 0.2, stable=(0.95, 0.03, 0.02), canary=(0.89, 0.09, 0.02), **clf),  # type: ignore[arg-type]
        Effect("accuracy -2 points (92 -> 90 %), labels 10 min late", "quality", 0.1, stable=0.92, canary=0.90, extra={"delay": 600.0, "share": 0.8}, **clf),  # type: ignore[arg-type]
        Effect("accuracy -2 points (92 -> 90 %), labels at once", "quality", 0.1, stable=0.92, canary=0.90, extra={"delay": 0.0, "share": 0.8}, **clf),  # type: ignore[arg-type]
    ]  # fmt: skip


@dataclass
class Row:
    effect: Effect
    rollouts: int
    detected: int
    detected_by_steps: int
    median_units: float
    q25: float
    q75: float
    median_minutes: float
    floor: float
    kl_floor: float | None
    unit: str

    @property
    def detection(self) -> float:
        return self.detected / self.rollouts

    @property
    def ratio(self) -> float:
        return self.median_units / self.floor

    @property
    def kl_ratio(self) -> float | None:
        return None if self.kl_floor is None else self.median_units / self.kl_floor


def measure(e: Effect, rollouts: int, seed: int) -> Row:
    rng = np.random.default_rng(seed)
    w = m.schedule_weights(e.steps, e.horizon)
    sched = c.expected_schedule(e.rps, w)
    kl_floor: float | None = None
    if e.kind == "histogram":
        s, cn = e.stable, e.canary
        assert isinstance(s, m.Signal) and isinstance(cn, m.Signal)
        ks = s.boundaries(QUANTILES)
        tr = m.hist_traffic(rng, rollouts, e.rps, w, s, cn)
        when = c.latency_crossing(tr, ks, 1.0 + e.tolerance, e.alpha)
        units = m.cumulative_at(tr.n_c, when)
        floors = []
        for k in ks:
            ps, pc = s.share_above(k), cn.share_above(k)
            if pc / ps > 1.0 + e.tolerance:
                floors.append(two_sample_floor(sched, ps, pc / ps, e.alpha, 1.0 + e.tolerance))
        floor = min(floors) if floors else math.inf
        unit = "canary requests"
    elif e.kind == "categorical":
        q_s = np.asarray(e.stable, dtype=float)
        q_c = np.asarray(e.canary, dtype=float)
        tr = c.gen_requests(rng, rollouts, e.rps, w)
        cs, cc = m.class_counts(rng, tr, q_s, q_c)
        when = m.categorical_crossing(cs, cc, e.tolerance, e.alpha)
        units = m.cumulative_at(tr.n_c, when)
        j = int(np.argmax(q_c / q_s))
        floor = two_sample_floor(
            sched, float(q_s[j]), float(q_c[j] / q_s[j]), e.alpha, 1.0 + e.tolerance
        )
        kl_floor = one_sample_floor_buckets(q_s.tolist(), q_c.tolist(), e.alpha)
        unit = "canary outcomes"
    else:
        acc_s, acc_c = float(e.stable), float(e.canary)  # type: ignore[arg-type]
        delay, share = float(e.extra["delay"]), float(e.extra["share"])  # type: ignore[arg-type]
        tr = c.gen_requests(rng, rollouts, e.rps, w)
        lab = m.labelled_traffic(rng, tr, acc_s, acc_c, delay, share)
        when = c.errors_crossing(lab, 1.0 + e.tolerance, e.alpha)
        units = m.cumulative_at(lab.n_c, when)
        ls = m.expected_labelled([n for n, _ in sched], delay, share)
        lc = m.expected_labelled([n for _, n in sched], delay, share)
        lsched = list(zip(ls.tolist(), lc.tolist(), strict=True))
        floor = _labelled_floor(
            lsched, 1 - acc_s, (1 - acc_c) / (1 - acc_s), e.alpha, 1.0 + e.tolerance
        )
        unit = "labelled canary predictions"
    det = units[~np.isnan(units)]
    q = np.percentile(det, [25, 50, 75]) if det.size else [math.nan] * 3
    mins = when[when >= 0] + 1
    return Row(
        e,
        rollouts,
        int(det.size),
        int(np.sum((when >= 0) & (when < e.decided_by))),
        float(q[1]),
        float(q[0]),
        float(q[2]),
        float(np.median(mins)) if mins.size else math.nan,
        floor,
        kl_floor,
        unit,
    )  # fmt: skip


def _labelled_floor(
    sched: list[tuple[float, float]], p_s: float, rho1: float, alpha: float, rho0: float
) -> float:
    """The two-sample floor along the expected *labelled* schedule (no labels: no information)."""
    first = next(i for i, (a, b) in enumerate(sched) if a > 0 and b > 0)
    return two_sample_floor(sched[first:], p_s, rho1, alpha, rho0)


# --- the closed loop -------------------------------------------------------------------------

SCENARIOS = (
    "llm-ttft-regression",
    "llm-longer-answers",
    "classifier-class-drift",
    "classifier-accuracy-drop",
    "llm-vllm",
    "classifier",
)


@dataclass
class SimRow:
    scenario: str
    runs: int
    expected: str
    hits: int
    by_metric: dict[str, int]
    median_min: float


def closed_loop(runs: int, seed: int) -> list[SimRow]:
    from canaryd.controller import Action
    from canaryd.simulation.commands import policy_for
    from canaryd.simulation.engine import simulate
    from canaryd.simulation.scenario import load_scenario
    from canaryd.stats.verdict import Status

    out: list[SimRow] = []
    for name in SCENARIOS:
        sc, base = load_scenario(ROOT / "simulations" / f"{name}.yaml")
        assert sc.expect is not None
        policy = policy_for(sc.policy, sc.policy_name, base, None)
        res = simulate(sc, policy, base, runs=runs, seed=seed)
        allowed = set(sc.expect.get("failingAnyOf", []))
        hits = 0
        by: dict[str, int] = {}
        for run in res.runs:
            if sc.expect["outcome"] != "rolled_back":
                hits += run.outcome == sc.expect["outcome"]
                continue
            d = next((d for d in run.decisions if d.action is Action.ROLLBACK), None)
            if d is None:
                continue
            failing = {v.metric for v in d.verdicts if v.critical and v.status is Status.FAIL}
            for f in failing:
                by[f] = by.get(f, 0) + 1
            hits += bool(failing & allowed)
        times = [r.decided_at_s / 60 for r in res.runs if r.decided_at_s is not None]
        expected = sc.expect["outcome"] + (f" by {' or '.join(sorted(allowed))}" if allowed else "")
        out.append(
            SimRow(name, runs, expected, hits, by, float(np.median(times)) if times else math.nan)
        )
    return out


def write(rows: list[Row], sims: list[SimRow], rollouts: int, secs: float) -> str:
    table = []
    for r in rows:
        e = r.effect
        table.append([
            e.name, f"{e.tolerance:g}", f"{e.alpha:g}",
            f"{r.detected}/{r.rollouts}", c.pct(r.detection, 1), c.pct(c.cp_lower(r.detected, r.rollouts), 1),
            c.pct(r.detected_by_steps / r.rollouts, 1), f"{r.median_units:.0f}", f"{r.q25:.0f}-{r.q75:.0f}",
            f"{r.median_minutes:.0f}", f"{r.floor:.0f}", f"**{r.ratio:.2f}**",
            "" if r.kl_floor is None else f"{r.kl_floor:.0f}", "" if r.kl_ratio is None else f"{r.kl_ratio:.2f}",
            r.unit,
        ])  # fmt: skip
    stab = [
        [s.scenario, s.expected, s.runs, f"{s.hits}/{s.runs}", c.pct(s.hits / s.runs, 1),
         c.pct(c.cp_lower(s.hits, s.runs), 1),
         ", ".join(f"{k} {v}" for k, v in sorted(s.by_metric.items())) or "-", f"{s.median_min:.0f}"]
        for s in sims
    ]  # fmt: skip
    return f"""# Power of the ML judges: detection, and delay against the floors

## 1. Each judge alone, vectorized ({rollouts} rollouts per effect, seed {SEED})

The LLM effects run at {LLM_RPS:g} rps with the steps of `policies/llm-vllm.yaml` (10 % for 10 min,
25 % for 10 min, then 50 %) at that policy's per-metric alpha ({LLM_ALPHA:g}); the classifier
effects at {CLF_RPS:g} rps with the steps of `policies/classifier-drift.yaml` (10 and 25 % for 15 min,
50 % for 30 min) at its alpha ({CLF_ALPHA:g}). Histograms over vLLM's default buckets; the histogram judges
test the boundaries nearest stable's p50 and p90. Each judge is evaluated after every
interval; "by the steps' end" counts detections before the last step ends (when `afterSteps`
would promote: {_end(LLM_STEPS)} min for the LLM, {_end(CLF_STEPS)} min for the classifier).

**Floor**: `two_sample_floor` along the same expected schedule, at the same alpha and rho0 =
1 + tolerance - for the histogram kinds at the tested boundary where it is lowest, for
categories on the category that moved most, for quality on the wrong-prediction rate along the
expected *labelled* schedule (labels arrive with the stated delay). **KL floor** (categories):
log(1/alpha) / KL(canary shares || stable shares), the canary outcomes a test that knew
stable's shares exactly would need against *equality* - a lower bound for any test, and far
below what a test with a tolerance can reach (its null includes shares up to 1 + tolerance).
Delays are counted at the end of the interval of the decision, in the unit shown.
Wall time {secs:.0f} s.

{c.md_table(["effect", "tolerance", "alpha", "detected", "rate", "lower 95%", "by the steps' end", "median delay", "IQR", "median minutes", "floor", "delay / floor", "KL floor", "delay / KL floor", "unit"], table)}

## 2. The failure scenarios, closed loop (`canaryd simulate`, {sims[0].runs} seeded runs each)

The real controller and judges on `simulations/*.yaml` (the policy's steps, alpha split and
promotion rule; for accuracy, the 30-minute last step and `minDetectableEffect` wait for the
labels). "hits": runs that rolled back with one of the expected metrics failing (healthy scenarios:
runs promoted).

{c.md_table(["scenario", "expected", "runs", "hits", "rate", "lower 95%", "failing metrics at the rollback", "median decision (min)"], stab)}
"""


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    y = np.arange(len(rows))
    ax.barh(y, [r.ratio for r in rows], color="tab:purple", label="delay / two-sample floor")
    kl = [(i, r.kl_ratio) for i, r in enumerate(rows) if r.kl_ratio is not None]
    ax.scatter(
        [v for _, v in kl],
        [i for i, _ in kl],
        color="tab:orange",
        zorder=3,
        label="delay / KL floor",
    )
    ax.axvline(1.0, color="k", lw=1)
    ax.axvline(2.0, color="red", ls="--", lw=1)
    ax.set_yticks(y, [r.effect.name for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median delay / floor")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(rollouts: int, seed: int = SEED) -> list[Row]:
    return [measure(e, rollouts, seed + i) for i, e in enumerate(effects())]


def main() -> None:
    quick = c.parse_quick(__doc__ or "")
    rollouts = 300 if quick else 2000
    sim_runs = 40 if quick else 200
    t0 = time.perf_counter()
    rows = run(rollouts)
    sims = closed_loop(sim_runs, seed=SEED)
    secs = time.perf_counter() - t0
    c.RESULTS.mkdir(exist_ok=True)
    name = "power_ml-quick" if quick else "power_ml"
    (c.RESULTS / f"{name}.md").write_text(write(rows, sims, rollouts, secs), encoding="utf-8")
    plot(rows, c.RESULTS / f"{name}.png")
    for r in rows:
        print(f"{r.effect.name}: {r.detection:.1%} detected, delay/floor {r.ratio:.2f}")
    for s in sims:
        print(f"{s.scenario}: {s.hits}/{s.runs}")


if __name__ == "__main__":
    main()
