"""PrometheusSource: batched PromQL over prometheus-api-client, faults turned into no-data.

One tick (``fetch``) groups the rollouts that share a query configuration (preset, version
label, error codes, latency unit, custom templates; for the custom preset also the namespace),
renders **one query per metric kind** (requests, errors, buckets, resets, each custom metric)
per group, splitting a group into chunks only when a query would exceed ``max_query_bytes``
(URL-encoded), and demultiplexes the answers by ``(namespace, revision)``.

Transport: ``PrometheusConnect.custom_query`` for GET; for POST (the default) the form is sent
in the request *body* through the same requests session, because the client library puts even
a POST's parameters in the URL, and URL length is what limits a batched query. With POST and the
default 128 KiB limit, 1,000 rollouts with KServe-style revision names need 1-2 queries per
kind.

Faults and what they become (never an exception, never a pass):

- connection refused / reset, timeouts, HTTP 5xx and 429: retried with exponential backoff
  (``RetryPolicy``); the whole tick is bounded by ``min(budget_s, budget_fraction * window)``,
  after which the rollouts not yet answered are no-data ("query budget exhausted");
- HTTP 4xx (a bad query) is not retried: no-data with Prometheus' message;
- NaN / Inf values, a missing stable or canary series, an empty window, a histogram without a
  ``+Inf`` bucket, a stable/canary bucket layout mismatch (a partial bucket set), and counter
  resets (detected with ``resets()``, see ``presets``) give no-data for that rollout only.

Counts are rounded to integers by default (``round_counts``): ``increase()`` extrapolates to
the window edges, so it returns fractional counts when scrapes do not align with the window,
while requests are whole. Rounding is monotone, so cumulative buckets stay cumulative.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from canaryd.errors import MetricsError
from canaryd.metrics.presets import (
    PresetOptions,
    QuerySet,
    build_queries,
    promql_string,
    regex_quote,
    render_template,
    revision_for,
    version_label_of,
)
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation, VersionCounts

log = logging.getLogger(__name__)


class QueryError(MetricsError):
    """One query failed; ``retryable`` says whether trying again may help."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries. Worst case per tick: ``min(budget_s, budget_fraction * window)``."""

    attempts: int = 3
    timeout_s: float = 5.0
    """Per-request connect and read timeout (requests' read timeout is per socket read)."""
    backoff_s: float = 0.2
    backoff_max_s: float = 2.0
    budget_s: float = 20.0
    budget_fraction: float = 0.5
    """Of the window: a tick never runs longer than this share of the analysis interval."""


@dataclass(frozen=True)
class PrometheusConfig:
    """How to reach Prometheus and how to batch."""

    url: str
    method: Literal["GET", "POST"] = "POST"
    max_query_bytes: int | None = None
    """URL-encoded query size limit per request; default 128 KiB for POST, 6 KiB for GET."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    round_counts: bool = True
    require_same_layout: bool = True
    """Built-in presets: stable and canary must have the same ``le`` set (else a bucket is
    missing, a partial set). The custom preset allows different layouts."""
    presets: PresetOptions = field(default_factory=PresetOptions)
    headers: dict[str, str] | None = None
    verify_tls: bool = True

    def query_limit(self) -> int:
        if self.max_query_bytes is not None:
            return self.max_query_bytes
        return 128 * 1024 if self.method == "POST" else 6 * 1024


class Transport(Protocol):
    """Runs one instant query; raises QueryError."""

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class HttpTransport:
    """prometheus-api-client based transport (GET via ``custom_query``, POST with a form body)."""

    def __init__(self, config: PrometheusConfig) -> None:
        self._config = config
        self._session = requests.Session()
        self._session.verify = config.verify_tls
        # Retries are ours (bounded by the tick budget), never urllib3's.
        no_retry = Retry(total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False)
        self._client = PrometheusConnect(
            url=config.url.rstrip("/"),
            headers=config.headers,
            disable_ssl=not config.verify_tls,
            retry=no_retry,
            session=self._session,
            method=config.method,
        )

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
        ts = f"{time_s:.3f}"
        try:
            if self._config.method == "GET":
                try:
                    result = self._client.custom_query(
                        promql, params={"time": ts}, timeout=timeout_s
                    )
                except PrometheusApiClientException as exc:
                    raise _status_failure(str(exc)) from None
                return _check_result(result)
            resp = self._session.post(
                f"{self._client.url}/api/v1/query",
                data={"query": promql, "time": ts},
                headers=self._config.headers,
                timeout=timeout_s,
            )
        except requests.Timeout:
            raise QueryError(f"timeout after {timeout_s:.3g}s", retryable=True) from None
        except requests.ConnectionError as exc:
            raise QueryError(_connection_reason(exc), retryable=True) from None
        except requests.RequestException as exc:
            raise QueryError(f"request failed: {type(exc).__name__}", retryable=True) from None
        return _parse_response(resp)

    def close(self) -> None:
        self._session.close()


def _connection_reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "ECONNREFUSED" in text:
        return "connection refused"
    if "Name or service not known" in text or "Failed to resolve" in text:
        return "host not found"
    if "reset by peer" in text or "RemoteDisconnected" in text:
        return "connection reset"
    return f"connection failed ({type(exc).__name__})"


def _status_failure(text: str) -> QueryError:
    """Classify prometheus-api-client's 'HTTP Status Code NNN (...)' message."""
    code = 0
    parts = text.split()
    if len(parts) >= 4 and parts[:3] == ["HTTP", "Status", "Code"] and parts[3].isdigit():
        code = int(parts[3])
    return QueryError(
        f"HTTP {code or '?'} from Prometheus: {text[:200]}",
        retryable=code == 0 or code >= 500 or code == 429,
    )


def _parse_response(resp: requests.Response) -> list[dict[str, Any]]:
    status = resp.status_code
    try:
        body = resp.json()
    except ValueError:
        body = None
    if status != 200:
        msg = body.get("error", "") if isinstance(body, dict) else resp.text[:200]
        raise QueryError(
            f"HTTP {status} from Prometheus: {msg}".rstrip(": "),
            retryable=status >= 500 or status == 429,
        )
    if not isinstance(body, dict) or body.get("status") != "success":
        raise QueryError("malformed Prometheus response", retryable=True)
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise QueryError("Prometheus answered with a non-vector result", retryable=False)
    return _check_result(data.get("result"))


def _check_result(result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, list):
        raise QueryError("malformed Prometheus result", retryable=True)
    return result


@dataclass
class FetchStats:
    """What the last ``fetch`` cost: queries per metric kind, failures, wall time."""

    queries: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    max_query_bytes: int = 0


_Key = tuple[str | None, str]
"""(namespace or None for the custom preset, revision)."""


@dataclass
class _Answers:
    """Demultiplexed answers of one chunk."""

    requests: dict[_Key, float] = field(default_factory=dict)
    errors: dict[_Key, float] | None = None
    buckets: dict[_Key, dict[float, float]] | None = None
    resets: dict[_Key, float] | None = None
    custom: dict[str, dict[_Key, float]] = field(default_factory=dict)
    failed: str | None = None
    custom_failed: dict[str, str] = field(default_factory=dict)


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
                out[r.key] = _no_data(start_s, end_s, f"empty window [{start_s}, {end_s})")
            return out
        retry = self.config.retry
        deadline = t0 + min(retry.budget_s, retry.budget_fraction * window)

        valid: list[FetchRequest] = []
        for r in requests:
            why = _request_problem(r)
            if why is not None:
                out[r.key] = _no_data(start_s, end_s, why)
            else:
                valid.append(r)

        for chunk in self._chunks(valid, window):
            answers = self._run_chunk(chunk, window, end_s, deadline, stats)
            for r in chunk:
                out[r.key] = self._observation(r, answers, start_s, end_s)
        stats.seconds = self._clock() - t0
        return out

    def fetch_one(self, request: FetchRequest, start_s: float, end_s: float) -> Observation:
        return self.fetch([request], start_s, end_s)[request.key]

    # -- batching -----------------------------------------------------------------------

    def _chunks(self, reqs: Sequence[FetchRequest], window: float) -> list[list[FetchRequest]]:
        """Group by query configuration, then split groups so every query fits the size limit."""
        groups: dict[tuple[Any, ...], list[FetchRequest]] = defaultdict(list)
        for r in reqs:
            s = r.source
            ns_key = r.namespace if s.preset == "custom" else None
            key = (
                s.preset,
                version_label_of(s),
                s.error_codes,
                s.latency_unit,
                s.queries,
                ns_key,
                tuple(sorted(r.custom_metrics)),
                r.namespace if r.custom_metrics else None,
            )
            groups[key].append(r)
        limit = self.config.query_limit()
        chunks: list[list[FetchRequest]] = []
        for group in groups.values():
            try:
                size = _SizeModel(self, group[0], window)
            except MetricsError:
                chunks.append(list(group))  # every query fails to render; reported per rollout
                continue
            current: list[FetchRequest] = []
            revs: set[str] = set()
            nss: set[str] = set()
            rev_len = ns_len = 0
            for r in group:
                new_revs = {r.stable_revision, r.canary_revision} - revs
                add_rev = sum(_alt_len(x) for x in new_revs)
                add_ns = 0 if r.namespace in nss else _alt_len(r.namespace)
                if current and size.bytes(rev_len + add_rev, ns_len + add_ns) > limit:
                    chunks.append(current)
                    current, revs, nss, rev_len, ns_len = [], set(), set(), 0, 0
                    new_revs = {r.stable_revision, r.canary_revision}
                    add_rev = sum(_alt_len(x) for x in new_revs)
                    add_ns = _alt_len(r.namespace)
                current.append(r)
                revs |= new_revs
                nss.add(r.namespace)
                rev_len += add_rev
                ns_len += add_ns
            if current:
                chunks.append(current)
        return chunks

    def _render(
        self, chunk: Sequence[FetchRequest], window: float
    ) -> tuple[QuerySet, dict[str, str]]:
        source = chunk[0].source
        namespaces = sorted({r.namespace for r in chunk})
        revisions = sorted({rev for r in chunk for rev in (r.stable_revision, r.canary_revision)})
        qs = build_queries(source, namespaces, revisions, window, self.config.presets)
        custom = {
            name: render_template(
                tmpl,
                revisions=revisions,
                namespace=chunk[0].namespace,
                window_s=window,
                version_label=qs.version_label,
            )
            for name, tmpl in chunk[0].custom_metrics
        }
        return qs, custom

    # -- querying -----------------------------------------------------------------------

    def _run_chunk(
        self,
        chunk: Sequence[FetchRequest],
        window: float,
        end_s: float,
        deadline: float,
        stats: FetchStats,
    ) -> _Answers:
        ans = _Answers()
        try:
            qs, custom = self._render(chunk, window)
        except MetricsError as exc:
            ans.failed = f"cannot build queries: {exc}"
            return ans
        wanted = {r.stable_revision for r in chunk} | {r.canary_revision for r in chunk}

        def run(kind: str, promql: str) -> list[dict[str, Any]]:
            stats.queries[kind] += 1
            stats.max_query_bytes = max(stats.max_query_bytes, len(urllib.parse.quote_plus(promql)))
            try:
                return self._query_with_retries(promql, end_s, deadline)
            except QueryError:
                stats.failures[kind] += 1
                raise

        try:
            ans.requests = _scalars(run("requests", qs.requests), qs, wanted, "requests")
            if qs.errors is not None:
                ans.errors = _scalars(run("errors", qs.errors), qs, wanted, "errors")
            if qs.buckets is not None and any(r.need_latency for r in chunk):
                ans.buckets = _buckets(run("buckets", qs.buckets), qs, wanted)
            if qs.resets is not None:
                ans.resets = _scalars(run("resets", qs.resets), qs, wanted, "resets")
        except QueryError as exc:
            ans.failed = f"prometheus: {exc.reason}"
            return ans
        for name, promql in custom.items():
            try:
                rows = run(f"custom:{name}", promql)
                ans.custom[name] = _scalars(rows, qs, wanted, name, use_namespace=False)
            except QueryError as exc:
                ans.custom_failed[name] = f"prometheus: {exc.reason}"
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
            raise QueryError("query budget exhausted", retryable=False)
        n = min(attempt + 1, max(1, retry.attempts))
        raise QueryError(
            f"{last.reason} ({n} attempt{'s' if n > 1 else ''})", retryable=last.retryable
        )

    # -- demultiplexing -----------------------------------------------------------------

    def _observation(
        self, r: FetchRequest, ans: _Answers, start_s: float, end_s: float
    ) -> Observation:
        if ans.failed is not None:
            return _no_data(start_s, end_s, ans.failed)
        ns: str | None = None if r.source.preset == "custom" else r.namespace
        revs = {"stable": r.stable_revision, "canary": r.canary_revision}
        keys = {v: (ns, rev) for v, rev in revs.items()}
        missing = [v for v, k in keys.items() if k not in ans.requests]
        if len(missing) == 2:
            return _no_data(
                start_s,
                end_s,
                f"no data in the window for stable {r.stable_revision!r} or canary "
                f"{r.canary_revision!r}",
            )
        if missing:
            v = missing[0]
            return _no_data(start_s, end_s, f"no {v} series (revision {revs[v]!r})")
        if ans.resets is not None:
            for v, k in keys.items():
                n = ans.resets.get(k, 0.0)
                if math.isnan(n) or n > 0:
                    return _no_data(
                        start_s, end_s, f"counter reset in the window ({v} revision {revs[v]!r})"
                    )
        extra: dict[str, float] = {}
        counts: dict[str, VersionCounts] = {}
        layouts: dict[str, tuple[float, ...]] = {}
        for v, k in keys.items():
            req = ans.requests[k]
            if ans.errors is None:
                err = 0.0
                extra["errors_measured"] = 0.0
            elif k in ans.errors:
                err = ans.errors[k]
            else:
                return _no_data(start_s, end_s, f"no {v} error series (revision {revs[v]!r})")
            bounds: tuple[float, ...] = ()
            cum: tuple[float, ...] = ()
            if r.need_latency:
                if ans.buckets is None:
                    return _no_data(start_s, end_s, "no latency histogram query for this source")
                hist = ans.buckets.get(k)
                if not hist:
                    return _no_data(
                        start_s, end_s, f"no {v} latency histogram (revision {revs[v]!r})"
                    )
                if math.inf not in hist:
                    return _no_data(
                        start_s, end_s, f"partial bucket set: {v} histogram has no +Inf bucket"
                    )
                bounds = tuple(sorted(hist))
                cum = tuple(hist[b] for b in bounds)
                layouts[v] = bounds
            values: dict[str, float] = {}
            for name, _ in r.custom_metrics:
                if name in ans.custom_failed:
                    return _no_data(
                        start_s, end_s, f"custom metric {name!r}: {ans.custom_failed[name]}"
                    )
                got = ans.custom.get(name, {}).get((None, revs[v]))
                if got is None:
                    return _no_data(start_s, end_s, f"custom metric {name!r}: no {v} value")
                if not math.isfinite(got):
                    return _no_data(start_s, end_s, f"custom metric {name!r}: {v} value is {got}")
                values[name] = got
            nums = (req, err, *cum)
            if any(not math.isfinite(x) for x in nums):
                return _no_data(start_s, end_s, f"NaN or Inf in the {v} counts")
            if self.config.round_counts:
                req, err = float(round(req)), float(round(err))
                cum = tuple(float(round(c)) for c in cum)
            counts[v] = VersionCounts(req, err, bounds, cum, values)
        if (
            self.config.require_same_layout
            and r.source.preset != "custom"
            and len(layouts) == 2
            and layouts["stable"] != layouts["canary"]
        ):
            only_s = sorted(set(layouts["stable"]) - set(layouts["canary"]))
            only_c = sorted(set(layouts["canary"]) - set(layouts["stable"]))
            return _no_data(
                start_s,
                end_s,
                "partial bucket set: stable and canary histograms differ "
                f"(only stable: {_les(only_s)}; only canary: {_les(only_c)})",
            )
        return Observation(
            start_s, end_s, stable=counts["stable"], canary=counts["canary"], extra=extra
        ).validated()


_SENTINEL_REV = "canarydsentinelrevision"
_SENTINEL_NS = "canarydsentinelnamespace"


class _SizeModel:
    """Upper bound of the encoded size of a chunk's largest query, without rendering it.

    Every query is affine in the lengths of the revision and namespace alternations: render
    once with sentinel names, count how often each sentinel occurs, and the rest is constant.
    """

    def __init__(self, source: PrometheusSource, r: FetchRequest, window: float) -> None:
        probe = FetchRequest(
            key=None,
            namespace=_SENTINEL_NS,
            stable_revision=_SENTINEL_REV,
            canary_revision=_SENTINEL_REV,
            source=r.source,
            custom_metrics=r.custom_metrics,
        )
        qs, custom = source._render([probe], window)
        self._terms: list[tuple[int, int, int]] = []
        for text in [*qs.kinds().values(), *custom.values()]:
            enc = urllib.parse.quote_plus(text)
            m = enc.count(_SENTINEL_REV)
            n = enc.count(_SENTINEL_NS)
            base = len(enc) - m * len(_SENTINEL_REV) - n * len(_SENTINEL_NS)
            self._terms.append((base, m, n))

    def bytes(self, rev_alt_len: int, ns_alt_len: int) -> int:
        return max(base + m * rev_alt_len + n * ns_alt_len for base, m, n in self._terms)


def _alt_len(name: str) -> int:
    """Encoded length of one escaped name in an alternation, with its ``|`` (``%7C``)."""
    return len(urllib.parse.quote_plus(promql_string(regex_quote(name))[1:-1])) + 3


def _les(values: Sequence[float]) -> str:
    return ", ".join(f"le={v:g}" for v in values) or "-"


def _no_data(start_s: float, end_s: float, reason: str) -> Observation:
    return Observation(start_s, end_s, no_data_reason=reason)


def _request_problem(r: FetchRequest) -> str | None:
    if not r.stable_revision or not r.canary_revision:
        return "stable or canary revision is not known yet"
    if r.stable_revision == r.canary_revision:
        return f"stable and canary are the same revision ({r.stable_revision!r})"
    try:
        version_label_of(r.source)
    except MetricsError as exc:
        return str(exc)
    return None


def _label_key(
    labels: dict[str, str], qs: QuerySet, wanted: set[str], use_namespace: bool = True
) -> _Key | None:
    value = labels.get(qs.version_label)
    if value is None:
        return None
    rev = revision_for(value, wanted, qs.suffixes)
    if rev is None:
        return None
    ns = labels.get(qs.namespace_label) if (use_namespace and qs.namespace_label) else None
    if use_namespace and qs.namespace_label and ns is None:
        return None
    return (ns, rev)


def _value(row: dict[str, Any]) -> float:
    try:
        return float(row["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return math.nan


def _scalars(
    rows: list[dict[str, Any]],
    qs: QuerySet,
    wanted: set[str],
    kind: str,
    use_namespace: bool = True,
) -> dict[_Key, float]:
    """Sum values per (namespace, revision); label spellings of one revision add up."""
    out: dict[_Key, float] = {}
    for row in rows:
        key = _label_key(row.get("metric", {}), qs, wanted, use_namespace)
        if key is None:
            continue
        out[key] = out.get(key, 0.0) + _value(row)
    return out


def _buckets(
    rows: list[dict[str, Any]], qs: QuerySet, wanted: set[str]
) -> dict[_Key, dict[float, float]]:
    """Cumulative buckets per (namespace, revision), bounds converted to milliseconds."""
    out: dict[_Key, dict[float, float]] = defaultdict(dict)
    for row in rows:
        labels = row.get("metric", {})
        key = _label_key(labels, qs, wanted)
        if key is None:
            continue
        try:
            le = float(labels["le"])
        except (KeyError, ValueError):
            continue
        bound = le if math.isinf(le) else _ms(le, qs.latency_scale_ms)
        hist = out[key]
        hist[bound] = hist.get(bound, 0.0) + _value(row)
    return dict(out)


def _ms(le: float, scale: float) -> float:
    """``le * scale`` without binary noise (0.3 s is 300 ms, not 300.00000000000006)."""
    return le if scale == 1.0 else float(f"{le * scale:.12g}")
