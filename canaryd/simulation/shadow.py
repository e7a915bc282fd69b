"""The shadow phase in the simulator: mirrored canary requests, which no user depends on.

While a run is in its shadow phase (``RolloutState.in_shadow``) its canary weight is 0, and a
copy of ``steps.shadow.mirrorPercent`` % of *all* requests is sent to the canary: each request
is mirrored independently (a binomial share of the tick's requests), fails independently at the
canary's error rate, and takes a latency from the canary's distribution. Every original request
is served by stable as usual, so stable's counts are those of the whole traffic.

The copies are counted in the canary's ``VersionCounts`` (they are what the judges see) and,
separately, as ``mirrored_requests``/``mirrored_errors``: the controller counts them as shadow
traffic, never as user impact. Policies without a shadow phase draw nothing here, so their
random streams, and results, are exactly those of a simulator without shadow support.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from canaryd.controller import RolloutState
from canaryd.policy.model import CanaryPolicy

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def mirror_fractions(policy: CanaryPolicy, states: Sequence[RolloutState]) -> FloatArray | None:
    """Per run, the share of requests mirrored to the canary now; None without a shadow phase."""
    if policy.spec.steps.shadow is None:
        return None
    share = policy.spec.steps.mirror_percent() / 100.0
    return np.array([share if s.in_shadow else 0.0 for s in states])


def draw_mirrored(
    rng: np.random.Generator, requests: IntArray, fractions: FloatArray, canary_error_rate: float
) -> tuple[IntArray, IntArray]:
    """Mirrored copies of this tick's ``requests`` per run, and how many of them failed."""
    copies = rng.binomial(requests, fractions)
    failed = rng.binomial(copies, canary_error_rate)
    return copies, failed
