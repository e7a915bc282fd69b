"""Daemon benchmark: `canaryd run` on N rollouts, a real kube-apiserver and a real Prometheus.

For each N it creates N InferenceServices mid-canary (Serverless status: stable and canary
revisions) in 10 namespaces with one policy each (interval 30 s, errors + latency judged
sequentially, a long dwell so the rollouts hold: the common steady state), backfills a real
Prometheus with istio-preset series for all of them, and runs `canaryd run` as a process on
a clock shifted to the backfilled data (``--clock-offset``). After every rollout has started, it
measures over several intervals:

- CPU seconds of the daemon process per interval, and that as a share of one core;
- the daemon's resident memory (VmRSS) at the end;
- PromQL queries per tick (Prometheus' own ``prometheus_http_requests_total``);
- apiserver requests per interval by verb and resource (the apiserver's own
  ``apiserver_request_total``, with its idle baseline subtracted), and reads per rollout;
- the wall time of a tick (the daemon's ``canaryd_tick_duration_seconds``), mean and max.

The daemon runs with the environment the image sets for it (``IMAGE_ENV``: glibc's malloc arenas,
see the Dockerfile); ``--no-image-env`` runs it without, to measure what that setting is worth.

    .venv/bin/python benchmarks/bench_daemon.py [--n 10,100,1000,3000] [--intervals 6]

Prints one table. Needs what scripts/test installs (Prometheus, the envtest apiserver).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from canaryd.kube import INFERENCE_SERVICE, load_api_client, raw_request  # noqa: E402
from canaryd.metrics.openmetrics import tick_samples_from_observations, write_openmetrics  # noqa: E402
from canaryd.observation import Observation, VersionCounts  # noqa: E402
from tests.integration.kube.conftest import apply_crds, crd_dir, sample_predictor  # noqa: E402
from tests.integration.prometheus.conftest import data_origin, start_prometheus  # noqa: E402

ENVTEST = ROOT / "scripts" / "envtest"
BOUNDS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, math.inf)
INTERVAL, SCRAPE, NAMESPACES = 30.0, 15.0, 10
CLK_TCK = os.sysconf("SC_CLK_TCK")
IMAGE_ENV = {"MALLOC_ARENA_MAX": "2"}
"""What the Dockerfile's ENV sets for the daemon's memory (tests/unit/test_dockerfile.py checks)."""

POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: {name}}}
spec:
  target: {{namespace: {ns}, inferenceService: {name}}}
  router: {{type: kserve}}
  steps: {{weights: [10, 25, 50], minDwell: 6h, minCanaryRequests: 100}}
  analysis:
    interval: 30s
    source: {{preset: istio}}
    metrics:
      - {{name: errors, kind: errors}}
      - {{name: latency, kind: latency, quantiles: [0.5, 0.9]}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def observations(rng: np.random.Generator, t0: float, n: int) -> list[Observation]:
    def version(rps: float, err: float) -> VersionCounts:
        reqs = int(rng.poisson(rps * INTERVAL))
        shares = np.cumsum(rng.dirichlet(np.ones(len(BOUNDS)) * 3))
        cum = [float(math.floor(reqs * s)) for s in shares[:-1]] + [float(reqs)]
        return VersionCounts(float(reqs), float(rng.binomial(reqs, err)), BOUNDS, tuple(cum))

    return [
        Observation(t0 + k * INTERVAL, t0 + (k + 1) * INTERVAL, version(9, 0.01), version(1, 0.01))
        for k in range(n)
    ]


def name_of(i: int) -> str:
    return f"model-{i:04d}"


def revisions(i: int) -> tuple[str, str]:
    return f"{name_of(i)}-predictor-00001", f"{name_of(i)}-predictor-00002"


def prometheus_for(n: int, t0: float, intervals: int, work: Path) -> object:
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    by_ns: dict[str, list[object]] = {}
    for i in range(n):
        ns = f"b{n}-{i % NAMESPACES:02d}"
        s, c = revisions(i)
        by_ns.setdefault(ns, []).extend(
            tick_samples_from_observations(observations(rng, t0, intervals), SCRAPE, s, c)
        )
    files = []
    for ns, samples in by_ns.items():
        f = work / f"{ns}.om"
        with f.open("w") as out:
            write_openmetrics(
                out, samples, preset="istio", namespace=ns, workload_suffix="-deployment"
            )  # type: ignore[arg-type]
        files.append(f)
    (work / "prom").mkdir()
    return start_prometheus(files, work / "prom")


def metric_sum(text: str, name: str, where: dict[str, str] | None = None) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if where and any(labels.get(k) != v for k, v in where.items()):
            continue
        total += float(m.group(3))
    return total


def apiserver_counts(client: object, url: str) -> Counter[tuple[str, str]]:
    params = client.param_serialize(  # type: ignore[attr-defined]
        method="GET", resource_path="/metrics", auth_settings=["BearerToken"]
    )
    resp = client.call_api(*params, _request_timeout=30)  # type: ignore[attr-defined]
    text = resp.read().decode()
    out: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        out[(labels.get("verb", "?"), labels.get("resource", "?"))] += float(line.rsplit(" ", 1)[1])
    return out


def tick_buckets(text: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("canaryd_tick_duration_seconds_bucket{"):
            le = re.search(r'le="([^"]+)"', line)
            if le:
                out[float(le.group(1))] = float(line.rsplit(" ", 1)[1])
    return out


def slowest_bucket(before: dict[float, float], after: dict[float, float]) -> float:
    """The upper bound of the bucket holding the slowest tick between two scrapes."""
    total = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    for le in sorted(after):
        if after[le] - before.get(le, 0.0) >= total:
            return le
    return math.inf


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def run_one(
    n: int, measure: int, env_dir: Path, work: Path, image_env: bool = True
) -> dict[str, object]:
    client = load_api_client(str(env_dir / "kubeconfig"))
    api_url = client.configuration.host
    api = client
    namespaces = [f"b{n}-{k:02d}" for k in range(min(NAMESPACES, n))]
    for ns in [*namespaces, f"b{n}-lease"]:
        raw_request(client, "POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})

    def create(i: int) -> None:
        ns = namespaces[i % len(namespaces)]
        body = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": name_of(i)},
            "spec": {"predictor": sample_predictor("v2")},
        }
        obj = raw_request(client, "POST", INFERENCE_SERVICE.collection_path(ns), body=body)
        s, c = revisions(i)
        obj["status"] = {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {"predictor": {"latestReadyRevision": c, "latestRolledoutRevision": s}},
        }
        raw_request(client, "PUT", INFERENCE_SERVICE.path(ns, name_of(i)) + "/status", body=obj)

    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(n)))
    setup_s = time.perf_counter() - t
    policies = work / f"policies-{n}"
    policies.mkdir()
    for i in range(n):
        ns = namespaces[i % len(namespaces)]
        (policies / f"{name_of(i)}.yaml").write_text(POLICY.format(name=name_of(i), ns=ns))

    warmup = 3
    total_intervals = warmup + measure + 4
    t0 = data_origin() - 6 * 3600
    prom = prometheus_for(n, t0, total_intervals, work / f"data-{n}")
    port = free_port()
    offset = time.time() - (t0 + 2.0)
    args = [
        str(ROOT / ".venv" / "bin" / "canaryd"),
        "run",
        *("--policies", str(policies), "--kubeconfig", str(env_dir / "kubeconfig")),
        *("--prometheus", prom.url, "--namespaces", ",".join(namespaces)),  # type: ignore[attr-defined]
        *("--port", str(port), "--host", "127.0.0.1", "--lease-namespace", f"b{n}-lease"),
        *("--clock-offset", f"{offset:.3f}", "--settle", "2", "--log-level", "WARNING"),
    ]
    log = (work / f"daemon-{n}.log").open("wb")
    base_api = apiserver_counts(api, api_url)
    env = {k: v for k, v in os.environ.items() if k not in IMAGE_ENV}
    env.update(IMAGE_ENV if image_env else {})
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 600
        started = 0.0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"canaryd exited {proc.returncode}; see {log.name}")
            with contextlib.suppress(requests.RequestException):
                text = requests.get(metrics_url, timeout=5).text
                started = metric_sum(text, "canaryd_rollouts", {"phase": "progressing"})
                if started >= n:
                    break
            time.sleep(1.0)
        else:
            raise SystemExit(f"only {started:.0f} of {n} rollouts started")
        startup_s = time.monotonic() - (deadline - 600)
        startup_api = apiserver_counts(api, api_url) - base_api
        time.sleep(warmup * INTERVAL)
        a_api = apiserver_counts(api, api_url)
        a_prom = metric_sum(
            requests.get(f"{prom.url}/metrics", timeout=10).text,  # type: ignore[attr-defined]
            "prometheus_http_requests_total",
            {"handler": "/api/v1/query"},
        )
        text = requests.get(metrics_url, timeout=10).text
        a_tick = (
            metric_sum(text, "canaryd_tick_duration_seconds_sum"),
            metric_sum(text, "canaryd_tick_duration_seconds_count"),
            metric_sum(text, "canaryd_ticks_total"),
        )
        a_writes = metric_sum(text, "canaryd_state_writes_total")
        a_buckets = tick_buckets(text)
        a_cpu, a_t = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(measure * INTERVAL)  # nothing polls the daemon while it is measured
        b_cpu, b_t = cpu_seconds(proc.pid), time.monotonic()
        rss = rss_mb(proc.pid)
        b_api = apiserver_counts(api, api_url)
        b_prom = metric_sum(
            requests.get(f"{prom.url}/metrics", timeout=10).text,  # type: ignore[attr-defined]
            "prometheus_http_requests_total",
            {"handler": "/api/v1/query"},
        )
        text = requests.get(metrics_url, timeout=10).text
        b_tick = (
            metric_sum(text, "canaryd_tick_duration_seconds_sum"),
            metric_sum(text, "canaryd_tick_duration_seconds_count"),
        )
        b_writes = metric_sum(text, "canaryd_state_writes_total")
        max_tick = slowest_bucket(a_buckets, tick_buckets(text))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        prom.stop()  # type: ignore[attr-defined]
        client.close()
    intervals = (b_t - a_t) / INTERVAL
    api_delta = b_api - a_api
    ours = {"inferenceservices", "configmaps", "events", "leases", "virtualservices"}
    per_interval = {k: v / intervals for k, v in api_delta.items() if v > 0 and k[1] in ours}
    reads = sum(v for (verb, _), v in per_interval.items() if verb in ("GET", "LIST"))
    lease_rw = sum(v for (_, res), v in per_interval.items() if res == "leases")
    return {
        "n": n,
        "setup_s": setup_s,
        "startup_s": startup_s,
        "startup_requests": sum(startup_api.values()),
        "cpu_per_interval": (b_cpu - a_cpu) / intervals,
        "core_share": (b_cpu - a_cpu) / (b_t - a_t),
        "rss_mb": rss,
        "promql_per_tick": (b_prom - a_prom) / intervals,
        "api": per_interval,
        "reads_per_rollout": (
            reads
            - sum(v for (verb, res), v in per_interval.items() if res == "leases" and verb == "GET")
        )
        / n,
        "lease_calls": lease_rw,
        "state_writes": (b_writes - a_writes) / intervals,
        "tick_mean_s": (b_tick[0] - a_tick[0]) / max(1.0, b_tick[1] - a_tick[1]),
        "tick_max_s": max_tick,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="10,100,1000,3000")
    ap.add_argument("--intervals", type=int, default=6, help="measured intervals per N")
    ap.add_argument(
        "--no-image-env",
        action="store_true",
        help=f"run the daemon without the image's {', '.join(IMAGE_ENV)}",
    )
    args = ap.parse_args()
    sizes = [int(x) for x in args.n.split(",")]
    work = Path(tempfile.mkdtemp(prefix="canaryd-bench-daemon-"))
    env_dir = work / "envtest"
    rows = []
    try:
        subprocess.run([str(ENVTEST), "start", str(env_dir)], check=True, timeout=600)
        client = load_api_client(str(env_dir / "kubeconfig"))
        apply_crds(client, crd_dir())
        client.close()
        for n in sizes:
            print(f"-- N = {n}", file=sys.stderr, flush=True)
            rows.append(run_one(n, args.intervals, env_dir, work, not args.no_image_env))
    finally:
        subprocess.run([str(ENVTEST), "stop", str(env_dir)], timeout=120, check=False)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n{'rollouts':>8} {'CPU s/interval':>14} {'core':>6} {'RSS MB':>7} {'PromQL/tick':>11} "
        f"{'reads/rollout/int':>17} {'state writes/int':>16} {'tick mean':>9} {'tick max':>8}"
    )
    for r in rows:
        print(
            f"{r['n']:>8} {r['cpu_per_interval']:>14.2f} {100 * r['core_share']:>5.1f}% "  # type: ignore[operator]
            f"{r['rss_mb']:>7.0f} {r['promql_per_tick']:>11.1f} {r['reads_per_rollout']:>17.4f} "
            f"{r['state_writes']:>16.1f} {r['tick_mean_s']:>8.2f}s {'<=' + format(r['tick_max_s'], 'g'):>7}s"
        )
    print("\napiserver requests per 30 s interval, by verb and resource (after start-up):")
    for r in rows:
        api = r["api"]
        assert isinstance(api, dict)
        parts = ", ".join(f"{v:.1f} {verb} {res}" for (verb, res), v in sorted(api.items()))
        print(f"  N={r['n']}: {parts or 'none'}")
    print("\nstart-up (create objects, first LIST/WATCH, first writes):")
    for r in rows:
        print(
            f"  N={r['n']}: all rollouts started after {r['startup_s']:.0f}s, "
            f"{r['startup_requests']:.0f} apiserver requests"
        )


if __name__ == "__main__":
    main()
