"""canaryd against the usual canary judges, on the same simulated rollouts.

Run: ``.venv/bin/python analysis/baselines.py [--quick]``. Writes
``analysis/results/baselines.md`` and ``.png``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as c

from canaryd.stats.kayenta import kayenta_classify

RPS = 20.0
P_STABLE = 0.005
HORIZON = 60  # one-minute intervals: 5 % -> 50 % by 5 every 5 minutes, then 50 %
STEP_EVERY = 5
ALPHA = 0.01  # the policy's total; split evenly over errors and latency
SEED = 31_2026
STABLE_LAT = c.lognormal(80, 0.5, "knative")
SCENARIOS = {
    "A/A": (1.0, STABLE_LAT),
    "errors x2": (2.0, STABLE_LAT),
    "latency median +25%": (1.0, c.lognormal(100, 0.5, "knative")),
}
METHODS = (
    "Flagger thresholds",
    "repeated z-test (5%)",
    "Kayenta Mann-Whitney",
    "canaryd sequential",
)
KAYENTA_START = 2  # first look after 3 intervals (the Wilcoxon interval needs a few samples)


@dataclass
class Outcome:
    method: str
    scenario: str
    rollouts: int
    rollbacks: int
    median_minutes: float
    median_canary: float

    @property
    def rate(self) -> float:
        return self.rollbacks / self.rollouts


def flagger(tr: c.Traffic, p99: np.ndarray) -> np.ndarray:
    """Flagger-style: per-interval canary success rate >= 99 % and p99 <= 500 ms; a failing
    interval is a failed check; roll back at the 10th failed check (never reset)."""
    assert tr.x_c is not None
    with np.errstate(divide="ignore", invalid="ignore"):
        success = 1 - tr.x_c / tr.n_c
    failed = ((tr.n_c > 0) & (success < 0.99)) | (np.nan_to_num(p99, nan=0.0) > 500)
    return c.first_true(np.cumsum(failed, axis=0) >= 10)


def ztest(tr: c.Traffic, ks: list[int]) -> np.ndarray:
    """One-sided two-proportion z-test at 5 % on cumulative counts, every interval: errors and
    exceedances at the p50 and p99 boundaries; any rejection rolls back."""
    assert tr.x_s is not None and tr.x_c is not None and tr.h_s is not None and tr.h_c is not None
    cs, cc = np.cumsum(tr.n_s, 0), np.cumsum(tr.n_c, 0)
    flags = c.z_two_proportion(cs, np.cumsum(tr.x_s, 0), cc, np.cumsum(tr.x_c, 0)) >= 1.644854
    for k in ks:
        xs = np.cumsum(c.exceedances(tr.h_s, k), 0)
        xc = np.cumsum(c.exceedances(tr.h_c, k), 0)
        flags |= c.z_two_proportion(cs, xs, cc, xc) >= 1.644854
    return c.first_true(flags)


def kayenta(tr: c.Traffic, p99_s: np.ndarray, p99_c: np.ndarray, rows: int) -> np.ndarray:
    """Kayenta's classifier (``kayenta_classify``, defaults: confidence 0.98, tolerance 0.25) on
    the per-interval values seen so far - error rate and p99 - every interval; High = fail."""
    assert tr.x_s is not None and tr.x_c is not None
    er_s = np.where(tr.n_s > 0, tr.x_s / np.maximum(tr.n_s, 1), np.nan)
    er_c = np.where(tr.n_c > 0, tr.x_c / np.maximum(tr.n_c, 1), np.nan)
    out = np.full(rows, c.NEVER, dtype=np.int64)
    for r in range(rows):
        for t in range(KAYENTA_START, tr.n_s.shape[0]):
            high = any(
                kayenta_classify(cv[: t + 1, r], sv[: t + 1, r]).classification == "High"
                for cv, sv in ((er_c, er_s), (p99_c, p99_s))
            )
            if high:
                out[r] = t
                break
    return out


def canaryd(tr: c.Traffic, ks: list[int]) -> np.ndarray:
    """Errors and latency judges, tolerance 0, alpha 0.005 each; either failing rolls back."""
    e = c.errors_crossing(tr, 1.0, ALPHA / 2)
    lat = c.latency_crossing(tr, ks, 1.0, ALPHA / 2)
    both = np.where(e < 0, np.iinfo(np.int64).max, e)
    both = np.minimum(both, np.where(lat < 0, np.iinfo(np.int64).max, lat))
    return np.where(both == np.iinfo(np.int64).max, c.NEVER, both)


def summarize(method: str, scen: str, tr: c.Traffic, when: np.ndarray) -> Outcome:
    hit = when >= 0
    req = c.canary_at(tr, when)
    return Outcome(
        method,
        scen,
        len(when),
        int(hit.sum()),
        float(np.median(when[hit] + 1)) if hit.any() else math.nan,
        float(np.nanmedian(req)) if hit.any() else math.nan,
    )


def run(rollouts: int, kayenta_rollouts: int, seed: int = SEED) -> list[Outcome]:
    w = c.weights("steps", HORIZON, STEP_EVERY)
    ks = STABLE_LAT.boundaries()
    out: list[Outcome] = []
    for i, (scen, (ratio, lat)) in enumerate(SCENARIOS.items()):
        rng = np.random.default_rng([seed, i])
        tr = c.gen_requests(rng, rollouts, RPS, w)
        c.gen_errors(rng, tr, P_STABLE, P_STABLE * ratio)
        c.gen_latency(rng, tr, STABLE_LAT, lat)
        assert tr.h_s is not None and tr.h_c is not None
        p99_s = c.histogram_quantile_v(0.99, STABLE_LAT.bounds, tr.h_s)
        p99_c = c.histogram_quantile_v(0.99, STABLE_LAT.bounds, tr.h_c)
        out.append(summarize(METHODS[0], scen, tr, flagger(tr, p99_c)))
        out.append(summarize(METHODS[1], scen, tr, ztest(tr, ks)))
        sub = c.Traffic(
            tr.n_s[:, :kayenta_rollouts],
            tr.n_c[:, :kayenta_rollouts],
            tr.x_s[:, :kayenta_rollouts] if tr.x_s is not None else None,
            tr.x_c[:, :kayenta_rollouts] if tr.x_c is not None else None,
        )
        out.append(
            summarize(
                METHODS[2],
                scen,
                sub,
                kayenta(
                    sub, p99_s[:, :kayenta_rollouts], p99_c[:, :kayenta_rollouts], kayenta_rollouts
                ),
            )
        )
        out.append(summarize(METHODS[3], scen, tr, canaryd(tr, ks)))
    return out


def write(res: list[Outcome], secs: float) -> str:
    rows = []
    for m in METHODS:
        row: list[object] = [m]
        for scen in SCENARIOS:
            o = next(x for x in res if x.method == m and x.scenario == scen)
            cell = (
                f"{c.pct(o.rate, 1)} (<= {c.pct(c.cp_upper(o.rollbacks, o.rollouts), 1)}, n={o.rollouts})"
                if scen == "A/A"
                else f"{c.pct(o.rate, 1)} (n={o.rollouts})"
            )
            row.append(cell)
            if scen != "A/A":
                row.append(
                    "-"
                    if math.isnan(o.median_minutes)
                    else f"{o.median_minutes:.0f} min / {o.median_canary:.0f} req"
                )
        rows.append(row)
    header = [
        "method",
        "A/A false rollbacks (upper 95%)",
        "errors x2: detected",
        "median delay",
        "latency +25%: detected",
        "median delay",
    ]
    return f"""# Baselines: canaryd against Flagger thresholds, a repeated z-test and Kayenta

Setup (same simulated rollouts for every method; seed {SEED}): {RPS:g} rps Poisson per one-minute
interval, canary 5 % -> 50 % by 5 points every {STEP_EVERY} minutes (the default policy's schedule),
{HORIZON} intervals, every method evaluated after every interval. Stable: errors {100 * P_STABLE:g} %,
latency {STABLE_LAT.name} over knative buckets. Scenarios: A/A; canary errors x2 (1 %);
canary latency median +25 % (100 ms, same sigma).

- **Flagger thresholds**: per interval, canary success rate >= 99 % and canary p99 (PromQL
  `histogram_quantile` over that interval's buckets) <= 500 ms; an interval failing either is a
  failed check; rollback at 10 failed checks (counted over the rollout, never reset). An interval
  with no canary requests is not a failed check.
- **repeated z-test**: one-sided two-proportion z-test at 5 % on the cumulative counts, every
  interval, on errors and on the exceedances above the p50 and p99 boundaries (80 and 250 ms).
- **Kayenta Mann-Whitney**: `kayenta_classify` (confidence 0.98, tolerance 0.25, its defaults) on
  the per-interval values seen so far - canary vs stable error rate, and canary vs stable p99 -
  from the 3rd interval on; class High on either = rollback. Its classifier costs ~5 ms a call, so
  it runs on the first {next(o for o in res if o.method == METHODS[2]).rollouts} rollouts of the same runs.
- **canaryd sequential**: errors judge and latency judge (p50 and p99 boundaries, e-values
  averaged), tolerance 0, alpha 0.01 split evenly (0.005 each); either failing = rollback.

"Median delay" is over the rollouts that rolled back: minutes, and cumulative canary requests at
that interval's end. Wall time {secs:.0f} s.

{c.md_table(header, rows)}
"""


def plot(res: list[Outcome], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(SCENARIOS))
    width = 0.2
    for j, m in enumerate(METHODS):
        vals = [next(o for o in res if o.method == m and o.scenario == s).rate for s in SCENARIOS]
        ax.bar(x + (j - 1.5) * width, vals, width, label=m)
    ax.set_xticks(x, list(SCENARIOS))
    ax.set_ylabel("rollback rate (A/A: false; else: detection)")
    ax.axhline(ALPHA, color="k", ls="--", lw=1)
    ax.legend(fontsize=8)
    ax.set_title("Rollbacks over a 60-minute rollout, evaluated every interval")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    quick = c.parse_quick(__doc__ or "")
    rollouts, k_rollouts = (300, 20) if quick else (2000, 200)
    t0 = time.perf_counter()
    res = run(rollouts, k_rollouts)
    secs = time.perf_counter() - t0
    c.RESULTS.mkdir(exist_ok=True)
    name = "baselines-quick" if quick else "baselines"
    (c.RESULTS / f"{name}.md").write_text(write(res, secs), encoding="utf-8")
    plot(res, c.RESULTS / f"{name}.png")
    for o in res:
        print(f"{o.method:24s} {o.scenario:22s} {o.rate:.3f} {o.median_minutes}")
    print(f"wall {secs:.0f} s")


if __name__ == "__main__":
    main()
