"""PrometheusSource against a real Prometheus loaded with backfilled, seeded simulated traffic.

Exactness: samples land on the analysis-interval boundaries (a scrape every 15s, intervals of
60s), so ``increase()`` over an aligned window needs no extrapolation and the counts must equal
the simulated ones exactly - with ``round_counts=False`` to prove it is not rounding.
"""

from __future__ import annotations

import http.server
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from canaryd.metrics.analyze import analyze, analyze_window
from canaryd.metrics.openmetrics import (
    TickSample,
    tick_samples_from_observations,
    write_openmetrics,
)
from canaryd.metrics.presets import PresetOptions
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource, RetryPolicy
from canaryd.metrics.replay import TraceSource
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.model import CanaryPolicy, Source

from .conftest import PrometheusServer, data_origin, free_port

pytestmark = pytest.mark.integration

T0 = data_origin()
INTERVAL = 60.0
TICK = 15.0
N = 20
BOUNDS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, math.inf)
HOSTILE = 'we"ird\\rev|x.*'
INJECTION = '"}) or vector(1)'


def simulate(
    seed: int,
    *,
    n: int = N,
    rps: tuple[float, float] = (20.0, 5.0),
    error_rate: tuple[float, float] = (0.01, 0.03),
    latency_mu: tuple[float, float] = (3.5, 3.6),
) -> list[Observation]:
    """Seeded per-interval counts for stable and canary with lognormal latencies (ms)."""
    rng = np.random.default_rng(seed)
    finite = np.array(BOUNDS_MS[:-1])

    def version(i: int) -> VersionCounts:
        reqs = int(rng.poisson(rps[i] * INTERVAL))
        errs = int(rng.binomial(reqs, error_rate[i]))
        lat = rng.lognormal(latency_mu[i], 0.7, reqs)
        cum = [float(np.count_nonzero(lat <= b)) for b in finite] + [float(reqs)]
        return VersionCounts(float(reqs), float(errs), BOUNDS_MS, tuple(cum))

    return [
        Observation(T0 + k * INTERVAL, T0 + (k + 1) * INTERVAL, version(0), version(1))
        for k in range(n)
    ]


@dataclass(frozen=True)
class Rollout:
    key: str
    namespace: str
    stable: str
    canary: str
    source: Source
    observations: tuple[Observation, ...] = ()

    def request(self, **kw: object) -> FetchRequest:
        return FetchRequest(
            self.key,
            self.namespace,
            self.stable,
            self.canary,
            self.source,
            **kw,  # type: ignore[arg-type]
        )


ISTIO = Rollout(
    "istio/iris",
    "models",
    "iris-predictor-00001",
    "iris-predictor-00002",
    Source(preset="istio"),
    tuple(simulate(1)),
)
KNATIVE = Rollout(
    "knative/iris",
    "serving",
    "iris-predictor-00003",
    "iris-predictor-00004",
    Source(preset="knative"),
    tuple(simulate(2)),
)
KSERVE = Rollout(
    "kserve/iris",
    "kserve-ns",
    "iris-predictor-00005",
    "iris-predictor-00006",
    Source(preset="kserve"),
    tuple(simulate(3)),
)
KSERVE_ERRORS = "request_predict_seconds_errors_total"
FAULT_NS = "faults"


def _samples(obs: tuple[Observation, ...] | list[Observation], s: str, c: str) -> list[TickSample]:
    return tick_samples_from_observations(obs, TICK, s, c)


def _write(path: Path, samples: list[TickSample], preset: str, ns: str, **kw: object) -> Path:
    with path.open("w") as f:
        write_openmetrics(f, samples, preset=preset, namespace=ns, **kw)  # type: ignore[arg-type]
    return path


def fault_samples() -> list[TickSample]:
    """Faulty series in namespace ``faults`` (istio preset, no workload suffix)."""
    obs = simulate(7, n=5)
    out: list[TickSample] = []
    # Counter reset inside the third interval [120, 180): the canary's counters restart at 0.
    for s in _samples(obs, "reset-s", "reset-c"):
        if s.revision == "reset-c" and s.t_seconds >= T0 + 150:
            s = replace(
                s,
                requests_cum=s.requests_cum - 200,
                errors_cum=0.0,
                buckets_cum=tuple(max(0.0, b - 200) for b in s.buckets_cum),
            )
        out.append(s)
    # Only the stable revision exists.
    out += [s for s in _samples(obs, "lonely-s", "unused-c") if s.revision == "lonely-s"]
    # The canary lacks the le=50 bucket; another canary lacks +Inf.
    for s in _samples(obs, "part-s", "part-c"):
        if s.revision == "part-c":
            keep = [i for i, b in enumerate(s.bounds_ms) if b != 50.0]
            s = replace(
                s,
                bounds_ms=tuple(s.bounds_ms[i] for i in keep),
                buckets_cum=tuple(s.buckets_cum[i] for i in keep),
            )
        out.append(s)
    for s in _samples(obs, "noinf-s", "noinf-c"):
        if s.revision == "noinf-c":
            s = replace(s, bounds_ms=s.bounds_ms[:-1], buckets_cum=s.buckets_cum[:-1])
        out.append(s)
    # A hostile revision name next to a decoy that its *unescaped* regex would match.
    out += _samples(obs, HOSTILE, "plain-c")
    out += [
        s for s in _samples(simulate(8, n=5), "xyz-decoy", "unused") if s.revision == "xyz-decoy"
    ]
    return out


FAULT_OBS = simulate(7, n=5)


@pytest.fixture(scope="module")
def prom(prometheus_factory: object, tmp_path_factory: pytest.TempPathFactory) -> PrometheusServer:
    d = tmp_path_factory.mktemp("openmetrics")
    files = [
        _write(
            d / "istio.om",
            _samples(ISTIO.observations, ISTIO.stable, ISTIO.canary),
            "istio",
            ISTIO.namespace,
            workload_suffix="-deployment",
        ),
        _write(
            d / "knative.om",
            _samples(KNATIVE.observations, KNATIVE.stable, KNATIVE.canary),
            "knative",
            KNATIVE.namespace,
        ),
        _write(
            d / "kserve.om",
            _samples(KSERVE.observations, KSERVE.stable, KSERVE.canary),
            "kserve",
            KSERVE.namespace,
        ),
        _write(d / "faults.om", fault_samples(), "istio", FAULT_NS),
    ]
    return prometheus_factory(files)  # type: ignore[operator]


def source(url: str, **kw: object) -> PrometheusSource:
    return PrometheusSource(PrometheusConfig(url=url, round_counts=False, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("rollout", [ISTIO, KNATIVE], ids=["istio", "knative"])
def test_counts_equal_the_simulated_counts(prom: PrometheusServer, rollout: Rollout) -> None:
    with source(prom.url) as src:
        for obs in rollout.observations:
            got = src.fetch_one(rollout.request(), obs.start_s, obs.end_s)
            assert got.no_data_reason is None
            assert got.stable == obs.stable
            assert got.canary == obs.canary
            assert src.last_stats.queries == {"requests": 1, "errors": 1, "buckets": 1, "resets": 1}


def test_a_longer_window_sums_the_intervals(prom: PrometheusServer) -> None:
    obs = ISTIO.observations[3:8]
    with source(prom.url) as src:
        got = src.fetch_one(ISTIO.request(), obs[0].start_s, obs[-1].end_s)
    assert got.canary is not None
    assert got.canary.requests == sum(o.canary.requests for o in obs if o.canary)
    assert got.canary.errors == sum(o.canary.errors for o in obs if o.canary)
    assert got.canary.bucket_counts == tuple(
        sum(c) for c in zip(*(o.canary.bucket_counts for o in obs if o.canary), strict=True)
    )


def test_kserve_histogram_in_seconds_with_and_without_an_errors_counter(
    prom: PrometheusServer,
) -> None:
    obs = KSERVE.observations[4]
    with source(prom.url, presets=PresetOptions(kserve_errors_metric=KSERVE_ERRORS)) as src:
        got = src.fetch_one(KSERVE.request(), obs.start_s, obs.end_s)
    assert (got.stable, got.canary) == (obs.stable, obs.canary)
    assert got.errors_measured
    with source(prom.url) as src:
        got = src.fetch_one(KSERVE.request(), obs.start_s, obs.end_s)
    assert got.canary is not None and obs.canary is not None
    assert got.canary.errors == 0.0
    assert got.canary.bucket_counts == obs.canary.bucket_counts
    assert got.canary.bounds_ms == BOUNDS_MS
    assert not got.errors_measured


def test_one_query_per_kind_serves_every_rollout_of_a_preset(prom: PrometheusServer) -> None:
    faulty = [
        Rollout(f"f/{i}", FAULT_NS, s, c, Source(preset="istio"))
        for i, (s, c) in enumerate(
            [
                ("reset-s", "reset-c"),
                ("lonely-s", "lonely-c"),
                ("part-s", "part-c"),
                (HOSTILE, "plain-c"),
            ]
        )
    ]
    everyone = [ISTIO, KNATIVE, KSERVE, *faulty]
    obs = ISTIO.observations[2]
    with source(prom.url) as src:
        batch = src.fetch([r.request() for r in everyone], obs.start_s, obs.end_s)
        stats = src.last_stats
        singles = {r.key: src.fetch_one(r.request(), obs.start_s, obs.end_s) for r in everyone}
    # Three query configurations (istio across two namespaces, knative, kserve).
    assert stats.queries["requests"] == 3
    assert stats.queries["buckets"] == 3
    assert batch == singles
    assert batch[ISTIO.key].stable == obs.stable
    assert batch[KNATIVE.key].canary == KNATIVE.observations[2].canary


def fault_request(stable: str, canary: str) -> FetchRequest:
    return FetchRequest("f", FAULT_NS, stable, canary, Source(preset="istio"))


def window(k: int) -> tuple[float, float]:
    return FAULT_OBS[k].start_s, FAULT_OBS[k].end_s


def test_counter_reset_inside_the_window_is_no_data(prom: PrometheusServer) -> None:
    with source(prom.url) as src:
        before = src.fetch_one(fault_request("reset-s", "reset-c"), *window(1))
        during = src.fetch_one(fault_request("reset-s", "reset-c"), *window(2))
    assert before.usable and before.canary == FAULT_OBS[1].canary
    assert during.no_data_reason is not None
    assert "counter reset" in during.no_data_reason and "canary" in during.no_data_reason


def test_missing_version_and_empty_window_are_no_data(prom: PrometheusServer) -> None:
    with source(prom.url) as src:
        missing = src.fetch_one(fault_request("lonely-s", "lonely-c"), *window(1))
        empty = src.fetch_one(fault_request("lonely-s", "lonely-c"), T0 - 7200, T0 - 7140)
        none = src.fetch_one(ISTIO.request(), T0 + 86400, T0 + 86460)
    assert missing.no_data_reason == "no canary series (revision 'lonely-c')"
    assert empty.no_data_reason is not None and "no data in the window" in empty.no_data_reason
    assert none.no_data_reason is not None and "no data in the window" in none.no_data_reason


def test_partial_bucket_sets_are_no_data(prom: PrometheusServer) -> None:
    with source(prom.url) as src:
        part = src.fetch_one(fault_request("part-s", "part-c"), *window(1))
        noinf = src.fetch_one(fault_request("noinf-s", "noinf-c"), *window(1))
        errors_only = src.fetch_one(
            replace(fault_request("noinf-s", "noinf-c"), need_latency=False), *window(1)
        )
    assert part.no_data_reason is not None and "partial bucket set" in part.no_data_reason
    assert "le=50" in part.no_data_reason
    assert noinf.no_data_reason is not None and "+Inf" in noinf.no_data_reason
    assert errors_only.usable and errors_only.canary is not None
    assert errors_only.canary.requests == FAULT_OBS[1].canary.requests  # type: ignore[union-attr]


def test_hostile_names_are_matched_literally_and_cannot_inject(prom: PrometheusServer) -> None:
    with source(prom.url) as src:
        got = src.fetch_one(fault_request(HOSTILE, "plain-c"), *window(3))
        injected = src.fetch_one(fault_request(HOSTILE, INJECTION), *window(3))
        injected_ns = src.fetch(
            [FetchRequest("x", INJECTION, HOSTILE, "plain-c", Source(preset="istio"))], *window(3)
        )["x"]
    assert got.stable == FAULT_OBS[3].stable  # not summed with the decoy 'xyz-decoy'
    assert injected.no_data_reason == f"no canary series (revision {INJECTION!r})"
    assert injected_ns.no_data_reason is not None
    assert "no data in the window" in injected_ns.no_data_reason


def test_stopped_server_is_no_data_within_bounded_time(prometheus_factory: object) -> None:
    server: PrometheusServer = prometheus_factory([])  # type: ignore[operator]
    server.stop()
    retry = RetryPolicy(attempts=3, timeout_s=1.0, backoff_s=0.1)
    with source(server.url, retry=retry) as src:
        t = time.monotonic()
        got = src.fetch_one(ISTIO.request(), T0, T0 + 60)
        took = time.monotonic() - t
    assert got.no_data_reason == "prometheus: connection refused (3 attempts)"
    assert took < 2.0


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    delay_s = 2.0
    status = 200

    def _answer(self) -> None:
        time.sleep(self.delay_s)
        body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        if self.status != 200:
            body = b'{"status":"error","errorType":"unavailable","error":"overloaded"}'
        try:
            self.send_response(self.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = _answer  # noqa: N815
    do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stub_server(request: pytest.FixtureRequest) -> Iterator[str]:
    delay, status = request.param
    handler = type("H", (_SlowHandler,), {"delay_s": delay, "status": status})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("stub_server", [(2.0, 200)], indirect=True)
def test_slow_server_times_out_to_no_data(stub_server: str) -> None:
    retry = RetryPolicy(attempts=2, timeout_s=0.3, backoff_s=0.05)
    with source(stub_server, retry=retry) as src:
        t = time.monotonic()
        got = src.fetch_one(ISTIO.request(), T0, T0 + 60)
        took = time.monotonic() - t
    assert got.no_data_reason == "prometheus: timeout after 0.3s (2 attempts)"
    assert took < 1.5


@pytest.mark.parametrize("stub_server", [(0.0, 503)], indirect=True)
def test_http_5xx_is_retried_then_no_data(stub_server: str) -> None:
    retry = RetryPolicy(attempts=3, timeout_s=1.0, backoff_s=0.05)
    with source(stub_server, retry=retry, method="GET") as src:
        got = src.fetch_one(ISTIO.request(), T0, T0 + 60)
    assert got.no_data_reason is not None
    assert got.no_data_reason.startswith("prometheus: HTTP 503")
    assert got.no_data_reason.endswith("(3 attempts)")


@pytest.mark.parametrize("stub_server", [(5.0, 200)], indirect=True)
def test_the_tick_budget_bounds_total_time(stub_server: str) -> None:
    retry = RetryPolicy(attempts=10, timeout_s=5.0, backoff_s=0.05, budget_s=0.8)
    with source(stub_server, retry=retry) as src:
        t = time.monotonic()
        got = src.fetch_one(ISTIO.request(), T0, T0 + 60)
        took = time.monotonic() - t
    assert got.no_data_reason is not None and got.no_data_reason.startswith("prometheus: timeout")
    assert took < 1.5


POLICY = {
    "apiVersion": "canaryd.io/v1alpha1",
    "kind": "CanaryPolicy",
    "metadata": {"name": "iris"},
    "spec": {
        "target": {"namespace": "models", "inferenceService": "iris"},
        "analysis": {
            "interval": "60s",
            "source": {"preset": "istio"},
            "metrics": [
                {"name": "errors", "kind": "errors"},
                {"name": "latency", "kind": "latency", "quantiles": [0.5, 0.9]},
            ],
        },
    },
}


def test_verdicts_equal_those_from_the_in_memory_counts(prom: PrometheusServer) -> None:
    policy = CanaryPolicy.model_validate(POLICY)
    start, end = T0, T0 + N * INTERVAL
    with source(prom.url) as src:
        real = analyze_window(
            src, policy, stable=ISTIO.stable, canary=ISTIO.canary, start_s=start, end_s=end
        )
    memory = analyze_window(
        TraceSource(ISTIO.observations),
        policy,
        stable=ISTIO.stable,
        canary=ISTIO.canary,
        start_s=start,
        end_s=end,
    )
    assert real["usable_intervals"] == N
    assert real == memory
    assert {v["metric"] for v in real["verdicts"]} == {"errors", "latency"}


def test_cli_analyze_prints_json_and_a_table(prom: PrometheusServer, tmp_path: Path) -> None:
    import yaml

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(POLICY))
    args = [
        "--prometheus",
        prom.url,
        "--policy",
        str(policy_file),
        "--stable",
        ISTIO.stable,
        "--canary",
        ISTIO.canary,
        "--start",
        str(T0),
        "--end",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 10 * INTERVAL)),
    ]
    runner = CliRunner()
    res = runner.invoke(analyze, [*args, "--json"])
    assert res.exit_code in (0, 1), res.output
    import json

    doc = json.loads(res.output)
    assert doc["intervals"] == 10 and doc["no_data"] == []
    table = runner.invoke(analyze, args)
    assert "metric" in table.output and "errors" in table.output
    assert "10 of 10 interval(s) had data." in table.output
