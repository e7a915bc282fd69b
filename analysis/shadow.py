"""A/A false rollbacks through a shadow phase, with mirrored copies that share stable's inputs.

Run: ``.venv/bin/python analysis/shadow.py [--quick]``. Writes ``analysis/results/shadow.md``
and ``.png``.

The question (DESIGN-NOTES, "Shadow phase"): in shadow the canary's requests are *copies* of
stable's. A failure caused by the input (a malformed request, an unsupported language) fails on
both, so the canary's failures are a thinned copy of stable's rather than independent of them,
which the Poisson model of the errors judge assumes. Does that, or carrying the e-process from
mirrored into live traffic, raise the false-rollback rate above alpha?

Generator, per rollout and one-minute interval: requests N ~ Poisson(rps x 60). A share ``c`` of
the error rate ``p`` is input-driven: B ~ Binomial(N, c p) requests are bad inputs that fail on
every version; every other request fails independently with the rate that keeps the total at
``p``. Shadow (the first ``SHADOW`` intervals): stable serves all N; each request is mirrored
with probability ``m``, so the canary sees Binomial(B, m) bad copies, which fail, and
Binomial(N - B, m) good copies, which fail independently. Afterwards the canary is at 10 %
(live, Binomial share of N, its own inputs) for ``LIVE`` intervals. The errors judge
(``RateRatioBatch``, as ``SequentialErrorsJudge``) is read after every interval, alpha 0.01.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as c

ALPHA = 0.01
RPS = (2.0, 20.0, 200.0)
ERROR_RATES = (0.005, 0.05)
INPUT_SHARES = (0.0, 0.5, 1.0)
MIRRORS = (0.1, 1.0)
TOLERANCES = (0.0, 0.2)
SHADOW, LIVE, LIVE_WEIGHT = 10, 50, 0.10
SEED = 20261125


@dataclass
class Cell:
    rps: float
    error_rate: float
    input_share: float
    mirror: float
    tolerance: float
    rollouts: int
    in_shadow: int  # false rollbacks during the shadow phase
    total: int  # false rollbacks over the whole rollout

    @property
    def rate(self) -> float:
        return self.total / self.rollouts

    @property
    def upper(self) -> float:
        return c.cp_upper(self.total, self.rollouts)


def traffic(
    rng: np.random.Generator, rollouts: int, rps: float, p: float, share: float, mirror: float
) -> c.Traffic:
    """Shadow then live intervals (arrays ``(T, rollouts)``), A/A: both versions fail at ``p``."""
    t_n = SHADOW + LIVE
    n = rng.poisson(rps * c.INTERVAL_S, size=(t_n, rollouts))
    p_bad = share * p
    p_ind = (p - p_bad) / (1.0 - p_bad)
    n_s = n.copy()
    x_s = np.zeros((t_n, rollouts), dtype=np.int64)
    n_c = np.zeros((t_n, rollouts), dtype=np.int64)
    x_c = np.zeros((t_n, rollouts), dtype=np.int64)
    sh = slice(0, SHADOW)
    bad = rng.binomial(n[sh], p_bad)
    x_s[sh] = bad + rng.binomial(n[sh] - bad, p_ind)
    copies_bad = rng.binomial(bad, mirror)
    copies_good = rng.binomial(n[sh] - bad, mirror)
    n_c[sh] = copies_bad + copies_good
    x_c[sh] = copies_bad + rng.binomial(copies_good, p_ind)
    lv = slice(SHADOW, t_n)
    n_c[lv] = rng.binomial(n[lv], LIVE_WEIGHT)
    n_s[lv] = n[lv] - n_c[lv]
    x_s[lv] = rng.binomial(n_s[lv], p)  # different requests: independent inputs
    x_c[lv] = rng.binomial(n_c[lv], p)
    return c.Traffic(
        n_s=n_s.astype(float), n_c=n_c.astype(float), x_s=x_s.astype(float), x_c=x_c.astype(float)
    )


def run_cells(
    rollouts: int,
    seed: int = SEED,
    rps_list: tuple[float, ...] = RPS,
    error_rates: tuple[float, ...] = ERROR_RATES,
    input_shares: tuple[float, ...] = INPUT_SHARES,
    mirrors: tuple[float, ...] = MIRRORS,
) -> list[Cell]:
    cells: list[Cell] = []
    for i, rps in enumerate(rps_list):
        for j, p in enumerate(error_rates):
            for k, share in enumerate(input_shares):
                for m_i, mirror in enumerate(mirrors):
                    rng = np.random.default_rng([seed, i, j, k, m_i])
                    tr = traffic(rng, rollouts, rps, p, share, mirror)
                    for tol in TOLERANCES:
                        hit = c.errors_crossing(tr, 1.0 + tol, ALPHA)
                        cells.append(
                            Cell(
                                rps,
                                p,
                                share,
                                mirror,
                                tol,
                                rollouts,
                                int(np.sum((hit >= 0) & (hit < SHADOW))),
                                int(np.sum(hit >= 0)),
                            )
                        )
    return cells


def pooled(cells: list[Cell], **where: float) -> tuple[int, int, float, float]:
    sel = [x for x in cells if all(getattr(x, k) == v for k, v in where.items())]
    k = sum(x.total for x in sel)
    n = sum(x.rollouts for x in sel)
    return k, n, k / n, c.cp_upper(k, n)


def write(cells: list[Cell], rollouts: int, secs: float) -> str:
    k, n, rate, up = pooled(cells)
    by_share = [
        (
            f"{share:g}",
            *(f"{c.pct(pooled(cells, input_share=share, tolerance=t)[2], 3)}" for t in TOLERANCES),
            c.pct(pooled(cells, input_share=share)[3], 3),
        )
        for share in INPUT_SHARES
    ]
    worst = max(cells, key=lambda x: x.rate)
    rows = [
        (
            f"{x.rps:g}",
            c.pct(x.error_rate, 1),
            f"{x.input_share:g}",
            c.pct(x.mirror, 0),
            f"{x.tolerance:g}",
            x.in_shadow,
            x.total,
            c.pct(x.rate, 2),
            c.pct(x.upper, 2),
        )
        for x in cells
    ]
    doc = __doc__ or ""
    return f"""# Shadow phase: A/A false rollbacks with mirrored copies of stable's inputs

{doc.split("The question", 1)[1].strip() if "The question" in doc else ""}

Setup: {rollouts} seeded rollouts per cell (seed {SEED}), {SHADOW} shadow intervals then
{LIVE} at {LIVE_WEIGHT:.0%}, alpha {ALPHA}, tolerance 0 (rho0 = 1, the null's boundary) and 0.2.
Wall time {secs:.0f} s.

## Pooled

**{k} false rollbacks in {n} rollouts = {c.pct(rate, 3)}, upper 95 % bound {c.pct(up, 3)}**
(target: at or below alpha = 1 %). Worst cell: {worst.rps:g} rps, errors
{c.pct(worst.error_rate, 1)}, input share {worst.input_share:g}, mirror {worst.mirror:.0%},
tolerance {worst.tolerance:g}: {c.pct(worst.rate, 2)} (bound {c.pct(worst.upper, 2)}).

By the share of failures driven by the input (0: independent, as the Poisson model assumes;
1: every failure is the input's and fails on both versions):

{c.md_table(["input share", "rate, tol 0", "rate, tol 0.2", "upper 95 % (both)"], by_share)}

## Every cell

{c.md_table(["rps", "errors", "input share", "mirror", "tol", "in shadow", "total", "rate", "upper 95%"], rows)}
"""


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for share, marker in zip(INPUT_SHARES, "os^", strict=True):
        sel = [x for x in cells if x.input_share == share and x.tolerance == 0.0]
        ax.plot(
            range(len(sel)),
            [100 * x.rate for x in sel],
            marker,
            label=f"input-driven share {share:g}",
        )
    ax.axhline(100 * ALPHA, color="k", lw=0.8, ls="--", label="alpha")
    ax.set_ylabel("false rollbacks, %")
    ax.set_xlabel("cell (rps x error rate x mirror), tolerance 0")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    quick = c.parse_quick(__doc__ or "")
    rollouts = 300 if quick else 2000
    t0 = time.perf_counter()
    cells = run_cells(rollouts)
    secs = time.perf_counter() - t0
    c.RESULTS.mkdir(exist_ok=True)
    name = "shadow-quick" if quick else "shadow"
    (c.RESULTS / f"{name}.md").write_text(write(cells, rollouts, secs), encoding="utf-8")
    plot(cells, c.RESULTS / f"{name}.png")
    k, n, rate, up = pooled(cells)
    print(f"pooled {k}/{n} = {rate:.4%} (upper 95% {up:.4%}); wall {secs:.0f} s")


if __name__ == "__main__":
    main()
