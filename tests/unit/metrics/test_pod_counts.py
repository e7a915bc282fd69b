"""Per-pod counts: the pod label in the queries' grouping, and the demultiplexing into
``VersionCounts.pods`` (all-or-nothing per version, totals = sums)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from canaryd.errors import MetricsError
from canaryd.metrics.presets import build_queries, pod_label_of
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource, QueryError
from canaryd.metrics.source import FetchRequest
from canaryd.observation import PodCounts
from canaryd.policy.model import Queries, Source

from .test_prometheus_demux import kind_of

ISTIO = Source(preset="istio")
NSL, VL = "destination_workload_namespace", "destination_workload"


@dataclass
class Fake:
    """Answers per metric kind; records the queries."""

    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
        self.queries.append(promql)
        return self.answers.get(kind_of(promql), [])

    def close(self) -> None:
        pass


def _row(labels: dict[str, str], value: float) -> dict[str, Any]:
    return {"metric": labels, "value": [0, str(value)]}


def _pod(
    rev: str, pod: str | None, req: float, err: float, buckets: tuple[float, float, float]
) -> dict[str, list[dict[str, Any]]]:
    """One pod's answer rows (``pod`` None: series without the pod label)."""
    lab = {NSL: "ns", VL: rev} | ({} if pod is None else {"pod": pod})
    les = ("10", "100", "+Inf")
    return {
        "requests": [_row(lab, req)],
        "errors": [_row(lab, err)] if err else [],  # a pod that never failed has no series
        "buckets": [_row({**lab, "le": le}, v) for le, v in zip(les, buckets, strict=True)],
    }


def _answers(*parts: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {
        "resets": [_row({NSL: "ns", VL: r}, 0) for r in ("s", "c", "s2", "c2")]
    }
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, []).extend(v)
    return out


def _fetch(answers: dict[str, list[dict[str, Any]]], *reqs: FetchRequest) -> tuple[Any, Fake]:
    fake = Fake(answers)
    src = PrometheusSource(PrometheusConfig(url="http://unused"), transport=fake)
    reqs = reqs or (FetchRequest("k", "ns", "s", "c", ISTIO),)
    return src.fetch(list(reqs), 0, 60), fake


# -- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "label"),
    [("istio", "pod"), ("knative", "pod_name"), ("kserve", "pod"), ("vllm", "pod")],
)
def test_each_preset_groups_requests_errors_and_buckets_by_its_pod_label(
    preset: str, label: str
) -> None:
    src = Source.model_validate(
        {"preset": preset, "errorsMetric": "e_total"} if preset == "kserve" else {"preset": preset}
    )
    qs = build_queries(src, ["ns"], ["a", "b"], 60)
    assert qs.pod_label == label
    assert qs.requests.startswith("sum by (") and f", {label}) (" in qs.requests
    assert qs.errors is not None and f", {label}) (" in qs.errors
    assert qs.buckets is not None and f", {label}, le) (" in qs.buckets
    # A reset is judged per version: its grouping has no pod.
    assert qs.resets is not None and label not in qs.resets.split(" (", 1)[0]


def test_istio_source_reports_are_not_grouped_by_pod() -> None:
    # reporter="source" series carry the *sending* pod, not one of the version's.
    qs = build_queries(ISTIO, ["ns"], ["a"], 60)
    assert qs.live_requests is not None and qs.live_errors is not None
    assert qs.live_requests.startswith(f"sum by ({NSL}, {VL}) (")
    assert qs.live_errors.startswith(f"sum by ({NSL}, {VL}) (")


def test_pod_label_can_be_renamed_or_turned_off() -> None:
    renamed = build_queries(
        Source(preset="istio", pod_label="kubernetes_pod_name"), ["n"], ["a"], 60
    )
    assert renamed.pod_label == "kubernetes_pod_name"
    assert f"sum by ({NSL}, {VL}, kubernetes_pod_name) (" in renamed.requests
    off = build_queries(Source(preset="istio", pod_label=""), ["n"], ["a"], 60)
    assert off.pod_label is None
    assert off.requests.startswith(f"sum by ({NSL}, {VL}) (")
    assert off.buckets is not None and off.buckets.startswith(f"sum by ({NSL}, {VL}, le) (")


def test_custom_preset_has_no_pod_label_unless_the_policy_names_one() -> None:
    q = Queries(
        requests='sum by ({version_label}) (increase(r{ns="{namespace}"}[{interval}]))',
        errors='sum by ({version_label}) (increase(e{ns="{namespace}"}[{interval}]))',
    )
    assert pod_label_of(Source(preset="custom", queries=q)) is None
    assert pod_label_of(Source(preset="custom", queries=q, pod_label="pod")) == "pod"


def test_a_pod_label_that_clashes_with_the_queries_labels_is_refused() -> None:
    # The policy refuses what it can tell on its own (tests/unit/policy/test_pod_label.py);
    # the preset's namespace label is only known here, so the rollout is no-data with why.
    for name in ("destination_workload_namespace", "finished_reason", "canaryd_edge"):
        with pytest.raises(MetricsError, match="already use"):
            pod_label_of(Source(preset="istio", pod_label=name))
    clash = Source(preset="istio", pod_label="destination_workload_namespace")
    out, fake = _fetch(_answers(), FetchRequest("k", "ns", "s", "c", clash))
    reason = out["k"].no_data_reason
    assert reason is not None and "podLabel 'destination_workload_namespace'" in reason
    assert fake.queries == []
    # The default version label is only known here too.
    with pytest.raises(MetricsError, match="already use"):
        pod_label_of(Source(preset="istio", pod_label="destination_workload"))


def test_policy_refuses_a_pod_label_that_is_no_label_name() -> None:
    with pytest.raises(ValidationError, match="podLabel"):
        Source.model_validate({"preset": "istio", "podLabel": 'pod"} or vector(1)'})
    assert Source.model_validate({"podLabel": ""}).pod_label == ""


# -- demultiplexing -------------------------------------------------------------------------


def test_per_pod_counts_come_back_sorted_with_totals_equal_to_their_sums() -> None:
    out, fake = _fetch(
        _answers(
            _pod("s", "s-b", 30, 0, (20, 28, 30)),
            _pod("s", "s-a", 50, 2, (40, 48, 50)),
            _pod("s-deployment", "s-c", 20, 1, (10, 18, 20)),  # another spelling, another pod
            _pod("c", "c-a", 40, 4, (20, 36, 40)),
        )
    )
    o = out["k"]
    assert o.usable and o.stable is not None and o.canary is not None
    assert (o.stable.requests, o.stable.errors, o.stable.bucket_counts) == (100, 3, (70, 94, 100))
    assert o.stable.bounds_ms == (10.0, 100.0, math.inf)
    assert o.stable.pods == (
        PodCounts("s-a", 50, 2, (40, 48, 50)),
        PodCounts("s-b", 30, 0, (20, 28, 30)),
        PodCounts("s-c", 20, 1, (10, 18, 20)),
    )
    assert o.canary.pods == (PodCounts("c-a", 40, 4, (20, 36, 40)),)
    assert len(fake.queries) == 4  # requests, errors, buckets, resets: per pod at no extra query


def test_series_without_the_pod_label_count_in_the_totals_and_leave_pods_empty() -> None:
    out, _ = _fetch(
        _answers(
            _pod("s", "s-a", 50, 2, (40, 48, 50)),
            _pod("s", None, 10, 1, (5, 9, 10)),  # e.g. a target scraped without the relabelling
            _pod("c", "c-a", 40, 4, (20, 36, 40)),
        )
    )
    o = out["k"]
    assert o.usable and o.stable is not None and o.canary is not None
    assert (o.stable.requests, o.stable.errors, o.stable.bucket_counts) == (60, 3, (45, 57, 60))
    assert o.stable.pods == ()
    assert o.canary.pods == (PodCounts("c-a", 40, 4, (20, 36, 40)),)  # per version


def test_inconsistent_pod_answers_leave_pods_empty_but_keep_the_observation() -> None:
    answers = _answers(_pod("s", "s-a", 50, 2, (40, 48, 50)), _pod("c", "c-a", 40, 4, (20, 36, 40)))
    # Errors from a pod the requests answer does not know (scraped between the two queries).
    answers["errors"].append(_row({NSL: "ns", VL: "s", "pod": "s-new"}, 1))
    # A canary pod with a partial bucket set.
    answers["requests"].append(_row({NSL: "ns", VL: "c", "pod": "c-b"}, 5))
    answers["buckets"].append(_row({NSL: "ns", VL: "c", "pod": "c-b", "le": "+Inf"}, 5))
    out, _ = _fetch(answers)
    o = out["k"]
    assert o.usable and o.stable is not None and o.canary is not None
    assert (o.stable.requests, o.stable.errors) == (50, 3)
    assert (o.canary.requests, o.canary.bucket_counts) == (45, (20, 36, 45))
    assert o.stable.pods == () and o.canary.pods == ()


def test_pods_that_served_nothing_are_left_out() -> None:
    out, _ = _fetch(
        _answers(
            _pod("s", "s-a", 50, 2, (40, 48, 50)),
            _pod("s", "s-gone", 0, 0, (0, 0, 0)),  # still within the lookback, no traffic
            _pod("c", "c-a", 40, 4, (20, 36, 40)),
        )
    )
    o = out["k"]
    assert o.stable is not None and [p.pod for p in o.stable.pods] == ["s-a"]


def test_without_latency_pods_carry_no_buckets() -> None:
    r = FetchRequest("k", "ns", "s", "c", ISTIO, need_latency=False)
    out, fake = _fetch(
        _answers(_pod("s", "s-a", 50, 2, (40, 48, 50)), _pod("c", "c-a", 40, 4, (20, 36, 40))), r
    )
    o = out["k"]
    assert o.stable is not None and o.stable.pods == (PodCounts("s-a", 50, 2),)
    assert len(fake.queries) == 3  # no buckets query


def test_two_rollouts_share_the_per_pod_queries() -> None:
    out, fake = _fetch(
        _answers(
            _pod("s", "s-a", 50, 2, (40, 48, 50)),
            _pod("c", "c-a", 40, 4, (20, 36, 40)),
            _pod("s2", "s2-a", 7, 0, (7, 7, 7)),
            _pod("s2", "s2-b", 3, 1, (1, 2, 3)),
            _pod("c2", "c2-a", 9, 0, (3, 6, 9)),
        ),
        FetchRequest("one", "ns", "s", "c", ISTIO),
        FetchRequest("two", "ns", "s2", "c2", ISTIO),
    )
    two = out["two"]
    assert two.stable is not None and two.canary is not None
    assert two.stable.pods == (
        PodCounts("s2-a", 7, 0, (7, 7, 7)),
        PodCounts("s2-b", 3, 1, (1, 2, 3)),
    )
    assert two.canary.pods == (PodCounts("c2-a", 9, 0, (3, 6, 9)),)
    assert out["one"].stable is not None and len(out["one"].stable.pods) == 1
    assert len(fake.queries) == 4


class _ByMetric(Fake):
    """Answers by the metric a custom template reads."""

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
        self.queries.append(promql)
        return next((rows for name, rows in self.answers.items() if f"{name}{{" in promql), [])


def test_custom_templates_that_keep_the_pod_label_answer_per_pod() -> None:
    q = Queries(
        requests='sum by ({version_label}, pod) (increase(req_total{ns="{namespace}", '
        '{version_label}=~"{revisions}"}[{interval}]))',
        errors='sum by ({version_label}, pod) (increase(err_total{ns="{namespace}", '
        '{version_label}=~"{revisions}"}[{interval}]))',
    )
    custom = Source(preset="custom", queries=q, pod_label="pod")
    fake = _ByMetric(
        {
            "req_total": [
                _row({"revision": "s", "pod": "s-b"}, 20.4),  # increase() extrapolates
                _row({"revision": "s", "pod": "s-a"}, 9.6),
                _row({"revision": "c", "pod": "c-a"}, 5),
            ],
            "err_total": [_row({"revision": "s", "pod": "s-a"}, 1)],
        }
    )
    src = PrometheusSource(PrometheusConfig(url="http://unused"), transport=fake)
    r = FetchRequest("k", "ns", "s", "c", custom, need_latency=False)
    o = src.fetch_one(r, 0, 60)
    assert o.usable and o.stable is not None and o.canary is not None
    assert (o.stable.requests, o.stable.errors) == (30, 1)
    assert o.stable.pods == (PodCounts("s-a", 10, 1), PodCounts("s-b", 20, 0))
    assert o.canary.pods == (PodCounts("c-a", 5, 0),)
    # Rounded per pod the sums can miss the rounded total: then no pods, never wrong ones.
    fake.answers["req_total"][0] = _row({"revision": "s", "pod": "s-b"}, 20.6)
    o = src.fetch_one(r, 0, 60)
    assert o.stable is not None and o.stable.requests == 30 and o.stable.pods == ()


@dataclass
class _Limited(Fake):
    """Refuses, as too large, any answer about more than ``limit`` revisions."""

    limit: int = 2

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
        self.queries.append(promql)
        revs = re.search(r'destination_workload=~"\(\?:([^)]*)\)', promql)
        if revs and len(revs.group(1).split("|")) > self.limit:
            raise QueryError("answer over 64 MiB", retryable=False, kind="too-large")
        return self.answers.get(kind_of(promql), [])


def test_an_answer_over_the_size_limit_splits_the_batch() -> None:
    revs = [(f"s{i}", f"c{i}") for i in range(4)]
    parts = [
        _pod(r, f"{r}-a", 10 + i, 0, (5, 9, 10 + i)) for i, pair in enumerate(revs) for r in pair
    ]
    answers = _answers(*parts)
    answers["resets"] = [_row({NSL: "ns", VL: r}, 0) for pair in revs for r in pair]
    reqs = [FetchRequest(s, "ns", s, c, ISTIO) for s, c in revs]

    def run(limit: int) -> tuple[dict[Any, Any], PrometheusSource]:
        src = PrometheusSource(
            PrometheusConfig(url="http://unused"), transport=_Limited(answers, limit=limit)
        )
        return src.fetch(reqs, 0, 60), src

    # 8 revisions refused, then 2 x 4 refused, then 4 x 2 answered: 1 + 2 + 4 requests queries.
    out, src = run(2)
    assert all(o.usable for o in out.values())
    assert [p.pod for p in out["s3"].stable.pods] == ["s3-a"]
    assert src.last_stats.splits == 3
    assert src.last_stats.queries["requests"] == 7 and src.last_stats.queries["buckets"] == 4
    # Halved twice at most: an answer still too large for one rollout stays no-data, with why.
    out, src = run(1)
    assert {o.no_data_reason for o in out.values()} == {
        "prometheus: answer over 64 MiB (1 attempt)"
    }
    assert src.last_stats.queries["requests"] == 7
