"""PrometheusSource: batched PromQL to one Prometheus, faults turned into no-data.

The pipeline of one ``fetch``: ``batching`` plans the chunks, ``presets`` renders their queries,
``transport`` runs them (with retries bounded by the fetch's budget, here), and ``demux`` turns
the answers into one Observation per rollout. ``pool`` spreads a tick's rollouts over the
Prometheus servers their policies read, one ``PrometheusSource`` each, concurrently.

One fetch groups the rollouts that share a query configuration (preset, version label, error
codes, latency unit, custom templates; for the custom preset also the namespace), renders
**one query per metric kind** (requests, errors, buckets, resets, each named histogram and the
finish reasons of the vllm preset, each custom, categorical and quality template; for istio
rollouts in a shadow phase also live_requests and live_errors) per group, splitting a group
into chunks only when a query would exceed ``max_query_bytes`` (URL-encoded), and
demultiplexes the answers by ``(namespace, revision)``, and by pod when the source has a pod
label (``presets``: the requests, errors and buckets queries keep it in ``by (...)``, so the
per-pod counts cost no extra query, only a larger answer; an answer over
``max_response_bytes``, 64 MiB, splits its chunk in two, at most twice: 4 parts). With POST (the default: the form goes
in the request body, since URL length is what limits a batched query) and the default 128 KiB
limit, 1,000 rollouts with KServe-style revision names need 1-2 queries per kind.

The time bound: every request has a TOTAL deadline (``RetryPolicy.timeout_s``, enforced by
``canaryd.outbound`` even against a server that drips its answer a byte at a time), and the
whole fetch is bounded by ``min(budget_s, budget_fraction * window)``, after which the rollouts
not yet answered are no-data ("query budget exhausted"). So one fetch never takes longer than
its budget plus a few milliseconds.

Faults and what they become (never an exception, never a pass):

- connection refused / reset, timeouts, HTTP 5xx and 429: retried with exponential backoff
  within the budget;
- HTTP 401/403 ("unauthorized: wrong username or password"), TLS failures ("TLS: unknown
  CA"), a redirect to another origin, HTTP 4xx (a bad query): not retried; no-data with the
  classified reason, which reaches the decision's reason, the log and the Event;
- an answer over ``max_response_bytes`` (``too-large``): not retried as such, but its chunk is
  split in two and each half fetched, at most ``MAX_ANSWER_SPLITS`` deep; then no-data;
- NaN / Inf values, a missing stable or canary series, an empty window, a histogram without a
  ``+Inf`` bucket, a stable/canary bucket layout mismatch (a partial bucket set), and counter
  resets between a window's edge samples (see ``presets``) give no-data for that rollout only.

A window is counted as the delta between its edge samples (``presets``: the last sample at or
before each edge), so built-in presets return whole counts. ``round_counts`` (the default)
still rounds, for custom templates that use ``increase()``, which extrapolates to fractions.
Rounding is monotone, so cumulative buckets stay cumulative.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from canaryd.errors import MetricsError
from canaryd.metrics.batching import plan_chunks
from canaryd.metrics.connection import PrometheusConfig, RetryPolicy
from canaryd.metrics.demux import (
    Answers,
    PodAnswers,
    buckets,
    buckets_by_pod,
    categorised,
    no_data,
    observation_for,
    request_problem,
    scalars,
    scalars_by_pod,
    series_buckets,
)
from canaryd.metrics.presets import (
    FINISH_REASON_LABEL,
    SIGNAL_SCALE,
    QuerySet,
    build_queries,
    render_template,
)
from canaryd.metrics.source import FetchRequest
from canaryd.metrics.transport import HttpTransport, QueryError, Transport
from canaryd.observation import Observation
from canaryd.outbound import FaultKind

__all__ = ["FetchStats", "PrometheusConfig", "PrometheusSource", "QueryError", "RetryPolicy"]

log = logging.getLogger(__name__)

MAX_ANSWER_SPLITS = 2
"""How many times a chunk whose answer is over ``max_response_bytes`` is halved (per-pod
answers grow with the pods, which the batching cannot know in advance): up to 4 parts."""


@dataclass
class FetchStats:
    """What the last ``fetch`` cost: queries per metric kind, failures, wall time."""

    queries: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    """Failed queries by ``QueryError.kind`` (auth, tls, timeout, connection, http, ...)."""
    last_fault: str | None = None
    """The reason of the last failed query, classified (for a log line or a status page)."""
    seconds: float = 0.0
    max_query_bytes: int = 0
    splits: int = 0
    """Chunks split in two because an answer exceeded ``max_response_bytes``."""


class PrometheusSource:
    """A MetricSource backed by Prometheus (see the module docstring)."""

    def __init__(
        self,
        config: PrometheusConfig | str,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = PrometheusConfig(url=config) if isinstance(config, str) else config
        self._transport = transport if transport is not None else HttpTransport(self.config)
        self._clock = clock
        self._sleep = sleep
        self.last_stats = FetchStats()

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ---------------------------------------------------------------------

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        """Observations over ``[start_s, end_s)`` for every request (never raises for faults)."""
        t0 = self._clock()
        stats = FetchStats()
        self.last_stats = stats
        out: dict[Hashable, Observation] = {}
        window = end_s - start_s
        if not (math.isfinite(window) and window > 0):
            for r in requests:
                out[r.key] = no_data(start_s, end_s, f"empty window [{start_s}, {end_s})")
            return out
        retry = self.config.retry
        deadline = t0 + min(retry.budget_s, retry.budget_fraction * window)

        valid: list[FetchRequest] = []
        for r in requests:
            why = request_problem(r)
            if why is not None:
                out[r.key] = no_data(start_s, end_s, why)
            else:
                valid.append(r)

        for chunk in plan_chunks(valid, window, self.config.query_limit(), self._render):
            self._fetch_chunk(chunk, start_s, end_s, deadline, stats, out, MAX_ANSWER_SPLITS)
        stats.seconds = self._clock() - t0
        return out

    def _fetch_chunk(
        self,
        chunk: Sequence[FetchRequest],
        start_s: float,
        end_s: float,
        deadline: float,
        stats: FetchStats,
        out: dict[Hashable, Observation],
        splits: int,
    ) -> None:
        """One chunk's observations into ``out``; an answer over the size limit splits the
        chunk in two and fetches each half, at most ``splits`` times deep."""
        answers = self._run_chunk(chunk, end_s - start_s, end_s, deadline, stats)
        if answers.too_large and len(chunk) > 1 and splits > 0:
            stats.splits += 1
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                self._fetch_chunk(part, start_s, end_s, deadline, stats, out, splits - 1)
            return
        for r in chunk:
            out[r.key] = observation_for(
                r,
                answers,
                start_s,
                end_s,
                round_counts=self.config.round_counts,
                require_same_layout=self.config.require_same_layout,
            )

    def fetch_one(self, request: FetchRequest, start_s: float, end_s: float) -> Observation:
        return self.fetch([request], start_s, end_s)[request.key]

    def probe(self, at_s: float) -> QueryError | None:
        """Whether Prometheus answers at all: one trivial query (``vector(1)``) at ``at_s``, with
        the retry policy and its ``budget_s``. None when it answered, else the last failure
        (``retryable`` false for an answer that says the URL or the credentials are wrong)."""
        deadline = self._clock() + self.config.retry.budget_s
        try:
            self._query_with_retries("vector(1)", at_s, deadline)
        except QueryError as exc:
            return exc
        return None

    # -- batching -----------------------------------------------------------------------

    def _render(
        self, chunk: Sequence[FetchRequest], window: float
    ) -> tuple[QuerySet, dict[str, str]]:
        first = chunk[0]
        namespaces = sorted({r.namespace for r in chunk})
        revisions = sorted({rev for r in chunk for rev in (r.stable_revision, r.canary_revision)})
        qs = build_queries(
            first.source,
            namespaces,
            revisions,
            window,
            self.config.presets,
            histograms=first.histograms,
            finish_reasons=bool(first.finish_reasons),
        )
        templates = {
            key: render_template(
                tmpl,
                revisions=revisions,
                namespace=first.namespace,
                window_s=window,
                version_label=qs.version_label,
            )
            for key, tmpl in first.templates.items()
        }
        return qs, templates

    # -- querying -----------------------------------------------------------------------

    def _run_chunk(
        self,
        chunk: Sequence[FetchRequest],
        window: float,
        end_s: float,
        deadline: float,
        stats: FetchStats,
    ) -> Answers:
        ans = Answers()
        try:
            qs, templates = self._render(chunk, window)
        except MetricsError as exc:
            ans.failed = f"cannot build queries: {exc}"
            return ans
        wanted = {r.stable_revision for r in chunk} | {r.canary_revision for r in chunk}

        def run(kind: str, promql: str) -> list[dict[str, Any]]:
            stats.queries[kind] += 1
            stats.max_query_bytes = max(stats.max_query_bytes, len(urllib.parse.quote_plus(promql)))
            try:
                return self._query_with_retries(promql, end_s, deadline)
            except QueryError as exc:
                stats.failures[kind] += 1
                stats.faults[exc.kind] += 1
                stats.last_fault = exc.reason
                raise

        # With a pod label the same three queries answer per pod: the totals are their sums.
        pods = None if qs.pod_label is None else PodAnswers()
        try:
            rows = run("requests", qs.requests)
            ans.requests = scalars(rows, qs, wanted, "requests")
            if pods is not None:
                pods.requests = scalars_by_pod(rows, qs, wanted)
            if qs.errors is not None:
                rows = run("errors", qs.errors)
                ans.errors = scalars(rows, qs, wanted, "errors")
                if pods is not None:
                    pods.errors = scalars_by_pod(rows, qs, wanted)
            if qs.buckets is not None and any(r.need_latency for r in chunk):
                rows = run("buckets", qs.buckets)
                ans.buckets = buckets(rows, qs, wanted)
                if pods is not None:
                    pods.buckets = buckets_by_pod(rows, qs, wanted)
            ans.pods = pods
            if qs.resets is not None:
                ans.resets = scalars(run("resets", qs.resets), qs, wanted, "resets")
            # Source-reported counts tell mirrored copies apart; only shadow rollouts need them.
            shadow = any(r.shadow for r in chunk)
            if shadow and qs.live_requests is not None and qs.live_errors is not None:
                live = run("live_requests", qs.live_requests)
                ans.live_requests = scalars(live, qs, wanted, "live_requests")
                live = run("live_errors", qs.live_errors)
                ans.live_errors = scalars(live, qs, wanted, "live_errors")
            for signal, promql in qs.histograms.items():
                rows = run(f"histogram:{signal}", promql)
                ans.histograms[signal] = series_buckets(rows, qs, wanted, SIGNAL_SCALE[signal])
            if qs.finish_reasons is not None:
                rows = run("finish_reasons", qs.finish_reasons)
                ans.finish_reasons = categorised(rows, qs, wanted, FINISH_REASON_LABEL)
        except QueryError as exc:
            ans.failed = f"prometheus: {exc.reason}"
            ans.too_large = exc.kind == FaultKind.TOO_LARGE.value
            return ans
        except MetricsError as exc:
            ans.failed = f"prometheus answer: {exc}"
            return ans
        category_label = {name: label for name, _, label in chunk[0].categorical}
        for key, promql in templates.items():
            kind, name = key.split(":", 1)
            try:
                rows = run(key, promql)
                if kind == "custom":
                    ans.custom[name] = scalars(rows, qs, wanted, name, use_namespace=False)
                elif kind == "categorical":
                    ans.categories[name] = categorised(
                        rows, qs, wanted, category_label[name], use_namespace=False
                    )
                elif kind == "correct":
                    ans.correct[name] = scalars(rows, qs, wanted, key, use_namespace=False)
                else:
                    ans.labelled[name] = scalars(rows, qs, wanted, key, use_namespace=False)
            except QueryError as exc:
                ans.template_failed[key] = f"prometheus: {exc.reason}"
            except MetricsError as exc:
                ans.template_failed[key] = str(exc)
        return ans

    def _query_with_retries(
        self, promql: str, end_s: float, deadline: float
    ) -> list[dict[str, Any]]:
        retry = self.config.retry
        last: QueryError | None = None
        for attempt in range(max(1, retry.attempts)):
            remaining = deadline - self._clock()
            if remaining <= 0.01:
                break
            try:
                return self._transport.query(promql, end_s, min(retry.timeout_s, remaining))
            except QueryError as exc:
                last = exc
                log.debug("prometheus query attempt %d failed: %s", attempt + 1, exc.reason)
                if not exc.retryable or attempt + 1 >= retry.attempts:
                    break
                pause = min(retry.backoff_max_s, retry.backoff_s * 2**attempt)
                if self._clock() + pause >= deadline:
                    break
                self._sleep(pause)
        if last is None:
            raise QueryError("query budget exhausted", retryable=False, kind="timeout")
        n = min(attempt + 1, max(1, retry.attempts))
        raise QueryError(
            f"{last.reason} ({n} attempt{'s' if n > 1 else ''})",
            retryable=last.retryable,
            kind=last.kind,
        )
