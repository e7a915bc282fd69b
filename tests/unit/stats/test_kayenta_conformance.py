"""Conformance of ``kayenta_classify`` with Kayenta's own classifier test vectors.

The vectors are the project's own copy, ``tests/fixtures/kayenta/`` (with their README naming
the upstream source and licence). A missing file is a failure, not a skip: a silently skipped
conformance suite proves nothing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from canaryd.stats.kayenta import (
    cles,
    kayenta_classify,
    mean_ratio,
    wilcoxon_shift_interval,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def _vectors_path() -> Path:
    return REPO_ROOT / "tests" / "fixtures" / "kayenta" / "classifier_vectors.json"


def _load_vectors() -> list[dict[str, Any]]:
    path = _vectors_path()
    if not path.is_file():
        return []
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return data


VECTORS = _load_vectors()


def test_fixture_present_with_all_33_vectors() -> None:
    path = _vectors_path()
    assert path.is_file(), f"Kayenta conformance vectors not found at {path}"
    assert len(VECTORS) == 33


def _classify(case: dict[str, Any]) -> Any:
    est = case["effect_size_thresholds"]
    crit = case["critical_thresholds"]
    return kayenta_classify(
        case["experiment"],
        case["control"],
        tolerance=case["tolerance"],
        confidence=case["confidence"],
        effect_size_thresholds=None if est is None else (est[0], est[1]),
        critical_thresholds=None if crit is None else (crit[0], crit[1]),
        measure=case["measure"],
        direction=case["direction"],
        nan_strategy=case["nan_strategy"],
        critical_metric=case["critical_metric"],
    )


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_classifier_vector(case: dict[str, Any]) -> None:
    result = _classify(case)
    assert result.classification == case["expected"], result.reason


def test_every_vector_passes_in_one_go() -> None:
    # Guards against the parametrized test silently collecting nothing.
    assert len(VECTORS) == 33
    failures = [c["name"] for c in VECTORS if _classify(c).classification != c["expected"]]
    assert failures == []


def test_published_interval_and_estimate() -> None:
    r = wilcoxon_shift_interval([10, 20, 30, 40], [1, 2, 3, 4], 0.95)
    assert r.lower == pytest.approx(6.0, abs=1e-9)
    assert r.upper == pytest.approx(39.0, abs=1e-9)
    assert r.estimate == pytest.approx(22.5, abs=1e-9)
    full = kayenta_classify([10, 20, 30, 40], [1, 2, 3, 4], confidence=0.95)
    assert (full.lower, full.upper, full.estimate) == (r.lower, r.upper, r.estimate)


def test_z_quantile_at_098() -> None:
    assert float(stats.norm.ppf(0.01)) == pytest.approx(-2.326348, abs=1e-6)


def test_estimate_and_p_value_on_lightly_tied_data() -> None:
    # The estimate lies inside the interval, near the median of the pairwise differences
    # (Hodges-Lehmann); the p-value is the tie-corrected normal approximation with continuity
    # correction, recomputed here by hand (1.06 and 1.29 each occur twice).
    x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
    y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]
    r = wilcoxon_shift_interval(x, y, 0.95)
    diffs = sorted(a - b for a in x for b in y)
    assert r.lower < r.estimate < r.upper
    assert abs(r.estimate - diffs[len(diffs) // 2]) < 0.1

    n, m = len(x), len(y)
    w = float(sum(stats.rankdata(x + y)[:n])) - n * (n + 1) / 2 - n * m / 2
    ties = [c for c in Counter(x + y).values() if c > 1]
    tie_term = sum(c**3 - c for c in ties) / ((n + m) * (n + m - 1))
    sigma = math.sqrt(n * m / 12 * ((n + m + 1) - tie_term))
    z = (w - math.copysign(0.5, w)) / sigma
    assert r.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)


def test_effect_sizes() -> None:
    assert cles([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == 0.5
    assert cles([1, 2], [3, 4]) == 1.0
    assert cles([3, 4], [1, 2]) == 0.0
    assert mean_ratio([1, 1], [2, 2]) == 2.0
    assert math.isnan(mean_ratio([0, 0], [2, 2]))
    assert math.isnan(mean_ratio([1, 1], [0, 0]))


def test_nan_strategies() -> None:
    nan = math.nan
    removed = kayenta_classify([nan, nan], [1.0, 2.0], nan_strategy="remove")
    assert removed.classification == "Nodata"
    replaced = kayenta_classify([nan, nan], [0.0, 0.0], nan_strategy="replace")
    assert replaced.classification == "Pass"  # all zeros on both sides after replacement


def test_rejects_unknown_options() -> None:
    with pytest.raises(ValueError):
        kayenta_classify([1.0], [2.0], measure="median")
    with pytest.raises(ValueError):
        kayenta_classify([1.0], [2.0], direction="up")
    with pytest.raises(ValueError):
        kayenta_classify([1.0], [2.0], nan_strategy="ignore")
