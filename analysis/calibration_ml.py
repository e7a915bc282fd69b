"""A/A calibration of the ML judges, looked at EVERY interval.

Run: ``.venv/bin/python analysis/calibration_ml.py [--quick]``. Writes
``analysis/results/calibration_ml.md`` and ``.png``.

Judges: ttft, inter-token (per-request time per token) and output-length (the sequential
latency judge on their histograms), categorical / finish-reason (category shares, both ways),
quality (wrong predictions among delayed labels). Plus two cells that are *not* canaryd's
decisions but show why it makes the ones it does: the per-token inter-token histogram judged
as if tokens were independent, and category shares exactly at the tolerance boundary.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlstudy as m
import studylib as c

ALPHA = 0.01
HORIZON = 120
SEED = 20261126
SPLITS = ("fixed", "steps")
LLM_RPS = (2.0, 8.0)
CLF_RPS = (20.0, 100.0)
QUANTILES = (0.5, 0.9)


@dataclass
class Cell:
    judge: str
    load: str
    rps: float
    split: str
    tolerance: float
    rollouts: int
    rollbacks: int
    pooled: bool = True
    """False for the cells that are not canaryd decisions (demonstrations)."""

    @property
    def rate(self) -> float:
        return self.rollbacks / self.rollouts

    @property
    def upper(self) -> float:
        return c.cp_upper(self.rollbacks, self.rollouts)


def _seed(*parts: int) -> np.random.Generator:
    return np.random.default_rng([SEED, *parts])


def histogram_cells(rollouts: int, horizon: int, rps_list: tuple[float, ...]) -> list[Cell]:
    out: list[Cell] = []
    kinds = [
        ("ttft", m.ttft(350), (0.0, 0.1)),
        ("inter-token", m.tpot(30), (0.0, 0.1)),
        ("output-length", m.answer_tokens(220), (0.0, 0.2)),
    ]
    for a, (judge, sig, tols) in enumerate(kinds):
        ks = sig.boundaries(QUANTILES)
        for i, rps in enumerate(rps_list):
            for j, split in enumerate(SPLITS):
                rng = _seed(0, a, i, j)
                tr = m.hist_traffic(rng, rollouts, rps, c.weights(split, horizon), sig, sig)
                for tol in tols:
                    hit = c.latency_crossing(tr, ks, 1.0 + tol, ALPHA)
                    out.append(
                        Cell(judge, sig.name, rps, split, tol, rollouts, int(np.sum(hit >= 0)))
                    )
    return out


def per_token_cells(rollouts: int, horizon: int) -> list[Cell]:
    """The per-token histogram judged as if tokens were independent requests (not canaryd's)."""
    out: list[Cell] = []
    sig = m.tpot(30)
    ks = sig.boundaries(QUANTILES)
    for i, rps in enumerate((2.0, 8.0)):
        for j, split in enumerate(SPLITS):
            rng = _seed(1, i, j)
            tr = m.per_token_traffic(rng, rollouts, rps, c.weights(split, horizon), sig)
            hit = c.latency_crossing(tr, ks, 1.1, ALPHA)
            out.append(
                Cell(
                    "per-token ITL as independent",
                    "tokens of a request share its speed",
                    rps,
                    split,
                    0.1,
                    rollouts,
                    int(np.sum(hit >= 0)),
                    pooled=False,
                )
            )
    return out


CLASS_LOADS = {
    "3 classes (95/3/2 %)": ((0.95, 0.03, 0.02), (0.0, 0.2)),
    "5 classes (40/30/15/10/5 %)": ((0.40, 0.30, 0.15, 0.10, 0.05), (0.0,)),
}
"""Shares and the tolerances tested (tolerance 0 is the hardest case)."""
FINISH = (0.86, 0.10, 0.03, 0.01)  # stop, length, abort, error


def categorical_cells(rollouts: int, horizon: int, rps_list: tuple[float, ...]) -> list[Cell]:
    out: list[Cell] = []
    for a, (name, (q, tols)) in enumerate(CLASS_LOADS.items()):
        for i, rps in enumerate(rps_list):
            for j, split in enumerate(SPLITS):
                rng = _seed(2, a, i, j)
                tr = c.gen_requests(rng, rollouts, rps, c.weights(split, horizon))
                cs, cc = m.class_counts(rng, tr, q, q)
                for tol in tols:
                    hit = m.categorical_crossing(cs, cc, tol, ALPHA)
                    out.append(
                        Cell("categorical", name, rps, split, tol, rollouts, int(np.sum(hit >= 0)))
                    )
    for i, rps in enumerate((2.0, 8.0)):
        for j, split in enumerate(SPLITS):
            rng = _seed(3, i, j)
            tr = c.gen_requests(rng, rollouts, rps, c.weights(split, horizon))
            cs, cc = m.class_counts(rng, tr, FINISH, FINISH)
            hit = m.categorical_crossing(cs, cc, 0.25, ALPHA)
            out.append(Cell("finish-reason", "stop/length/abort/error 86/10/3/1 %", rps, split, 0.25, rollouts, int(np.sum(hit >= 0))))  # fmt: skip
    # At the tolerance boundary: the canary's fraud share is exactly 1.2x stable's.
    for j, split in enumerate(SPLITS):
        rng = _seed(4, j)
        tr = c.gen_requests(rng, rollouts, 100.0, c.weights(split, horizon))
        q_s = (0.95, 0.03, 0.02)
        q_c = (0.95 - 0.006, 0.036, 0.02)
        cs, cc = m.class_counts(rng, tr, q_s, q_c)
        hit = m.categorical_crossing(cs, cc, 0.2, ALPHA)
        out.append(Cell("categorical at the boundary", "fraud 3.0 % -> 3.6 % (1.2x)", 100.0, split, 0.2, rollouts, int(np.sum(hit >= 0))))  # fmt: skip
    return out


def quality_cells(rollouts: int, horizon: int, rps_list: tuple[float, ...]) -> list[Cell]:
    out: list[Cell] = []
    for a, delay in enumerate((0.0, 600.0)):
        for i, rps in enumerate(rps_list):
            for j, split in enumerate(SPLITS):
                rng = _seed(5, a, i, j)
                tr = c.gen_requests(rng, rollouts, rps, c.weights(split, horizon))
                lab = m.labelled_traffic(rng, tr, 0.92, 0.92, delay, 0.8)
                load = f"92 % accurate, labels {'at once' if delay == 0 else f'{delay / 60:g} min late'}, 80 % labelled"  # fmt: skip
                for tol in (0.0, 0.1):
                    hit = c.errors_crossing(lab, 1.0 + tol, ALPHA)
                    out.append(
                        Cell("quality", load, rps, split, tol, rollouts, int(np.sum(hit >= 0)))
                    )
    return out


def run_cells(
    rollouts: int,
    horizon: int = HORIZON,
    llm_rps: tuple[float, ...] = LLM_RPS,
    clf_rps: tuple[float, ...] = CLF_RPS,
    per_token: bool = True,
) -> list[Cell]:
    cells = histogram_cells(rollouts, horizon, llm_rps)
    if per_token:
        cells += per_token_cells(max(200, rollouts // 4), horizon)
    cells += categorical_cells(rollouts, horizon, clf_rps)
    cells += quality_cells(rollouts, horizon, clf_rps)
    return cells


def pooled(cells: list[Cell]) -> tuple[int, int, float, float]:
    sub = [x for x in cells if x.pooled]
    k = sum(x.rollbacks for x in sub)
    n = sum(x.rollouts for x in sub)
    return k, n, k / n, c.cp_upper(k, n)


def write(cells: list[Cell], rollouts: int, secs: float) -> str:
    k, n, rate, up = pooled(cells)
    judged = [x for x in cells if x.pooled]
    worst = max(judged, key=lambda x: x.upper)
    by = []
    for judge in dict.fromkeys(x.judge for x in cells):
        for tol in sorted({x.tolerance for x in cells if x.judge == judge}):
            sub = [x for x in cells if x.judge == judge and x.tolerance == tol]
            kk = sum(x.rollbacks for x in sub)
            nn = sum(x.rollouts for x in sub)
            by.append([judge, f"{tol:g}", nn, kk, c.pct(kk / nn, 3), c.pct(c.cp_upper(kk, nn), 3), "" if sub[0].pooled else "not a canaryd decision"])  # fmt: skip
    rows = [
        [x.judge, x.load, f"{x.rps:g}", x.split, f"{x.tolerance:g}", x.rollouts, x.rollbacks, c.pct(x.rate), c.pct(x.upper)]
        for x in cells
    ]  # fmt: skip
    pt = [x for x in cells if not x.pooled and x.judge.startswith("per-token")]
    pt_txt = ", ".join(f"{c.pct(x.rate, 1)} ({x.rps:g} rps {x.split})" for x in pt)
    return f"""# A/A calibration of the ML judges, looked at every interval

Setup: {rollouts} seeded rollouts per cell (seed {SEED}), {HORIZON} one-minute intervals, alpha =
{ALPHA}, each judge's decision read after **every** interval (running maximum of its e-value, as
the judges keep it). Traffic: Poisson requests per interval; canary share Binomial at 10 %
(`fixed`) or 5 % -> 50 % by 5 points per interval (`steps`, then 50 %). Both versions draw from
the same distribution. The histogram kinds use vLLM's default buckets
(`canaryd/simulation/vllm.py`) and test the boundaries nearest the known stable p50 and p90 (the
limit of the judge's choice), e-values averaged as `SequentialLatencyJudge` does; categories
run `CategoryShares` (the categorical judge's engine: per category, up and down rows against the
tolerance band, averaged); quality runs the rate-ratio e-process on wrong among labelled
predictions, each prediction labelled with probability 0.8 after an exponential delay. Tolerance
0 is the hardest case (A/A sits on the null boundary). Bound: one-sided upper 95 %
Clopper-Pearson. Generators: `analysis/mlstudy.py`. Wall time {secs:.0f} s.

## Pooled

The canaryd judges, pooled over {len(judged)} cells: **{k} false rollbacks in {n} rollouts =
{c.pct(rate, 3)}, upper 95 % bound {c.pct(up, 3)}** (target: bound <= alpha = {c.pct(ALPHA, 0)}). Worst
cell: {worst.judge} ({worst.load}) {worst.rps:g} rps {worst.split} tolerance {worst.tolerance:g}:
{c.pct(worst.rate)} (bound {c.pct(worst.upper)}).

{c.md_table(["judge", "tolerance", "rollouts", "rollbacks", "rate", "upper 95%", ""], by)}

**Per-token inter-token latency is not a sample of requests.** The same A/A runs, judged on
`vllm:inter_token_latency_seconds` as if every token were an independent observation (one
request of 220 tokens counts 219 times, all in its own bucket), falsely roll back {pt_txt}
of the rollouts at alpha 1 %. That is why the `inter-token` kind judges the per-request
`vllm:request_time_per_output_token_seconds` and refuses the per-token histogram.

**At the tolerance boundary** (the canary's fraud share exactly 1.2x stable's, tolerance 0.2)
the categorical test stays below alpha: the binomial conditional likelihood is conservative for
category counts (DESIGN-NOTES.md).

## Per cell

{c.md_table(["judge", "load", "rps", "split", "tolerance", "rollouts", "rollbacks", "rate", "upper 95%"], rows)}
"""


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(13, 4.8))
    colors = {
        "ttft": "tab:blue",
        "inter-token": "tab:cyan",
        "output-length": "tab:green",
        "categorical": "tab:purple",
        "finish-reason": "tab:pink",
        "categorical at the boundary": "tab:brown",
        "quality": "tab:orange",
    }
    xs = np.arange(len(cells))
    for x, cell in zip(xs, cells, strict=True):
        col = colors.get(cell.judge, "tab:red")
        ax.vlines(x, cell.rate, cell.upper, color=col, alpha=0.6)
        ax.scatter([x], [cell.rate], color=col, s=14, marker="o" if cell.pooled else "x", zorder=3)
    for judge, col in colors.items():
        ax.scatter([], [], color=col, label=judge)
    ax.scatter(
        [], [], color="tab:red", marker="x", label="per-token ITL as independent (not canaryd)"
    )
    ax.axhline(ALPHA, color="k", ls="--", lw=1, label="alpha = 1%")
    ax.set_yscale("symlog", linthresh=0.005)
    ax.set_xlabel("cell")
    ax.set_ylabel("false-rollback rate (dot) to upper 95% bound")
    ax.set_title("A/A, ML judges looked at every interval")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    quick = c.parse_quick(__doc__ or "")
    rollouts = 300 if quick else 1000
    t0 = time.perf_counter()
    cells = run_cells(rollouts)
    secs = time.perf_counter() - t0
    c.RESULTS.mkdir(exist_ok=True)
    name = "calibration_ml-quick" if quick else "calibration_ml"
    (c.RESULTS / f"{name}.md").write_text(write(cells, rollouts, secs), encoding="utf-8")
    plot(cells, c.RESULTS / f"{name}.png")
    k, n, rate, up = pooled(cells)
    print(f"pooled {k}/{n} = {rate:.4%} (upper 95% {up:.4%}); wall {secs:.0f} s")
    for x in cells:
        if not x.pooled:
            print(f"  {x.judge} {x.rps:g} {x.split}: {x.rate:.2%}")


if __name__ == "__main__":
    main()
