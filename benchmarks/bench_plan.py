"""``canaryd plan`` on the README's two samples, in a fresh interpreter (wall and CPU time).

Run: ``.venv/bin/python benchmarks/bench_plan.py [--repeat N]``.

Targets: a policy whose steps end in minutes plans interactively (< 5 s CPU); the edge policy's
3-day horizon at 0.2 rps, the costliest shipped case (its undecided runs are judged through
every 5-minute window of 3 days), within 60 s CPU. CPU time is user + system of the child: on a
shared machine wall time also counts waiting for a core.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = "import sys; from canaryd.cli import main; sys.argv[0] = 'canaryd'; main()"
CASES = {
    "gateway-api.yaml at 20 rps": (["policies/gateway-api.yaml", "--traffic", "20"], 5.0),
    "edge-low-traffic.yaml at 0.2 rps (--scenario low-traffic)": (
        [
            "policies/edge-low-traffic.yaml",
            "--traffic",
            "0.2",
            "--scenario",
            "simulations/low-traffic.yaml",
        ],
        60.0,
    ),
}


def timed(args: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one ``canaryd plan`` in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-P", "-c", RUN, "plan", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    opts = ap.parse_args()
    print("| case | wall (median) | CPU (median) | target (CPU) |")
    print("|---|---|---|---|")
    for name, (args, target) in CASES.items():
        runs = [timed(args) for _ in range(opts.repeat)]
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        verdict = "met" if cpu <= target else "NOT met"
        print(f"| {name} | {wall:.1f} s | {cpu:.1f} s | <= {target:g} s - {verdict} |")


if __name__ == "__main__":
    main()
