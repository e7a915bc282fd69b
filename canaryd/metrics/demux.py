"""Demultiplexing: one batched answer per metric kind back into one Observation per rollout.

Answers are keyed by ``(namespace, revision)`` (namespace None for the custom preset, whose
queries fix it); label spellings of one revision (istio's ``-deployment``/``-private``
suffixes) add up. ``observation_for`` turns a chunk's answers into one rollout's observation
and names the first problem it finds: a missing series, a counter reset, NaN, a partial
bucket set, a missing custom value. It never raises.

Per-pod answers (``PodAnswers``, when the queries group by a pod label) fill
``VersionCounts.pods``: pods sorted by name, each version's totals the sums over its pods.
They are all-or-nothing per version: a series without the pod label (a setup that does not
relabel it), a pod with errors or buckets but no requests answer, a partial per-pod bucket set
or sums that differ from the totals leave that version's ``pods`` empty, never wrong, and never
cost the observation its totals. Pods that served nothing in the window (a pod gone since, whose
series are still within the lookback) are left out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from canaryd.errors import MetricsError
from canaryd.metrics.presets import (
    SERIES_LABEL,
    VLLM_PER_TOKEN_SERIES,
    VLLM_SERIES,
    QuerySet,
    pod_label_of,
    revision_for,
    version_label_of,
)
from canaryd.metrics.source import FetchRequest
from canaryd.observation import (
    Histogram,
    LabelCounts,
    Observation,
    PodCounts,
    Signal,
    VersionCounts,
)

_Key = tuple[str | None, str]
"""(namespace or None for the custom preset, revision)."""


@dataclass
class PodAnswers:
    """Per-pod answers of one chunk: (namespace, revision) -> pod -> value.

    Pod ``""`` collects the series that lack the pod label. ``errors`` is None when errors are
    not measured, ``buckets`` None when no histogram was asked for.
    """

    requests: dict[_Key, dict[str, float]] = field(default_factory=dict)
    errors: dict[_Key, dict[str, float]] | None = None
    buckets: dict[_Key, dict[str, dict[float, float]]] | None = None


@dataclass
class Answers:
    """Demultiplexed answers of one chunk."""

    requests: dict[_Key, float] = field(default_factory=dict)
    errors: dict[_Key, float] | None = None
    buckets: dict[_Key, dict[float, float]] | None = None
    resets: dict[_Key, float] | None = None
    live_requests: dict[_Key, float] | None = None
    live_errors: dict[_Key, float] | None = None
    custom: dict[str, dict[_Key, float]] = field(default_factory=dict)
    failed: str | None = None
    too_large: bool = False
    """``failed`` because an answer exceeded the response size limit (the chunk may be split)."""
    template_failed: dict[str, str] = field(default_factory=dict)
    """Failed template queries, by ``FetchRequest.templates`` key (``custom:<name>``, ...)."""
    histograms: dict[Signal, dict[_Key, dict[str, dict[float, float]]]] = field(
        default_factory=dict
    )
    """Named histograms: signal -> (namespace, revision) -> series -> bound -> cumulative."""
    finish_reasons: dict[_Key, dict[str, float]] | None = None
    categories: dict[str, dict[_Key, dict[str, float]]] = field(default_factory=dict)
    correct: dict[str, dict[_Key, float]] = field(default_factory=dict)
    labelled: dict[str, dict[_Key, float]] = field(default_factory=dict)
    pods: PodAnswers | None = None
    """Per-pod requests, errors and buckets; None when the queries do not group by pod."""


def observation_for(
    r: FetchRequest,
    ans: Answers,
    start_s: float,
    end_s: float,
    *,
    round_counts: bool = True,
    require_same_layout: bool = True,
) -> Observation:
    """One rollout's observation from its chunk's answers; no-data naming the first problem."""
    if ans.failed is not None:
        return no_data(start_s, end_s, ans.failed)
    ns: str | None = None if r.source.preset == "custom" else r.namespace
    revs = {"stable": r.stable_revision, "canary": r.canary_revision}
    keys = {v: (ns, rev) for v, rev in revs.items()}
    missing = [v for v, k in keys.items() if k not in ans.requests]
    if len(missing) == 2:
        return no_data(
            start_s,
            end_s,
            f"no data in the window for stable {r.stable_revision!r} or canary "
            f"{r.canary_revision!r}",
        )
    if missing:
        v = missing[0]
        return no_data(start_s, end_s, f"no {v} series (revision {revs[v]!r})")
    if ans.resets is not None:
        for v, k in keys.items():
            n = ans.resets.get(k, 0.0)
            if math.isnan(n):
                return no_data(
                    start_s, end_s, f"NaN from resets() ({v} revision {revs[v]!r}): no count"
                )
            if n > 0:
                return no_data(
                    start_s, end_s, f"counter reset in the window ({v} revision {revs[v]!r})"
                )
    errors_measured = ans.errors is not None
    counts: dict[str, VersionCounts] = {}
    layouts: dict[str, tuple[float, ...]] = {}
    for v, k in keys.items():
        req = ans.requests[k]
        # No error series for a revision that has requests: it never failed (an error
        # series appears with the first error), so 0; errors not measured at all: also 0.
        err = 0.0 if ans.errors is None else ans.errors.get(k, 0.0)
        bounds: tuple[float, ...] = ()
        cum: tuple[float, ...] = ()
        if r.need_latency:
            if ans.buckets is None:
                return no_data(start_s, end_s, "no latency histogram query for this source")
            hist = ans.buckets.get(k)
            if not hist:
                return no_data(start_s, end_s, f"no {v} latency histogram (revision {revs[v]!r})")
            if math.inf not in hist:
                return no_data(
                    start_s, end_s, f"partial bucket set: {v} histogram has no +Inf bucket"
                )
            bounds = tuple(sorted(hist))
            cum = tuple(hist[b] for b in bounds)
            layouts[v] = bounds
        values: dict[str, float] = {}
        for name, _ in r.custom_metrics:
            failed = ans.template_failed.get(f"custom:{name}")
            if failed is not None:
                return no_data(start_s, end_s, f"custom metric {name!r}: {failed}")
            got = ans.custom.get(name, {}).get((None, revs[v]))
            if got is None:
                return no_data(start_s, end_s, f"custom metric {name!r}: no {v} value")
            if not math.isfinite(got):
                return no_data(start_s, end_s, f"custom metric {name!r}: {v} value is {got}")
            values[name] = got
        nums = (req, err, *cum)
        if any(not math.isfinite(x) for x in nums):
            return no_data(start_s, end_s, f"NaN or Inf in the {v} counts")
        ml = _ml_fields(r, ans, v, k, round_counts)
        if isinstance(ml, str):
            return no_data(start_s, end_s, ml)
        if round_counts:
            req, err = float(round(req)), float(round(err))
            cum = tuple(float(round(c)) for c in cum)
        mirrored: tuple[float | None, float | None] = (None, None)
        if v == "canary" and r.shadow:
            mirrored = _mirrored(ans, k, req, err, round_counts)
        hists, cats, labels = ml
        pods = _pods(ans.pods, k, req, err, bounds, cum, round_counts)
        counts[v] = VersionCounts(
            req,
            err,
            bounds,
            cum,
            values,
            mirrored_requests=mirrored[0],
            mirrored_errors=mirrored[1],
            histograms=hists,
            categories=cats,
            labels=labels,
            pods=pods,
        )
    if require_same_layout and r.source.preset != "custom":
        pairs = [(layouts.get("stable"), layouts.get("canary"), "")]
        for signal in r.histograms:
            hs, hc = counts["stable"].histograms[signal], counts["canary"].histograms[signal]
            pairs.append((hs.bounds, hc.bounds, f"{signal} "))
        for ls, lc, what in pairs:
            if ls is None or lc is None or ls == lc:
                continue
            only_s = sorted(set(ls) - set(lc))
            only_c = sorted(set(lc) - set(ls))
            return no_data(
                start_s,
                end_s,
                f"partial bucket set: stable and canary {what}histograms differ "
                f"(only stable: {_les(only_s)}; only canary: {_les(only_c)})",
            )
    return Observation(
        start_s,
        end_s,
        stable=counts["stable"],
        canary=counts["canary"],
        errors_measured=errors_measured,
    ).validated()


def _mirrored(
    ans: Answers, key: _Key, req: float, err: float, round_counts: bool
) -> tuple[float | None, float | None]:
    """The canary's mirrored requests and errors: what only its own proxy reported.

    A version absent from the source-reported answers had no live requests (0); the
    differences are clipped into ``0..requests`` / ``0..errors``, since the two reporters are
    scraped apart and may disagree by a few requests. (None, None) when the source cannot tell.
    """
    if ans.live_requests is None or ans.live_errors is None:
        return None, None
    live_req = ans.live_requests.get(key, 0.0)
    live_err = ans.live_errors.get(key, 0.0)
    if not (math.isfinite(live_req) and math.isfinite(live_err)):
        return None, None
    if round_counts:
        live_req, live_err = float(round(live_req)), float(round(live_err))
    m_req = min(max(req - live_req, 0.0), req)
    m_err = min(max(err - live_err, 0.0), err, m_req)
    return m_req, m_err


def _pods(
    pa: PodAnswers | None,
    key: _Key,
    req: float,
    err: float,
    bounds: tuple[float, ...],
    cum: tuple[float, ...],
    round_counts: bool,
) -> tuple[PodCounts, ...]:
    """One version's per-pod counts, or () when they cannot be told exactly (module docstring).

    ``req``, ``err`` and ``cum`` are the version's totals (rounded as the pods will be);
    ``bounds`` its histogram bounds, empty when no latency was asked for.
    """
    if pa is None:
        return ()
    reqs = pa.requests.get(key, {})
    errs = {} if pa.errors is None else pa.errors.get(key, {})
    hists = {} if pa.buckets is None else pa.buckets.get(key, {})
    if not reqs or "" in reqs or "" in errs or not set(errs) <= set(reqs):
        return ()
    if bounds and ("" in hists or not set(hists) <= set(reqs)):
        return ()
    rnd = (lambda x: float(round(x))) if round_counts else (lambda x: x)
    out: list[PodCounts] = []
    for name in sorted(reqs):
        p_req, p_err = rnd(reqs[name]), rnd(errs.get(name, 0.0))
        p_cum: tuple[float, ...] = ()
        if bounds:
            hist = hists.get(name, {})
            if hist and set(hist) != set(bounds):
                return ()  # a partial per-pod bucket set
            p_cum = tuple(rnd(hist.get(b, 0.0)) for b in bounds)
        values = (p_req, p_err, *p_cum)
        if any(not math.isfinite(x) or x < 0 for x in values) or p_err > p_req:
            return ()
        if any(x != 0 for x in values):
            out.append(PodCounts(name, p_req, p_err, p_cum))

    def same(total: float, parts: Sequence[float]) -> bool:
        return math.isclose(math.fsum(parts), total, rel_tol=1e-9, abs_tol=1e-6)

    if not same(req, [p.requests for p in out]) or not same(err, [p.errors for p in out]):
        return ()
    for k, total in enumerate(cum):
        if not same(total, [p.bucket_counts[k] for p in out]):
            return ()
    return tuple(out)


_MlFields = tuple[dict[Signal, Histogram], dict[str, dict[str, float]], dict[str, LabelCounts]]


def _ml_fields(
    r: FetchRequest, ans: Answers, v: str, key: _Key, round_counts: bool
) -> _MlFields | str:
    """One version's named histograms, category counts and label counts, or the problem."""
    rev = key[1]
    rnd = (lambda x: float(round(x))) if round_counts else (lambda x: x)
    hists: dict[Signal, Histogram] = {}
    for signal in r.histograms:
        by_series = ans.histograms.get(signal, {})
        series = _preferred_series(signal, by_series, key, _other_key(r, key, v))
        if series is None:
            return f"no {v} {signal} histogram (revision {rev!r})"
        hist = by_series[key][series]
        if math.inf not in hist:
            return f"partial bucket set: {v} {signal} histogram has no +Inf bucket"
        bounds = tuple(sorted(hist))
        cum = tuple(hist[b] for b in bounds)
        if any(not math.isfinite(c) for c in cum):
            return f"NaN or Inf in the {v} {signal} histogram"
        hists[signal] = Histogram(
            bounds,
            tuple(rnd(c) for c in cum),
            series=series,
            per_token=series in VLLM_PER_TOKEN_SERIES,
        )
    cats: dict[str, dict[str, float]] = {}
    for name in r.finish_reasons:
        got = (ans.finish_reasons or {}).get(key, {})
        cats[name] = {c: rnd(n) for c, n in got.items()}
    for name, _, _ in r.categorical:
        failed = ans.template_failed.get(f"categorical:{name}")
        if failed is not None:
            return f"categorical metric {name!r}: {failed}"
        got = ans.categories.get(name, {}).get((None, rev), {})
        cats[name] = {c: rnd(n) for c, n in got.items()}
    for name, counts in cats.items():
        if any(not math.isfinite(n) for n in counts.values()):
            return f"{name}: NaN or Inf in the {v} category counts"
    labels: dict[str, LabelCounts] = {}
    for name, _, _ in r.quality:
        for kind in ("correct", "labelled"):
            failed = ans.template_failed.get(f"{kind}:{name}")
            if failed is not None:
                return f"quality metric {name!r} ({kind}): {failed}"
        correct = ans.correct.get(name, {}).get((None, rev), 0.0)
        labelled = ans.labelled.get(name, {}).get((None, rev), 0.0)
        if not (math.isfinite(correct) and math.isfinite(labelled)):
            return f"quality metric {name!r}: NaN or Inf in the {v} label counts"
        labels[name] = LabelCounts(rnd(correct), rnd(labelled))
    return hists, cats, labels


def _other_key(r: FetchRequest, key: _Key, v: str) -> _Key:
    rev = r.canary_revision if v == "stable" else r.stable_revision
    return (key[0], rev)


def _preferred_series(
    signal: Signal,
    by_series: dict[_Key, dict[str, dict[float, float]]],
    key: _Key,
    other: _Key,
) -> str | None:
    """The most preferred series both versions have (so that both are read the same way), else
    the most preferred one this version has (the layouts check then names the mismatch)."""
    mine = by_series.get(key, {})
    theirs = by_series.get(other, {})
    order = VLLM_SERIES.get(signal, ())
    for name in order:
        if name in mine and name in theirs:
            return name
    for name in order:
        if name in mine:
            return name
    return None


def _les(values: Sequence[float]) -> str:
    return ", ".join(f"le={v:g}" for v in values) or "-"


def no_data(start_s: float, end_s: float, reason: str) -> Observation:
    return Observation(start_s, end_s, no_data_reason=reason)


def request_problem(r: FetchRequest) -> str | None:
    if not r.stable_revision or not r.canary_revision:
        return "stable or canary revision is not known yet"
    if r.stable_revision == r.canary_revision and not r.stable_only:
        return f"stable and canary are the same revision ({r.stable_revision!r})"
    try:
        version_label_of(r.source)
        pod_label_of(r.source)
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


def scalars(
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


def scalars_by_pod(
    rows: list[dict[str, Any]], qs: QuerySet, wanted: set[str]
) -> dict[_Key, dict[str, float]]:
    """Sum values per (namespace, revision) and pod (``qs.pod_label``; ``""`` when a row lacks
    it); label spellings of one revision add up."""
    out: dict[_Key, dict[str, float]] = defaultdict(dict)
    pod_label = qs.pod_label or ""
    for row in rows:
        labels = row.get("metric", {})
        key = _label_key(labels, qs, wanted)
        if key is None:
            continue
        pods = out[key]
        pod = labels.get(pod_label, "")
        pods[pod] = pods.get(pod, 0.0) + _value(row)
    return dict(out)


def grouped_buckets(
    rows: list[dict[str, Any]], qs: QuerySet, wanted: set[str], scale: float, by: str | None
) -> dict[_Key, dict[str, dict[float, float]]]:
    """Cumulative buckets per (namespace, revision) and value of the label ``by`` (``""`` when
    a row lacks it, or for every row when ``by`` is None), ``le`` times ``scale`` (seconds to
    milliseconds, or 1 for token counts); rows that share both keys and ``le`` are summed."""
    out: dict[_Key, dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        labels = row.get("metric", {})
        key = _label_key(labels, qs, wanted)
        if key is None:
            continue
        try:
            le = float(labels["le"])
        except (KeyError, ValueError):
            continue
        bound = le if math.isinf(le) else _ms(le, scale)
        hist = out[key][labels.get(by, "") if by else ""]
        hist[bound] = hist.get(bound, 0.0) + _value(row)
    return {k: dict(v) for k, v in out.items()}


def buckets_by_pod(
    rows: list[dict[str, Any]], qs: QuerySet, wanted: set[str]
) -> dict[_Key, dict[str, dict[float, float]]]:
    """Cumulative latency buckets per (namespace, revision) and pod (``""`` when a row lacks
    the pod label), bounds in milliseconds."""
    return grouped_buckets(rows, qs, wanted, qs.latency_scale_ms, qs.pod_label)


def buckets(
    rows: list[dict[str, Any]], qs: QuerySet, wanted: set[str]
) -> dict[_Key, dict[float, float]]:
    """Cumulative latency buckets per (namespace, revision), bounds in milliseconds."""
    grouped = grouped_buckets(rows, qs, wanted, qs.latency_scale_ms, None)
    return {k: v[""] for k, v in grouped.items()}


def series_buckets(
    rows: list[dict[str, Any]], qs: QuerySet, wanted: set[str], scale: float
) -> dict[_Key, dict[str, dict[float, float]]]:
    """Cumulative buckets per (namespace, revision) and ``canaryd_series``, ``le`` times
    ``scale`` (seconds to milliseconds, or 1 for token counts)."""
    return grouped_buckets(rows, qs, wanted, scale, SERIES_LABEL)


def categorised(
    rows: list[dict[str, Any]],
    qs: QuerySet,
    wanted: set[str],
    label: str,
    use_namespace: bool = True,
) -> dict[_Key, dict[str, float]]:
    """Counts per (namespace, revision) and category (the value of ``label``).

    A matched row without ``label`` means the query dropped it: MetricsError naming it.
    """
    out: dict[_Key, dict[str, float]] = defaultdict(dict)
    for row in rows:
        labels = row.get("metric", {})
        key = _label_key(labels, qs, wanted, use_namespace)
        if key is None:
            continue
        if label not in labels:
            raise MetricsError(
                f"the result has no {label!r} label: keep it in the aggregation, e.g. "
                f"sum by ({qs.version_label}, {label}) (...)"
            )
        counts = out[key]
        counts[labels[label]] = counts.get(labels[label], 0.0) + _value(row)
    return dict(out)


def _ms(le: float, scale: float) -> float:
    """``le * scale`` without binary noise (0.3 s is 300 ms, not 300.00000000000006)."""
    return le if scale == 1.0 else float(f"{le * scale:.12g}")
