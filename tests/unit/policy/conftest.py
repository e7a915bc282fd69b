"""Shared helpers for the policy tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from canaryd.policy.model import Steps

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "policies"

# A small valid policy; tests derive bad inputs from it by replacing one piece of text, so the
# line and column of every expected error can be read off this block (line 1 = apiVersion).
BASE = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata:
  name: demo
spec:
  target:
    namespace: models
    inferenceService: demo
  router:
    type: kserve
  steps:
    weights: [10, 25, 50]
    minDwell: 5m
  analysis:
    interval: 1m
    alpha: 0.01
    metrics:
      - name: errors
        kind: errors
        judge: sequential
      - name: latency
        kind: latency
        judge: sequential
  promotion:
    criterion: afterSteps
"""


def variant(old: str, new: str, base: str = BASE) -> str:
    """BASE with the one occurrence of ``old`` replaced by ``new``."""
    assert base.count(old) == 1, f"{old!r} must occur exactly once"
    return base.replace(old, new)


def _resolved_is_broken() -> bool:
    # Steps.resolved() builds Step(min_dwell=<float seconds>), and the Duration validator
    # refuses bare numbers, so it raises for every policy (see the report of the policy-examples
    # change). 'canaryd validate' calls it through lint() for every valid policy and crashes.
    try:
        Steps(weights=[10]).resolved()
    except ValidationError:
        return True
    return False


RESOLVED_BROKEN = _resolved_is_broken()

needs_resolved = pytest.mark.xfail(
    RESOLVED_BROKEN,
    reason="model.py bug: Steps.resolved() re-validates float min_dwell as a duration string",
    raises=ValidationError,
    strict=True,
)
"""For tests that lint a valid policy. They run normally as soon as Steps.resolved() works."""
