"""Micro-benchmarks of the rate-ratio engine (pytest-benchmark).

Run: ``.venv/bin/pytest benchmarks -q --benchmark-only``. Targets (DESIGN.md / analysis README):
one ``RateRatioBatch.update`` with rows=1 at grid 201 <= 50 us.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from canaryd.observation import VersionCounts
from canaryd.stats.ratio import GRID_POINTS, RateRatioBatch
from canaryd.stats.sequential import SequentialErrorsJudge


def test_update_one_row(benchmark: Any) -> None:
    batch = RateRatioBatch(1, 1.0)
    assert batch.grid.log_rho.shape[0] == GRID_POINTS == 201
    benchmark(batch.update, 1140.0, 6.0, 60.0, 1.0)
    assert np.isfinite(batch.max_log_e).all()


def test_errors_judge_update_and_verdict(benchmark: Any) -> None:
    judge = SequentialErrorsJudge("errors", alpha=0.01, tolerance=0.2)
    stable = VersionCounts(requests=1140.0, errors=6.0)
    canary = VersionCounts(requests=60.0, errors=1.0)

    def step() -> object:
        judge.update(stable, canary)
        return judge.verdict()

    v = benchmark(step)
    assert v.metric == "errors"


def test_update_10000_rows(benchmark: Any) -> None:
    rows = 10_000
    rng = np.random.default_rng(0)
    n = rng.poisson(1200, rows).astype(float)
    n_c = rng.binomial(n.astype(int), 0.3).astype(float)
    n_s = n - n_c
    x_s = rng.binomial(n_s.astype(int), 0.01).astype(float)
    x_c = rng.binomial(n_c.astype(int), 0.01).astype(float)
    batch = RateRatioBatch(rows, 1.0)
    benchmark(batch.update, n_s, x_s, n_c, x_c)
    assert batch.rows == rows
