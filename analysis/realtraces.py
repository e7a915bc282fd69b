"""Real traffic through ``canaryd replay``: NAB's taxi demand and EC2 latency, per request.

Run: ``nice .venv/bin/python analysis/realtraces.py [--quick]``. Writes
``analysis/results/realtraces.md``.

Every rollout is one trace built by ``canaryd.simulation.realtrace`` (the per-request model is
its module docstring: the taxi count as the Poisson rate, scaled to a mean of 20 rps; the EC2
mean latency as the mean of a lognormal with sigma 0.5; errors at 1 %, x5 in the EC2 series'
labelled windows) from the fixtures in ``tests/fixtures/traces/nab/``, placed at a seeded random
point of both series, and replayed by ``canaryd replay --json`` (the CLI, in process) through
the shipped policy ``policies/llm-kserve.yaml``. The canary's share follows the policy's steps
at their ``minDwell`` (10 -> 25 -> 50 %, 10 min each). The tests in
``tests/unit/simulation/test_realtrace.py`` assert the same cells at a smaller size.

Cells: A/A with a random split; A/A with a pod split (the simulator's per-pod random effects);
shared incidents (both series' labelled windows, on both versions alike); and regressions on the
canary from its first interval (errors x2 and x3, median latency +25 %, a tail-only shift).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as c
from click.testing import CliRunner

from canaryd.cli import main as cli
from canaryd.policy.loader import load_policy
from canaryd.simulation import realtrace as rt
from canaryd.simulation.scenario import Pods

POLICY = c.ROOT / "policies" / "llm-kserve.yaml"
NAB_DIR = c.ROOT / "tests" / "fixtures" / "traces" / "nab"
SEED = 20261210
INCIDENT_ERROR_RATIO = 5.0
HISTORY_S = 7200.0
"""Stable-only history before the canary in the history cells (the policy's default 2h)."""
POD_CELLS = (
    Pods(stable=3, canary=1, latency_cv=0.1, error_rate_spread=1.5),
    Pods(stable=3, canary=1, latency_cv=0.3, error_rate_spread=2.0),
    Pods(stable=4, canary=2, latency_cv=0.1, error_rate_spread=1.5),
    Pods(stable=4, canary=2, latency_cv=0.3, error_rate_spread=2.0),
)
REGRESSIONS = (
    ("errors x2", rt.Regression(error_ratio=2.0)),
    ("errors x3", rt.Regression(error_ratio=3.0)),
    ("latency median +25 %", rt.Regression(median_factor=1.25)),
    ("tail only (sigma 0.5 -> 0.8)", rt.Regression(sigma=0.8)),
)


@dataclass(frozen=True)
class Outcome:
    outcome: str
    delay_min: float | None  # from the canary's start to the decision
    failed: tuple[str, ...]  # metrics failing at the end
    rps: float = 0.0  # the model's mean request rate over the rollout's first 30 min
    taxi_day: str = ""  # the taxi series' date at the trace's start


def replay(trace: Path, start_s: float) -> Outcome:
    """``canaryd replay TRACE --policy llm-kserve.yaml --json``, read back."""
    res = CliRunner().invoke(cli, ["replay", str(trace), "--policy", str(POLICY), "--json"])
    doc = json.loads(res.output)
    at = doc["decided_at_s"]
    failed = tuple(v["metric"] for v in doc["verdicts"] if v["status"] == "fail")
    return Outcome(doc["outcome"], None if at is None else (at - start_s) / 60.0, failed)


@dataclass
class Cell:
    name: str
    outcomes: list[Outcome]

    @property
    def n(self) -> int:
        return len(self.outcomes)

    @property
    def rolled_back(self) -> int:
        return sum(o.outcome == "rolled_back" for o in self.outcomes)

    def by_metric(self) -> str:
        counts = Counter(m for o in self.outcomes if o.outcome == "rolled_back" for m in o.failed)
        return ", ".join(f"{m} {k}" for m, k in sorted(counts.items())) or "-"

    def others(self) -> str:
        counts = Counter(o.outcome for o in self.outcomes if o.outcome != "rolled_back")
        return ", ".join(f"{k} {o}" for o, k in sorted(counts.items()))

    def median_rps(self, detected: bool) -> str:
        r = [o.rps for o in self.outcomes if (o.outcome == "rolled_back") == detected]
        return f"{statistics.median(r):.1f}" if r else "-"

    def undecided_days(self) -> str:
        days = Counter(o.taxi_day for o in self.outcomes if o.outcome == "in_progress")
        return ", ".join(f"{d} ({k})" for d, k in sorted(days.items())) or "none"

    def median_delay(self) -> float:
        d = [o.delay_min for o in self.outcomes if o.outcome == "rolled_back" and o.delay_min]
        return statistics.median(d) if d else float("nan")


@dataclass(frozen=True)
class Job:
    """One cell to replay: ``count`` rollouts of ``model`` placed from ``seed``."""

    name: str
    model: rt.TraceModel
    count: int
    seed: int
    incidents: bool = False


@cache
def _nab() -> rt.Nab:
    return rt.load_nab(NAB_DIR)


def run_cell(job: Job) -> Cell:
    """Replay one cell's rollouts, each trace written to a directory of its own (so cells can
    run in parallel processes; each is seeded on its own, so the result does not depend on
    how many)."""
    nab, model = _nab(), job.model
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, p in enumerate(
            rt.placements(
                nab,
                job.count,
                job.seed,
                model.duration_s,
                incidents=job.incidents,
                history_s=model.history_s,
            )
        ):
            trace = rt.write(Path(d) / "trace.csv", nab, model, p, job.seed * 100_000 + i)
            rps = float(rt.request_rate(nab, model, p)[: int(1800 // model.interval_s)].mean())
            day = datetime.fromtimestamp(p.taxi_start_s, UTC).date().isoformat()
            out.append(replace(replay(trace, p.start_s), rps=rps, taxi_day=day))
    return Cell(job.name, out)


def frr(cell: Cell) -> str:
    return f"{cell.rolled_back}/{cell.n} = {c.pct(cell.rolled_back / cell.n)} (≤ {c.pct(c.cp_upper(cell.rolled_back, cell.n))})"


def pods_name(p: Pods) -> str:
    return (
        f"{p.stable} stable vs {p.canary} canary pods, latency CV {100 * p.latency_cv:g} %, "
        f"errors x{p.error_rate_spread:g}"
    )


def aa_rows(cells: Sequence[Cell], alpha: float) -> list[tuple[str, ...]]:
    return [
        (
            x.name,
            frr(x),
            "yes" if c.cp_upper(x.rolled_back, x.n) <= alpha else "no",
            x.by_metric(),
            x.others(),
        )
        for x in cells
    ]


def main() -> None:
    quick = c.parse_quick(__doc__ or "")
    scale = 5 if quick else 1
    # The pod cells get 1,200 rollouts: at 400, one false rollback put a cell's upper bound
    # (1.18 %) above alpha, so the table could not say whether the cell holds it.
    n_aa, n_pods, n_inc, n_reg = 1500 // scale, 1200 // scale, 800 // scale, 300 // scale
    policy = load_policy(POLICY, None)
    alpha = policy.spec.analysis.alpha
    base = rt.TraceModel(schedule=rt.nominal_schedule(policy))
    incident = replace(base, incident_error_ratio=INCIDENT_ERROR_RATIO)
    jobs = [
        Job("A/A, random split", base, n_aa, SEED),
        *(
            Job(f"A/A, {pods_name(p)}", replace(base, pods=p), n_pods, SEED + 1 + i)
            for i, p in enumerate(POD_CELLS)
        ),
        *(
            Job(
                f"A/A, {pods_name(p)}, {HISTORY_S / 3600:g} h history",
                replace(base, pods=p, history_s=HISTORY_S),
                n_pods,
                SEED + 30 + i,
            )
            for i, p in enumerate(POD_CELLS)
        ),
        Job("shared incidents, random split", incident, n_inc, SEED + 10, incidents=True),
        Job(
            f"shared incidents, {pods_name(POD_CELLS[0])}",
            replace(incident, pods=POD_CELLS[0]),
            n_pods,
            SEED + 11,
            incidents=True,
        ),
        *(
            Job(name, replace(base, regression=r), n_reg, SEED + 20 + i)
            for i, (name, r) in enumerate(REGRESSIONS)
        ),
    ]
    t0 = time.perf_counter()
    cells = c.map_cells(run_cell, jobs)
    elapsed = time.perf_counter() - t0
    k = len(POD_CELLS)
    aa, pods, pods_history = cells[0], cells[1 : 1 + k], cells[1 + k : 1 + 2 * k]
    inc, reg = cells[1 + 2 * k : 3 + 2 * k], cells[3 + 2 * k :]
    promoted = [o.delay_min for o in aa.outcomes if o.outcome == "promoted" and o.delay_min]
    text = [
        "# Real traffic (NAB taxi demand and EC2 latency) through `canaryd replay`",
        "",
        f"Generated by `analysis/realtraces.py`{' --quick' if quick else ''} (seed {SEED}, "
        f"{elapsed:.0f} s). Policy `policies/llm-kserve.yaml` (alpha {alpha:g}, errors "
        "tolerance 0.2, latency tolerance 0.15 at p50 and p99, steps 10 -> 25 -> 50 % of 10 min "
        "and 500 canary requests each, then promotion). Each rollout: one trace from "
        "`canaryd.simulation.realtrace`, placed at a seeded uniform point of both NAB series "
        f"(`tests/fixtures/traces/nab/`), {base.duration_s / 3600:g} h of one-minute "
        f"intervals, replayed by `canaryd replay --json`. Per request: Poisson arrivals at "
        f"the taxi count scaled to a mean of {base.mean_rps:g} rps; canary with the step's "
        f"share; lognormal latency with mean the EC2 mean latency and sigma {base.sigma:g}, "
        f"on knative buckets; errors {100 * base.error_rate:g} % (x{INCIDENT_ERROR_RATIO:g} "
        "in the EC2 labelled windows in the incident cells). Figures: rollbacks / rollouts, "
        "one-sided 95 % Clopper-Pearson upper bound in brackets.",
        "",
        "## A/A: stable and canary the same version",
        "",
        f"A healthy rollout promotes after a median {statistics.median(promoted):g} min "
        f"(random split; {len(promoted)} of {aa.n} promoted). Undecided when the 2-h trace "
        f"ended (taxi date at the start, count): {aa.undecided_days()}. 'bound <= alpha' is "
        "whether the upper bound lies at or below the policy's alpha.",
        "",
        c.md_table(
            ("cell", "false rollbacks", "bound <= alpha", "by metric", "other outcomes"),
            aa_rows([aa, *pods, *pods_history], alpha),
        ),
        "",
        "With pods, the judges see per-pod counts and widen their null by stable's between-pod "
        "spread (`canaryd/stats/pods.py`). Without history (the trace starts with the canary) "
        "that spread is learned during the rollout from stable's few pods; with "
        f"'{HISTORY_S / 3600:g} h history' the trace starts with {HISTORY_S / 3600:g} h of "
        "stable-only rows, which `canaryd replay` gives the judges as the daemon gives them "
        "`spec.analysis.history` from Prometheus: the boundaries and stable's per-pod spread "
        "are learned there (`analysis/results/pods.md`).",
        "",
        "## Shared incidents: the labelled windows on both versions",
        "",
        "Each rollout starts inside a labelled window of the EC2 series (latency as recorded "
        f"there, errors x{INCIDENT_ERROR_RATIO:g} on both versions) and of the taxi series "
        "(holiday and storm demand).",
        "",
        c.md_table(
            ("cell", "false rollbacks", "bound <= alpha", "by metric", "other outcomes"),
            aa_rows(inc, alpha),
        ),
        "",
        "## Regressions on the canary (random split), from its first request",
        "",
        "Delay: minutes from the canary's start to the rollback, median among the detected. "
        "rps: the model's mean request rate (both versions) over the rollout's first 30 "
        "minutes, median over the detected and over the missed rollouts.",
        "",
        c.md_table(
            (
                "regression",
                "rolled back",
                "median delay (min)",
                "by metric",
                "other outcomes",
                "median rps, detected / missed",
            ),
            [
                (
                    x.name,
                    f"{x.rolled_back}/{x.n} = {c.pct(x.rolled_back / x.n, 1)} "
                    f"(≥ {c.pct(c.cp_lower(x.rolled_back, x.n), 1)})",
                    f"{x.median_delay():g}",
                    x.by_metric(),
                    x.others() or "-",
                    f"{x.median_rps(True)} / {x.median_rps(False)}",
                )
                for x in reg
            ],
        ),
        "",
    ]
    name = "realtraces-quick.md" if quick else "realtraces.md"
    (c.RESULTS / name).write_text("\n".join(text), encoding="utf-8")
    print("\n".join(text))


if __name__ == "__main__":
    main()
