"""Batching: group a tick's rollouts by query configuration and cut groups to the size limit.

Rollouts that share a query configuration (preset, version label, error codes, latency unit,
custom templates; for the custom preset also the namespace) are served by one query per metric
kind. A group is split into chunks only where a query would exceed the URL-encoded size limit;
the size of a chunk's largest query is bounded without rendering it (``_SizeModel``).
"""

from __future__ import annotations

import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from canaryd.errors import MetricsError
from canaryd.metrics.presets import QuerySet, promql_string, regex_quote, version_label_of
from canaryd.metrics.source import FetchRequest

Render = Callable[[Sequence[FetchRequest], float], tuple[QuerySet, dict[str, str]]]
"""Renders a chunk's queries: (the preset's QuerySet, ``FetchRequest.templates`` key -> PromQL)."""


def config_key(r: FetchRequest) -> tuple[Any, ...]:
    """Requests with equal keys can share one query per metric kind.

    Templates (custom, categorical and quality metrics) fix one namespace, so requests with
    templates share queries only within a namespace.
    """
    s = r.source
    ns_key = r.namespace if s.preset == "custom" else None
    templates = r.templates
    return (
        s.preset,
        version_label_of(s),
        s.error_codes,
        s.errors_metric,
        s.pod_label,
        s.latency_unit,
        s.queries,
        ns_key,
        tuple(sorted(templates.items())),
        tuple(sorted(c for _, _, c in r.categorical)),
        r.namespace if templates else None,
        tuple(sorted(r.histograms)),
        bool(r.finish_reasons),
    )


def plan_chunks(
    reqs: Sequence[FetchRequest], window: float, limit: int, render: Render
) -> list[list[FetchRequest]]:
    """Group by query configuration, then split groups so every query fits ``limit`` bytes."""
    groups: dict[tuple[Any, ...], list[FetchRequest]] = defaultdict(list)
    for r in reqs:
        groups[config_key(r)].append(r)
    chunks: list[list[FetchRequest]] = []
    for group in groups.values():
        try:
            size = _SizeModel(render, group[0], window)
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


_SENTINEL_REV = "canarydsentinelrevision"
_SENTINEL_NS = "canarydsentinelnamespace"


class _SizeModel:
    """Upper bound of the encoded size of a chunk's largest query, without rendering it.

    Every query is affine in the lengths of the revision and namespace alternations: render
    once with sentinel names, count how often each sentinel occurs, and the rest is constant.
    """

    def __init__(self, render: Render, r: FetchRequest, window: float) -> None:
        probe = replace(
            r,
            key=None,
            namespace=_SENTINEL_NS,
            stable_revision=_SENTINEL_REV,
            canary_revision=_SENTINEL_REV,
        )
        qs, custom = render([probe], window)
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
