"""``canaryd --help`` and ``validate`` import none of the heavy libraries (fast start).

The time itself is measured by benchmarks/bench_startup.py; this test guards the cause: a
module-level import of scipy, numpy, pandas, matplotlib, the kubernetes client or the
Prometheus client anywhere on the CLI's import path costs seconds before any output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"scipy", "numpy", "pandas", "matplotlib", "kubernetes", "prometheus_api_client"}
RUN = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('MODULES', *sorted(sys.modules), file=sys.stderr))\n"
    "from canaryd.cli import main\n"
    "sys.argv[0] = 'canaryd'\n"
    "main()\n"
)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["validate", str(ROOT / "policies" / "llm-kserve.yaml")],
        ["validate", str(ROOT / "policies")],
        ["schema"],
        ["analyze", "--help"],
        ["simulate", "--help"],
        ["replay", "--help"],
        ["status", "--help"],
        ["run", "--help"],
    ],
    ids=lambda a: " ".join(Path(x).name if "/" in x else x for x in a),
)
def test_the_cli_starts_without_heavy_imports(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-P", "-c", RUN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("MODULES "))
    loaded = {m.split(".")[0] for m in line.split()[1:]}
    assert loaded & HEAVY == set(), f"imported at start-up: {sorted(loaded & HEAVY)}"
