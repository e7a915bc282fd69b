"""Wall time of the closed-loop simulator: 1,000 two-hour rollouts at 10 s ticks.

Run: ``.venv/bin/python benchmarks/bench_simulator.py [--runs N] [--profile]``. Prints a Markdown
table (scenario, runs, wall seconds, outcomes). Target: <= 60 s per scenario on a 2-core machine.
``--profile`` prints cProfile's top functions by cumulative and internal time for the first
scenario.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path

from canaryd.simulation.defaults import default_policy
from canaryd.simulation.engine import simulate
from canaryd.simulation.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = (
    "simulations/healthy.yaml",
    "simulations/error-regression.yaml",
    # Every run pauses (no data for 15 min) and keeps running to the end: the full two hours
    # of traffic and a controller step per interval for all 1,000 runs, the worst case.
    "simulations/prometheus-outage.yaml",
)
TARGET_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    policy = default_policy()
    rows = []
    for i, rel in enumerate(SCENARIOS):
        sc, base = load_scenario(ROOT / rel)
        prof = cProfile.Profile() if args.profile and i == 0 else None
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        res = simulate(sc, policy, base, runs=args.runs, seed=args.seed)
        if prof is not None:
            prof.disable()
        wall = time.perf_counter() - t0
        outcomes = ", ".join(f"{k} {v}" for k, v in res.outcomes.items() if v)
        rows.append((rel, args.runs, wall, outcomes))
        if prof is not None:
            for key in ("cumulative", "tottime"):
                s = io.StringIO()
                pstats.Stats(prof, stream=s).sort_stats(key).print_stats(25)
                print(f"--- cProfile, {rel}, sorted by {key} ---")
                print(s.getvalue())
    print(f"| scenario | runs | wall (s) | target <= {TARGET_S:g} s | outcomes |")
    print("|---|---|---|---|---|")
    for rel, runs, wall, outcomes in rows:
        ok = "met" if wall <= TARGET_S else "MISSED"
        print(f"| {rel} | {runs} | {wall:.1f} | {ok} | {outcomes} |")


if __name__ == "__main__":
    main()
