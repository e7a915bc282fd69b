"""The MetricSource protocol: per-interval counts for stable and canary, batched across rollouts.

A metric source answers one question per analysis tick: "for each of these rollouts, how many
requests, errors and latency-bucket hits did the stable and the canary revision have over
``[start_s, end_s)``?". It answers for many rollouts at once so that a real backend
(Prometheus) can serve 1,000 rollouts with a handful of queries.

Contract every implementation keeps:

- ``fetch`` never raises for a data problem. A backend that is down, slow, returns NaN, an empty
  result, a counter reset or a partial histogram yields ``Observation(no_data_reason=...)`` for
  the rollouts concerned. The controller treats that as *inconclusive*, never as a pass.
- Every key of the requests appears in the answer exactly once.
- Returned observations are already ``validated()``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from canaryd.observation import Observation
from canaryd.policy.model import CanaryPolicy, Source


@dataclass(frozen=True)
class FetchRequest:
    """What to fetch for one rollout.

    ``key`` is an opaque, hashable rollout id (for example ``"ns/name"``) under which the answer
    is returned. Revision names come from the InferenceService status: stable is
    ``latestRolledoutRevision``, canary is ``latestReadyRevision``.

    ``custom_metrics`` holds ``(metric name, PromQL template)`` pairs for ``kind: custom``
    metrics; their values land in ``VersionCounts.values[name]``.

    ``need_latency``: when true (the default) a missing or partial latency histogram makes the
    whole observation no-data; set it false for policies without a latency metric so that a
    source without histograms still yields error counts.

    ``shadow``: the rollout is in its shadow phase, so the canary receives mirrored copies;
    a source that can tell them apart (the istio preset) reports how many of the canary's
    requests and errors were mirrored (``VersionCounts.mirrored_requests``/``_errors``).
    """

    key: Hashable
    namespace: str
    stable_revision: str
    canary_revision: str
    source: Source = field(default_factory=Source)
    custom_metrics: tuple[tuple[str, str], ...] = ()
    need_latency: bool = True
    shadow: bool = False


class MetricSource(Protocol):
    """Per-interval counts for many rollouts at once (see the module docstring)."""

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        """Observations over ``[start_s, end_s)`` for every request, keyed by ``request.key``."""
        ...


def fetch_one(
    source: MetricSource, request: FetchRequest, start_s: float, end_s: float
) -> Observation:
    """Convenience: fetch a single rollout's observation."""
    return source.fetch([request], start_s, end_s)[request.key]


def fetch_request_for(
    policy: CanaryPolicy,
    key: Hashable,
    stable_revision: str,
    canary_revision: str,
    namespace: str | None = None,
    *,
    shadow: bool = False,
) -> FetchRequest:
    """Build the FetchRequest a policy implies (source, custom metric templates, latency need).

    ``shadow``: the rollout is in its shadow phase (``RolloutState.in_shadow``)."""
    metrics = policy.spec.analysis.metrics
    return FetchRequest(
        key=key,
        namespace=namespace if namespace is not None else policy.spec.target.namespace,
        stable_revision=stable_revision,
        canary_revision=canary_revision,
        source=policy.spec.analysis.source,
        custom_metrics=tuple(
            (m.name, m.query) for m in metrics if m.kind == "custom" and m.query is not None
        ),
        need_latency=any(m.kind == "latency" for m in metrics),
        shadow=shadow,
    )
