"""Batching benchmark: queries and wall time per tick for 1,000 rollouts on a real Prometheus.

Backfills a real local Prometheus (promtool + prometheus from scripts/install-prometheus) with
istio-preset data for 1,000 stable/canary revision pairs across 20 namespaces (9 latency
buckets, a scrape every 15s, a few 60s intervals), then runs analysis ticks through
PrometheusSource and prints, per transport: queries per tick per metric kind, the largest
query, and the time per tick. It also times unbatched ticks (one fetch per rollout) on a
sample of rollouts, extrapolated to 1,000 and labelled as such. Every batched answer is checked
against the simulated counts.

    .venv/bin/python benchmarks/bench_batching.py [--rollouts 1000] [--intervals 3]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from canaryd.metrics.openmetrics import tick_samples_from_observations, write_openmetrics  # noqa: E402
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource  # noqa: E402
from canaryd.metrics.source import FetchRequest  # noqa: E402
from canaryd.observation import Observation, VersionCounts  # noqa: E402
from canaryd.policy.model import Source  # noqa: E402
from tests.integration.prometheus.conftest import data_origin, start_prometheus  # noqa: E402

BOUNDS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, math.inf)
INTERVAL, TICK, NAMESPACES = 60.0, 15.0, 20


def simulate(rng: np.random.Generator, t0: float, n: int) -> list[Observation]:
    def version(rps: float, err: float) -> VersionCounts:
        reqs = int(rng.poisson(rps * INTERVAL))
        shares = np.cumsum(rng.dirichlet(np.ones(len(BOUNDS))))
        cum = [float(math.floor(reqs * s)) for s in shares[:-1]] + [float(reqs)]
        return VersionCounts(float(reqs), float(rng.binomial(reqs, err)), BOUNDS, tuple(cum))

    return [
        Observation(
            t0 + k * INTERVAL, t0 + (k + 1) * INTERVAL, version(2, 0.01), version(0.5, 0.02)
        )
        for k in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rollouts", type=int, default=1000)
    ap.add_argument("--intervals", type=int, default=3)
    ap.add_argument("--unbatched-sample", type=int, default=50)
    args = ap.parse_args()

    rng = np.random.default_rng(42)
    t0 = data_origin()
    work = Path(tempfile.mkdtemp(prefix="canaryd-bench-"))
    try:
        rollouts = []
        truth: dict[str, list[Observation]] = {}
        t = time.perf_counter()
        by_ns: dict[str, list] = {}
        for i in range(args.rollouts):
            ns = f"team-{i % NAMESPACES:02d}"
            s, c = f"model-{i:04d}-predictor-00001", f"model-{i:04d}-predictor-00002"
            obs = simulate(rng, t0, args.intervals)
            key = f"{ns}/model-{i:04d}"
            truth[key] = obs
            rollouts.append(FetchRequest(key, ns, s, c, Source(preset="istio")))
            by_ns.setdefault(ns, []).extend(tick_samples_from_observations(obs, TICK, s, c))
        files = []
        lines = 0
        for ns, samples in by_ns.items():
            f = work / f"{ns}.om"
            with f.open("w") as out:
                lines += write_openmetrics(
                    out, samples, preset="istio", namespace=ns, workload_suffix="-deployment"
                )
            files.append(f)
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        (work / "prom").mkdir()
        server = start_prometheus(files, work / "prom")
        load_s = time.perf_counter() - t
        print(
            f"data: {args.rollouts} rollouts ({2 * args.rollouts} revisions, {NAMESPACES} "
            f"namespaces), {args.intervals} x {INTERVAL:g}s intervals, {lines:,} samples; "
            f"generated in {gen_s:.1f}s, backfilled + started in {load_s:.1f}s"
        )
        try:
            rows = []
            for method in ("POST", "GET"):
                src = PrometheusSource(PrometheusConfig(url=server.url, method=method))  # type: ignore[arg-type]
                times, per_kind, max_bytes = [], {}, 0
                for k in range(args.intervals):
                    a, b = t0 + k * INTERVAL, t0 + (k + 1) * INTERVAL
                    out = src.fetch(rollouts, a, b)
                    times.append(src.last_stats.seconds)
                    per_kind = dict(src.last_stats.queries)
                    max_bytes = max(max_bytes, src.last_stats.max_query_bytes)
                    bad = [
                        key
                        for key, o in out.items()
                        if (o.stable, o.canary) != (truth[key][k].stable, truth[key][k].canary)
                    ]
                    if bad:
                        raise SystemExit(
                            f"{len(bad)} rollouts differ from the simulation, e.g. {bad[0]}: {out[bad[0]]}"
                        )
                src.close()
                rows.append(
                    (
                        f"batched {method}",
                        per_kind,
                        sum(per_kind.values()),
                        max_bytes,
                        statistics.median(times),
                        max(times),
                    )
                )
            src = PrometheusSource(PrometheusConfig(url=server.url))
            sample = rollouts[: args.unbatched_sample]
            t = time.perf_counter()
            for r in sample:
                src.fetch([r], t0, t0 + INTERVAL)
            per = (time.perf_counter() - t) / len(sample)
            src.close()
            rows.append(
                (
                    f"unbatched (extrapolated from {len(sample)})",
                    {k: args.rollouts for k in ("requests", "errors", "buckets", "resets")},
                    4 * args.rollouts,
                    0,
                    per * args.rollouts,
                    per * args.rollouts,
                )
            )
        finally:
            server.stop()

        print()
        print(
            f"{'mode':34} {'queries per kind (req/err/bkt/rst)':36} {'total':>6} {'max query':>10} {'tick median':>12} {'tick max':>9}"
        )
        for mode, kinds, total, mb, med, mx in rows:
            kq = "/".join(str(kinds.get(k, 0)) for k in ("requests", "errors", "buckets", "resets"))
            size = f"{mb / 1024:.1f} KiB" if mb else "-"
            print(f"{mode:34} {kq:36} {total:>6} {size:>10} {med:>11.3f}s {mx:>8.3f}s")
        print("\nAll batched answers equal the simulated counts.")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
