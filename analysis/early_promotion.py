"""Time to promote a healthy canary: early advance on shown non-inferiority vs the fixed schedule.

Uses the real closed-loop simulator (``canaryd.simulation.engine.simulate``: the daemon's
controller and judges). Run: ``.venv/bin/python analysis/early_promotion.py [--quick]``. Writes
``analysis/results/early_promotion.md`` and ``.png``.
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as c

from canaryd.policy.model import CanaryPolicy
from canaryd.simulation.defaults import DEFAULT_POLICY_DOC
from canaryd.simulation.engine import simulate
from canaryd.simulation.scenario import load_scenario

SCENARIO = c.ROOT / "simulations" / "healthy.yaml"
RPS = (20.0, 200.0)
TOLERANCE = 0.5
MIN_DWELL_S = 60.0
MIN_CANARY_REQUESTS = (2000, 5000)
"""Per step. 2,000: 20,000 over the ten steps, about the two-sample floor of an errors x1.5
regression along this schedule (17,000). 5,000: a cautious 50,000."""
WEIGHTS = list(range(5, 51, 5))
INTERVAL_S = 60.0
SEED = 11


def policy(min_requests: int) -> CanaryPolicy:
    doc = copy.deepcopy(DEFAULT_POLICY_DOC)
    spec = doc["spec"]
    spec["steps"] = {
        "stepWeight": 5,
        "maxWeight": 50,
        "minDwell": "1m",
        "minCanaryRequests": min_requests,
    }
    for m in spec["analysis"]["metrics"]:
        m["maxRelativeIncrease"] = TOLERANCE
    spec["promotion"] = {"criterion": "afterSteps", "maxDuration": "24h"}
    return CanaryPolicy.model_validate(doc)


def fixed_schedule_s(rps: float, min_requests: int) -> float:
    """Time the steps alone take: each step holds for max(minDwell, the whole intervals needed to
    see minCanaryRequests at the expected traffic), decisions at interval ends."""
    total = 0.0
    for w in WEIGHTS:
        per_interval = rps * INTERVAL_S * w / 100
        need = math.ceil(min_requests / per_interval) * INTERVAL_S
        total += max(MIN_DWELL_S, need)
    return total


@dataclass
class Row:
    min_requests: int
    rps: float
    runs: int
    promoted: int
    median_s: float
    q10_s: float
    q90_s: float
    fixed_s: float
    early_steps: float  # median number of steps advanced on non-inferiority
    any_early: float  # share of runs with at least one early advance


def _scenario(rps: float, tmp: Path) -> tuple[object, Path]:
    doc = yaml.safe_load(SCENARIO.read_text(encoding="utf-8"))
    doc["traffic"] = {"rps": rps}
    doc["duration"] = "6h"
    doc.pop("expect", None)
    p = tmp / f"healthy-{rps:g}.yaml"
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_scenario(p)


def run(
    runs: int,
    seed: int = SEED,
    rps_list: tuple[float, ...] = RPS,
    min_requests: tuple[int, ...] = MIN_CANARY_REQUESTS,
) -> list[Row]:
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as d:
        for mr, rps in ((mr, rps) for mr in min_requests for rps in rps_list):
            sc, base = _scenario(rps, Path(d))
            res = simulate(sc, policy(mr), base, runs=runs, seed=seed)  # type: ignore[arg-type]
            t = np.array([r.decided_at_s for r in res.runs if r.outcome == "promoted"], dtype=float)
            early = [
                sum(
                    "non-inferiority shown" in d.reason or "shown no worse" in d.reason
                    for d in r.decisions
                )
                for r in res.runs
                if r.outcome == "promoted"
            ]
            out.append(
                Row(
                    mr,
                    rps,
                    runs,
                    int(t.size),
                    float(np.median(t)),
                    float(np.percentile(t, 10)),
                    float(np.percentile(t, 90)),
                    fixed_schedule_s(rps, mr),
                    float(np.median(early)),
                    float(np.mean(np.array(early) > 0)),
                )
            )
    return out


def write(rows: list[Row], runs: int, secs: float) -> str:
    tab = [
        [
            r.min_requests,
            f"{r.rps:g}",
            f"{r.promoted}/{r.runs}",
            f"{r.median_s / 60:.1f}",
            f"{r.q10_s / 60:.1f}-{r.q90_s / 60:.1f}",
            f"{r.fixed_s / 60:.0f}",
            f"{r.fixed_s / r.median_s:.2f}x",
            f"{r.early_steps:.0f} of {len(WEIGHTS)}",
            c.pct(r.any_early, 0),
        ]
        for r in rows
    ]
    return f"""# Early promotion: time to promote a healthy canary

Setup: the real closed-loop simulator (`canaryd.simulation.engine.simulate`: the daemon's
controller and judges), scenario `simulations/healthy.yaml` (errors 0.5 %, latency lognormal 80 ms
sigma 0.5, Istio buckets, 10 s ticks; duration 4 h) with its traffic set to 20 and 200 rps; {runs} seeded runs
each (seed {SEED}). Policy: the default (sequential errors and latency judges, p50 and p99, alpha
0.01, one-minute intervals) with tolerance {TOLERANCE:g} on both metrics, steps 5 % -> 50 % by 5,
minDwell 1 m and minCanaryRequests {" or ".join(str(m) for m in MIN_CANARY_REQUESTS)} per step, criterion `afterSteps`. A step
advances when its dwell and minimum requests are met, or - early - after its dwell once every
critical metric's confidence sequence shows the canary no worse than tolerated.

**Fixed schedule** = the time the steps alone take with no early advance: each step waits
max(minDwell, the whole intervals needed to see minCanaryRequests at the expected traffic). 2,000
per step is 20,000 canary requests in all, about the two-sample floor of an errors x1.5 regression
along this schedule (17,000), so the schedule alone would be "safe"; 5,000 is a cautious 50,000. Early advance
cannot skip a step's minDwell (DESIGN.md §3), so it helps only where minCanaryRequests binds.
Wall time {secs:.0f} s.

{c.md_table(["minCanaryRequests / step", "rps", "promoted", "median minutes to promote", "10-90 % (min)", "fixed schedule (min)", "speed-up", "median steps advanced early", "runs with an early advance"], tab)}
"""


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(rows))
    labels = [f"{r.rps:g} rps\nmin {r.min_requests}/step" for r in rows]
    ax.bar(x - 0.2, [r.median_s / 60 for r in rows], 0.4, label="canaryd, early advance (median)")
    ax.errorbar(
        x - 0.2,
        [r.median_s / 60 for r in rows],
        yerr=[
            [(r.median_s - r.q10_s) / 60 for r in rows],
            [(r.q90_s - r.median_s) / 60 for r in rows],
        ],
        fmt="none",
        color="k",
    )
    ax.bar(x + 0.2, [r.fixed_s / 60 for r in rows], 0.4, label="fixed schedule")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("minutes to promote")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    quick = c.parse_quick(__doc__ or "")
    runs = 40 if quick else 400
    t0 = time.perf_counter()
    rows = run(runs)
    secs = time.perf_counter() - t0
    c.RESULTS.mkdir(exist_ok=True)
    name = "early_promotion-quick" if quick else "early_promotion"
    (c.RESULTS / f"{name}.md").write_text(write(rows, runs, secs), encoding="utf-8")
    plot(rows, c.RESULTS / f"{name}.png")
    for r in rows:
        print(
            f"min {r.min_requests} {r.rps:g} rps: promoted {r.promoted}/{r.runs} median {r.median_s / 60:.1f} min, fixed {r.fixed_s / 60:.0f} min"
        )
    print(f"wall {secs:.0f} s")


if __name__ == "__main__":
    main()
