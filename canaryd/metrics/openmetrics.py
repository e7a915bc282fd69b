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
    SIGNAL_SCALE,
    VLLM_E2E,
    VLLM_SERIES,
)
from canaryd.observation import Histogram, LabelCounts, Observation, Signal, VersionCounts

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
    """
    if source_reports and preset != "istio":
        raise ValueError("source_reports exist only for the istio preset")
    vl = version_label or DEFAULT_VERSION_LABEL[preset]
    nsl = NAMESPACE_LABEL[preset]
    by_rev: dict[str, list[TickSample]] = defaultdict(list)
    for s in series:
        if len(s.bounds_ms) != len(s.buckets_cum):
            raise ValueError(
                f"{s.revision}@{s.t_seconds}: {len(s.bounds_ms)} bounds, {len(s.buckets_cum)} counts"
            )
        by_rev[s.revision].append(s)
    for samples in by_rev.values():
        samples.sort(key=lambda s: s.t_seconds)
        ts = [s.t_seconds for s in samples]
        if len(set(ts)) != len(ts):
            raise ValueError(f"revision {samples[0].revision!r} has two samples at one time")

    def base(rev: str) -> list[tuple[str, str]]:
        return [(nsl, namespace), (vl, rev + workload_suffix)]

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
    for rev, samples in by_rev.items():
        for extra, is_error in codes:
            lab = _labels(base(rev) + extra)
            for s in samples:
                v = s.errors_cum if is_error else s.requests_cum - s.errors_cum
                w(f"{name}{lab} {format_value(v)} {format_value(s.t_seconds)}\n")
                lines += 1
        if not source_reports:
            continue
        for code, is_error in (("200", False), ("500", True)):
            lab = _labels([*base(rev), ("reporter", "source"), ("response_code", code)])
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
    for rev, samples in by_rev.items():
        labels = base(rev) + hist_extra
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


_Base = Callable[[str], list[tuple[str, str]]]
_Write = Callable[[str], object]


def _vllm_requests(
    w: _Write,
    by_rev: Mapping[str, list[TickSample]],
    base: _Base,
    model_name: str,
    finish_reasons: str | None,
) -> int:
    """``vllm:request_success_total`` by ``finished_reason``, one series per reason seen."""
    w("# TYPE vllm:request_success counter\n")
    lines = 0
    for rev, samples in by_rev.items():
        if finish_reasons is not None:
            reasons = sorted({r for s in samples for r in s.categories.get(finish_reasons, {})})
        else:
            reasons = ["stop", "error"]
        for reason in reasons:
            lab = _labels(
                [
                    *base(rev),
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
    w: _Write, by_rev: Mapping[str, list[TickSample]], base: _Base, model_name: str
) -> int:
    """The e2e latency histogram and every named histogram, under vLLM's names."""
    lines = 0
    extra = [("model_name", model_name), ("engine", "0")]
    e2e = [
        ([*base(rev), *extra], s.t_seconds, s.bounds_ms, s.buckets_cum)
        for rev, samples in by_rev.items()
        for s in samples
        if s.bounds_ms
    ]
    if e2e:
        lines += _histogram_family(w, VLLM_E2E, 1000.0, e2e)
    families: dict[tuple[str, Signal], list[Any]] = {}
    for rev, samples in by_rev.items():
        for s in samples:
            for signal, h in s.histograms.items():
                name = h.series or VLLM_SERIES[signal][0]
                families.setdefault((name, signal), []).append(
                    ([*base(rev), *extra], s.t_seconds, h.bounds, h.cumulative)
                )
    for (name, signal), rows in families.items():
        lines += _histogram_family(w, name, SIGNAL_SCALE[signal], rows)
    return lines


def _counters(
    w: _Write,
    by_rev: Mapping[str, list[TickSample]],
    base: _Base,
    categorical: Mapping[str, tuple[str, str]],
    quality: Mapping[str, tuple[str, str]],
) -> int:
    """Custom counters: counts by category, and correct / labelled predictions."""
    lines = 0
    for key, (counter, label) in categorical.items():
        w(f"# TYPE {counter} counter\n")
        for rev, samples in by_rev.items():
            cats = sorted({c for s in samples for c in s.categories.get(key, {})})
            for cat in cats:
                lab = _labels([*base(rev), (label, cat)])
                for s in samples:
                    v = s.categories.get(key, {}).get(cat)
                    if v is not None:
                        w(f"{counter}_total{lab} {format_value(v)} {format_value(s.t_seconds)}\n")
                        lines += 1
    for key, pair in quality.items():
        for counter, pick in zip(pair, ("correct", "labelled"), strict=True):
            w(f"# TYPE {counter} counter\n")
            for rev, samples in by_rev.items():
                lab = _labels(base(rev))
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
    """
    if tick_s <= 0:
        raise ValueError("tick_s must be positive")
    out: list[TickSample] = []
    state: dict[str, _Cum] = {}
    every_cat: dict[str, dict[str, set[str]]] = {stable_rev: {}, canary_rev: {}}
    for obs in observations:
        if obs.usable:
            assert obs.stable is not None and obs.canary is not None
            for rev, vc in ((stable_rev, obs.stable), (canary_rev, obs.canary)):
                for key, counts in vc.categories.items():
                    every_cat[rev].setdefault(key, set()).update(counts)
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
        for rev, vc in ((stable_rev, obs.stable), (canary_rev, obs.canary)):
            if rev not in state:
                state[rev] = _Cum.zero(vc, every_cat[rev])
                out.append(state[rev].sample(obs.start_s, rev))
            st = state[rev]
            st.check(vc, rev, obs.start_s)
            for j in range(1, n + 1):
                out.append(st.advanced(vc, j, n).sample(obs.start_s + j * tick_s, rev))
            state[rev] = st.advanced(vc, n, n)
    return out


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

    def sample(self, t: float, rev: str) -> TickSample:
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
        )


def counts_between(
    samples: Sequence[TickSample], revision: str, start_s: float, end_s: float
) -> VersionCounts:
    """Increments of ``revision`` between the samples at ``start_s`` and ``end_s`` (for tests)."""
    at = {s.t_seconds: s for s in samples if s.revision == revision}
    a, b = at[start_s], at[end_s]
    return VersionCounts(
        b.requests_cum - a.requests_cum,
        b.errors_cum - a.errors_cum,
        b.bounds_ms,
        tuple(y - x for x, y in zip(a.buckets_cum, b.buckets_cum, strict=True)),
    )
