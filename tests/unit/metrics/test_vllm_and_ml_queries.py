"""The vllm preset and the ML metrics' queries: names, escaping, batching and demultiplexing."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from canaryd.errors import MetricsError
from canaryd.metrics.presets import build_queries
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource, QueryError
from canaryd.metrics.source import FetchRequest, fetch_request_for
from canaryd.policy.model import CanaryPolicy, Source

from .test_presets import HOSTILE, skeleton

VLLM = Source(preset="vllm")
SIGNALS = ("generation_tokens", "inter_token", "prompt_tokens", "ttft")


def _edge(metric: str, sel: str, by: str) -> str:
    """The edge-sample delta the presets count a window with (see presets.build_queries)."""
    end = f"last_over_time({metric}{{{sel}}}[360s])"
    start = f"-1 * last_over_time({metric}{{{sel}}}[300s] offset 60s)"
    return (
        f"sum by ({by}) ("
        f'label_replace({end}, "canaryd_edge", "end", "", "") or '
        f'label_replace({start}, "canaryd_edge", "start", "", ""))'
    )


def test_vllm_queries_use_vllms_names_and_the_relabelled_revision() -> None:
    qs = build_queries(VLLM, ["models"], ["r1", "r2"], 60, histograms=SIGNALS, finish_reasons=True)
    sel = 'namespace=~"models", serving_knative_dev_revision=~"r1|r2"'
    by = "namespace, serving_knative_dev_revision"
    by_pod = f"{by}, pod"  # the pod relabelling's label: per-pod counts in the same queries
    assert qs.requests == _edge("vllm:request_success_total", sel, by_pod)
    assert qs.errors == _edge(
        "vllm:request_success_total", f'{sel}, finished_reason="error"', by_pod
    )
    assert qs.buckets == _edge("vllm:e2e_request_latency_seconds_bucket", sel, f"{by_pod}, le")
    assert qs.latency_scale_ms == 1000.0
    assert qs.finish_reasons == _edge("vllm:request_success_total", sel, f"{by}, finished_reason")
    itl = qs.histograms["inter_token"]
    names = list(dict.fromkeys(re.findall(r"last_over_time\((vllm:[a-z_]+)_bucket", itl)))
    assert names == [
        "vllm:request_time_per_output_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
    ]
    assert itl.count('"canaryd_series"') == 3
    assert "vllm:time_to_first_token_seconds_bucket" in qs.histograms["ttft"]
    assert "vllm:request_generation_tokens_bucket" in qs.histograms["generation_tokens"]
    assert "vllm:request_prompt_tokens_bucket" in qs.histograms["prompt_tokens"]
    assert qs.resets is not None
    for counter in (
        "vllm:request_success_total",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:request_time_per_output_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:request_generation_tokens_bucket",
    ):
        assert f"resets({counter}{{" in qs.resets, counter
        assert f'"canaryd_counter", "{counter}"' in qs.resets  # tagged: their labels clash
    assert set(qs.kinds()) == {
        "requests",
        "errors",
        "buckets",
        "resets",
        "finish_reasons",
        *(f"histogram:{s}" for s in SIGNALS),
    }


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_do_not_change_the_vllm_query_structure(name: str) -> None:
    kw: dict[str, Any] = {"histograms": SIGNALS, "finish_reasons": True}
    benign = build_queries(VLLM, ["ns"], ["rev-a", "rev-b"], 60, **kw)
    hostile = build_queries(VLLM, [name], [name, "rev-b"], 60, **kw)
    for kind, q in benign.kinds().items():
        assert skeleton(hostile.kinds()[kind]) == skeleton(q), kind


def test_llm_series_need_the_vllm_preset() -> None:
    with pytest.raises(MetricsError, match="use preset vllm"):
        build_queries(Source(preset="knative"), ["ns"], ["a", "b"], 60, histograms=("ttft",))


# --- demultiplexing with a fake transport ----------------------------------------------


def row(labels: dict[str, str], value: float | str) -> dict[str, Any]:
    return {"metric": labels, "value": [0, str(value)]}


@dataclass
class Fake:
    """Answers keyed by a substring of the query (first match wins); records the queries."""

    answers: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
        self.queries.append(promql)
        for needle, rows in self.answers:
            if needle in promql:
                return rows
        return []

    def close(self) -> None:
        pass


def lab(rev: str, **extra: str) -> dict[str, str]:
    return {"namespace": "ns", "serving_knative_dev_revision": rev, **extra}


def hist_rows(rev: str, series: str, counts: dict[str, float]) -> list[dict[str, Any]]:
    return [row(lab(rev, le=le, canaryd_series=series), v) for le, v in counts.items()]


TPOT = "vllm:request_time_per_output_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
LLM_POLICY = {
    "apiVersion": "canaryd.io/v1alpha1",
    "kind": "CanaryPolicy",
    "metadata": {"name": "llm"},
    "spec": {
        "target": {"namespace": "ns", "inferenceService": "llm"},
        "analysis": {
            "source": {"preset": "vllm"},
            "metrics": [
                {"name": "errors", "kind": "errors"},
                {"name": "ttft", "kind": "ttft"},
                {"name": "itl", "kind": "inter-token"},
                {"name": "fin", "kind": "finish-reason"},
            ],
        },
    },
}


def answers(itl_series: dict[str, list[str]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """A whole vllm answer set; ``itl_series`` says which per-token series each revision has."""
    out: list[tuple[str, list[dict[str, Any]]]] = [
        ("resets(", []),
        (
            "finished_reason) (",
            [
                row(lab("s", finished_reason="stop"), 90),
                row(lab("s", finished_reason="length"), 10),
                row(lab("c", finished_reason="stop"), 16),
                row(lab("c", finished_reason="length"), 3),
                row(lab("c", finished_reason="error"), 1),
            ],
        ),
        ('finished_reason="error"', [row(lab("c"), 1), row(lab("s"), 0)]),
        ("vllm:time_to_first_token_seconds_bucket", []),
    ]
    ttft = hist_rows("s", "vllm:time_to_first_token_seconds", {"0.25": 40, "0.5": 90, "+Inf": 100})
    ttft += hist_rows("c", "vllm:time_to_first_token_seconds", {"0.25": 5, "0.5": 15, "+Inf": 20})
    out[-1] = ("vllm:time_to_first_token_seconds_bucket", ttft)
    itl: list[dict[str, Any]] = []
    for rev, names in itl_series.items():
        for name in names:
            itl += hist_rows(rev, name, {"0.025": 30, "0.05": 80, "+Inf": 100})
    out.append(("vllm:request_time_per_output_token_seconds_bucket", itl))
    out.append(
        ("last_over_time(vllm:request_success_total", [row(lab("s"), 100), row(lab("c"), 20)])
    )
    return out


def fetch(itl_series: dict[str, list[str]], **cfg: Any) -> tuple[Any, PrometheusSource, Fake]:
    policy = CanaryPolicy.model_validate(LLM_POLICY)
    t = Fake(answers(itl_series))
    src = PrometheusSource(PrometheusConfig(url="x", **cfg), transport=t, sleep=lambda s: None)
    req = fetch_request_for(policy, "k", "s", "c")
    return src.fetch_one(req, 0, 60), src, t


def test_vllm_answers_become_named_histograms_and_finish_reason_counts() -> None:
    obs, src, _ = fetch({"s": [TPOT, ITL], "c": [TPOT, ITL]})
    assert obs.usable, obs.no_data_reason
    assert obs.canary is not None and obs.stable is not None
    assert (obs.canary.requests, obs.canary.errors) == (20, 1)
    ttft = obs.canary.histograms["ttft"]
    assert ttft.bounds == (250.0, 500.0, math.inf) and ttft.cumulative == (5, 15, 20)
    itl = obs.canary.histograms["inter_token"]
    assert (itl.series, itl.per_token) == (TPOT, False)  # per-request series preferred
    assert itl.bounds == (25.0, 50.0, math.inf)
    assert obs.canary.categories == {"fin": {"stop": 16, "length": 3, "error": 1}}
    assert obs.stable.categories == {"fin": {"stop": 90, "length": 10}}
    assert not obs.canary.bounds_ms  # no latency metric: e2e not fetched
    assert src.last_stats.queries == {
        "requests": 1,
        "errors": 1,
        "resets": 1,
        "histogram:inter_token": 1,
        "histogram:ttft": 1,
        "finish_reasons": 1,
    }


def test_older_vllm_gives_a_per_token_histogram_marked_as_such() -> None:
    obs, _, _ = fetch({"s": [ITL], "c": [ITL]})
    assert obs.usable and obs.canary is not None
    itl = obs.canary.histograms["inter_token"]
    assert (itl.series, itl.per_token) == (ITL, True)


def test_both_versions_are_read_from_the_same_series() -> None:
    # The canary (newer vLLM) has both, stable only the per-token one: both read per token.
    obs, _, _ = fetch({"s": [ITL], "c": [TPOT, ITL]})
    assert obs.usable and obs.canary is not None and obs.stable is not None
    assert obs.canary.histograms["inter_token"].series == ITL
    assert obs.stable.histograms["inter_token"].series == ITL


def test_a_missing_named_histogram_is_no_data() -> None:
    obs, _, _ = fetch({"s": [TPOT]})
    assert obs.no_data_reason == "no canary inter_token histogram (revision 'c')"


# --- categorical and quality templates ---------------------------------------------------
CLASS_Q = (
    'sum by ({version_label}, cls) (increase(pred_total{namespace="{namespace}", '
    '{version_label}=~"{revisions}"}[{interval}]))'
)
CORRECT_Q = 'sum by ({version_label}) (increase(ok_total{namespace="{namespace}"}[{interval}]))'
LABELLED_Q = 'sum by ({version_label}) (increase(lab_total{namespace="{namespace}"}[{interval}]))'


def clf_request(ns: str = "ns", key: str = "k", cat_label: str = "cls") -> FetchRequest:
    return FetchRequest(
        key,
        ns,
        "s",
        "c",
        Source(preset="kserve"),
        need_latency=False,
        categorical=(("classes", CLASS_Q, cat_label),),
        quality=(("acc", CORRECT_Q, LABELLED_Q),),
    )


def clf_source(extra: list[tuple[str, list[dict[str, Any]]]]) -> tuple[PrometheusSource, Fake]:
    base = [
        ("resets(", []),
        (
            "pred_total",
            [
                row({"serving_knative_dev_revision": "s", "cls": "legit"}, 95),
                row({"serving_knative_dev_revision": "s", "cls": "fraud"}, 5),
            ],
        ),
        ("ok_total", [row({"serving_knative_dev_revision": "s"}, 40)]),
        ("lab_total", [row({"serving_knative_dev_revision": "s"}, 44)]),
        ("request_predict_seconds_count", [row(lab("s"), 100), row(lab("c"), 10)]),
    ]
    t = Fake(extra + base)
    return PrometheusSource(PrometheusConfig(url="x"), transport=t, sleep=lambda s: None), t


def test_category_and_label_counts_by_version() -> None:
    src, _ = clf_source([])
    obs = src.fetch_one(clf_request(), 0, 60)
    assert obs.usable, obs.no_data_reason
    assert obs.stable is not None and obs.canary is not None
    assert obs.stable.categories == {"classes": {"legit": 95, "fraud": 5}}
    assert obs.canary.categories == {"classes": {}}  # no series: no counts, not no data
    assert (obs.stable.labels["acc"].correct, obs.stable.labels["acc"].labelled) == (40, 44)
    # No label arrived for the canary (no series yet): nothing labelled, no evidence yet.
    assert (obs.canary.labels["acc"].correct, obs.canary.labels["acc"].labelled) == (0, 0)


def test_a_template_that_drops_the_category_label_is_no_data_naming_it() -> None:
    src, _ = clf_source([("pred_total", [row({"serving_knative_dev_revision": "s"}, 95)])])
    obs = src.fetch_one(clf_request(), 0, 60)
    assert obs.no_data_reason is not None
    assert obs.no_data_reason.startswith("categorical metric 'classes': the result has no 'cls'")


def test_a_failing_template_is_no_data_naming_the_metric() -> None:
    @dataclass
    class Failing(Fake):
        def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
            if "lab_total" in promql:
                raise QueryError("HTTP 400 from Prometheus: parse error", retryable=False)
            return super().query(promql, time_s, timeout_s)

    src, t = clf_source([])
    src._transport = Failing(t.answers)
    obs = src.fetch_one(clf_request(), 0, 60)
    assert obs.no_data_reason == (
        "quality metric 'acc' (labelled): prometheus: HTTP 400 from Prometheus: parse error "
        "(1 attempt)"
    )


def test_templates_are_batched_per_namespace() -> None:
    src, _ = clf_source([])
    reqs = [clf_request("ns", "a"), clf_request("ns", "b"), clf_request("other", "c")]
    src.fetch(reqs, 0, 60)
    per_kind = src.last_stats.queries
    assert per_kind["categorical:classes"] == 2  # one per namespace, not one per rollout
    assert per_kind["labelled:acc"] == 2 and per_kind["correct:acc"] == 2
    assert per_kind["requests"] == 2
