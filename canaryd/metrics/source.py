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
from dataclasses import dataclass, field, replace
from typing import Protocol

from canaryd.observation import Observation, Signal
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
    The ML-aware metrics add (all empty by default):

    - ``histograms``: the named histograms (``Signal``) the LLM metrics read (vllm preset); like
      the latency histogram, a missing or partial one makes the observation no-data;
    - ``finish_reasons``: names of ``finish-reason`` metrics; each gets the requests by
      ``finished_reason`` in ``VersionCounts.categories[name]``;
    - ``categorical``: ``(metric name, PromQL template, category label)``; counts by category in
      ``VersionCounts.categories[name]`` (a version without series has no counts: ``{}``);
    - ``quality``: ``(metric name, correct template, labelled template)``; the label counts in
      ``VersionCounts.labels[name]`` (a version without series has none labelled: ``(0, 0)``).
    """

    key: Hashable
    namespace: str
    stable_revision: str
    canary_revision: str
    source: Source = field(default_factory=Source)
    custom_metrics: tuple[tuple[str, str], ...] = ()
    need_latency: bool = True
    shadow: bool = False
    histograms: tuple[Signal, ...] = ()
    finish_reasons: tuple[str, ...] = ()
    categorical: tuple[tuple[str, str, str], ...] = ()
    quality: tuple[tuple[str, str, str], ...] = ()
    stable_only: bool = False
    """Only stable's counts are wanted (its history before the canary started, see
    ``history_request``): ``canary_revision`` is stable's too, and so is the answer's canary."""

    @property
    def templates(self) -> dict[str, str]:
        """Every PromQL template of this request, keyed ``<kind>:<metric name>`` (custom,
        categorical, correct, labelled): rendered per chunk for one namespace."""
        out = {f"custom:{name}": t for name, t in self.custom_metrics}
        out.update({f"categorical:{name}": t for name, t, _ in self.categorical})
        for name, correct, labelled in self.quality:
            out[f"correct:{name}"] = correct
            out[f"labelled:{name}"] = labelled
        return out


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
    signals: list[Signal] = []
    for m in metrics:
        for sig in SIGNALS_OF_KIND.get(m.kind, ()):
            if sig not in signals:
                signals.append(sig)
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
        histograms=tuple(sorted(signals)),
        finish_reasons=tuple(m.name for m in metrics if m.kind == "finish-reason"),
        categorical=tuple(
            (m.name, m.query, m.category_label)
            for m in metrics
            if m.kind == "categorical" and m.query is not None and m.category_label is not None
        ),
        quality=tuple(
            (m.name, m.correct_query, m.labelled_query)
            for m in metrics
            if m.kind == "quality" and m.correct_query is not None and m.labelled_query is not None
        ),
    )


SIGNALS_OF_KIND: dict[str, tuple[Signal, ...]] = {
    "ttft": ("ttft",),
    "inter-token": ("inter_token",),
    "output-length": ("generation_tokens", "prompt_tokens", "inter_token"),
}
"""The named histograms each LLM kind reads (output-length also reports, descriptively, the
per-token latency and the prompt lengths)."""


def history_request(r: FetchRequest) -> FetchRequest:
    """``r`` narrowed to stable's own counts, for its history before the canary started.

    The canary had no traffic then, so only stable is asked for (under both names: the source
    applies its usual checks and answers stable's counts as both versions). The requests,
    errors, latency and LLM histograms stay; custom, categorical and quality metrics and the
    shadow split go, since no judge learns from their history.
    """
    return replace(
        r,
        canary_revision=r.stable_revision,
        stable_only=True,
        shadow=False,
        custom_metrics=(),
        finish_reasons=(),
        categorical=(),
        quality=(),
    )
