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
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from canaryd.metrics.presets import DEFAULT_VERSION_LABEL, NAMESPACE_LABEL
from canaryd.observation import Observation, VersionCounts

Preset = Literal["istio", "knative", "kserve"]


@dataclass(frozen=True)
class TickSample:
    """One revision's cumulative counters (since the start of the run) at ``t_seconds``.

    ``bounds_ms`` ends with ``inf``; ``buckets_cum[k]`` counts requests with latency
    ``<= bounds_ms[k]`` since the start. Empty ``bounds_ms`` writes no histogram.
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
) -> int:
    """Write ``series`` as OpenMetrics text; return the number of sample lines written.

    ``workload_suffix`` is appended to every revision in the version label (``"-deployment"``
    reproduces Istio's ``destination_workload`` of a Knative revision). Samples of a revision
    must share one bucket layout per timestamp; counters may decrease (to simulate a reset).
    ``source_reports`` (istio): also write the ``reporter="source"`` requests (see the module
    docstring).
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
    w("# EOF\n")
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
    and leaves the counters unchanged. One revision's histogram layout must not change.
    """
    if tick_s <= 0:
        raise ValueError("tick_s must be positive")
    out: list[TickSample] = []
    cum: dict[str, list[float]] = {}
    layout: dict[str, tuple[float, ...]] = {}
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
            if rev not in cum:
                layout[rev] = vc.bounds_ms
                cum[rev] = [0.0] * (2 + len(vc.bounds_ms))
                out.append(_sample(obs.start_s, rev, layout[rev], cum[rev]))
            if vc.bounds_ms != layout[rev]:
                raise ValueError(f"revision {rev!r} changes its histogram layout at {obs.start_s}")
            before = cum[rev]
            inc = [vc.requests, vc.errors, *vc.bucket_counts]
            for j in range(1, n + 1):
                now = [
                    b + (x if j == n else math.floor(x * j / n))
                    for b, x in zip(before, inc, strict=True)
                ]
                out.append(_sample(obs.start_s + j * tick_s, rev, layout[rev], now))
            cum[rev] = [b + x for b, x in zip(before, inc, strict=True)]
    return out


def _sample(t: float, rev: str, bounds: tuple[float, ...], c: list[float]) -> TickSample:
    return TickSample(t, rev, c[0], c[1], bounds, tuple(c[2:]))


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
