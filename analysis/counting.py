"""How exactly does canaryd count a window? ``increase()`` against edge-sample deltas, live.

Runs the live setup of ``tests/live`` (a real kube-apiserver from scripts/envtest, two real
kserve model servers, a real Prometheus scraping every 5 s, real HTTP load at 30 rps, the canary
at a fixed 30 % answering 5 % of its requests with HTTP 500) for about 150 s, then counts the
recorded traffic in consecutive windows of 10, 30 and 60 s at five phases, two ways:

- ``increase``: the previous queries, ``sum(increase(x[W]))`` evaluated at the window end;
- ``edges``: ``PrometheusSource`` as it is now (the delta between each series' last sample at
  or before each edge; see ``canaryd/metrics/presets.py``);

and compares both with the load generator's truth: (a) the exact range a counter delta between
the scrapes nearest the window's edges can take (its width is the requests in flight at those
scrapes), and (b) the requests received in ``[start, end)`` by the wall clock. It also tiles
windows that end 0.2 s after a canary scrape ("aligned") to separate extrapolation from phase.

    .venv/bin/python analysis/counting.py [--seconds 150] [--quick]

Writes ``analysis/results/counting.md``. The traffic is seeded but runs in real time, so the
figures move a little from run to run; the conclusions do not. About 3.5 minutes wall.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from canaryd.kube import load_api_client  # noqa: E402
from canaryd.metrics.presets import PresetOptions  # noqa: E402
from canaryd.metrics.prometheus import PrometheusConfig, PrometheusSource  # noqa: E402
from canaryd.metrics.source import FetchRequest  # noqa: E402
from canaryd.policy.model import Source  # noqa: E402
from tests.live.harness import (  # noqa: E402
    CANARY_REV,
    ERRORS_METRIC,
    STABLE_REV,
    VERSIONS,
    Fault,
    LiveRun,
    _Timeline,
    increase_counts,
    live_run,
)

RESULTS = ROOT / "analysis" / "results"
NS = "counting"
WEIGHT = 30
SCRAPE_S = 5.0


@dataclass
class Row:
    method: str
    window_s: float
    phase: str
    version: str
    kind: str
    counted: float
    wall: int
    low: int
    high: int


def tile(t_from: float, t_to: float, width: float, offset: float) -> list[tuple[float, float]]:
    out = []
    a = t_from + offset
    while a + width <= t_to:
        out.append((a, a + width))
        a += width
    return out


def measure(run: LiveRun, t_from: float, t_to: float) -> list[Row]:
    scrapes = {v: run.prometheus.scrapes(run.pods[v], t_from - 60, t_to) for v in VERSIONS}
    truth = {
        v: {
            "requests": _Timeline([s for s in run.load.sent if s.version == v]),
            "errors": _Timeline([s for s in run.load.sent if s.version == v and s.error]),
        }
        for v in VERSIONS
    }
    src = PrometheusSource(
        PrometheusConfig(
            url=run.prometheus.url,
            round_counts=False,
            presets=PresetOptions(kserve_errors_metric=ERRORS_METRIC),
        )
    )
    request = FetchRequest("k", NS, STABLE_REV, CANARY_REV, Source(preset="kserve"))
    canary_scrape = [t for t, _ in scrapes["canary"]]
    layouts: list[tuple[float, str, list[tuple[float, float]]]] = []
    for width in (10.0, 30.0, 60.0):
        for k in range(5):
            layouts.append((width, f"+{k:.0f}s", tile(t_from, t_to, width, float(k))))
        first = next(t for t in canary_scrape if t >= t_from)
        layouts.append((width, "aligned", tile(first + 0.2, t_to, width, 0.0)))
    rows: list[Row] = []
    for width, phase, wins in layouts:
        for a, b in wins:
            new = src.fetch_one(request, a, b)
            assert new.usable, new.no_data_reason
            for v in VERSIONS:
                rev = STABLE_REV if v == "stable" else CANARY_REV
                old = increase_counts(run.prometheus, NS, rev, a, b)
                vc = getattr(new, v)
                sc = scrapes[v]
                ta = [x for x in sc if x[0] <= a]
                tb = [x for x in sc if x[0] <= b]
                for kind in ("requests", "errors"):
                    tl = truth[v][kind]
                    bound = tl.between_scrapes(ta[-1] if ta else None, tb[-1])
                    wall = tl.wall(a, b)
                    for method, value in (("increase", old[kind]), ("edges", getattr(vc, kind))):
                        rows.append(
                            Row(method, width, phase, v, kind, value, wall, bound.low, bound.high)
                        )
    src.close()
    return rows


def table(rows: list[Row]) -> list[str]:
    out = [
        "| method | window | phase | version | kind | windows | bias vs wall clock | "
        "mean abs error vs wall clock | sum counted / sum true | outside the in-flight range |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r.method, r.window_s, r.phase == "aligned", r.version, r.kind) for r in rows},
        key=lambda k: (k[1], k[2], k[3], k[4], k[0] != "increase"),
    )
    for method, width, aligned, version, kind in keys:
        sel = [
            r
            for r in rows
            if (r.method, r.window_s, r.phase == "aligned", r.version, r.kind)
            == (method, width, aligned, version, kind)
        ]
        err = [r.counted - r.wall for r in sel]
        outside = sum(not (r.low <= r.counted <= r.high) for r in sel)
        # Sums over one tiling (the +0s phase, or the aligned one): do the windows add up?
        tiling = [r for r in sel if r.phase in ("+0s", "aligned")]
        total_c, total_t = sum(r.counted for r in tiling), sum(r.wall for r in tiling)
        out.append(
            f"| {method} | {width:.0f} s | {'aligned' if aligned else 'any (5 phases)'} | "
            f"{version} | {kind} | {len(sel)} | {statistics.mean(err):+.2f} | "
            f"{statistics.mean(abs(e) for e in err):.2f} | {total_c:.1f} / {total_t} | "
            f"{outside} ({100 * outside / len(sel):.0f} %) |"
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=150.0)
    p.add_argument("--quick", action="store_true", help="60 s of traffic, -quick.md")
    args = p.parse_args()
    seconds = 60.0 if args.quick else args.seconds
    envtest = ROOT / "scripts" / "envtest"
    envdir = Path(tempfile.mkdtemp(prefix="canaryd-counting-"))
    subprocess.run([str(envtest), "build"], check=True)
    subprocess.run([str(envtest), "start", str(envdir)], check=True, stdout=subprocess.DEVNULL)
    started = time.time()
    try:
        from tests.integration.kube.conftest import apply_crds, crd_dir

        kubeconfig = envdir / "kubeconfig"
        api = load_api_client(str(kubeconfig))
        apply_crds(api, crd_dir())
        with live_run(
            api,
            kubeconfig,
            NS,
            Fault(error_share=0.05),
            rate=30.0,
            scrape_s=SCRAPE_S,
            seed=7,
            weight=lambda _cluster: WEIGHT,
        ) as run:
            t_from = time.time() + 2 * SCRAPE_S
            time.sleep(seconds + 2 * SCRAPE_S)
            t_to = time.time() - 2 * SCRAPE_S
            time.sleep(SCRAPE_S)
            rows = measure(run, t_from, t_to)
            sent = len(run.load.sent)
    finally:
        subprocess.run([str(envtest), "stop", str(envdir)], check=False, stderr=subprocess.DEVNULL)
    lines = [
        "# Counting a window: `increase()` against edge-sample deltas (live)",
        "",
        f"`analysis/counting.py`: {seconds:.0f} s of real traffic ({sent} requests at 30 rps, "
        f"canary weight {WEIGHT} %, canary errors 5 %) to two kserve 0.21 model servers, "
        f"scraped every {SCRAPE_S:.0f} s by Prometheus; windows of 10/30/60 s tiled at five "
        "phases (+0..+4 s) and aligned 0.2 s after a canary scrape. Truth: the load generator's "
        f"record. Wall time {time.time() - started:.0f} s.",
        "",
        "- *bias / mean abs error vs wall clock*: counted minus the requests received in "
        "[start, end);",
        "- *sum counted / sum true*: over one tiling of consecutive windows (do they add up?);",
        "- *outside the in-flight range*: windows whose count is not a possible counter delta "
        "between the scrapes at or before the two edges, given the requests in flight then.",
        "",
        *table(rows),
        "",
    ]
    name = "counting-quick.md" if args.quick else "counting.md"
    (RESULTS / name).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
