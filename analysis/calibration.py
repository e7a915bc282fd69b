"""A/A calibration: false-rollback rate of the sequential judges looked at EVERY interval.

Run: ``.venv/bin/python analysis/calibration.py [--quick]``. Writes
``analysis/results/calibration.md`` and ``.png``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as c

ALPHA = 0.01
RPS = (0.2, 2.0, 20.0, 200.0)
SPLITS = ("fixed", "steps")
ERROR_RATES = (0.001, 0.01, 0.05)
TOLERANCES = (0.0, 0.2)
LATENCIES = (c.lognormal(80, 0.5, "knative"), c.pareto(50, 1.5, "istio"))
HORIZON = 120
SEED = 20261125


@dataclass
class Cell:
    judge: str
    rps: float
    split: str
    load: str  # baseline error rate or latency distribution
    tolerance: float
    rollouts: int
    rollbacks: int
    z_rate: float | None = None  # classic judges in the same runs (errors cells only)
    mw_rate: float | None = None

    @property
    def rate(self) -> float:
        return self.rollbacks / self.rollouts

    @property
    def upper(self) -> float:
        return c.cp_upper(self.rollbacks, self.rollouts)


def run_cells(
    rollouts: int,
    horizon: int = HORIZON,
    seed: int = SEED,
    rps_list: tuple[float, ...] = RPS,
    splits: tuple[str, ...] = SPLITS,
    error_rates: tuple[float, ...] = ERROR_RATES,
    latencies: tuple[c.LatencyDist, ...] = LATENCIES,
    classic: bool = True,
) -> list[Cell]:
    """Every A/A cell; each cell draws its own seeded traffic."""
    cells: list[Cell] = []
    for i, rps in enumerate(rps_list):
        for j, split in enumerate(splits):
            w = c.weights(split, horizon)
            for k, p in enumerate(error_rates):
                rng = np.random.default_rng([seed, 0, i, j, k])
                tr = c.gen_errors(rng, c.gen_requests(rng, rollouts, rps, w), p, p)
                z = mw = None
                if classic:
                    z = float(np.mean(c.cumulative_z_crossing(tr, 1.959964) >= 0))
                    assert tr.x_s is not None and tr.x_c is not None
                    mw = float(
                        np.mean(
                            c.mann_whitney_crossing(
                                c.rates(tr.x_s, tr.n_s), c.rates(tr.x_c, tr.n_c)
                            )
                            >= 0
                        )
                    )
                for tol in TOLERANCES:
                    hit = c.errors_crossing(tr, 1.0 + tol, ALPHA)
                    cells.append(
                        Cell(
                            "errors",
                            rps,
                            split,
                            f"{100 * p:g}%",
                            tol,
                            rollouts,
                            int(np.sum(hit >= 0)),
                            z if tol == 0 else None,
                            mw if tol == 0 else None,
                        )
                    )
            for k, dist in enumerate(latencies):
                rng = np.random.default_rng([seed, 1, i, j, k])
                tr = c.gen_latency(rng, c.gen_requests(rng, rollouts, rps, w), dist, dist)
                hit = c.latency_crossing(tr, dist.boundaries(), 1.0, ALPHA)
                cells.append(
                    Cell("latency", rps, split, dist.name, 0.0, rollouts, int(np.sum(hit >= 0)))
                )
    return cells


def pooled(cells: list[Cell]) -> tuple[int, int, float, float]:
    k = sum(x.rollbacks for x in cells)
    n = sum(x.rollouts for x in cells)
    return k, n, k / n, c.cp_upper(k, n)


def looks_inflation(
    rollouts: int, seed: int = SEED + 1, per_look: int = 2000, p: float = 0.05
) -> dict[str, dict[int, float]]:
    """DESIGN.md's check: a nominal-5% test repeated at K equally spaced looks, A/A.

    Each look adds ``per_look`` requests per version at error rate ``p``. The cumulative
    two-proportion z-test (two-sided, 5%) and scipy's Mann-Whitney on the per-look error
    rates seen so far (two-sided, 5%) are evaluated at every look.
    """
    rng = np.random.default_rng(seed)
    k_max = 20
    n = np.full((k_max, rollouts), float(per_look))
    tr = c.Traffic(n_s=n, n_c=n.copy())
    c.gen_errors(rng, tr, p, p)
    assert tr.x_s is not None and tr.x_c is not None
    z_first = c.cumulative_z_crossing(tr, 1.959964)
    mw_first = c.mann_whitney_crossing(tr.x_s / n, tr.x_c / n, start=2)
    # Mann-Whitney on the cumulative raw observations: each look adds 50 continuous samples
    # per version (the latency-like use of scipy's test on everything seen so far).
    raw_n = min(rollouts, 5000)
    xs = rng.standard_normal((raw_n, k_max * 50))
    xc = rng.standard_normal((raw_n, k_max * 50))
    raw_p = np.stack(
        [
            stats.mannwhitneyu(xc[:, : 50 * (t + 1)], xs[:, : 50 * (t + 1)], axis=1).pvalue
            for t in range(k_max)
        ]
    )
    raw_first = c.first_true(raw_p < 0.05)
    out: dict[str, dict[int, float]] = {"z": {}, "mw": {}, "mw_raw": {}}
    for k in (1, 2, 5, 10, 20):
        out["z"][k] = float(np.mean((z_first >= 0) & (z_first < k)))
        out["mw"][k] = float(np.mean((mw_first >= 0) & (mw_first < k)))
        out["mw_raw"][k] = float(np.mean((raw_first >= 0) & (raw_first < k)))
    return out


def write(
    cells: list[Cell], infl: dict[str, dict[int, float]], rollouts: int, infl_n: int, secs: float
) -> str:
    k, n, rate, up = pooled(cells)
    worst = max(cells, key=lambda x: x.upper)
    rows = [
        [
            x.judge,
            f"{x.rps:g}",
            x.split,
            x.load,
            f"{x.tolerance:g}",
            x.rollouts,
            x.rollbacks,
            c.pct(x.rate),
            c.pct(x.upper),
            "" if x.z_rate is None else c.pct(x.z_rate, 1),
            "" if x.mw_rate is None else c.pct(x.mw_rate, 1),
        ]
        for x in cells
    ]
    by_judge = []
    for judge in ("errors", "latency"):
        for tol in TOLERANCES:
            sub = [x for x in cells if x.judge == judge and x.tolerance == tol]
            if sub:
                kk, nn, rr, uu = pooled(sub)
                by_judge.append([judge, f"{tol:g}", nn, kk, c.pct(rr, 3), c.pct(uu, 3)])
    z = [x.z_rate for x in cells if x.z_rate is not None]
    mw = [x.mw_rate for x in cells if x.mw_rate is not None]
    text = f"""# A/A calibration: false rollbacks when the sequential judges are evaluated every interval

Setup: {rollouts} seeded rollouts per cell (seed {SEED}), {HORIZON} one-minute intervals each,
alpha = {ALPHA}, the judge's decision read after **every** interval (running maximum of the
e-value, as the judges do). Traffic: Poisson requests per interval at the given rps; canary share
Binomial with weight 10 % (`fixed`) or 5 % -> 50 % by 5 points per interval (`steps`, then 50 %).
Errors: Binomial at the same rate for both versions; tolerance 0 tests rho0 = 1 (A/A sits exactly
on the null boundary, the hardest case) and tolerance 0.2 tests rho0 = 1.2. Latency: multinomial
buckets from the same distribution for both versions - {LATENCIES[0].name} over knative buckets
and a heavy-tailed {LATENCIES[1].name} over Istio buckets; the latency judge tests exceedances above
the boundaries nearest stable's p50 and p99 (chosen from the *known* stable CDF with
`nearest_boundary`, the limit of the judge's choice from stable data: knative 80 ms and 250 ms;
Istio 100 ms and 1000 ms), tolerance 0, e-values averaged. The bound is the one-sided upper 95 %
Clopper-Pearson bound. Classic judges on the same runs (errors cells), looked at every interval:
cumulative two-proportion z-test (two-sided 5 %) and scipy Mann-Whitney on per-interval error rates
(two-sided 5 %, from the 2nd interval; an interval with no requests counts as rate 0).
Wall time {secs:.0f} s.

## Pooled

Pooled over all {len(cells)} cells: **{k} false rollbacks in {n} rollouts = {
        c.pct(rate, 3)
    }, upper 95 % bound
{c.pct(up, 3)}** (target: bound <= 1.5 %). Worst cell: {worst.judge} {worst.rps:g} rps {worst.split}
{worst.load} tolerance {worst.tolerance:g}: {c.pct(worst.rate)} (bound {c.pct(worst.upper)}).

{c.md_table(["judge", "tolerance", "rollouts", "rollbacks", "rate", "upper 95%"], by_judge)}

Classic judges in the same error runs (nominal 5 %, looked at every interval):
cumulative z-test {c.pct(min(z), 1)}-{c.pct(max(z), 1)} false rollbacks per cell (mean {
        c.pct(float(np.mean(z)), 1)
    });
Mann-Whitney {c.pct(min(mw), 1)}-{c.pct(max(mw), 1)} (mean {c.pct(float(np.mean(mw)), 1)}).
Mann-Whitney compares the *distributions* of per-interval rates: with an unequal split the
canary's rates come from fewer requests, so they are more dispersed and more often 0 even when
the error rates are equal, and the test rejects an A/A comparison (up to 100 % of rollouts at
2-20 rps with a fixed 10 % split).

## Check of DESIGN.md's figure: a nominal-5 % test at K equally spaced looks (A/A, {infl_n} runs)

Each look adds 2,000 requests per version at a 5 % error rate.

{
        c.md_table(
            [
                "looks K",
                "cumulative z-test",
                "DESIGN.md (z)",
                "Mann-Whitney, cumulative raw samples",
                "DESIGN.md (MW)",
                "Mann-Whitney, per-look rates",
            ],
            [
                [
                    kk,
                    c.pct(infl["z"][kk], 1),
                    {5: "14%", 10: "19%", 20: "25%"}.get(kk, ""),
                    c.pct(infl["mw_raw"][kk], 1),
                    {10: "18%", 20: "24%"}.get(kk, ""),
                    c.pct(infl["mw"][kk], 1),
                ]
                for kk in infl["z"]
            ],
        )
    }

"Cumulative raw samples": each look adds 50 continuous (normal) observations per version and
scipy's two-sided Mann-Whitney runs on all observations so far ({min(infl_n, 5000)} runs). "Per-look
rates": the test runs on the K per-look error rates, which is small-sample and discrete, so it
inflates more slowly.

## Per cell

{
        c.md_table(
            [
                "judge",
                "rps",
                "split",
                "baseline",
                "tolerance",
                "rollouts",
                "rollbacks",
                "rate",
                "upper 95%",
                "z-test (5%)",
                "Mann-Whitney (5%)",
            ],
            rows,
        )
    }
"""
    return text


def plot(cells: list[Cell], infl: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1]})
    xs = np.arange(len(cells))
    rate = np.array([x.rate for x in cells])
    up = np.array([x.upper for x in cells])
    col = [
        "tab:blue"
        if x.judge == "errors" and x.tolerance == 0
        else "tab:green"
        if x.judge == "errors"
        else "tab:purple"
        for x in cells
    ]
    a1.vlines(xs, rate, up, color=col, alpha=0.6)
    a1.scatter(xs, rate, c=col, s=14, zorder=3)
    zc = [(i, x.z_rate) for i, x in enumerate(cells) if x.z_rate is not None]
    a1.scatter(
        [i for i, _ in zc],
        [v for _, v in zc],
        marker="x",
        color="tab:red",
        s=14,
        label="cumulative z (5%)",
    )
    a1.axhline(ALPHA, color="k", ls="--", lw=1, label="alpha = 1%")
    a1.axhline(0.015, color="grey", ls=":", lw=1, label="1.5% (pooled bound target)")
    a1.set_yscale("symlog", linthresh=0.005)
    a1.set_xlabel("cell (errors tol 0 = blue, errors tol 0.2 = green, latency = purple)")
    a1.set_ylabel("false-rollback rate (dot) to upper 95% bound")
    a1.set_title("A/A, sequential judges looked at every interval")
    a1.legend(fontsize=8)
    ks = sorted(infl["z"])
    a2.plot(ks, [infl["z"][k] for k in ks], "o-", label="cumulative z-test")
    a2.plot(ks, [infl["mw_raw"][k] for k in ks], "s-", label="Mann-Whitney (raw)")
    a2.plot(ks, [infl["mw"][k] for k in ks], "^-", label="Mann-Whitney (per-look rates)")
    a2.axhline(0.05, color="k", ls="--", lw=1)
    a2.set_xlabel("looks K")
    a2.set_ylabel("false rejection")
    a2.set_title("nominal 5% tests, repeated")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    quick = c.parse_quick(__doc__ or "")
    rollouts = 300 if quick else 2000
    infl_n = 2000 if quick else 20000
    t0 = time.perf_counter()
    cells = run_cells(rollouts)
    infl = looks_inflation(infl_n)
    secs = time.perf_counter() - t0
    c.RESULTS.mkdir(exist_ok=True)
    name = "calibration-quick" if quick else "calibration"
    (c.RESULTS / f"{name}.md").write_text(
        write(cells, infl, rollouts, infl_n, secs), encoding="utf-8"
    )
    plot(cells, infl, c.RESULTS / f"{name}.png")
    k, n, rate, up = pooled(cells)
    print(f"pooled {k}/{n} = {rate:.4%} (upper 95% {up:.4%}); wall {secs:.0f} s")


if __name__ == "__main__":
    main()
