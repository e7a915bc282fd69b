"""Recorded traces: a CSV of per-interval increments, read and written, and a MetricSource over it.

Format (one header line, then one row per version per interval)::

    t_seconds,version,requests,errors,le_5,le_10,le_25,...,le_inf
    0,stable,480,2,30,120,300,...,480
    0,canary,52,1,2,11,33,...,52
    60,stable,...

- ``t_seconds``: the *start* of the interval, seconds (any origin). Intervals are consecutive
  distinct ``t_seconds``; their length is the smallest gap between distinct ``t_seconds``
  (so a missing interval is a gap, not a longer interval) unless ``interval_s`` is given.
- ``version``: ``stable`` or ``canary``; each ``t_seconds`` has exactly one row of each, or,
  with a ``pod`` column, one row per pod of each. Leading intervals with stable rows only are
  stable's *history* before the canary started: they are read as no-data intervals
  (``BEFORE_CANARY``), and ``canaryd replay`` primes the judges with the last
  ``spec.analysis.history`` of them (``split_history``), as the daemon reads Prometheus.
- ``pod`` (optional, right after ``version``): the pod the row is one replica's share of.
  A version's counts in an interval are the sums of its pod rows and the rows fill
  ``VersionCounts.pods`` (sorted by pod); an empty ``pod`` (one row, the version's totals)
  means the trace cannot tell its pods apart there. ``write_trace`` writes the column when
  any observation carries per-pod counts, and ``canaryd replay`` reads it back.
- ``requests``, ``errors``: increments over the interval, non-negative, errors <= requests.
- ``le_<ms>``: cumulative latency bucket increments (requests with latency <= that many ms),
  boundaries increasing, the last column ``le_inf``; counts non-decreasing along the row, and
  ``le_inf`` equal to ``requests`` (every request lands in the +Inf bucket).
- ``t_seconds`` lies within +-``MAX_T_SECONDS`` and every count is at most ``MAX_COUNT``
  (2^53, the largest whole number a float holds exactly).
  A trace without latency columns is allowed (no ``le_`` column at all).

Every problem is reported as ``file:line:column`` in one ``TraceError``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from canaryd.errors import Problem, TraceError
from canaryd.metrics.source import FetchRequest
from canaryd.observation import (
    Histogram,
    LabelCounts,
    Observation,
    PodCounts,
    Signal,
    VersionCounts,
)

FIXED = ("t_seconds", "version", "requests", "errors")
POD = "pod"
MAX_T_SECONDS = 1e11
"""Largest ``|t_seconds|`` accepted (about 3,000 years: any epoch in seconds fits)."""
MAX_COUNT = float(2**53)
"""Largest count accepted."""
VERSIONS = ("stable", "canary")
BEFORE_CANARY = "before the canary started: stable's history only"
"""The no-data reason of a trace's leading stable-only intervals (see ``split_history``)."""


def _bound_name(b: float) -> str:
    if math.isinf(b):
        return "le_inf"
    return "le_" + (str(int(b)) if float(b).is_integer() else repr(float(b)))


def _parse_bound(name: str) -> float | None:
    if not name.startswith("le_"):
        return None
    rest = name[3:]
    if rest in ("inf", "+inf", "Inf", "+Inf"):
        return math.inf
    try:
        v = float(rest)
    except ValueError:
        return None
    return v if math.isfinite(v) and v >= 0 else None


def read_trace(path: str | Path, *, interval_s: float | None = None) -> list[Observation]:
    """Read a trace into observations ordered by time; raise TraceError listing every problem."""
    file = str(path)
    problems: list[Problem] = []

    def bad(line: int | None, col: int | None, where: str, msg: str) -> None:
        problems.append(Problem(file, line, col, where, msg))

    try:
        df = pd.read_csv(
            path, dtype=str, keep_default_na=False, skip_blank_lines=False, skipinitialspace=True
        )
    except FileNotFoundError:
        raise TraceError([Problem(file, None, None, "", "no such file")]) from None
    except pd.errors.EmptyDataError:
        raise TraceError(
            [Problem(file, 1, None, "", "empty file: expected a header line")]
        ) from None
    except pd.errors.ParserError as exc:
        raise TraceError([Problem(file, None, None, "", f"not a valid CSV: {exc}")]) from None
    except UnicodeDecodeError as exc:
        raise TraceError(
            [Problem(file, None, None, "", f"not a UTF-8 text CSV ({exc.reason})")]
        ) from None
    except OSError as exc:
        raise TraceError([Problem(file, None, None, "", exc.strerror or str(exc))]) from None

    cols = [str(c).strip() for c in df.columns]
    has_pod = cols[2:3] == [POD]
    fixed = [*FIXED[:2], POD, *FIXED[2:]] if has_pod else list(FIXED)
    nfix = len(fixed)
    if cols[:nfix] != fixed:
        bad(
            1,
            None,
            "header",
            f"expected the columns to start with {','.join(FIXED)} (optionally "
            f"t_seconds,version,pod,...), got {','.join(cols[:4])}",
        )
        raise TraceError(problems)
    bounds: list[float] = []
    for j, name in enumerate(cols[nfix:], start=nfix + 1):
        b = _parse_bound(name)
        if b is None:
            bad(1, j, "header", f"unexpected column {name!r}: expected le_<ms> or le_inf")
        elif bounds and b <= bounds[-1]:
            bad(
                1,
                j,
                "header",
                f"bucket {name!r} does not increase after {_bound_name(bounds[-1])!r}",
            )
        else:
            bounds.append(b)
    if not problems and bounds and bounds[-1] != math.inf:
        bad(1, len(cols), "header", "the last bucket column must be le_inf")
    if problems:
        raise TraceError(problems)

    rows: dict[float, dict[str, tuple[int, VersionCounts]]] = {}
    pod_rows: dict[float, dict[str, dict[str, tuple[int, PodCounts]]]] = {}
    bad_times: set[float] = set()  # a row there was invalid: don't also report it missing
    for i, rec in enumerate(df.itertuples(index=False, name=None)):
        line = i + 2
        cells = ["" if isinstance(c, float) and math.isnan(c) else str(c).strip() for c in rec]
        if all(c == "" for c in cells):
            bad(line, None, "", "empty line")
            continue
        row_problems = len(problems)
        nums: list[float] = []
        t = math.nan
        version = cells[1]
        pod = cells[2] if has_pod else ""
        for j, (name, raw) in enumerate(zip(cols, cells, strict=True), start=1):
            if name == POD and j == 3:
                continue
            if name == "version":
                if raw not in VERSIONS:
                    bad(line, j, "version", f"expected 'stable' or 'canary', got {raw!r}")
                continue
            if raw == "":
                bad(line, j, name, "missing value")
                continue
            try:
                v = float(raw)
            except ValueError:
                bad(line, j, name, f"expected a number, got {raw!r}")
                continue
            if not math.isfinite(v):
                bad(line, j, name, f"expected a finite number, got {raw!r}")
                continue
            if name == "t_seconds":
                if abs(v) > MAX_T_SECONDS:
                    bad(line, j, name, f"expected |t_seconds| <= {MAX_T_SECONDS:g}, got {raw}")
                    continue
                t = v
                continue
            if v < 0:
                bad(line, j, name, f"increments cannot be negative, got {raw}")
                continue
            if v > MAX_COUNT:
                bad(line, j, name, f"expected a count of at most 2^53, got {raw}")
                continue
            nums.append(v)
        if len(problems) > row_problems:
            if math.isfinite(t):
                bad_times.add(t)
            continue
        requests, errors, cum = nums[0], nums[1], tuple(nums[2:])
        if errors > requests:
            bad(line, nfix, "errors", f"more errors ({errors:g}) than requests ({requests:g})")
            bad_times.add(t)
            continue
        if cum and cum[-1] != requests:
            bad(
                line,
                len(cols),
                "le_inf",
                f"le_inf ({cum[-1]:g}) must equal requests ({requests:g}): every request is in "
                "the +Inf bucket",
            )
            bad_times.add(t)
            continue
        for k in range(1, len(cum)):
            if cum[k] < cum[k - 1]:
                bad(
                    line,
                    nfix + 1 + k,
                    cols[nfix + k],
                    f"buckets must be cumulative: {cum[k]:g} < {cum[k - 1]:g} in "
                    f"{cols[nfix + k - 1]}",
                )
                bad_times.add(t)
                break
        else:
            if pod:
                at_pod = pod_rows.setdefault(t, {}).setdefault(version, {})
                if pod in at_pod:
                    bad(
                        line,
                        3,
                        POD,
                        f"second row of {version} pod {pod!r} for t_seconds={t:g} (first on "
                        f"line {at_pod[pod][0]})",
                    )
                    continue
                at_pod[pod] = (line, PodCounts(pod, requests, errors, cum))
                continue
            at_t = rows.setdefault(t, {})
            if version in at_t:
                bad(
                    line,
                    2,
                    "version",
                    f"second {version} row for t_seconds={t:g} (first on line {at_t[version][0]})",
                )
                continue
            at_t[version] = (line, VersionCounts(requests, errors, tuple(bounds), cum))
    for t, by_version in pod_rows.items():
        at_t = rows.setdefault(t, {})
        for version, by_pod in by_version.items():
            first = min(ln for ln, _ in by_pod.values())
            if version in at_t:
                bad(
                    at_t[version][0],
                    3,
                    POD,
                    f"{version} has a row without a pod and per-pod rows for t_seconds={t:g} "
                    f"(line {first}): give one or the other",
                )
                continue
            at_t[version] = (first, _from_pods(tuple(bounds), [pc for _, pc in by_pod.values()]))
    canary_times = [t for t, at_t in rows.items() if "canary" in at_t]
    first_canary = min(canary_times, default=math.inf)
    for t, at_t in rows.items():
        for want in VERSIONS:
            if want == "canary" and t < first_canary:
                continue  # before the canary started: stable's history
            if want not in at_t and t not in bad_times:
                other = next(iter(at_t.values()))[0]
                bad(other, 1, "t_seconds", f"t_seconds={t:g} has no {want} row")
    if problems:
        raise TraceError(problems)
    if not rows:
        raise TraceError([Problem(file, 2, None, "", "no data rows")])
    times = sorted(rows)
    if interval_s is None:
        if len(times) < 2:
            raise TraceError(
                [Problem(file, 2, 1, "t_seconds", "one interval only: pass interval_s to read it")]
            )
        interval_s = min(b - a for a, b in itertools.pairwise(times))
    if not canary_times:
        raise TraceError(
            [Problem(file, 2, 2, "version", "no canary row: the trace is all stable history")]
        )
    return [
        Observation(t, t + interval_s, stable=rows[t]["stable"][1], canary=rows[t]["canary"][1])
        if t >= first_canary
        else Observation(
            t, t + interval_s, stable=rows[t]["stable"][1], no_data_reason=BEFORE_CANARY
        )
        for t in times
    ]


def split_history(
    observations: Sequence[Observation], seconds: float
) -> tuple[VersionCounts | None, list[Observation]]:
    """Stable's history and the canary's intervals of a trace read by ``read_trace``.

    The history is the sum of the leading stable-only intervals that start within ``seconds``
    before the first canary interval (as the daemon reads ``spec.analysis.history`` from
    Prometheus); None when there are none. The rest are returned in order, from the first
    canary interval on.
    """
    lead = [o for o in observations if o.no_data_reason == BEFORE_CANARY]
    rest = [o for o in observations if o.no_data_reason != BEFORE_CANARY]
    start = (rest[0].start_s if rest else math.inf) - seconds
    used = [replace(o, canary=o.stable, no_data_reason=None) for o in lead if o.start_s >= start]
    if not used:
        return None, rest
    return _sum(used, used[0].start_s, used[-1].end_s).stable, rest


def _from_pods(bounds: tuple[float, ...], pods: Sequence[PodCounts]) -> VersionCounts:
    """A version's counts as the sums of its pods' (pods sorted by name)."""
    ordered = tuple(sorted(pods, key=lambda p: p.pod))
    return VersionCounts(
        math.fsum(p.requests for p in ordered),
        math.fsum(p.errors for p in ordered),
        bounds,
        tuple(math.fsum(p.bucket_counts[k] for p in ordered) for k in range(len(bounds))),
        pods=ordered,
    )


def write_trace(path: str | Path, observations: Sequence[Observation]) -> int:
    """Write usable observations as a trace (no-data intervals become gaps); return rows written.

    Stable's history (``BEFORE_CANARY`` observations, which must all come before the first
    usable one) is written as stable rows only, as ``read_trace`` reads it back.

    All observations must share one histogram layout (or have none). When any version carries
    per-pod counts the trace gets a ``pod`` column: one row per pod (which must add up to the
    version's totals, else ValueError), and one row with an empty ``pod`` for a version without.
    """
    usable = [
        o
        for o in observations
        if o.usable or (o.no_data_reason == BEFORE_CANARY and o.stable is not None)
    ]
    first = min((o.start_s for o in usable if o.usable), default=math.inf)
    if any(o.no_data_reason == BEFORE_CANARY and o.start_s >= first for o in usable):
        raise ValueError("stable's history must come before the canary's first interval")
    bounds: tuple[float, ...] | None = None
    for o in usable:
        for vc in (o.stable, o.canary):
            if vc is None:
                continue
            if bounds is None:
                bounds = vc.bounds_ms
            elif vc.bounds_ms != bounds:
                raise ValueError(
                    f"histogram layout changes at t={o.start_s:g}: {vc.bounds_ms} vs {bounds}"
                )
    bounds = bounds or ()
    with_pods = any(vc.pods for o in usable for vc in (o.stable, o.canary) if vc is not None)
    fixed = [*FIXED[:2], POD, *FIXED[2:]] if with_pods else list(FIXED)
    header = [*fixed, *(_bound_name(b) for b in bounds)]
    records: list[list[object]] = []
    for o in sorted(usable, key=lambda o: o.start_s):
        for name, counts in (("stable", o.stable), ("canary", o.canary)):
            if counts is None:
                continue  # the canary of stable's history
            if counts.pods:
                if any(len(p.bucket_counts) != len(bounds) or not p.pod for p in counts.pods):
                    raise ValueError(
                        f"{name} at t={o.start_s:g}: a pod without a name or the histogram"
                    )
                whole = _from_pods(bounds, counts.pods)
                if (whole.requests, whole.errors, whole.bucket_counts) != (
                    counts.requests,
                    counts.errors,
                    counts.bucket_counts,
                ):
                    raise ValueError(
                        f"{name} at t={o.start_s:g}: the pods' counts do not add up to the totals"
                    )
            parts: list[tuple[str, float, float, tuple[float, ...]]] = [
                (p.pod, p.requests, p.errors, p.bucket_counts) for p in counts.pods
            ] or [("", counts.requests, counts.errors, counts.bucket_counts)]
            for pod, req, err, cum in parts:
                records.append(
                    [
                        _num(o.start_s),
                        name,
                        *([pod] if with_pods else []),
                        _num(req),
                        _num(err),
                        *map(_num, cum),
                    ]
                )
    pd.DataFrame(records, columns=header).to_csv(path, index=False)
    return len(records)


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


class TraceSource:
    """A MetricSource that replays one recorded trace for every rollout asked about.

    ``fetch`` sums the trace's intervals that lie inside ``[start_s, end_s)`` (an interval
    counts when it starts at or after ``start_s`` and ends at or before ``end_s``, with a
    millisecond of slack); none inside means no-data. The same counts answer every request.
    Every field adds up (named histograms, category and label counts and per-pod counts too),
    though a CSV trace carries requests, errors, latency buckets and their per-pod split only.
    Per-pod counts add up by pod name (a pod absent from an interval had none there); a window
    with an interval that cannot tell a version's pods apart has no per-pod counts for it.
    """

    def __init__(self, observations: Sequence[Observation]) -> None:
        self.observations = sorted(observations, key=lambda o: o.start_s)

    @classmethod
    def from_file(cls, path: str | Path, *, interval_s: float | None = None) -> TraceSource:
        return cls(read_trace(path, interval_s=interval_s))

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        eps = 1e-3
        inside = [
            o for o in self.observations if o.start_s >= start_s - eps and o.end_s <= end_s + eps
        ]
        obs = _sum(inside, start_s, end_s)
        return {r.key: obs for r in requests}


def _sum(obs: Sequence[Observation], start_s: float, end_s: float) -> Observation:
    if not obs:
        return Observation(
            start_s, end_s, no_data_reason="the trace has no interval in this window"
        )
    if not all(o.usable for o in obs):
        bad = next(o for o in obs if not o.usable)
        return Observation(start_s, end_s, no_data_reason=bad.no_data_reason or "no data")

    def add(vs: list[VersionCounts]) -> VersionCounts:
        first = vs[0]
        if any(v.bounds_ms != first.bounds_ms for v in vs):
            return VersionCounts(math.nan, math.nan)
        hists: dict[Signal, Histogram] = {}
        for sig, h in first.histograms.items():
            parts = [v.histograms.get(sig) for v in vs]
            if any(p is None or p.bounds != h.bounds or p.series != h.series for p in parts):
                return VersionCounts(math.nan, math.nan)  # a changed layout: no data
            hists[sig] = replace(
                h,
                cumulative=tuple(
                    sum(c) for c in zip(*(p.cumulative for p in parts if p), strict=True)
                ),
            )
        cats: dict[str, dict[str, float]] = {}
        for v in vs:
            for name, counts in v.categories.items():
                into = cats.setdefault(name, {})
                for cat, n in counts.items():
                    into[cat] = into.get(cat, 0.0) + n
        labels = {
            name: LabelCounts(
                sum(v.labels[name].correct for v in vs if name in v.labels),
                sum(v.labels[name].labelled for v in vs if name in v.labels),
            )
            for name in first.labels
        }
        return VersionCounts(
            sum(v.requests for v in vs),
            sum(v.errors for v in vs),
            first.bounds_ms,
            tuple(sum(c) for c in zip(*(v.bucket_counts for v in vs), strict=True)),
            histograms=hists,
            categories=cats,
            labels=labels,
            pods=_add_pods(vs),
        )

    stable = add([o.stable for o in obs if o.stable is not None])
    canary = add([o.canary for o in obs if o.canary is not None])
    return Observation(start_s, end_s, stable=stable, canary=canary).validated()


def _add_pods(vs: Sequence[VersionCounts]) -> tuple[PodCounts, ...]:
    """The intervals' per-pod counts added up by pod (sorted), or () when one interval has none."""
    if not vs or not all(v.pods for v in vs):
        return ()
    # Pods without buckets (a source asked for no latency) add up without them.
    width = len(vs[0].bounds_ms)
    if any(len(p.bucket_counts) != width for v in vs for p in v.pods):
        width = 0
    acc: dict[str, list[float]] = {}
    for v in vs:
        for p in v.pods:
            into = acc.setdefault(p.pod, [0.0] * (2 + width))
            for k, x in enumerate((p.requests, p.errors, *p.bucket_counts[:width])):
                into[k] += x
    return tuple(PodCounts(pod, a[0], a[1], tuple(a[2:])) for pod, a in sorted(acc.items()))
