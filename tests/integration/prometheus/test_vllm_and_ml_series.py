"""The vllm preset and the categorical/quality templates against a real Prometheus.

The backfilled series are named and labelled exactly as vLLM 0.33 exports them
(``vllm:request_success_total{finished_reason, model_name, engine}``,
``vllm:time_to_first_token_seconds_bucket``, ...; DESIGN-NOTES.md cites the source), plus the
``namespace`` and ``serving_knative_dev_revision`` labels a scrape's relabelling adds; the classifier's counters are
the ones ``policies/classifier-drift.yaml`` queries. As in test_prometheus_source.py, samples sit
on the interval boundaries, so the counts read back must equal the seeded ones exactly.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from canaryd.metrics.analyze import analyze, analyze_window
from canaryd.metrics.openmetrics import tick_samples_from_observations, write_openmetrics
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource
from canaryd.metrics.replay import TraceSource
from canaryd.metrics.source import fetch_request_for
from canaryd.observation import Histogram, LabelCounts, Observation, VersionCounts
from canaryd.policy.loader import load_policy
from canaryd.simulation.vllm import (
    INTER_TOKEN_LATENCY_MS,
    REQUEST_LATENCY_MS,
    TIME_TO_FIRST_TOKEN_MS,
    request_token_buckets,
)

from .conftest import PrometheusServer, data_origin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
LLM_POLICY = load_policy(ROOT / "policies" / "llm-vllm.yaml")
CLF_POLICY = load_policy(ROOT / "policies" / "classifier-drift.yaml")
T0 = data_origin()
INTERVAL = 60.0
TICK = 15.0
N = 12
TPOT = "vllm:request_time_per_output_token_seconds"
OLD_ITL = "vllm:time_per_output_token_seconds"
FINISH = ("stop", "length", "abort", "error")
CLASSES = ("legit", "fraud", "review")


def _hist(
    rng: np.random.Generator, n: int, bounds: tuple[float, ...], median: float, sigma: float
) -> tuple[float, ...]:
    """Cumulative counts of ``n`` lognormal draws over ``bounds`` (+Inf appended)."""
    x = rng.lognormal(math.log(median), sigma, n)
    return (*(float(np.count_nonzero(x <= b)) for b in bounds), float(n))


def llm_observations(seed: int, itl_series: str = TPOT) -> list[Observation]:
    rng = np.random.default_rng(seed)
    tokens = request_token_buckets(8192)
    per_token = itl_series != TPOT

    def version(rate: float, ttft: float) -> VersionCounts:
        n = int(rng.poisson(rate * INTERVAL))
        finish = rng.multinomial(n, [0.86, 0.1, 0.03, 0.01])
        itl_n = n * 200 if per_token else n  # the per-token histogram counts tokens
        return VersionCounts(
            float(n),
            float(finish[3]),
            (*REQUEST_LATENCY_MS, math.inf),
            _hist(rng, n, REQUEST_LATENCY_MS, 7000, 0.6),
            histograms={
                "ttft": Histogram(
                    (*TIME_TO_FIRST_TOKEN_MS, math.inf),
                    _hist(rng, n, TIME_TO_FIRST_TOKEN_MS, ttft, 0.5),
                    "vllm:time_to_first_token_seconds",
                ),
                "inter_token": Histogram(
                    (*INTER_TOKEN_LATENCY_MS, math.inf),
                    _hist(rng, itl_n, INTER_TOKEN_LATENCY_MS, 30, 0.25),
                    itl_series,
                    per_token=per_token,
                ),
                "generation_tokens": Histogram(
                    (*tokens, math.inf),
                    _hist(rng, n, tokens, 220, 0.7),
                    "vllm:request_generation_tokens",
                ),
                "prompt_tokens": Histogram(
                    (*tokens, math.inf),
                    _hist(rng, n, tokens, 400, 0.9),
                    "vllm:request_prompt_tokens",
                ),
            },
            categories={
                "finish-reason": {r: float(x) for r, x in zip(FINISH, finish, strict=True)}
            },
        )

    return [
        Observation(
            T0 + k * INTERVAL, T0 + (k + 1) * INTERVAL, version(8.0, 350.0), version(2.0, 500.0)
        )
        for k in range(N)
    ]


def clf_observations(seed: int) -> list[Observation]:
    rng = np.random.default_rng(seed)
    bounds = (5.0, 10.0, 25.0, 50.0, 100.0, math.inf)

    def version(rate: float, fraud: float, acc: float) -> VersionCounts:
        n = int(rng.poisson(rate * INTERVAL))
        classes = rng.multinomial(n, [0.98 - fraud, fraud, 0.02])
        labelled = int(rng.binomial(n, 0.7))
        return VersionCounts(
            float(n),
            float(rng.binomial(n, 0.002)),
            bounds,
            _hist(rng, n, bounds[:-1], 12, 0.4),
            categories={
                "predicted-class": {c: float(x) for c, x in zip(CLASSES, classes, strict=True)}
            },
            labels={"accuracy": LabelCounts(float(rng.binomial(labelled, acc)), float(labelled))},
        )

    return [
        Observation(
            T0 + k * INTERVAL,
            T0 + (k + 1) * INTERVAL,
            version(90.0, 0.03, 0.92),
            version(10.0, 0.09, 0.90),
        )
        for k in range(N)
    ]


LLM_OBS = llm_observations(1)
OLD_OBS = llm_observations(2, itl_series=OLD_ITL)
CLF_OBS = clf_observations(3)
LLM_REVS = ("llm-chat-vllm-predictor-00001", "llm-chat-vllm-predictor-00002")
OLD_REVS = ("old-llm-predictor-00007", "old-llm-predictor-00008")
CLF_REVS = ("fraud-detector-predictor-00003", "fraud-detector-predictor-00004")


@pytest.fixture(scope="module")
def prom(prometheus_factory: object, tmp_path_factory: pytest.TempPathFactory) -> PrometheusServer:
    d = tmp_path_factory.mktemp("openmetrics-ml")
    files = []

    def write(name: str, obs: list[Observation], revs: tuple[str, str], **kw: object) -> None:
        path = d / name
        with path.open("w") as f:
            write_openmetrics(f, tick_samples_from_observations(obs, TICK, *revs), **kw)  # type: ignore[arg-type]
        files.append(path)

    common = {"preset": "vllm", "model_name": "llm-chat", "finish_reasons": "finish-reason"}
    write("llm.om", LLM_OBS, LLM_REVS, namespace="models", **common)
    write("old.om", OLD_OBS, OLD_REVS, namespace="legacy", **common)
    write("fraud-knative.om", CLF_OBS, CLF_REVS, preset="knative", namespace="fraud")
    # The model server's and the feedback job's counters: labelled namespace and revision_name.
    write(
        "fraud-counters.om",
        CLF_OBS,
        CLF_REVS,
        preset="kserve",
        namespace="fraud",
        version_label="revision_name",
        kserve_histogram="unused_by_the_policy",
        categorical={"predicted-class": ("fraud_predictions", "predicted_class")},
        quality={"accuracy": ("fraud_labels_correct", "fraud_labels")},
    )
    return prometheus_factory(files)  # type: ignore[operator,no-any-return]


def source(url: str) -> PrometheusSource:
    return PrometheusSource(PrometheusConfig(url=url, round_counts=False))


def test_vllm_series_read_back_exactly(prom: PrometheusServer) -> None:
    req = fetch_request_for(LLM_POLICY, "llm", *LLM_REVS)
    with source(prom.url) as src:
        for obs in LLM_OBS:
            got = src.fetch_one(req, obs.start_s, obs.end_s)
            assert got.no_data_reason is None, got.no_data_reason
            assert got.stable is not None and got.canary is not None
            assert obs.stable is not None and obs.canary is not None
            for g, want in ((got.stable, obs.stable), (got.canary, obs.canary)):
                assert (g.requests, g.errors) == (want.requests, want.errors)
                assert g.histograms == want.histograms
                assert g.categories == want.categories
            assert src.last_stats.queries == {
                "requests": 1,
                "errors": 1,
                "resets": 1,
                "finish_reasons": 1,
                "histogram:generation_tokens": 1,
                "histogram:inter_token": 1,
                "histogram:prompt_tokens": 1,
                "histogram:ttft": 1,
            }


def test_the_e2e_latency_histogram_is_the_latency_kind(prom: PrometheusServer) -> None:
    obs = LLM_OBS[4]
    req = fetch_request_for(LLM_POLICY, "llm", *LLM_REVS)
    with source(prom.url) as src:
        got = src.fetch_one(replace(req, need_latency=True), obs.start_s, obs.end_s)
    assert got.canary is not None and obs.canary is not None
    assert got.canary.bounds_ms == obs.canary.bounds_ms
    assert got.canary.bucket_counts == obs.canary.bucket_counts


def test_older_vllm_reads_the_old_per_token_name(prom: PrometheusServer) -> None:
    obs = OLD_OBS[2]
    req = fetch_request_for(LLM_POLICY, "old", *OLD_REVS, namespace="legacy")
    with source(prom.url) as src:
        got = src.fetch_one(req, obs.start_s, obs.end_s)
    assert got.canary is not None and obs.canary is not None
    itl = got.canary.histograms["inter_token"]
    assert (itl.series, itl.per_token) == (OLD_ITL, True)
    assert itl == obs.canary.histograms["inter_token"]


def test_both_llm_rollouts_share_one_query_per_kind(prom: PrometheusServer) -> None:
    reqs = [
        fetch_request_for(LLM_POLICY, "llm", *LLM_REVS),
        fetch_request_for(LLM_POLICY, "old", *OLD_REVS, namespace="legacy"),
    ]
    obs = LLM_OBS[3]
    with source(prom.url) as src:
        got = src.fetch(reqs, obs.start_s, obs.end_s)
        assert max(src.last_stats.queries.values()) == 1
    assert got["llm"].canary == fetch_one_alone(prom, reqs[0], obs)


def fetch_one_alone(prom: PrometheusServer, req: object, obs: Observation) -> VersionCounts | None:
    with source(prom.url) as src:
        return src.fetch_one(req, obs.start_s, obs.end_s).canary  # type: ignore[arg-type]


def test_classifier_counters_read_back_exactly(prom: PrometheusServer) -> None:
    req = fetch_request_for(CLF_POLICY, "fraud", *CLF_REVS)
    with source(prom.url) as src:
        for obs in CLF_OBS:
            got = src.fetch_one(req, obs.start_s, obs.end_s)
            assert got.no_data_reason is None, got.no_data_reason
            assert got.stable == obs.stable and got.canary == obs.canary
        assert src.last_stats.queries["categorical:predicted-class"] == 1
        assert src.last_stats.queries["labelled:accuracy"] == 1


@pytest.mark.parametrize(
    ("policy", "obs", "revs"),
    [(LLM_POLICY, LLM_OBS, LLM_REVS), (CLF_POLICY, CLF_OBS, CLF_REVS)],
    ids=["llm", "classifier"],
)
def test_verdicts_equal_those_from_the_in_memory_counts(
    prom: PrometheusServer, policy: object, obs: list[Observation], revs: tuple[str, str]
) -> None:
    kw = {"stable": revs[0], "canary": revs[1], "start_s": T0, "end_s": T0 + N * INTERVAL}
    with source(prom.url) as src:
        real = analyze_window(src, policy, **kw)  # type: ignore[arg-type]
    memory = analyze_window(TraceSource(obs), policy, **kw)  # type: ignore[arg-type]
    assert real["usable_intervals"] == N
    assert real == memory


def test_cli_analyze_prints_the_llm_verdicts(prom: PrometheusServer, tmp_path: Path) -> None:
    args = [
        "--prometheus",
        prom.url,
        "--policy",
        str(ROOT / "policies" / "llm-vllm.yaml"),
        "--stable",
        LLM_REVS[0],
        "--canary",
        LLM_REVS[1],
        "--start",
        str(T0),
        "--end",
        str(T0 + N * INTERVAL),
    ]
    res = CliRunner().invoke(analyze, args)
    assert res.exit_code in (0, 1), res.output
    assert "time to first token" in res.output and "12 of 12 interval(s) had data." in res.output
