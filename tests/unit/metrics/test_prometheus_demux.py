"""PrometheusSource with a fake transport: batching, chunking, demultiplexing, faults."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from canaryd.metrics.prometheus import (
    PrometheusConfig,
    PrometheusSource,
    QueryError,
    RetryPolicy,
)
from canaryd.metrics.source import FetchRequest
from canaryd.policy.model import Queries, Source

ISTIO = Source(preset="istio")


def kind_of(q: str) -> str:
    if "resets(" in q:
        return "resets"
    if ", le) (" in q:
        return "buckets"
    if "response_code" in q:
        return "errors"
    return "requests"


def row(labels: dict[str, str], value: float | str) -> dict[str, Any]:
    return {"metric": labels, "value": [0, str(value)]}


@dataclass
class FakeTransport:
    """Answers from per-kind row lists; records every query it is asked."""

    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fail: dict[str, QueryError] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
        self.queries.append(promql)
        kind = kind_of(promql)
        if kind in self.fail:
            raise self.fail[kind]
        return self.answers.get(kind, [])

    def close(self) -> None:
        pass


def istio_rows(
    ns: str, rev: str, req: float, err: float, buckets: dict[str, float], resets: float = 0
):
    lab = {"destination_workload_namespace": ns, "destination_workload": rev}
    return {
        "requests": [row(lab, req)],
        "errors": [row(lab, err)],
        "buckets": [row({**lab, "le": le}, v) for le, v in buckets.items()],
        "resets": [row({**lab, "canaryd_counter": "istio_requests_total"}, resets)],
    }


def merge(*parts: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, []).extend(v)
    return out


B = {"10": 5, "100": 9, "+Inf": 10}


def make(
    answers: dict[str, list[dict[str, Any]]], **cfg: Any
) -> tuple[PrometheusSource, FakeTransport]:
    t = FakeTransport(answers)
    src = PrometheusSource(
        PrometheusConfig(url="http://unused", **cfg), transport=t, sleep=lambda s: None
    )
    return src, t


def req(key: str = "k", ns: str = "ns", s: str = "s", c: str = "c", **kw: Any) -> FetchRequest:
    return FetchRequest(key, ns, s, c, kw.pop("source", ISTIO), **kw)


def test_demultiplexes_by_namespace_and_revision_with_workload_suffix() -> None:
    answers = merge(
        istio_rows("ns", "s-deployment", 10, 1, B),
        istio_rows("ns", "c", 10, 2, B),
        istio_rows("other", "s", 99, 0, B),  # same revision name, another namespace
    )
    src, t = make(answers)
    out = src.fetch([req("a"), req("b", ns="other", c="c2")], 0, 60)
    a = out["a"]
    assert a.usable and a.stable is not None and a.canary is not None
    assert (a.stable.requests, a.stable.errors, a.canary.errors) == (10, 1, 2)
    assert a.stable.bounds_ms == (10.0, 100.0, math.inf)
    assert a.stable.bucket_counts == (5, 9, 10)
    assert out["b"].no_data_reason == "no canary series (revision 'c2')"
    assert len(t.queries) == 4  # one per kind for both rollouts


def test_label_spellings_of_one_revision_add_up() -> None:
    answers = merge(
        istio_rows("ns", "s-deployment", 10, 1, B),
        istio_rows("ns", "s", 5, 0, {"10": 1, "100": 2, "+Inf": 5}),
        istio_rows("ns", "c", 10, 2, B),
    )
    src, _ = make(answers)
    o = src.fetch_one(req(), 0, 60)
    assert (
        o.stable is not None and o.stable.requests == 15 and o.stable.bucket_counts == (6, 11, 15)
    )


@pytest.mark.parametrize(
    ("stable_value", "reason"),
    [
        ("NaN", "NaN or Inf in the stable counts"),
        ("+Inf", "NaN or Inf in the stable counts"),
    ],
)
def test_nan_is_no_data(stable_value: str, reason: str) -> None:
    answers = merge(istio_rows("ns", "s", stable_value, 0, B), istio_rows("ns", "c", 10, 2, B))  # type: ignore[arg-type]
    src, _ = make(answers)
    assert src.fetch_one(req(), 0, 60).no_data_reason == reason


def test_resets_and_partial_buckets_are_no_data() -> None:
    src, _ = make(merge(istio_rows("ns", "s", 10, 0, B), istio_rows("ns", "c", 10, 2, B, resets=1)))
    assert (
        src.fetch_one(req(), 0, 60).no_data_reason
        == "counter reset in the window (canary revision 'c')"
    )
    # NaN from resets() is not a reset: it says so (not "counter reset").
    src, _ = make(
        merge(istio_rows("ns", "s", 10, 0, B), istio_rows("ns", "c", 10, 2, B, resets="NaN"))  # type: ignore[arg-type]
    )
    assert (
        src.fetch_one(req(), 0, 60).no_data_reason
        == "NaN from resets() (canary revision 'c'): no count"
    )
    src, _ = make(
        merge(istio_rows("ns", "s", 10, 0, B), istio_rows("ns", "c", 10, 2, {"10": 5, "100": 9}))
    )
    assert "no +Inf bucket" in (src.fetch_one(req(), 0, 60).no_data_reason or "")
    src, _ = make(
        merge(istio_rows("ns", "s", 10, 0, B), istio_rows("ns", "c", 10, 2, {"10": 5, "+Inf": 10}))
    )
    assert src.fetch_one(req(), 0, 60).no_data_reason == (
        "partial bucket set: stable and canary histograms differ (only stable: le=100; only canary: -)"
    )
    src, _ = make(
        merge(
            istio_rows("ns", "s", 10, 0, B),
            istio_rows("ns", "c", 10, 2, {"10": 9, "100": 5, "+Inf": 10}),
        )
    )
    assert "not cumulative" in (src.fetch_one(req(), 0, 60).no_data_reason or "")


def test_counts_are_rounded_unless_asked_not_to() -> None:
    answers = merge(
        istio_rows("ns", "s", 10.4, 0.6, {"10": 4.6, "100": 9.2, "+Inf": 10.4}),
        istio_rows("ns", "c", 10, 2, B),
    )
    src, _ = make(answers)
    o = src.fetch_one(req(), 0, 60)
    assert o.stable is not None and (o.stable.requests, o.stable.errors) == (10, 1)
    assert o.stable.bucket_counts == (5, 9, 10)
    src, _ = make(answers, round_counts=False)
    o = src.fetch_one(req(), 0, 60)
    assert o.stable is not None and o.stable.requests == 10.4


def test_latency_is_not_fetched_when_not_needed() -> None:
    answers = merge(istio_rows("ns", "s", 10, 0, B), istio_rows("ns", "c", 10, 2, B))
    src, t = make(answers)
    o = src.fetch_one(req(need_latency=False), 0, 60)
    assert o.usable and o.canary is not None and o.canary.bounds_ms == ()
    assert [kind_of(q) for q in t.queries] == ["requests", "errors", "resets"]


def test_retryable_failures_are_retried_then_no_data() -> None:
    src, t = make({}, retry=RetryPolicy(attempts=4, backoff_s=0.01))
    t.fail["requests"] = QueryError("HTTP 503 from Prometheus: overloaded", retryable=True)
    out = src.fetch([req("a"), req("b", s="s2", c="c2")], 0, 60)
    assert (
        out["a"].no_data_reason == "prometheus: HTTP 503 from Prometheus: overloaded (4 attempts)"
    )
    assert out["a"] == out["b"]
    assert len(t.queries) == 4
    assert src.last_stats.failures["requests"] == 1


def test_bad_queries_are_not_retried() -> None:
    src, t = make({}, retry=RetryPolicy(attempts=4))
    t.fail["requests"] = QueryError("HTTP 400 from Prometheus: parse error", retryable=False)
    assert src.fetch_one(req(), 0, 60).no_data_reason == (
        "prometheus: HTTP 400 from Prometheus: parse error (1 attempt)"
    )
    assert len(t.queries) == 1


def test_the_budget_bounds_a_tick() -> None:
    now = [0.0]

    class Slow(FakeTransport):
        def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
            now[0] += timeout_s
            raise QueryError(f"timeout after {timeout_s:.3g}s", retryable=True)

    t = Slow()
    src = PrometheusSource(
        PrometheusConfig(
            url="x", retry=RetryPolicy(attempts=5, timeout_s=4, budget_s=100, budget_fraction=0.1)
        ),
        transport=t,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    out = src.fetch([req("a")], 0, 60)  # budget: 10% of 60s = 6s = 4s + 0.2s backoff + 1.8s
    assert now[0] <= 6.0 + 1e-9
    assert out["a"].no_data_reason == "prometheus: timeout after 1.8s (2 attempts)"


def test_bad_requests_are_no_data_without_queries() -> None:
    src, t = make({})
    out = src.fetch([req("same", s="r", c="r"), req("unknown", c="")], 0, 60)
    assert out["same"].no_data_reason == "stable and canary are the same revision ('r')"
    assert out["unknown"].no_data_reason == "stable or canary revision is not known yet"
    assert src.fetch([req()], 60, 60)["k"].no_data_reason == "empty window [60, 60)"
    assert t.queries == []


def test_thousand_rollouts_need_few_queries_that_fit_the_limit() -> None:
    reqs = [
        req(
            f"r{i}",
            ns=f"team-{i % 50}",
            s=f"model-{i:04d}-predictor-00001",
            c=f"model-{i:04d}-predictor-00002",
        )
        for i in range(1000)
    ]
    for method, limit in (("POST", 128 * 1024), ("GET", 6 * 1024)):
        src, t = make({}, method=method)
        out = src.fetch(reqs, 0, 60)
        assert len(out) == 1000
        per_kind: dict[str, int] = {}
        for q in t.queries:
            per_kind[kind_of(q)] = per_kind.get(kind_of(q), 0) + 1
        assert src.last_stats.max_query_bytes <= limit
        if method == "POST":
            assert max(per_kind.values()) <= 4, per_kind
        # Every revision is asked for in exactly one query per kind.
        reqs_queries = [q for q in t.queries if kind_of(q) == "requests"]
        asked = sum(
            len(set(re.findall(r"model-\d{4}-predictor-0000[12]", q))) for q in reqs_queries
        )
        assert asked == 2000


def test_custom_metrics_and_custom_preset() -> None:
    src_model = Source(
        preset="custom",
        version_label="rev",
        queries=Queries(
            requests='sum by ({version_label}) (increase(req_total{ns="{namespace}", {version_label}=~"{revisions}"}[{interval}]))',
            errors='sum by ({version_label}) (increase(err_total{ns="{namespace}", {version_label}=~"{revisions}"}[{interval}])) or (0 * x)',
        ),
    )

    class T(FakeTransport):
        def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
            self.queries.append(promql)
            if promql.startswith("avg"):
                return [row({"rev": "s"}, 0.5), row({"rev": "c"}, 0.7)]
            v = 2 if "err_total" in promql else 10
            return [row({"rev": "s"}, v), row({"rev": "c"}, v)]

    t = T()
    src = PrometheusSource(PrometheusConfig(url="x"), transport=t)
    r = FetchRequest(
        "k",
        "ns",
        "s",
        "c",
        src_model,
        custom_metrics=(("gpu", 'avg by (rev) (gpu{rev=~"{revisions}"})'),),
        need_latency=False,
    )
    o = src.fetch_one(r, 0, 60)
    assert o.usable and o.canary is not None
    assert (o.canary.requests, o.canary.errors, o.canary.values) == (10, 2, {"gpu": 0.7})
    assert src.last_stats.queries == {"requests": 1, "errors": 1, "custom:gpu": 1}
    latency = src.fetch_one(FetchRequest("k", "ns", "s", "c", src_model), 0, 60)
    assert latency.no_data_reason == "no latency histogram query for this source"
