"""Shared helpers for the policy tests (a plain module, not a conftest: tests import it)."""

from __future__ import annotations

from pathlib import Path

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


BOMB = (
    "\n".join(
        ['lol0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        + [f"lol{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    )
    + "\n"
)
"""The "billion laughs": 650 bytes, ten levels of nine aliases of the level before (9^10 nodes
once expanded)."""
