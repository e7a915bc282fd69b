"""Per-call cost of the engine, without pytest: ``.venv/bin/python benchmarks/bench_update.py``.

The same three cases as ``test_bench_engine.py`` (best of 5 repeats, microseconds per call).
"""

from __future__ import annotations

import timeit

import numpy as np

from canaryd.observation import VersionCounts
from canaryd.stats.ratio import RateRatioBatch
from canaryd.stats.sequential import SequentialErrorsJudge


def main() -> None:
    one = RateRatioBatch(1, 1.0)
    judge = SequentialErrorsJudge("errors", alpha=0.01, tolerance=0.2)
    st, ca = VersionCounts(1140.0, 6.0), VersionCounts(60.0, 1.0)
    rng = np.random.default_rng(0)
    rows = 10_000
    n = rng.poisson(1200, rows).astype(float)
    n_c = rng.binomial(n.astype(int), 0.3).astype(float)
    n_s = n - n_c
    x_s = rng.binomial(n_s.astype(int), 0.01).astype(float)
    x_c = rng.binomial(n_c.astype(int), 0.01).astype(float)
    big = RateRatioBatch(rows, 1.0)

    def judge_step() -> None:
        judge.update(st, ca)
        judge.verdict()

    cases = [
        (
            "RateRatioBatch.update, rows=1, grid 201",
            lambda: one.update(1140.0, 6.0, 60.0, 1.0),
            2000,
            50.0,
        ),
        ("SequentialErrorsJudge.update + verdict", judge_step, 1000, None),
        ("RateRatioBatch.update, rows=10,000", lambda: big.update(n_s, x_s, n_c, x_c), 10, None),
    ]
    print("| case | us per call | target |\n|---|---|---|")
    for name, fn, number, target in cases:
        best = min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6
        t = "" if target is None else f"<= {target:g} us ({'met' if best <= target else 'MISSED'})"
        print(f"| {name} | {best:,.1f} | {t} |")


if __name__ == "__main__":
    main()
