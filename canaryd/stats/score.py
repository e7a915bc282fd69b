"""The two-sample score e-process on latency histograms: the latency judge's test of the body.

Why (DESIGN-NOTES.md, "The body of the distribution"). The rate-ratio test (``stats.ratio``)
treats "slower than b" as a Poisson count, conditioning on the events of both versions. That is
the right model for rare events (errors, the p99 boundary), but at stable's median half of all
requests are events, and the Poisson model then discards the other half: the non-events carry
as much information as the events. For a binary outcome with share ``p`` the information about
``log p`` is ``x / (1 - p)``, twice the Poisson model's ``x`` at ``p = 1/2``. This test keeps
both, by conditioning on each interval's request counts ``n_s``, ``n_c`` instead.

Model. In interval ``t`` stable serves ``n_s`` requests and canary ``n_c``; given those, the
latencies of each version are independent draws from that version's distribution (the same
within-version exchangeability every canaryd test assumes). Bucket ``j`` (increasing latency)
gets a fixed, nondecreasing score ``w_j`` with ``w_0 = 0``, and the canary's share is
``theta = n_c / (n_s + n_c)``. For a tilt ``lambda >= 0`` let ``u_j = lambda * (w_j - c)``,
``c`` a fixed centre (any number: it moves power, not validity), and::

    D_j = 1 - theta + theta * rho0 * exp(u_j) - theta * (rho0 - 1) * exp(u_0)
    e_t(lambda) = prod_j exp(u_j) ** c_j / D_j ** m_j

with ``c_j`` the canary's and ``m_j`` both versions' requests in bucket ``j`` that interval.

Validity. Write ``S_v(k)`` for version ``v``'s share slower than boundary ``k`` (the lower edge
of bucket ``k``). Under the null *at every boundary where the score rises, the canary's share
slower is at most ``rho0`` times stable's* (``rho0 = 1 + tolerance``, widened by the pod spread
where pods are reported), ``E[e_t(lambda) | past, n_s, n_c] <= 1``:

- given the counts, ``E[e_t] = A ** n_c * B ** n_s`` with ``A = sum_j p_c,j a_j``,
  ``a_j = exp(u_j) / D_j`` and ``B = sum_j p_s,j / D_j``;
- ``a_j`` is nondecreasing in ``u_j`` while ``K = 1 - theta - theta (rho0 - 1) exp(u_0) >= 0``
  (intervals where it is not, which need a canary share near ``1 / rho0``, add nothing), so by
  summation by parts ``A <= a_0 + rho0 (A_s - a_0)``, ``A_s`` being ``A`` with stable's
  distribution;
- by the concavity of ``log``, ``n_c log A + n_s log B <= N log(theta A + (1 - theta) B)``,
  and with the ``D_j`` above the argument is ``1 + theta (rho0 - 1) (exp(u_0) B - a_0)``,
  at most 1 because ``D_j >= D_0`` gives ``B <= 1 / D_0 = a_0 exp(-u_0)``.

So for each ``lambda`` the running product is a nonnegative supermartingale, and so is any
mixture of them: ``E_t = sum_i pi_i prod_s e_s(lambda_i)`` with a fixed prior ``pi`` on a grid.
By Ville's inequality ``P(sup_t E_t >= 1/alpha) <= alpha`` under the null, however often it is
looked at. Equality of the versions (``rho0 = 1``) gives ``D_j = 1 - theta + theta exp(u_j)``,
the exact likelihood ratio of "each request is the canary's with odds ``theta/(1-theta)``
tilted by ``exp(u_j)``", and the canary being stochastically *faster* only lowers ``A``.

Scores are fixed before the test starts, from stable's data only (the latency judge gives each
boundary it tests in the body a step of equal height, and centres them on stable's shares
slower), so nothing is chosen from the canary. The prior ``LAMBDA_PRIOR`` is log-uniform over
``LAMBDA_GRID``; like every prior here it moves power between small and large shifts and never
validity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from canaryd.jsonnum import pack_f64, unpack_f64
from canaryd.stats.ratio import lse_rows

FloatArray = npt.NDArray[np.float64]

LAMBDA_GRID: FloatArray = np.geomspace(0.05, 20.0, 41)
"""Tilts mixed over. With steps of height 1 in total, ``lambda`` is about the log odds ratio of
a canary request in the slower half against the faster: 0.05 is a median shift well under 1 %
(beyond any interval's resolution), 20 a canary with (almost) every request slower."""
LAMBDA_PRIOR: FloatArray = np.full(LAMBDA_GRID.shape, -math.log(LAMBDA_GRID.size))
"""log prior weights over ``LAMBDA_GRID``: uniform on the log scale."""
LAMBDA_GRID.setflags(write=False)
LAMBDA_PRIOR.setflags(write=False)


class ScoreBatch:
    """Score e-processes for ``rows`` independent rollouts on one bucket layout, updated together.

    ``scores``: ``(K,)`` or ``(rows, K)``, nondecreasing along the buckets, 0 in the first;
    ``centre``: one per row (or one for all). The per-rollout judge uses ``rows=1``; the studies
    use thousands, so both compute the same numbers.
    """

    def __init__(self, rows: int, scores: Any, centre: Any) -> None:
        w = np.broadcast_to(np.asarray(scores, dtype=np.float64), (rows, np.shape(scores)[-1]))
        if w.shape[1] < 2:
            raise ValueError("a score test needs at least two buckets")
        if (w[:, 0] != 0.0).any() or (np.diff(w, axis=1) < 0).any():
            raise ValueError("scores must start at 0 and never decrease along the buckets")
        self.scores = np.array(w)
        self.centre = np.broadcast_to(np.asarray(centre, dtype=np.float64), (rows,)).copy()
        self.log_e_lam = np.zeros((rows, LAMBDA_GRID.size))
        """Per row and tilt, the log of the running product ``prod_s e_s(lambda)``."""
        self.max_log_e = np.full(rows, -math.inf)
        """Running maximum of ``log_e`` (the judges' "ever crossed"); -inf before any update."""

    @property
    def rows(self) -> int:
        return int(self.log_e_lam.shape[0])

    def update(self, n_s: Any, n_c: Any, canary: Any, pooled: Any, rho0: Any = 1.0) -> None:
        """Add one interval for every row.

        ``n_s``/``n_c``: requests per row; ``canary``/``pooled``: the canary's and both
        versions' requests per bucket, ``(rows, K)``, not cumulative; ``rho0``: the null's
        ratio per row (``>= 1``), fixed before the interval (the tolerance, widened by the pod
        spread). Rows with no requests of either version add nothing.
        """
        ns = np.broadcast_to(np.asarray(n_s, dtype=np.float64), (self.rows,))
        nc = np.broadcast_to(np.asarray(n_c, dtype=np.float64), (self.rows,))
        r0 = np.broadcast_to(np.asarray(rho0, dtype=np.float64), (self.rows,))
        if (r0 < 1.0).any():
            raise ValueError("rho0 must be at least 1")
        cb = np.asarray(canary, dtype=np.float64).reshape(self.rows, -1)
        mb = np.asarray(pooled, dtype=np.float64).reshape(self.rows, -1)
        live = (ns > 0) & (nc > 0)
        if not live.any():
            self._track()
            return
        idx = np.nonzero(live)[0]
        theta = (nc[idx] / (ns[idx] + nc[idx]))[:, None, None]
        rho = r0[idx][:, None, None]
        u = LAMBDA_GRID[None, :, None] * (self.scores[idx] - self.centre[idx, None])[:, None, :]
        eu = np.exp(u)  # (rows, L, K)
        d = 1.0 - theta + theta * rho * eu - theta * (rho - 1.0) * eu[:, :, :1]
        k_ok = (1.0 - theta - theta * (rho - 1.0) * eu[:, :, :1])[:, :, 0] >= 0.0
        inc = np.einsum("rk,rlk->rl", cb[idx], u) - np.einsum(
            "rk,rlk->rl", mb[idx], np.log(np.maximum(d, 1e-300))
        )
        self.log_e_lam[idx] += np.where(k_ok, inc, 0.0)
        self._track()

    def _track(self) -> None:
        np.maximum(self.max_log_e, self.log_e(), out=self.max_log_e)

    def log_e(self) -> FloatArray:
        """log of the mixture e-value per row."""
        return lse_rows(self.log_e_lam + LAMBDA_PRIOR[None, :])

    # --- exact persistence -------------------------------------------------------------
    def row_state(self, row: int) -> dict[str, Any]:
        return {
            "scores": self.scores[row].tolist(),  # a dozen buckets: readable, not packed
            "centre": float(self.centre[row]),
            "log_e": pack_f64(self.log_e_lam[row]),
            "max_log_e": None if math.isinf(self.max_log_e[row]) else float(self.max_log_e[row]),
        }

    def load_row_state(self, row: int, state: dict[str, Any]) -> None:
        scores = unpack_f64(state["scores"])
        log_e = unpack_f64(state["log_e"])
        if scores.shape != self.scores[row].shape or log_e.shape != self.log_e_lam[row].shape:
            raise ValueError("stored score evidence has a different layout or tilt grid")
        self.scores[row] = scores
        self.centre[row] = float(state["centre"])
        self.log_e_lam[row] = log_e
        mx = state["max_log_e"]
        self.max_log_e[row] = -math.inf if mx is None else float(mx)


def step_scores(buckets: int, steps: Any) -> FloatArray:
    """Scores that rise by ``1 / len(steps)`` above each boundary index in ``steps`` (bucket
    ``k + 1`` is the first slower than boundary ``k``): ``buckets`` of them, 0 in the first."""
    ks = [int(k) for k in steps]
    if not ks or min(ks) < 0 or max(ks) >= buckets - 1:
        raise ValueError(f"step boundaries must lie in 0..{buckets - 2}, got {ks}")
    w = np.zeros(buckets)
    for k in ks:
        w[k + 1 :] += 1.0 / len(ks)
    return w
