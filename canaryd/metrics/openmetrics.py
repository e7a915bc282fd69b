"""Write simulated traffic as OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``.

The output holds cumulative counters with explicit timestamps (seconds), named and labelled
exactly as the ``istio``, ``knative`` or ``kserve`` preset queries them, so a simulated run can
be loaded into a real Prometheus and analysed by ``canaryd analyze`` or the daemon.

Format rules followed (OpenMetrics 1.0 as parsed by Prometheus):

- a ``# TYPE`` line per metric family; counters are declared without ``_total`` and their
  samples carry it (``# TYPE istio_requests counter`` / ``istio_requests_total{...}``);
- Knative's ``revision_app_request_count`` has no ``_total`` suffix, which OpenMetrics forbids
  for a counter, so it is declared ``unknown`` (the TSDB keeps no type; queries are the same);
- histograms are ``_bucket{le="..."}`` lines (``le="+Inf"`` last) and ``_count``; ``_sum`` is
  omitted because only bucket counts are simulated;
- the samples of one series are contiguous and in increasing time order; the file ends with
  ``# EOF``.

Requests are split by response code: ``requests_cum - errors_cum`` under a success code and
``errors_cum`` under an error code (``500`` / ``5xx``).

With ``source_reports`` (istio only) the requests are also written as the *sending* proxy
reports them (``reporter="source"``), which is without the mirrored copies
(``TickSample.mirrored_*_cum``): Istio's source proxy reports only the primary request, the
canary's own proxy (``reporter="destination"``) also the copy. That is how the istio preset
tells a shadow phase's mirrored requests apart.
The ``vllm`` preset writes vLLM's own names and labels (``model_name``, ``engine``, plus the
relabelled ``namespace`` and ``revision``): requests as ``vllm:request_success_total`` by
``finished_reason`` (from the sample's finish-reason counts when given, else ``stop`` and
``error``), the latency histogram as ``vllm:e2e_request_latency_seconds`` and each named
histogram under its ``series``. Any preset may also write categorical and label counters under
names the caller chooses, as a model server exporting custom metrics would.

Samples with a ``pod`` are written per pod, under the preset's pod label (``POD_LABEL``:
``pod``, or ``pod_name`` for knative), as Prometheus keeps a scraped pod's series: every
series of a revision then carries it (istio's source reports too, so that they stay apart).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TextIO

from canaryd.metrics.presets import (
    DEFAULT_VERSION_LABEL,
    FINISH_REASON_LABEL,
    NAMESPACE_LABEL,
    POD_LABEL,
    SIGNAL_SCALE,
    VLLM_E2E,
    VLLM_SERIES,
)
from canaryd.observation import (
    Histogram,
    LabelCounts,
    Observation,
    PodCounts,
    Signal,
    VersionCounts,
)

Preset = Literal["istio", "knative", "kserve", "vllm"]


@dataclass(frozen=True)
class TickSample:
    """One revision's cumulative counters (since the start of the run) at ``t_seconds``.

    ``bounds_ms`` ends with ``inf``; ``buckets_cum[k]`` counts requests with latency
    ``<= bounds_ms[k]`` since the start. Empty ``bounds_ms`` writes no histogram. The named
    histograms, category counts and label counts are cumulative too (same shapes as in
    ``VersionCounts``).
    """

    t_seconds: float
    revision: str
    requests_cum: float
    errors_cum: float
    bounds_ms: tuple[float, ...] = ()
    buckets_cum: tuple[float, ...] = ()
    mirrored_requests_cum: float = 0.0
    """How many of ``requests_cum`` were mirrored copies (a shadow phase's canary)."""
    mirrored_errors_cum: float = 0.0
    """How many of ``errors_cum`` were on mirrored copies."""
    histograms: Mapping[Signal, Histogram] = field(default_factory=dict)
    categories: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    labels: Mapping[str, LabelCounts] = field(default_factory=dict)
    pod: str = ""
    """The pod these counters are one replica's share of (written as the preset's pod label);
    "" for a revision written as one series set without a pod label."""


def format_value(v: float) -> str:
    """A sample value or timestamp: integers without a fraction, ``NaN``, ``+Inf``, ``-Inf``."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


def _le(bound_ms: float, scale: float) -> str:
    if math.isinf(bound_ms):
        return "+Inf"
    return format_value(float(f"{bound_ms / scale:.12g}"))


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in pairs) + "}"


def write_openmetrics(
    out: TextIO,
    series: Iterable[TickSample],
    *,
    preset: Preset,
    namespace: str,
    version_label: str | None = None,
    workload_suffix: str = "",
    kserve_histogram: str = "request_predict_seconds",
    source_reports: bool = False,
    model_name: str = "model",
    finish_reasons: str | None = None,
    categorical: Mapping[str, tuple[str, str]] | None = None,
    quality: Mapping[str, tuple[str, str]] | None = None,
    pod_label: str | None = None,
) -> int:
    """Write ``series`` as OpenMetrics text; return the number of sample lines written.

    ``workload_suffix`` is appended to every revision in the version label (``"-deployment"``
    reproduces Istio's ``destination_workload`` of a Knative revision). Samples of a revision
    must share one bucket layout per timestamp; counters may decrease (to simulate a reset).
    ``source_reports`` (istio): also write the ``reporter="source"`` requests (see the module
    docstring).

    vllm: ``model_name`` is vLLM's served model name label; ``finish_reasons`` names the key of
    ``TickSample.categories`` that holds the counts by ``finished_reason``. Any preset:
    ``categorical`` maps a categories key to ``(counter name, category label)`` and ``quality``
    a labels key to ``(correct counter, labelled counter)``; counter names without ``_total``.
    ``pod_label`` names the label samples with a ``pod`` are written under (default: the
    preset's, ``POD_LABEL``). A revision's samples are one series set per ``(revision, pod)``.
    """
    if source_reports and preset != "istio":
        raise ValueError("source_reports exist only for the istio preset")
    vl = version_label or DEFAULT_VERSION_LABEL[preset]
    nsl = NAMESPACE_LABEL[preset]
    pl = pod_label or POD_LABEL[preset]
    by_rev: dict[_Series, list[TickSample]] = defaultdict(list)
    for s in series:
        if len(s.bounds_ms) != len(s.buckets_cum):
            raise ValueError(
                f"{s.revision}@{s.t_seconds}: {len(s.bounds_ms)} bounds, {len(s.buckets_cum)} counts"
            )
        by_rev[(s.revision, s.pod)].append(s)
    for (rev, pod), samples in by_rev.items():
        samples.sort(key=lambda s: s.t_seconds)
        ts = [s.t_seconds for s in samples]
        if len(set(ts)) != len(ts):
            of = f" pod {pod!r}" if pod else ""
            raise ValueError(f"revision {rev!r}{of} has two samples at one time")
    podded = {rev for rev, pod in by_rev if pod}
    if any(rev in podded for rev, pod in by_rev if not pod):
        raise ValueError(f"revisions {sorted(podded)}: samples with and without a pod")

    def base(key: _Series) -> list[tuple[str, str]]:
        rev, pod = key
        labels = [(nsl, namespace), (vl, rev + workload_suffix)]
        return [*labels, (pl, pod)] if pod else labels

    lines = 0
    w = out.write
    if preset == "vllm":
        lines += _vllm_requests(w, by_rev, base, model_name, finish_reasons)
        lines += _counters(w, by_rev, base, categorical or {}, quality or {})
        lines += _vllm_histograms(w, by_rev, base, model_name)
        w("# EOF\n")
        return lines
    # Requests by response code.
    if preset == "istio":
        w("# TYPE istio_requests counter\n")
        name = "istio_requests_total"
        codes: list[tuple[list[tuple[str, str]], bool]] = [
            ([("reporter", "destination"), ("response_code", "200")], False),
            ([("reporter", "destination"), ("response_code", "500")], True),
        ]
    elif preset == "knative":
        w("# TYPE revision_app_request_count unknown\n")
        name = "revision_app_request_count"
        codes = [
            ([("response_code", "200"), ("response_code_class", "2xx")], False),
            ([("response_code", "500"), ("response_code_class", "5xx")], True),
        ]
    else:
        w(f"# TYPE {kserve_histogram}_errors counter\n")
        name = f"{kserve_histogram}_errors_total"
        codes = [([], True)]
    for key, samples in by_rev.items():
        for extra, is_error in codes:
            lab = _labels(base(key) + extra)
            for s in samples:
                v = s.errors_cum if is_error else s.requests_cum - s.errors_cum
                w(f"{name}{lab} {format_value(v)} {format_value(s.t_seconds)}\n")
                lines += 1
        if not source_reports:
            continue
        for code, is_error in (("200", False), ("500", True)):
            lab = _labels([*base(key), ("reporter", "source"), ("response_code", code)])
            for s in samples:
                errors = s.errors_cum - s.mirrored_errors_cum
                v = errors if is_error else s.requests_cum - s.mirrored_requests_cum - errors
                w(f"{name}{lab} {format_value(v)} {format_value(s.t_seconds)}\n")
                lines += 1
    # Latency histogram.
    if preset == "istio":
        hist, scale, hist_extra = (
            "istio_request_duration_milliseconds",
            1.0,
            [("reporter", "destination")],
        )
    elif preset == "knative":
        hist, scale, hist_extra = "revision_app_request_latencies", 1.0, []
    else:
        hist, scale, hist_extra = kserve_histogram, 1000.0, []
    w(f"# TYPE {hist} histogram\n")
    for key, samples in by_rev.items():
        labels = base(key) + hist_extra
        for s in samples:
            if not s.bounds_ms:
                continue
            t = format_value(s.t_seconds)
            for b, c in zip(s.bounds_ms, s.buckets_cum, strict=True):
                w(
                    f"{hist}_bucket{_labels([*labels, ('le', _le(b, scale))])} "
                    f"{format_value(c)} {t}\n"
                )
            count = s.buckets_cum[-1] if s.bounds_ms[-1] == math.inf else s.requests_cum
            w(f"{hist}_count{_labels(labels)} {format_value(count)} {t}\n")
            lines += len(s.bounds_ms) + 1
    lines += _counters(w, by_rev, base, categorical or {}, quality or {})
    w("# EOF\n")
    return lines


_Series = tuple[str, str]
"""(revision, pod or "")."""
_Base = Callable[[_Series], list[tuple[str, str]]]
_Write = Callable[[str], object]


def _vllm_requests(
    w: _Write,
    by_rev: Mapping[_Series, list[TickSample]],
    base: _Base,
    model_name: str,
    finish_reasons: str | None,
) -> int:
    """``vllm:request_success_total`` by ``finished_reason``, one series per reason seen."""
    w("# TYPE vllm:request_success counter\n")
    lines = 0
    for key, samples in by_rev.items():
        if finish_reasons is not None:
            reasons = sorted({r for s in samples for r in s.categories.get(finish_reasons, {})})
        else:
            reasons = ["stop", "error"]
        for reason in reasons:
            lab = _labels(
                [
                    *base(key),
                    ("model_name", model_name),
                    ("engine", "0"),
                    (FINISH_REASON_LABEL, reason),
                ]
            )
            for s in samples:
                if finish_reasons is not None:
                    v = s.categories.get(finish_reasons, {}).get(reason)
                    if v is None:
                        continue
                else:
                    v = s.errors_cum if reason == "error" else s.requests_cum - s.errors_cum
                w(
                    f"vllm:request_success_total{lab} {format_value(v)} {format_value(s.t_seconds)}\n"
                )
                lines += 1
    return lines


def _histogram_family(
    w: _Write,
    name: str,
    scale: float,
    rows: Iterable[tuple[list[tuple[str, str]], float, tuple[float, ...], tuple[float, ...]]],
) -> int:
    """One histogram family: ``_bucket`` (``le`` divided by ``scale``) and ``_count`` lines."""
    w(f"# TYPE {name} histogram\n")
    lines = 0
    for labels, t_s, bounds, cum in rows:
        t = format_value(t_s)
        for b, c in zip(bounds, cum, strict=True):
            w(f"{name}_bucket{_labels([*labels, ('le', _le(b, scale))])} {format_value(c)} {t}\n")
        w(f"{name}_count{_labels(labels)} {format_value(cum[-1])} {t}\n")
        lines += len(bounds) + 1
    return lines


def _vllm_histograms(
    w: _Write, by_rev: Mapping[_Series, list[TickSample]], base: _Base, model_name: str
) -> int:
    """The e2e latency histogram and every named histogram, under vLLM's names."""
    lines = 0
    extra = [("model_name", model_name), ("engine", "0")]
    e2e = [
        ([*base(key), *extra], s.t_seconds, s.bounds_ms, s.buckets_cum)
        for key, samples in by_rev.items()
        for s in samples
        if s.bounds_ms
    ]
    if e2e:
        lines += _histogram_family(w, VLLM_E2E, 1000.0, e2e)
    families: dict[tuple[str, Signal], list[Any]] = {}
    for key, samples in by_rev.items():
        for s in samples:
            for signal, h in s.histograms.items():
                name = h.series or VLLM_SERIES[signal][0]
                families.setdefault((name, signal), []).append(
                    ([*base(key), *extra], s.t_seconds, h.bounds, h.cumulative)
                )
    for (name, signal), rows in families.items():
        lines += _histogram_family(w, name, SIGNAL_SCALE[signal], rows)
    return lines


def _counters(
    w: _Write,
    by_rev: Mapping[_Series, list[TickSample]],
    base: _Base,
    categorical: Mapping[str, tuple[str, str]],
    quality: Mapping[str, tuple[str, str]],
) -> int:
    """Custom counters: counts by category, and correct / labelled predictions."""
    lines = 0
    for key, (counter, label) in categorical.items():
        w(f"# TYPE {counter} counter\n")
        for series, samples in by_rev.items():
            cats = sorted({c for s in samples for c in s.categories.get(key, {})})
            for cat in cats:
                lab = _labels([*base(series), (label, cat)])
                for s in samples:
                    v = s.categories.get(key, {}).get(cat)
                    if v is not None:
                        w(f"{counter}_total{lab} {format_value(v)} {format_value(s.t_seconds)}\n")
                        lines += 1
    for key, pair in quality.items():
        for counter, pick in zip(pair, ("correct", "labelled"), strict=True):
            w(f"# TYPE {counter} counter\n")
            for series, samples in by_rev.items():
                lab = _labels(base(series))
                for s in samples:
                    lc = s.labels.get(key)
                    if lc is not None:
                        v = lc.correct if pick == "correct" else lc.labelled
                        w(f"{counter}_total{lab} {format_value(v)} {format_value(s.t_seconds)}\n")
                        lines += 1
    return lines


def tick_samples_from_observations(
    observations: Sequence[Observation],
    tick_s: float,
    stable_rev: str,
    canary_rev: str,
) -> list[TickSample]:
    """Cumulative tick samples (a Prometheus scrape every ``tick_s``) from per-interval increments.

    Counters start at 0 at the first observation's start. Each observation's interval must be a
    whole number of ticks; samples land on its start, every tick inside it and its end, so a
    window aligned with the intervals sees exactly the observed increments. Inside an interval
    the increments are spread evenly (floored, so counts stay integral, cumulative and
    errors <= requests). A no-data observation writes no samples for its interval (a scrape gap)
    and leaves the counters unchanged. One revision's histogram layouts must not change.

    Named histograms, category counts and label counts are carried the same way; every category
    a revision ever reports is written from its first sample on (at 0 until it is counted), as
    a model server that pre-initialises its counters would.

    Per-pod counts (``VersionCounts.pods``) become one sample per pod (``TickSample.pod``)
    instead of one per revision; every pod a revision ever reports is written from the
    revision's first sample on, at 0 while it has no counts. A revision's pods must add up to
    its totals and be given in every usable interval or in none, and cannot be combined with
    named histograms, category or label counts (ValueError).
    """
    if tick_s <= 0:
        raise ValueError("tick_s must be positive")
    out: list[TickSample] = []
    state: dict[_Series, _Cum] = {}
    every_cat: dict[str, dict[str, set[str]]] = {stable_rev: {}, canary_rev: {}}
    every_pod: dict[str, set[str]] = {stable_rev: set(), canary_rev: set()}
    unpodded: set[str] = set()
    for obs in observations:
        if obs.usable:
            assert obs.stable is not None and obs.canary is not None
            for rev, vc in ((stable_rev, obs.stable), (canary_rev, obs.canary)):
                for key, counts in vc.categories.items():
                    every_cat[rev].setdefault(key, set()).update(counts)
                _check_pods(vc, rev, obs.start_s)
                every_pod[rev].update(p.pod for p in vc.pods)
                if not vc.pods:
                    unpodded.add(rev)
    for rev in unpodded & {r for r, pods in every_pod.items() if pods}:
        raise ValueError(f"revision {rev!r} has per-pod counts in some intervals only")
    for obs in observations:
        span = obs.end_s - obs.start_s
        n = round(span / tick_s)
        if n < 1 or not math.isclose(n * tick_s, span, rel_tol=0, abs_tol=1e-6):
            raise ValueError(
                f"interval [{obs.start_s}, {obs.end_s}) is not a whole number of {tick_s}s ticks"
            )
        if not obs.usable:
            continue
        assert obs.stable is not None and obs.canary is not None
        for rev, whole in ((stable_rev, obs.stable), (canary_rev, obs.canary)):
            for pod, vc in _per_pod(whole, sorted(every_pod[rev])):
                series = (rev, pod)
                if series not in state:
                    state[series] = _Cum.zero(vc, every_cat[rev])
                    out.append(state[series].sample(obs.start_s, rev, pod))
                st = state[series]
                st.check(vc, rev, obs.start_s)
                for j in range(1, n + 1):
                    out.append(st.advanced(vc, j, n).sample(obs.start_s + j * tick_s, rev, pod))
                state[series] = st.advanced(vc, n, n)
    return out


def _check_pods(vc: VersionCounts, rev: str, t: float) -> None:
    """Per-pod counts that can be written as per-pod series, or ValueError."""
    if not vc.pods:
        return
    if vc.histograms or vc.categories or vc.labels:
        raise ValueError(
            f"revision {rev!r} at {t}: per-pod counts cannot be written with named histograms, "
            "category or label counts (those are not counted per pod)"
        )
    names = [p.pod for p in vc.pods]
    if "" in names or len(set(names)) != len(names):
        raise ValueError(f"revision {rev!r} at {t}: pod names must be non-empty and distinct")
    for p in vc.pods:
        if len(p.bucket_counts) != len(vc.bounds_ms):
            raise ValueError(f"revision {rev!r} at {t}: pod {p.pod!r} lacks the histogram")
    sums = (
        math.fsum(p.requests for p in vc.pods),
        math.fsum(p.errors for p in vc.pods),
        *(math.fsum(p.bucket_counts[k] for p in vc.pods) for k in range(len(vc.bounds_ms))),
    )
    if sums != (vc.requests, vc.errors, *vc.bucket_counts):
        raise ValueError(f"revision {rev!r} at {t}: the pods' counts do not add up to the totals")


def _per_pod(vc: VersionCounts, pods: Sequence[str]) -> list[tuple[str, VersionCounts]]:
    """``vc`` as one part per pod of ``pods`` (zeros for a pod absent from ``vc.pods``); the
    whole of it under pod "" when the revision has no per-pod counts."""
    if not pods:
        return [("", vc)]
    mine = {p.pod: p for p in vc.pods}
    zeros = tuple(0.0 for _ in vc.bounds_ms)
    parts = []
    for name in pods:
        p = mine.get(name)
        parts.append(
            (name, VersionCounts(0.0, 0.0, vc.bounds_ms, zeros))
            if p is None
            else (name, VersionCounts(p.requests, p.errors, vc.bounds_ms, p.bucket_counts))
        )
    return parts


def _part(x: float, j: int, n: int) -> float:
    return x if j == n else float(math.floor(x * j / n))


@dataclass(frozen=True)
class _Cum:
    """One revision's cumulative counters between ticks."""

    requests: float
    errors: float
    bounds_ms: tuple[float, ...]
    buckets: tuple[float, ...]
    histograms: Mapping[Signal, Histogram]
    categories: Mapping[str, Mapping[str, float]]
    labels: Mapping[str, LabelCounts]

    @classmethod
    def zero(cls, vc: VersionCounts, cats: Mapping[str, set[str]]) -> _Cum:
        return cls(
            0.0,
            0.0,
            vc.bounds_ms,
            tuple(0.0 for _ in vc.bounds_ms),
            {
                k: Histogram(h.bounds, tuple(0.0 for _ in h.bounds), h.series, h.per_token)
                for k, h in vc.histograms.items()
            },
            {k: dict.fromkeys(sorted(c), 0.0) for k, c in cats.items()},
            {k: LabelCounts(0.0, 0.0) for k in vc.labels},
        )

    def check(self, vc: VersionCounts, rev: str, t: float) -> None:
        if vc.bounds_ms != self.bounds_ms:
            raise ValueError(f"revision {rev!r} changes its histogram layout at {t}")
        if set(vc.histograms) != set(self.histograms) or any(
            h.bounds != self.histograms[k].bounds for k, h in vc.histograms.items()
        ):
            raise ValueError(f"revision {rev!r} changes its named histograms at {t}")
        if set(vc.labels) != set(self.labels):
            raise ValueError(f"revision {rev!r} changes its label counts at {t}")

    def advanced(self, vc: VersionCounts, j: int, n: int) -> _Cum:
        """These counters plus ``j/n`` of the interval's increments (all of them at ``j == n``)."""
        return _Cum(
            self.requests + _part(vc.requests, j, n),
            self.errors + _part(vc.errors, j, n),
            self.bounds_ms,
            tuple(b + _part(x, j, n) for b, x in zip(self.buckets, vc.bucket_counts, strict=True)),
            {
                k: replace(
                    h,
                    cumulative=tuple(
                        b + _part(x, j, n)
                        for b, x in zip(h.cumulative, vc.histograms[k].cumulative, strict=True)
                    ),
                )
                for k, h in self.histograms.items()
            },
            {
                k: {c: b + _part(vc.categories.get(k, {}).get(c, 0.0), j, n) for c, b in cs.items()}
                for k, cs in self.categories.items()
            },
            {
                k: LabelCounts(
                    lc.correct + _part(vc.labels[k].correct, j, n),
                    lc.labelled + _part(vc.labels[k].labelled, j, n),
                )
                for k, lc in self.labels.items()
            },
        )

    def sample(self, t: float, rev: str, pod: str = "") -> TickSample:
        return TickSample(
            t,
            rev,
            self.requests,
            self.errors,
            self.bounds_ms,
            self.buckets,
            histograms=dict(self.histograms),
            categories={k: dict(v) for k, v in self.categories.items()},
            labels=dict(self.labels),
            pod=pod,
        )


def counts_between(
    samples: Sequence[TickSample], revision: str, start_s: float, end_s: float
) -> VersionCounts:
    """Increments of ``revision`` between the samples at ``start_s`` and ``end_s`` (for tests),
    with its per-pod increments (sorted by pod, pods without any left out, as
    ``PrometheusSource`` reads them) when its samples are per pod."""
    at: dict[str, dict[float, TickSample]] = defaultdict(dict)
    for s in samples:
        if s.revision == revision:
            at[s.pod][s.t_seconds] = s

    def delta(pod: str) -> tuple[float, float, tuple[float, ...], tuple[float, ...]]:
        a, b = at[pod][start_s], at[pod][end_s]
        buckets = tuple(y - x for x, y in zip(a.buckets_cum, b.buckets_cum, strict=True))
        return b.requests_cum - a.requests_cum, b.errors_cum - a.errors_cum, b.bounds_ms, buckets

    parts = {pod: delta(pod) for pod in sorted(at)}
    bounds = next(iter(parts.values()))[2]
    return VersionCounts(
        math.fsum(p[0] for p in parts.values()),
        math.fsum(p[1] for p in parts.values()),
        bounds,
        tuple(math.fsum(p[3][k] for p in parts.values()) for k in range(len(bounds))),
        pods=tuple(
            PodCounts(pod, p[0], p[1], p[3])
            for pod, p in parts.items()
            if pod and any(x != 0 for x in (p[0], p[1], *p[3]))
        ),
    )
