"""The state document does not grow with the rollout's age: a 24-hour rollout stays small.

A ConfigMap holds at most 1 MiB. The document is driven through a whole day of one-minute
windows by the real controller (every metric kind of the default policy, plus the omnibus
latency test), and its encoded size is compared at 1 hour and at 24 hours.
"""

from __future__ import annotations

import json
import math

import numpy as np

from canaryd.controller import RolloutController
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.loader import load_policies_text
from canaryd.state.document import Fingerprint, StateDoc

BOUNDS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, math.inf)
POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: day}
spec:
  target: {namespace: models, inferenceService: day}
  steps: {weights: [5, 10, 20, 30, 40, 50], minDwell: 6h, minCanaryRequests: 1000000}
  promotion: {maxDuration: 2d}
  analysis:
    interval: 60s
    metrics:
      - {name: errors, kind: errors}
      - {name: latency, kind: latency, quantiles: [0.5, 0.9, 0.99], omnibus: true}
"""


SHARES = np.random.default_rng(1).dirichlet(np.full(len(BOUNDS), 4.0))


def counts(rng: np.random.Generator, n: int) -> VersionCounts:
    """One version's interval: the same latency distribution for both (an A/A rollout)."""
    shares = SHARES
    hist = np.cumsum(rng.multinomial(n, shares)).astype(float)
    return VersionCounts(float(n), float(rng.binomial(n, 0.01)), BOUNDS, tuple(hist.tolist()))


def test_a_day_long_rollout_document_stays_far_below_a_configmap() -> None:
    policy = load_policies_text(POLICY, "day.yaml")[0].policy
    ctrl = RolloutController(policy)
    rng = np.random.default_rng(7)
    _, state = ctrl.step(ctrl.new_state("s", "c"), 0.0)
    sizes = {}
    for k in range(1, 24 * 60 + 1):
        obs = Observation(60.0 * (k - 1), 60.0 * k, counts(rng, 6000), counts(rng, 600))
        decision, state = ctrl.step(state, 60.0 * k, obs)
        assert decision.action.value in ("hold", "set_weight")
        if k in (60, 24 * 60):
            doc = StateDoc(
                state=state,
                policy=policy.name,
                fingerprint=Fingerprint.of(policy),
                target_uid="0" * 36,
                window_end=60.0 * k,
                seq=len(state.history),
            )
            text = json.dumps(doc.to_dict(), sort_keys=True, separators=(",", ":"))
            sizes[k] = len(text.encode())
            # Exact round trip: the same document, and judges restored from it that hold
            # bit-identical evidence (live judges keep their grids packed; a loaded document
            # reads them back as float lists, which the judges accept alike).
            restored = StateDoc.from_dict(json.loads(text))
            assert restored.to_dict() == doc.to_dict()
            again = RolloutController(policy)
            again._sync(restored.state)
            assert again._panel.state() == state.judges
    assert state.intervals == 24 * 60
    assert sizes[24 * 60] < 64 * 1024  # far below 1 MiB
    assert sizes[24 * 60] <= sizes[60] + 2048  # a day adds at most a few weight changes
    print(f"state document: {sizes[60]} bytes after 1 h, {sizes[24 * 60]} bytes after 24 h")
