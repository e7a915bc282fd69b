"""Start-up of the CLI: ``canaryd --help`` and ``canaryd validate`` on one file (target < 0.5 s).

Run: ``.venv/bin/python benchmarks/bench_startup.py [--repeat N] [--compare DIR]``.

Each command runs ``--repeat`` times in a fresh interpreter (``python -c 'from canaryd.cli
import main; main()' ARGS``, what the ``canaryd`` script does; ``-P``: the current directory is not on the path). The table gives the median wall
time and the median CPU time (user + system of the child: on a shared machine wall time also
counts waiting for a core), and, from one more run with ``python -X importtime``, the
cumulative import time of canaryd.cli and the time spent importing each heavy library (``-``
when it is not imported at all). ``--compare DIR`` adds the same figures for another checkout (``PYTHONPATH=DIR``), e.g.
the commit before lazy imports, for a before/after table.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "canaryd --help": ["--help"],
    "canaryd validate (one file)": ["validate", str(ROOT / "policies" / "llm-kserve.yaml")],
}
HEAVY = (
    "scipy",
    "numpy",
    "pandas",
    "matplotlib",
    "kubernetes",
    "prometheus_api_client",
    "pydantic",
)
TARGET_S = 0.5
RUN = "import sys; from canaryd.cli import main; sys.argv[0] = 'canaryd'; main()"


def _env(src: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def timed(args: list[str], src: Path | None) -> tuple[float, float]:
    """(wall, cpu) seconds of one run in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-P", "-c", RUN, *args],
        env=_env(src),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def import_times(args: list[str], src: Path | None) -> dict[str, float]:
    """Import time (s): canaryd.cli's cumulative, and per heavy package the sum of its modules'
    own times (``pkg`` and every ``pkg.*``, wherever in the tree they were imported)."""
    done = subprocess.run(
        [sys.executable, "-P", "-X", "importtime", "-c", RUN, *args],
        env=_env(src),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    out: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, cumulative, name = (p.strip() for p in line[len("import time:") :].split("|"))
        if not (own.isdigit() and cumulative.isdigit()):
            continue
        if name == "canaryd.cli":
            out[name] = int(cumulative) / 1e6
        top = name.split(".")[0]
        if top in HEAVY:
            out[top] = out.get(top, 0.0) + int(own) / 1e6
    return out


def measure(src: Path | None, repeat: int) -> dict[str, tuple[float, float, dict[str, float]]]:
    got = {}
    for label, args in COMMANDS.items():
        runs = [timed(args, src) for _ in range(repeat)]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        got[label] = (wall, cpu, import_times(args, src))
    return got


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--compare", type=Path, default=None, help="Another checkout (before).")
    args = ap.parse_args()
    columns: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.compare is not None:
        columns.insert(0, (f"{args.compare}", args.compare.resolve()))
    results = {name: measure(src, args.repeat) for name, src in columns}
    print(f"Median of {args.repeat} runs each, times in ms; target < {TARGET_S * 1000:.0f} ms.\n")
    heads = ["command", "tree", "wall", "cpu", "import canaryd.cli", *HEAVY]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for label in COMMANDS:
        for name, _ in columns:
            wall, cpu, imp = results[name][label]
            cells = [label, name, _ms(wall), _ms(cpu), _ms(imp.get("canaryd.cli"))]
            cells += [_ms(imp.get(m)) for m in HEAVY]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
