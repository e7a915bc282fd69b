"""Where the daemon's memory per rollout goes: N rollouts ticked in-process under tracemalloc.

Builds what ``benchmarks/bench_daemon.py`` serves (one policy file per InferenceService, errors
and latency judged sequentially, interval 30 s, a long dwell so every rollout holds at 10 %),
loads the policies through the daemon's ``PolicySet``, and ticks a real ``Reconciler`` over 14
windows against an in-memory cluster (``MemoryObjects``) and a source that answers every window.
Prints the Python memory allocated since the start and still held, per rollout, by the file
that allocated it.

Not the daemon's RSS (``bench_daemon.py`` measures that: no watch cache, threads or malloc
arenas here). Two lines are the in-memory cluster, not the daemon: ``json/encoder.py`` (the
state documents the cluster stores; the daemon's watch cache keeps no ConfigMap data) and
``copy.py`` (the cluster's own copies of its objects).

    .venv/bin/python benchmarks/bench_memory.py [--n 300] [--top 20]
"""

from __future__ import annotations

import argparse
import gc
import math
import re
import sys
import tempfile
import tracemalloc
from collections.abc import Hashable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from canaryd.daemon.policies import PolicySet  # noqa: E402
from canaryd.daemon.reconciler import Reconciler  # noqa: E402
from canaryd.kube import INFERENCE_SERVICE  # noqa: E402
from canaryd.kube.events import MemoryEventSink  # noqa: E402
from canaryd.kube.memory import MemoryObjects  # noqa: E402
from canaryd.metrics.source import FetchRequest  # noqa: E402
from canaryd.observation import Observation, VersionCounts  # noqa: E402
from tests.integration.kube.conftest import sample_predictor  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_daemon import BOUNDS, INTERVAL, NAMESPACES, POLICY, name_of, revisions  # noqa: E402

SHARES = (0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)


class Source:
    """Every window: stable 270 requests and 3 errors, canary 30 and none, fixed latencies."""

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        def version(n: float, errors: float) -> VersionCounts:
            cum = (*(float(math.floor(n * s)) for s in SHARES), n)
            return VersionCounts(n, errors, BOUNDS, cum)

        return {
            r.key: Observation(start_s, end_s, version(270, 3), version(30, 0)).validated()
            for r in requests
        }


def build(n: int, work: Path) -> tuple[list[object], MemoryObjects]:
    objects = MemoryObjects()
    for i in range(n):
        name, ns = name_of(i), f"b{n}-{i % NAMESPACES:02d}"
        (work / f"{name}.yaml").write_text(POLICY.format(name=name, ns=ns))
        stable, canary = revisions(i)
        objects.put(
            INFERENCE_SERVICE,
            ns,
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": name},
                "spec": {"predictor": sample_predictor("v2")},
                "status": {
                    "observedGeneration": 1,
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "components": {
                        "predictor": {
                            "latestReadyRevision": canary,
                            "latestRolledoutRevision": stable,
                        }
                    },
                },
            },
        )
    return PolicySet([work]).load(), objects  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    with tempfile.TemporaryDirectory(prefix="canaryd-bench-memory-") as work:
        policies, objects = build(args.n, Path(work))
        rec = Reconciler(
            policies,  # type: ignore[arg-type]
            objects,
            Source(),
            MemoryEventSink(),
            registry=CollectorRegistry(),
            settle_s=2.0,
        )
        t0 = 1_800_000_000.0
        for k in range(14):
            rec.tick(t0 + INTERVAL * k + 3.0)
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        stats = after.compare_to(before, "filename")
        total = sum(s.size_diff for s in stats)
        print(f"N = {args.n}: {total / args.n / 1e3:.1f} KB per rollout held, by file:")
        for s in stats[: args.top]:
            where = re.sub(r"^.*/lib/python3\.\d+/", "", s.traceback[0].filename)
            where = where.removeprefix(str(ROOT) + "/")
            print(f"  {s.size_diff / args.n / 1e3:6.1f} KB  {where}")
        del rec


if __name__ == "__main__":
    main()
