"""The ML studies in ``analysis/`` at reduced size: their targets, asserted with margins.

Seeded, so reproducible; the margins are wide against the full-size results in
analysis/results/calibration_ml.md and power_ml.md (measured rates there: A/A pooled well under
0.1 %, every effect detected in 100 % of rollouts at 1.5-2.5x its floor).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ANALYSIS = Path(__file__).resolve().parents[3] / "analysis"
sys.path.insert(0, str(ANALYSIS))

import calibration_ml  # noqa: E402
import power_ml  # noqa: E402


def test_aa_false_rollbacks_of_the_ml_judges_stay_below_alpha() -> None:
    cells = calibration_ml.run_cells(
        200, horizon=60, llm_rps=(8.0,), clf_rps=(100.0,), per_token=False
    )
    k, n, rate, upper = calibration_ml.pooled(cells)
    assert n >= 5000
    judges = {x.judge for x in cells}
    assert {
        "ttft",
        "inter-token",
        "output-length",
        "categorical",
        "finish-reason",
        "quality",
    } <= judges
    assert upper <= calibration_ml.ALPHA, (k, n, rate, upper)
    boundary = [x for x in cells if x.judge == "categorical at the boundary"]
    assert boundary and all(x.rate <= 0.03 for x in boundary), boundary


def test_per_token_counts_judged_as_independent_inflate_false_rollbacks() -> None:
    (cell, *_) = calibration_ml.per_token_cells(100, horizon=60)
    assert not cell.pooled
    assert cell.rate > 0.3, cell  # measured 82-92 %: tokens of one request are not independent


@pytest.mark.parametrize(
    "i", range(len(power_ml.effects())), ids=lambda i: power_ml.effects()[i].name
)
def test_each_failure_is_detected_near_its_floor(i: int) -> None:
    e = power_ml.effects()[i]
    row = power_ml.measure(e, 300, seed=31 + i)
    assert row.detection >= 0.99, (e.name, row.detection)
    assert row.detected_by_steps >= 0.97 * row.rollouts, (e.name, row.detected_by_steps)
    assert 1.0 <= row.ratio <= 3.5, (e.name, row.ratio)
