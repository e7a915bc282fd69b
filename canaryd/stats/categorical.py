"""Prediction-distribution drift: an anytime-valid test that the canary's category shares equal
stable's within a tolerance.

Model. In interval ``i`` each version ``v`` produces ``N_v,i`` categorised outcomes (predicted
classes, score buckets, finish reasons), ``Y_v,ij`` of them in category ``j`` with probability
``q_vj``. Let ``rho_j = q_cj / q_sj`` be category ``j``'s share ratio. Conditioned on the
category's total ``Y_s,ij + Y_c,ij``, the canary's count is (in the Poisson limit)
``Binomial(total, theta_i(rho_j))`` with ``theta_i(rho) = N_c,i rho / (N_c,i rho + N_s,i)``:
exactly the rate-ratio model of ``canaryd.stats.ratio`` with "requests" = the version's total
outcomes and "events" = its outcomes in category ``j``. Stable's unknown shares drop out, and the
split may change every interval.

With fixed totals the exact conditional law is Fisher's noncentral hypergeometric, which is
*less* dispersed than that binomial; the binomial likelihood ratio's expectation under it is
then <= 1 (computed for shares 1-80 % at the tolerance boundary, DESIGN-NOTES.md), so the test
stays valid, conservatively for large categories.

The null "every share within tolerance" is ``1/rho0 <= rho_j <= rho0`` for every category
(``rho0 = 1 + tolerance``). Each category gets two one-sided rate-ratio e-processes against
``rho0``: *up* (canary over stable) and *down* (stable over canary, the roles swapped). Each is an
e-process under the global null, so their plain average over the ``2K`` rows is one too, with no
assumption about how categories depend on each other (which they do: shares sum to 1). The test
rolls back when the running maximum of the average reaches ``1/alpha``. Reported intervals are
the up rows' confidence sequences at ``alpha/K``, valid simultaneously for all ``K`` categories.

The categories are fixed before testing starts (a fixed, equal weight per row is what keeps the
average an e-value): either given (``categories``, plus a pooled ``(other)``), or the categories
seen until stable has produced ``SELECTION_OUTCOMES`` outcomes, after which testing starts with the
next interval; a category first seen later is pooled into ``(other)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from canaryd.observation import VersionCounts
from canaryd.policy.model import MAX_CATEGORIES, OTHER_CATEGORY
from canaryd.stats.ratio import Grid, RateRatioBatch, loglik_increment, lse_rows
from canaryd.stats.verdict import Status, Verdict

FloatArray = npt.NDArray[np.float64]

SELECTION_OUTCOMES = 200
"""Stable outcomes seen before learned categories are frozen (a class with a 1 % share is
then seen with probability 87 %; rarer ones are pooled into ``(other)`` until listed)."""
NAMED_MAX = 3
"""Categories named in a reason; all are in the details."""
MAX_POOLED_NAMES = 20
"""Pooled category names remembered for the verdict; further ones count as ``(other)``."""


class CategoryShares:
    """Two-sided per-category share-ratio e-processes for ``rows`` rollouts of ``k`` categories.

    Rows of the underlying engines are ``rollout * k + category``. ``update`` takes count
    matrices of shape ``(rows, k)``; a rollout's exposure is its total over the ``k`` categories.
    This is the engine of both the judge (``rows=1``) and the studies (thousands of rows).
    """

    def __init__(self, rows: int, k: int, tolerance: float) -> None:
        if k < 1:
            raise ValueError("expected at least one category")
        self.k = k
        rho0 = 1.0 + tolerance
        grid = Grid.make(rho0)
        self.up = RateRatioBatch(rows * k, rho0, grid)
        self.down = RateRatioBatch(rows * k, rho0, grid)
        self.max_log_e = np.zeros(rows)
        """Running maximum of the log averaged e-value: once crossed, the evidence stands."""

    @property
    def rows(self) -> int:
        return int(self.max_log_e.shape[0])

    def update(self, stable: npt.ArrayLike, canary: npt.ArrayLike) -> None:
        s = np.rint(np.asarray(stable, dtype=np.float64)).reshape(self.rows, self.k)
        c = np.rint(np.asarray(canary, dtype=np.float64)).reshape(self.rows, self.k)
        ns = np.repeat(s.sum(axis=1), self.k)
        nc = np.repeat(c.sum(axis=1), self.k)
        xs, xc = s.ravel(), c.ravel()
        # The engines' own per-row running maxima are not what this test reads (it reads the
        # average's), so the increments are added directly: half the work of update().
        for b, (n1, x1, n2, x2) in ((self.up, (ns, xs, nc, xc)), (self.down, (nc, xc, ns, xs))):
            b.loglik += loglik_increment(b.grid.log_rho, n1, x1, n2, x2)
            b.events += np.stack([x1, x2], axis=1)
            b.requests += np.stack([n1, n2], axis=1)
        np.maximum(self.max_log_e, self.log_e(), out=self.max_log_e)

    def row_log_e(self) -> tuple[FloatArray, FloatArray]:
        """log e-values of the up and down rows, each of shape ``(rows, k)``."""
        shape = (self.rows, self.k)
        return self.up.log_e().reshape(shape), self.down.log_e().reshape(shape)

    def log_e(self) -> FloatArray:
        """log of the averaged e-value per rollout."""
        up, down = self.row_log_e()
        return lse_rows(np.concatenate([up, down], axis=1)) - math.log(2 * self.k)

    def drop(self, keep: npt.NDArray[np.bool_]) -> None:
        """Keep only the rollouts where ``keep`` (studies drop rollouts that have decided)."""
        rows = np.repeat(keep, self.k)
        for b in (self.up, self.down):
            b.loglik = b.loglik[rows]
            b.events = b.events[rows]
            b.requests = b.requests[rows]
            b.max_log_e = b.max_log_e[rows]
            b.shift = b.shift[rows]
        self.max_log_e = self.max_log_e[keep]

    def state(self) -> dict[str, Any]:
        assert self.rows == 1
        return {
            "up": [self.up.row_state(j) for j in range(self.k)],
            "down": [self.down.row_state(j) for j in range(self.k)],
            "max_log_e": float(self.max_log_e[0]),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        assert self.rows == 1
        if len(state["up"]) != self.k or len(state["down"]) != self.k:
            raise ValueError(f"stored evidence has {len(state['up'])} categories, not {self.k}")
        for j in range(self.k):
            self.up.load_row_state(j, state["up"][j])
            self.down.load_row_state(j, state["down"][j])
        self.max_log_e[0] = float(state["max_log_e"])


def _pct(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{100 * x:.3g} %"


def _ratio(x: float) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.2g}" if x < 10 else f"{x:.0f}"


class SequentialCategoricalJudge:
    """Category shares, canary against stable, two-sided within a tolerance (peeking-safe).

    ``noun`` names one category in reasons (``predicted class``, ``finish reason``), ``meanings``
    says what some categories mean. The counts of
    interval ``i`` are ``VersionCounts.categories[metric]``; an interval where either version has
    none is skipped (it carries no information).
    """

    judge_name: ClassVar[str] = "sequential"
    peeking_safe: ClassVar[bool] = True

    def __init__(
        self,
        metric: str,
        alpha: float,
        tolerance: float,
        categories: Sequence[str] | None = None,
        noun: str = "category",
        critical: bool = True,
        meanings: Mapping[str, str] | None = None,
    ) -> None:
        self.metric = metric
        self.alpha = alpha
        self.tolerance = tolerance
        self.noun = noun
        self.meanings = dict(meanings or {})
        """What a category means, added to its name in reasons (``length``: cut at max_tokens)."""
        self.critical = critical
        self.fixed = None if categories is None else tuple(categories)
        self.slots: tuple[str, ...] | None = None
        self.engine: CategoryShares | None = None
        self.pending: dict[str, float] = {}  # stable counts by category before learning them
        self.seen_s: dict[str, float] = {}  # cumulative tested counts, every category by name
        self.seen_c: dict[str, float] = {}
        self.skipped: dict[str, int] = {}
        if self.fixed is not None:
            self._start((*self.fixed, OTHER_CATEGORY))

    def _start(self, slots: tuple[str, ...]) -> None:
        self.slots = slots
        self.engine = CategoryShares(1, len(slots), self.tolerance)

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None:
        s = stable.categories.get(self.metric)
        c = canary.categories.get(self.metric)
        if s is None or c is None:
            self._skip(f"no {'stable' if s is None else 'canary'} category counts")
            return
        if self.engine is None or self.slots is None:
            for cat, n in s.items():
                self.pending[cat] = self.pending.get(cat, 0.0) + float(n)
            for cat in c:
                self.pending.setdefault(cat, 0.0)
            if sum(self.pending.values()) >= SELECTION_OUTCOMES:
                # At most MAX_CATEGORIES learned ones: the rarest beyond it are pooled.
                ranked = sorted(self.pending, key=lambda cat: (-self.pending[cat], cat))
                self._start((*sorted(ranked[:MAX_CATEGORIES]), OTHER_CATEGORY))
                self.pending = {cat: self.pending[cat] for cat in ranked[:MAX_CATEGORIES]}
            return
        index = {cat: j for j, cat in enumerate(self.slots)}
        other = index[OTHER_CATEGORY]
        vs = np.zeros(len(self.slots))
        vc = np.zeros(len(self.slots))
        for counts, vec, seen in ((s, vs, self.seen_s), (c, vc, self.seen_c)):
            for cat, n in counts.items():
                vec[index.get(cat, other)] += float(n)
                if cat not in seen and cat not in index and len(self._pooled()) >= MAX_POOLED_NAMES:
                    cat = OTHER_CATEGORY  # bounded state: a high-cardinality label stays small
                seen[cat] = seen.get(cat, 0.0) + float(n)
        self.engine.update(vs[None, :], vc[None, :])

    # --- the verdict ---------------------------------------------------------------------
    def _slot_counts(self, seen: Mapping[str, float]) -> FloatArray:
        assert self.slots is not None
        index = {cat: j for j, cat in enumerate(self.slots)}
        out = np.zeros(len(self.slots))
        for cat, n in seen.items():
            out[index.get(cat, index[OTHER_CATEGORY])] += n
        return out

    def _pooled(self) -> list[str]:
        assert self.slots is not None
        listed = set(self.slots)
        return sorted((set(self.seen_s) | set(self.seen_c)) - listed - {OTHER_CATEGORY})

    def _label(self, slot: str) -> str:
        if slot != OTHER_CATEGORY:
            meaning = self.meanings.get(slot)
            return f"{self.noun} `{slot}`" + (f" ({meaning})" if meaning else "")
        pooled = self._pooled()
        inside = f" ({', '.join(f'`{p}`' for p in pooled[:4])}{', ...' if len(pooled) > 4 else ''})"
        plural = self.noun + ("es" if self.noun.endswith(("s", "x", "sh", "ch")) else "s")
        return f"other {plural}{inside if pooled else ''}"

    def verdict(self) -> Verdict:
        band = (1.0 / (1.0 + self.tolerance), 1.0 + self.tolerance)
        details: dict[str, Any] = {"alpha": self.alpha, "tolerated_share_ratio": list(band)}
        if self.skipped:
            details["skipped_intervals"] = dict(self.skipped)
        base: dict[str, Any] = {
            "metric": self.metric,
            "judge": "sequential",
            "critical": self.critical,
            "threshold": 1.0 / self.alpha,
        }
        if self.engine is None or self.slots is None:
            have = sum(self.pending.values())
            why = (
                f"waiting for {SELECTION_OUTCOMES} stable outcomes to learn the categories "
                f"({have:.0f} so far)"
                if self.pending
                else "no category counts yet"
            )
            if self.skipped and not self.pending:
                why += (
                    " (" + "; ".join(f"{k}: {v} interval(s)" for k, v in self.skipped.items()) + ")"
                )
            return Verdict(status=Status.INCONCLUSIVE, reason=why, details=details, **base)
        e = self.engine
        k = len(self.slots)
        ns = float(e.up.requests[0, 0])
        nc = float(e.up.requests[0, 1])
        base.update(canary_samples=nc, stable_samples=ns)
        if ns <= 0 or nc <= 0:
            who = "canary" if nc <= 0 else "stable"
            return Verdict(
                status=Status.INCONCLUSIVE,
                reason=f"no {who} outcomes since testing started",
                details=details,
                **base,
            )
        alpha_k = self.alpha / k
        lo, hi = e.up.confidence_sequence(alpha_k)
        est = e.up.estimate()
        up_le, down_le = e.row_log_e()
        cs_ = self._slot_counts(self.seen_s)
        cc_ = self._slot_counts(self.seen_c)
        rows: list[dict[str, Any]] = []
        for j, slot in enumerate(self.slots):
            rows.append(
                {
                    "category": slot,
                    "stable_share": float(cs_[j] / ns) if ns else math.nan,
                    "canary_share": float(cc_[j] / nc) if nc else math.nan,
                    "ratio": float(est[j]),
                    "interval": [float(lo[j]), float(hi[j])],
                    "e_value_up": float(np.exp(min(up_le[0, j], 700.0))),
                    "e_value_down": float(np.exp(min(down_le[0, j], 700.0))),
                }
            )
        pooled = self._pooled()
        if pooled:
            details["pooled_as_other"] = pooled
        details["categories"] = rows
        moved = [j for j in range(k) if lo[j] > band[1] or hi[j] < band[0]]
        # Rank by evidence, among the categories some version produced (an empty one has e = 1
        # in both directions and says nothing).
        seen = e.up.events.sum(axis=1) > 0
        strength = np.where(seen, np.maximum(up_le[0], down_le[0]), -np.inf)
        order = sorted(range(k), key=lambda j: -float(strength[j]))
        worst = order[0]
        e_now = float(np.exp(min(e.log_e()[0], 700.0)))
        est_w = float(est[worst])
        base.update(
            e_value=e_now,
            estimate=None if math.isnan(est_w) else est_w,
            interval=(float(lo[worst]), float(hi[worst])),
        )
        if float(e.max_log_e[0]) >= math.log(1.0 / self.alpha):
            named = [j for j in order if j in moved][:NAMED_MAX] or [worst]
            parts = [self._moved_text(rows[j], self.slots[j]) for j in named]
            return Verdict(
                status=Status.FAIL,
                reason=f"{self.noun} shares moved beyond the tolerated "
                f"{_ratio(band[0])}-{_ratio(band[1])}x: " + "; ".join(parts),
                details=details,
                **base,
            )
        # A category neither version ever produced has no share to compare: it cannot block
        # a pass (it would forever), and any later count of it is tested as usual.
        empty = e.up.events.sum(axis=1) == 0
        up_ok = e.up.non_inferior(alpha_k) | empty
        down_ok = e.down.non_inferior(alpha_k) | empty
        if bool(np.all(up_ok) and np.all(down_ok)):
            return Verdict(
                status=Status.PASS,
                reason=f"every {self.noun}'s share shown within {_ratio(band[0])}-"
                f"{_ratio(band[1])}x stable's ({nc:.0f} canary, {ns:.0f} stable outcomes)",
                details=details,
                **base,
            )
        return Verdict(
            status=Status.CONTINUE,
            reason=f"no {self.noun} share shown to have moved yet; largest "
            + self._moved_text(rows[worst], self.slots[worst]),
            details=details,
            **base,
        )

    def _moved_text(self, row: Mapping[str, Any], slot: str) -> str:
        a, b = row["interval"]
        return (
            f"{self._label(slot)}: {_ratio(row['ratio'])}x stable's share "
            f"[{_ratio(a)}, {_ratio(b)}] ({_pct(row['canary_share'])} vs "
            f"{_pct(row['stable_share'])})"
        )

    # --- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "slots": None if self.slots is None else list(self.slots),
            "engine": None if self.engine is None else self.engine.state(),
            "pending": dict(self.pending),
            "seen_s": dict(self.seen_s),
            "seen_c": dict(self.seen_c),
            "skipped": dict(self.skipped),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        slots = state["slots"]
        if self.fixed is not None and slots != [*self.fixed, OTHER_CATEGORY]:
            raise ValueError(
                f"stored evidence is for categories {slots}, not {[*self.fixed, OTHER_CATEGORY]}; "
                "the policy's categories changed mid-rollout"
            )
        self.slots = None if slots is None else tuple(str(x) for x in slots)
        self.engine = None
        if self.slots is not None:
            self.engine = CategoryShares(1, len(self.slots), self.tolerance)
            self.engine.load_state(state["engine"])
        self.pending = {str(k): float(v) for k, v in state["pending"].items()}
        self.seen_s = {str(k): float(v) for k, v in state["seen_s"].items()}
        self.seen_c = {str(k): float(v) for k, v in state["seen_c"].items()}
        self.skipped = {str(k): int(v) for k, v in state["skipped"].items()}
