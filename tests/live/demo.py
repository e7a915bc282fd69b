"""``scripts/demo``: watch canaryd roll out a model on real traffic, on this machine, no cluster.

    scripts/demo [errors|latency|healthy] [--rate RPS] [--timeout S]

It starts a real kube-apiserver (``scripts/envtest``, with the KServe CRDs), two real kserve
model servers (v1 stable, v2 canary, small scikit-learn models trained on the spot), a real
Prometheus scraping them every 2 s, and a load generator that splits its requests by the
canary weight canaryd writes to the InferenceService. canaryd's reconciler then decides, every
10 s, on what Prometheus counted. Each window's counts and each decision are printed as they
happen; at the end come ``canaryd status``, the Events on the InferenceService and every window
checked against the load generator's own record of what it sent.

The canary of ``errors`` answers 5 % of its requests with HTTP 500; that of ``latency`` sleeps
60 ms in 30 % of its predictions; ``healthy`` is a good model. Everything listens on 127.0.0.1
and everything is stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from canaryd.controller import Phase
from canaryd.daemon.reconciler import TickReport
from canaryd.kube import load_api_client
from tests.live.harness import (
    ROOT,
    VERSIONS,
    Fault,
    LiveRun,
    Window,
    WindowCheck,
    compare_counts,
    live_run,
    policy_yaml,
)

FAULTS = {
    "errors": Fault(error_share=0.05),
    "latency": Fault(slow_share=0.3, slow_ms=60),
    "healthy": Fault(),
}
NAMESPACE = "models"
ENVTEST = ROOT / "scripts" / "envtest"


def say(text: str = "") -> None:
    print(text, flush=True)


class Printer:
    """Prints each new window and each decision as the daemon's ticks produce them."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.run: LiveRun | None = None
        self.seen = 0

    def rel(self, t: float) -> str:
        return f"{t - self.t0:+7.1f}s"

    def __call__(self, report: TickReport) -> None:
        run = self.run
        if run is not None and run.daemon is not None:
            windows = run.daemon.source.windows
            for w in windows[self.seen :]:
                say(self.window_line(w))
            self.seen = len(windows)
        for d in report.decisions.values():
            weight = "" if d.weight is None else f"  -> weight {d.weight}%"
            say(f"{self.rel(report.now)}  >> {d.action.value.upper()}{weight}: {d.reason}")

    def window_line(self, w: Window) -> str:
        o = w.observation
        head = f"{self.rel(w.end_s)}  window [{self.rel(w.start_s).strip()}, {self.rel(w.end_s).strip()})"
        if not o.usable:
            return f"{head}  no data: {o.no_data_reason}"
        parts = []
        for v in VERSIONS:
            vc = getattr(o, v)
            slow = (
                vc.requests - vc.bucket_counts[vc.bounds_ms.index(25.0)]
                if 25.0 in vc.bounds_ms
                else 0
            )
            parts.append(f"{v} {vc.requests:4.0f} req {vc.errors:3.0f} err {slow:4.0f} >25ms")
        return f"{head}  " + "  |  ".join(parts)


def truth_table(checks: Sequence[WindowCheck], t0: float) -> list[str]:
    lines = [
        "window (s)        version  requests (truth)      errors (truth)   >25ms (truth)",
    ]
    for c in checks:
        req, err = c.bounds["requests"], c.bounds["errors"]
        b25 = c.bounds.get("le=25")
        slow = "-"
        if b25 is not None:
            slow = (
                f"{c.counted['requests'] - c.counted['le=25']:4.0f} "
                f"({max(0, req.low - b25.high)}..{req.high - b25.low})"
            )
        ok = "ok" if not c.failures() else "MISMATCH " + "; ".join(c.failures())
        lines.append(
            f"[{c.start_s - t0:6.1f}, {c.end_s - t0:6.1f})  {c.version:<7}  "
            f"{c.counted['requests']:5.0f} ({req.low}..{req.high})  "
            f"{c.counted['errors']:8.0f} ({err.low}..{err.high})  {slow:>14}  {ok}"
        )
    return lines


def start_envtest(workdir: Path) -> Path:
    say("==> building/starting a kube-apiserver + etcd on 127.0.0.1 (scripts/envtest)")
    subprocess.run([str(ENVTEST), "build"], check=True, cwd=ROOT)
    subprocess.run(
        [str(ENVTEST), "start", str(workdir)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    return workdir / "kubeconfig"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", nargs="?", choices=sorted(FAULTS), default="errors")
    p.add_argument("--rate", type=float, default=30.0, help="requests per second (default 30)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after S seconds")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "demo", help="truth and log files")
    args = p.parse_args(argv)
    if shutil.which("prometheus") is None:
        subprocess.run([str(ROOT / "scripts" / "install-prometheus")], check=False)
    if shutil.which("prometheus") is None:
        say("scripts/demo needs prometheus (run scripts/install-prometheus as root)")
        return 1

    from tests.integration.kube.conftest import apply_crds, crd_dir

    envdir = Path(tempfile.mkdtemp(prefix="canaryd-demo-"))
    workdir = args.out / "run"  # the servers' and Prometheus' files: a fresh one every time
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        kubeconfig = start_envtest(envdir)
        api = load_api_client(str(kubeconfig))
        apply_crds(api, crd_dir())
        fault = FAULTS[args.scenario]
        say(f"==> the canary ({args.scenario}): {fault}")
        say("==> starting two kserve model servers, Prometheus (2 s scrapes) and the load")
        printer = Printer(time.time())
        with live_run(
            api,
            kubeconfig,
            NAMESPACE,
            fault,
            rate=args.rate,
            policy=policy_yaml(NAMESPACE),
            workdir=workdir,
            on_tick=printer,
        ) as run:
            printer.run, printer.t0 = run, run.started_at
            daemon = run.daemon
            assert daemon is not None
            say(f"==> canaryd is deciding: policy {NAMESPACE}/m, 10 s windows, steps 20% -> 50%")
            say(f"    Prometheus {run.prometheus.url}  kubeconfig {kubeconfig}")
            done = run.wait_for(lambda: (daemon.phase() or Phase.PENDING).terminal, args.timeout)
            time.sleep(1.0)
            checks = compare_counts(run)
            events = run.cluster.events()
            (args.out / "truth.jsonl").write_text(
                "".join(
                    f'{{"version": "{s.version}", "t_send": {s.t_send:.6f}, "t_recv": '
                    f'{s.t_recv:.6f}, "status": {s.status}, "slept_ms": {s.slept_ms:g}}}\n'
                    for s in run.load.sent
                )
            )
            say()
            say("==> canaryd status " + f"{NAMESPACE}/m")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "canaryd.cli",
                    "status",
                    f"{NAMESPACE}/m",
                    "--kubeconfig",
                    str(kubeconfig),
                ],
                check=False,
                cwd=ROOT,
            )
            say()
            say("==> Events on the InferenceService")
            for e in events:
                say(f"  {e['type']:<8} {e['reason']:<22} {e['note'][:150]}")
            say()
            say("==> every window canaryd counted, against what the load generator sent")
            say("    (truth: the range the counter delta can take given the requests in flight at")
            say("     the scrapes nearest the window's edges)")
            for line in truth_table(checks, run.started_at):
                say("  " + line)
            bad = [c for c in checks if c.failures()]
            say()
            say(
                f"{len(checks) // 2} windows, {len(run.load.sent)} requests sent; "
                f"{'all counts agree with the truth' if not bad else f'{len(bad)} MISMATCHES'}; "
                f"truth in {args.out / 'truth.jsonl'}"
            )
            if not done:
                say(f"no decision within {args.timeout:.0f}s")
                return 1
            return 0 if not bad else 1
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        say(f"scripts/demo failed: {exc} (logs in {workdir})")
        return 1
    finally:
        subprocess.run(
            [str(ENVTEST), "stop", str(envdir)], check=False, cwd=ROOT, stderr=subprocess.DEVNULL
        )
        shutil.rmtree(envdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
