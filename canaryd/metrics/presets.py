"""PromQL per metric preset, with escaping that makes injection through a name impossible.

**How a window is counted.** A window ``[start, end)`` is the counter delta between the two
*edge samples* of each series: the last sample at or before ``end`` and the last sample at or
before ``start``. Every query is an instant query evaluated at ``end``::

    E = last_over_time(<counter>{<selector>}[<window + lookback>])         # last sample <= end
    S = last_over_time(<counter>{<selector>}[<lookback>] offset <window>) # last sample <= start
    sum by (<namespace label>, <version label>[, <pod label>][, le]) (E or -1 * S)   # tagged apart

- consecutive windows share their edge sample, so they partition the samples exactly: the sum
  of the windows' counts is the delta over their union, whatever the windows' phase against
  the scrapes, and a window never depends on when the caller evaluated it (a restarted daemon
  that continues from a stored edge counts what an uninterrupted one would);
- a series with no sample at or before ``start`` (within ``EDGE_LOOKBACK_S``, Prometheus'
  default lookback) is **new** and counts from 0: a pod that started inside the window, or an
  error series whose first error fell inside it (``increase()`` never counts a series' first
  sample, which is why live windows undercounted canary errors);
- a series whose last sample is older than ``start`` contributes nothing;
- no extrapolation: the counts are whole numbers, exact up to requests still in flight when
  a scrape ran at a window edge. The price is that a window's counts are those of the scrape
  interval nearest each edge: a window is shifted by less than one scrape interval against
  the wall clock, by the same amount at both ends, never biased. DESIGN-NOTES.md has the
  measured error of both methods.

Both ranges start at ``start - lookback``, so every series with a start edge has an end edge
and the sum of the ends minus the sum of the starts is the sum of the per-series deltas; each
query names its selector twice, as ``increase()`` queries did at most.

Counter resets: a series that dropped between its two edge samples makes the rollout no-data
("counter reset"): what a restarted process served before its first scrape is unknowable, and a
silent undercount is worse than one lost window. The fourth query counts the drops with
``resets()`` over the same two ranges (their difference is the drops whose later sample lies in
``(start, end]``), for every counter at once (``{__name__=~"..."}``).

One query covers every rollout of a batch: the selector matches all their revisions with one
regex alternation (``label=~"rev1|rev2|..."``) and the caller demultiplexes the answer by the
labels kept in ``by (...)``.

**Per-pod counts.** The requests, errors and buckets queries also keep the preset's *pod
label* (``POD_LABEL``, or the policy's ``podLabel``; ``""`` turns it off) in ``by (...)``, so
the same queries answer per pod and the caller fills ``VersionCounts.pods`` (the version's
totals are the sums over its pods). Every series has one fixed pod label value, so the per-pod
sums of edge deltas stay exact. The reset query and istio's source-reported (``live_*``)
queries keep their grouping: a reset is judged per version, and a source report's ``pod`` is
the *sending* pod. A series without the pod label still counts in the version's totals; its
version then reports no pods (``pods`` empty) rather than wrong ones. Where each preset's pod
label comes from:

- ``istio`` and ``kserve``/``vllm``: ``pod``, set by the ``kubernetes-pods`` scrape job's
  relabelling ``__meta_kubernetes_pod_name -> pod`` (Istio's ``samples/addons/prometheus.yaml``,
  the Prometheus community chart; prometheus-operator's PodMonitor sets ``pod`` too). The
  sidecar's ``istio_requests_total`` is scraped from the destination pod itself, so with
  ``reporter="destination"`` it is the serving pod. Older scrape configs write
  ``kubernetes_pod_name`` instead: set ``podLabel`` to it.
- ``knative``: ``pod_name``, a tag the queue-proxy puts on ``revision_app_request_count`` and
  ``revision_app_request_latencies`` itself (knative/docs ``docs/serving/metrics.md``), so it
  does not depend on the scrape's relabelling.
- ``custom``: off unless the policy sets ``podLabel``; the templates must then keep it in
  their ``by (...)``.

Presets (the defaults below are what the projects export out of the box):

``istio``
    ``istio_requests_total`` and ``istio_request_duration_milliseconds_bucket`` with
    ``reporter="destination"``; namespace label ``destination_workload_namespace``; version label
    ``destination_workload`` (or e.g. ``destination_version`` / ``destination_service_name``).
    Errors are ``response_code=~"<error_codes>"`` (default ``5..``).

    *Mirrored traffic*: a proxy that mirrors a request reports only the primary request
    (``reporter="source"``); the mirrored copy appears only at the canary's proxy
    (``reporter="destination"``). So for a rollout in its shadow phase (``FetchRequest.shadow``)
    two more queries, ``live_requests`` and ``live_errors``, count the source-reported requests
    and errors, and the canary's mirrored share is destination minus source. This needs the
    default ``istio_reporter="destination"``, and source proxies in the mesh (an ingress
    gateway or sidecars); traffic from outside the mesh has no source report and looks mirrored.

    *Revision mapping*: for a Knative-served (KServe Serverless) revision the Istio workload is
    the revision's Deployment, ``<revision>-deployment``, and its private Service is
    ``<revision>-private``. The selector therefore matches ``(?:<revisions>)(?:-deployment|-private)?``
    and a label value maps back to a revision by exact match first, then by stripping one of
    those suffixes. Series of one revision under several label spellings are summed.

``knative``
    queue-proxy ``revision_app_request_count`` and ``revision_app_request_latencies_bucket``
    (milliseconds); namespace label ``namespace_name``; version label ``revision_name``. Errors
    are ``response_code_class="5xx"`` when ``error_codes`` is the default ``5..``, otherwise
    ``response_code=~"<error_codes>"``.

``kserve``
    the model server's own histogram. kserve 0.21 (``kserve/metrics.py``) exports
    ``request_predict_seconds`` (seconds, prometheus_client's default buckets 5 ms .. 10 s) with
    the one label ``model_name``; the namespace and revision labels are the scrape's: the usual
    pod relabelling (``labelmap: __meta_kubernetes_pod_label_(.+)`` and
    ``__meta_kubernetes_namespace -> namespace``) gives ``namespace`` and, for a Knative
    revision's pod, ``serving_knative_dev_revision`` (the default version label). Requests are
    the histogram's ``_count``; a prediction that raises is still observed (prometheus_client's
    timer records on exit), so failed predictions are in ``_count`` and in the buckets, while a
    request refused before ``predict`` (bad input) is in neither. The server exports **no**
    error counter and no status code: errors come from a configurable counter with the
    histogram's labels (``kserve_errors_metric``, e.g. one the model's own code increments);
    without one, errors are **not measured**: every interval reports 0 errors and the
    observation says ``errors_measured=False`` so that a verdict on errors can say so.

``vllm``
    vLLM's own series (vLLM serving directly, or KServe's Hugging Face runtime with the vLLM
    backend, which registers them on the model server's ``/metrics``), names as in
    ``vllm/v1/metrics/loggers.py`` (DESIGN-NOTES.md cites version and lines): requests are
    ``vllm:request_success_total`` summed over ``finished_reason``, errors its
    ``finished_reason="error"`` series (a request-level internal error, always a 500), the
    latency histogram is ``vllm:e2e_request_latency_seconds``. Named histograms (``Signal``):
    ``ttft`` ``vllm:time_to_first_token_seconds``; ``inter_token``
    ``vllm:request_time_per_output_token_seconds`` (one observation per request, vLLM >= 0.11),
    else ``vllm:inter_token_latency_seconds`` or its old name ``vllm:time_per_output_token_seconds``
    (one per token; read so that a verdict can say why it does not judge them), each answer
    tagged by a ``canaryd_series`` label; ``generation_tokens`` / ``prompt_tokens``
    ``vllm:request_generation_tokens`` / ``vllm:request_prompt_tokens`` (bounds in tokens). Finish
    reasons are ``vllm:request_success_total`` by ``finished_reason``. vLLM labels its series
    ``model_name`` and ``engine`` only; the namespace label is ``namespace`` and the version label
    ``serving_knative_dev_revision``, both added by the scrape's usual pod relabelling (the
    ``serving.knative.dev/revision`` pod label under KServe Serverless), as for ``kserve``. ``model_name`` is the served model name, the same for both
    revisions of one InferenceService, so it cannot tell them apart.

``custom``
    the policy's ``queries`` templates (see ``render_template``), evaluated at the window end;
    they are opaque, so they keep whatever counting their author wrote (usually
    ``increase(x[{interval}])``) and have no reset detection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from canaryd.errors import MetricsError
from canaryd.observation import Signal
from canaryd.policy.model import Source

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_RE2_META = set("\\.+*?()|[]{}^$")

DEFAULT_VERSION_LABEL = {
    "istio": "destination_workload",
    "knative": "revision_name",
    "kserve": "serving_knative_dev_revision",
    "vllm": "serving_knative_dev_revision",
    "custom": "revision",
}
NAMESPACE_LABEL = {
    "istio": "destination_workload_namespace",
    "knative": "namespace_name",
    "kserve": "namespace",
    "vllm": "namespace",
}
POD_LABEL = {
    "istio": "pod",
    "knative": "pod_name",
    "kserve": "pod",
    "vllm": "pod",
    "custom": "",
}
"""The label that tells a version's pods apart, by preset (see the module docstring); "": none."""
DEFAULT_LATENCY_UNIT = {"istio": "ms", "knative": "ms", "kserve": "s", "vllm": "s", "custom": "ms"}
ISTIO_WORKLOAD_SUFFIXES = ("-deployment", "-private")
EDGE_LOOKBACK_S = 300.0
"""How far before a window's start its start-edge sample may lie (Prometheus' default lookback
delta): a series with no sample in ``[start - EDGE_LOOKBACK_S, start]`` is new in the window."""

VLLM_REQUESTS = "vllm:request_success_total"
VLLM_E2E = "vllm:e2e_request_latency_seconds"
VLLM_SERIES: dict[Signal, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "inter_token": (
        "vllm:request_time_per_output_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
    ),
    "generation_tokens": ("vllm:request_generation_tokens",),
    "prompt_tokens": ("vllm:request_prompt_tokens",),
}
"""The histograms behind each signal, most preferred first (see the module docstring)."""
VLLM_PER_TOKEN_SERIES = frozenset(
    {"vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"}
)
"""Histograms with one observation per generated token rather than per request."""
SIGNAL_SCALE: dict[Signal, float] = {
    "ttft": 1000.0,
    "inter_token": 1000.0,
    "generation_tokens": 1.0,
    "prompt_tokens": 1.0,
}
"""Multiply vLLM's ``le`` by this: seconds become milliseconds, tokens stay tokens."""
SERIES_LABEL = "canaryd_series"
"""Tags each answer of a signal query with the histogram it came from."""
FINISH_REASON_LABEL = "finished_reason"


def promql_string(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal (quotes included).

    Backslashes, double quotes and control characters are escaped, so the literal always ends
    at the closing quote this function writes, whatever ``value`` holds.
    """
    out: list[str] = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def regex_quote(value: str) -> str:
    """``value`` as an RE2 regex that matches exactly that text (Go's ``regexp.QuoteMeta``)."""
    return "".join("\\" + ch if ch in _RE2_META else ch for ch in value)


def regex_alternation(values: Sequence[str]) -> str:
    """A regex matching any of ``values`` literally (sorted, de-duplicated for stable queries)."""
    if not values:
        raise MetricsError("a regex alternation needs at least one value")
    return "|".join(regex_quote(v) for v in sorted(set(values)))


def check_label_name(name: str) -> str:
    """``name`` if it is a valid Prometheus label name, else MetricsError (it is interpolated)."""
    if not _LABEL_NAME.match(name):
        raise MetricsError(f"invalid Prometheus label name {name!r}")
    return name


def check_metric_name(name: str) -> str:
    """``name`` if it is a valid Prometheus metric name, else MetricsError."""
    if not _METRIC_NAME.match(name):
        raise MetricsError(f"invalid Prometheus metric name {name!r}")
    return name


def promql_duration(seconds: float) -> str:
    """A PromQL duration for ``seconds`` (``60s``, or ``1500ms`` for fractional seconds)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise MetricsError(f"window must be a positive duration, got {seconds!r}s")
    ms = round(seconds * 1000)
    if ms <= 0:
        raise MetricsError(f"window {seconds!r}s is shorter than a millisecond")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


@dataclass(frozen=True)
class PresetOptions:
    """Deployment-level settings of the presets that the policy does not carry."""

    istio_reporter: str = "destination"
    kserve_histogram: str = "request_predict_seconds"
    kserve_errors_metric: str | None = None
    """A counter of failed predictions with the same labels as the histogram; None: not measured."""


@dataclass(frozen=True)
class QuerySet:
    """The rendered queries of one batch and what is needed to read their answers.

    ``errors`` is None when errors are not measured (kserve without an errors counter),
    ``buckets`` is None when there is no histogram, ``resets`` None when resets are not
    detected (custom). ``namespace_label`` is None when the namespace is fixed in the query
    (custom), in which case answers are keyed by the version label alone.
    """

    preset: str
    version_label: str
    namespace_label: str | None
    requests: str
    errors: str | None
    buckets: str | None
    resets: str | None
    latency_scale_ms: float
    live_requests: str | None = None
    """istio: requests reported by the sending proxy, which never reports mirrored copies."""
    live_errors: str | None = None
    """istio: the same for errors."""
    """Multiply ``le`` by this to get milliseconds (1000 for a histogram in seconds)."""
    suffixes: tuple[str, ...] = ()
    """Label value = revision + one of these (istio); tried after an exact match."""
    histograms: dict[Signal, str] = field(default_factory=dict)
    """Named histograms (vllm), by signal; answers carry ``le`` and ``canaryd_series``."""
    finish_reasons: str | None = None
    """Requests by ``finished_reason`` (vllm), when a finish-reason metric needs them."""
    pod_label: str | None = None
    """The label the requests, errors and buckets answers are also grouped by (one answer per
    pod); None when they are not (see ``pod_label_of``)."""

    def kinds(self) -> dict[str, str]:
        """The queries by metric kind (requests, errors, buckets, resets, histogram:<signal>,
        finish_reasons), skipping absent ones."""
        out = {"requests": self.requests}
        for kind, q in (
            ("errors", self.errors),
            ("buckets", self.buckets),
            ("resets", self.resets),
            ("live_requests", self.live_requests),
            ("live_errors", self.live_errors),
            ("finish_reasons", self.finish_reasons),
        ):
            if q is not None:
                out[kind] = q
        for signal, q in self.histograms.items():
            out[f"histogram:{signal}"] = q
        return out


def version_label_of(source: Source) -> str:
    return check_label_name(source.version_label or DEFAULT_VERSION_LABEL[source.preset])


def pod_label_of(source: Source) -> str | None:
    """The pod label the source's queries group by: the policy's ``podLabel``, else the
    preset's (``POD_LABEL``); None when it is off (``podLabel: ""``, or custom by default).

    MetricsError when it is no valid label name or names a label the queries already use.
    """
    name = source.pod_label if source.pod_label is not None else POD_LABEL[source.preset]
    if not name:
        return None
    check_label_name(name)
    taken = {
        version_label_of(source),
        NAMESPACE_LABEL.get(source.preset),
        "le",
        FINISH_REASON_LABEL,
        SERIES_LABEL,
        "canaryd_edge",
    }
    if name in taken:
        raise MetricsError(
            f"podLabel {name!r} is a label the queries already use for something else "
            "(the version or namespace label, le, finished_reason or canaryd's own)"
        )
    return name


def latency_scale_ms(source: Source) -> float:
    unit = source.latency_unit or DEFAULT_LATENCY_UNIT[source.preset]
    return 1000.0 if unit == "s" else 1.0


def revision_for(label_value: str, wanted: set[str], suffixes: Sequence[str]) -> str | None:
    """Map a version-label value back to one of the ``wanted`` revisions (see module docstring)."""
    if label_value in wanted:
        return label_value
    for suffix in suffixes:
        if label_value.endswith(suffix) and label_value[: -len(suffix)] in wanted:
            return label_value[: -len(suffix)]
    return None


def build_queries(
    source: Source,
    namespaces: Sequence[str],
    revisions: Sequence[str],
    window_s: float,
    options: PresetOptions | None = None,
    histograms: Sequence[Signal] = (),
    finish_reasons: bool = False,
) -> QuerySet:
    """Render the queries that fetch ``revisions`` in ``namespaces`` over one window.

    For the custom preset exactly one namespace must be given (it is substituted into the
    templates); built-in presets match all namespaces with a regex and group by namespace.
    ``histograms`` and ``finish_reasons`` ask for vLLM's named histograms and its requests by
    finish reason (the vllm preset only; MetricsError elsewhere).
    """
    if (histograms or finish_reasons) and source.preset != "vllm":
        raise MetricsError(
            f"preset {source.preset!r} has no LLM series (ttft, inter-token, answer length, "
            "finish reasons): use preset vllm"
        )
    opts = options or PresetOptions()
    vl = version_label_of(source)
    pod = pod_label_of(source)
    window = promql_duration(window_s)
    scale = latency_scale_ms(source)
    if source.preset == "custom":
        if len(set(namespaces)) != 1:
            raise MetricsError("custom-preset queries are rendered for one namespace at a time")
        if source.queries is None:
            raise MetricsError("preset 'custom' needs queries.requests and queries.errors")
        ns = namespaces[0]

        def render(t: str) -> str:
            return render_template(
                t, revisions=revisions, namespace=ns, window_s=window_s, version_label=vl
            )

        q = source.queries
        return QuerySet(
            preset="custom",
            version_label=vl,
            namespace_label=None,
            requests=render(q.requests),
            errors=render(q.errors),
            buckets=None if q.latency_buckets is None else render(q.latency_buckets),
            resets=None,
            latency_scale_ms=scale,
            pod_label=pod,
        )

    nsl = NAMESPACE_LABEL[source.preset]
    ns_match = f"{nsl}=~{promql_string(regex_alternation(namespaces))}"
    rev_alt = regex_alternation(revisions)
    by = f"{nsl}, {vl}"
    # Requests, errors and buckets are also grouped by pod; resets and source reports are not.
    by_pod = by if pod is None else f"{by}, {pod}"
    suffixes: tuple[str, ...] = ()
    live: tuple[str, str] | None = None  # (selector, error selector) of the source reports

    if source.preset == "istio":
        suffixes = ISTIO_WORKLOAD_SUFFIXES
        sfx = "|".join(regex_quote(s) for s in suffixes)
        reporter = f"reporter={promql_string(opts.istio_reporter)}"
        sel = f"{reporter}, {ns_match}, {vl}=~{promql_string(f'(?:{rev_alt})(?:{sfx})?')}"
        req_metric, bucket_metric = (
            "istio_requests_total",
            "istio_request_duration_milliseconds_bucket",
        )
        err_sel = f"{sel}, response_code=~{promql_string(source.error_codes)}"
        err_metric: str | None = req_metric
        counters = [req_metric, bucket_metric]
        if opts.istio_reporter == "destination":
            src = sel.replace(reporter, f"reporter={promql_string('source')}", 1)
            live = (src, f"{src}, response_code=~{promql_string(source.error_codes)}")
    elif source.preset == "knative":
        sel = f"{ns_match}, {vl}=~{promql_string(rev_alt)}"
        req_metric = "revision_app_request_count"
        bucket_metric = "revision_app_request_latencies_bucket"
        if source.error_codes == "5..":
            err_sel = f'{sel}, response_code_class="5xx"'
        else:
            err_sel = f"{sel}, response_code=~{promql_string(source.error_codes)}"
        err_metric = req_metric
        counters = [req_metric, bucket_metric]
    elif source.preset == "vllm":
        sel = f"{ns_match}, {vl}=~{promql_string(rev_alt)}"
        req_metric, bucket_metric = VLLM_REQUESTS, f"{VLLM_E2E}_bucket"
        err_sel = f'{sel}, {FINISH_REASON_LABEL}="error"'
        err_metric = req_metric
        counters = [req_metric, bucket_metric] + [
            f"{name}_bucket" for signal in histograms for name in VLLM_SERIES[signal]
        ]
    else:  # kserve
        hist = check_metric_name(opts.kserve_histogram)
        sel = f"{ns_match}, {vl}=~{promql_string(rev_alt)}"
        req_metric, bucket_metric = f"{hist}_count", f"{hist}_bucket"
        errors_name = source.errors_metric or opts.kserve_errors_metric
        err_metric = None if errors_name is None else check_metric_name(errors_name)
        err_sel = sel
        # _count resets with its buckets (and shares every label with an errors counter,
        # which one resets() over both would clash on): the buckets stand for it.
        counters = [bucket_metric] + ([err_metric] if err_metric else [])

    span, lookback = promql_duration(window_s + EDGE_LOOKBACK_S), promql_duration(EDGE_LOOKBACK_S)

    def edge_delta(fn: str, series: str, by_labels: str) -> str:
        # Both ranges start at `start - lookback`: every series with a start edge also has an
        # end edge, so sum(end) - sum(start) is the per-series delta summed, and a series that
        # only the end range has is new (it counts from 0). One selector per edge.
        end = f"{fn}({series}[{span}])"
        start = f"-1 * {fn}({series}[{lookback}] offset {window})"
        return (
            f"sum by ({by_labels}) ("
            f'label_replace({end}, "canaryd_edge", "end", "", "") or '
            f'label_replace({start}, "canaryd_edge", "start", "", ""))'
        )

    def delta(metric: str, selector: str, by_labels: str) -> str:
        return edge_delta("last_over_time", f"{metric}{{{selector}}}", by_labels)

    requests_q = delta(req_metric, sel, by_pod)
    # A revision that never failed has no error series: no answer with a requests answer is 0.
    errors_q = None if err_metric is None else delta(err_metric, err_sel, by_pod)
    # resets() over the same two ranges: their difference counts the drops whose later sample
    # lies in (start, end], which includes the step from the start edge into the window.
    # One selector covers every counter (their label sets differ by `le`).
    if source.preset == "vllm":
        # vLLM's histograms share their `le` values and every other label: resets() drops the
        # metric name, so one selector over all of them would clash. Tag each counter.
        def tagged(c: str, edge: str, rng: str) -> str:
            inner = f'label_replace(resets({c}{{{sel}}}[{rng}]), "canaryd_counter", "{c}", "", "")'
            if edge == "start":
                inner = f"-1 * {inner}".replace(f"[{rng}])", f"[{rng}] offset {window})")
            return f'label_replace({inner}, "canaryd_edge", "{edge}", "", "")'

        resets_q = (
            f"sum by ({by}) ("
            + " or ".join(
                tagged(c, edge, rng)
                for c in counters
                for edge, rng in (("end", span), ("start", lookback))
            )
            + ")"
        )
    else:
        names = regex_alternation(counters)
        resets_q = edge_delta("resets", f"{{__name__=~{promql_string(names)}, {sel}}}", by)
    hist_qs: dict[Signal, str] = {}
    for signal in histograms:
        hist_qs[signal] = " or ".join(
            f"label_replace({delta(f'{name}_bucket', sel, f'{by}, le')}, "
            f'"{SERIES_LABEL}", "{name}", "", "")'
            for name in VLLM_SERIES[signal]
        )
    return QuerySet(
        preset=source.preset,
        version_label=vl,
        namespace_label=nsl,
        requests=requests_q,
        errors=errors_q,
        buckets=delta(bucket_metric, sel, f"{by_pod}, le"),
        resets=resets_q,
        latency_scale_ms=scale,
        pod_label=pod,
        suffixes=suffixes,
        live_requests=None if live is None else delta(req_metric, live[0], by),
        live_errors=None if live is None else delta(req_metric, live[1], by),
        histograms=hist_qs,
        finish_reasons=delta(req_metric, sel, f"{by}, {FINISH_REASON_LABEL}")
        if finish_reasons
        else None,
    )


_PLACEHOLDER = re.compile(r"\{(revisions|revision|namespace|interval|version_label)\}")
_EQ_REVISION = re.compile(r'[^=!~]=\s*"?\{revisions?\}')
_UNQUOTED = re.compile(
    r'(?<!")\{(revisions|revision|namespace)\}|\{(revisions|revision|namespace)\}(?!")'
)


def render_template(
    template: str,
    *,
    revisions: Sequence[str],
    namespace: str,
    window_s: float,
    version_label: str,
) -> str:
    """Fill a custom PromQL template's named placeholders; other braces are left alone.

    - ``{revisions}`` (alias ``{revision}``): the regex alternation of the escaped revision
      names, *without* quotes; use it as ``label=~"{revisions}"``. Using it with ``=`` is an
      error, since it matches several revisions.
    - ``{namespace}``: the namespace, escaped for a PromQL string, without quotes; use it as
      ``namespace="{namespace}"``.
    - ``{interval}``: the window as a PromQL duration (``60s``), for ``increase(x[{interval}])``.
    - ``{version_label}``: the version label name (checked to be a valid label name).

    The template must keep the version label in its result (``sum by ({version_label})``), since
    answers are demultiplexed by it. Values are escaped for a double-quoted string (and
    revisions for a regex too), so a name can never end the string and inject PromQL.
    """
    if _EQ_REVISION.search(template):
        raise MetricsError(
            "custom query uses {revisions} with '='; it is a regex alternation, use =~"
        )
    if _UNQUOTED.search(template):
        raise MetricsError(
            'custom query: put {revisions} and {namespace} inside double quotes, e.g. =~"{revisions}"'
        )
    values = {
        "revisions": promql_string(regex_alternation(revisions))[1:-1],
        "namespace": promql_string(namespace)[1:-1],
        "interval": promql_duration(window_s),
        "version_label": check_label_name(version_label),
    }
    values["revision"] = values["revisions"]
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
