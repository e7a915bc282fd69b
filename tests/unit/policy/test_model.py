"""Defaults and derived values that policies/README.md documents."""

from __future__ import annotations

import pytest

from canaryd.policy.loader import load_policies_text
from canaryd.policy.model import CanaryPolicy, Steps

from .support import BASE, variant

MINIMAL = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: m}
spec:
  target: {namespace: models, inferenceService: m}
"""


def _load(text: str) -> CanaryPolicy:
    (lp,) = load_policies_text(text, "p.yaml")
    return lp.policy


def test_defaults_are_the_documented_safe_ones() -> None:
    spec = _load(MINIMAL).spec
    assert spec.target.component == "predictor"
    assert spec.router.type == "kserve"
    assert spec.router.istio is None
    assert (spec.steps.step_weight, spec.steps.max_weight) == (5, 50)
    assert spec.steps.min_dwell == 300.0
    assert spec.steps.min_canary_requests == 100
    a = spec.analysis
    assert (a.interval, a.alpha) == (60.0, 0.01)
    assert [(m.name, m.kind, m.judge, m.critical) for m in a.metrics] == [
        ("errors", "errors", "sequential", True),
        ("latency", "latency", "sequential", True),
    ]
    assert [m.tolerance for m in a.metrics] == [0.2, 0.1]
    assert a.metrics[1].quantiles == [0.5, 0.99]
    assert a.source.preset == "istio"
    assert a.source.error_codes == "5.."
    assert (spec.no_data.timeout, spec.no_data.action) == (600.0, "pause")
    assert spec.on_failure == "rollback"
    p = spec.promotion
    assert (p.criterion, p.max_duration, p.on_insufficient_evidence) == (
        "afterSteps",
        86400.0,
        "hold",
    )
    assert p.min_detectable_effect == {}
    assert spec.window is None
    assert spec.notifications.webhooks == []
    assert p.confirm is None


def test_alpha_is_split_by_metric_weight() -> None:
    text = variant("        kind: errors\n", "        kind: errors\n        weight: 3\n")
    a = _load(text).spec.analysis
    assert a.alpha_for(a.metrics[0]) == pytest.approx(0.0075)
    assert a.alpha_for(a.metrics[1]) == pytest.approx(0.0025)


def test_custom_metric_tolerance_defaults_to_zero() -> None:
    text = variant(
        "      - name: latency\n",
        "      - name: gpu\n        kind: custom\n        judge: ks\n        query: q\n"
        "      - name: latency\n",
    )
    assert _load(text).spec.analysis.metrics[1].tolerance == 0.0


def test_resolved_fills_step_defaults() -> None:
    steps = Steps.model_validate(
        {"weights": [{"weight": 5, "minDwell": "2m"}, 20], "minDwell": "5m", "minCanaryRequests": 7}
    )
    assert [(s.weight, s.min_dwell, s.min_canary_requests) for s in steps.resolved()] == [
        (5, 120.0, 7),
        (20, 300.0, 7),
    ]


def test_resolved_step_weight_ends_at_max_weight() -> None:
    steps = Steps.model_validate({"stepWeight": 20, "maxWeight": 50})
    assert [s.weight for s in steps.resolved()] == [20, 40, 50]


def test_base_is_valid() -> None:
    assert _load(BASE).name == "demo"
