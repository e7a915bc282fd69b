"""LLM serving signals judged like latency: time to first token, inter-token latency, answer length.

Each is a histogram with one observation per request (``VersionCounts.histograms``), so each is
judged by ``SequentialLatencyJudge`` on its exceedances above stable's quantile boundaries, with
the same guarantees. ``SignalJudge`` feeds it the signal's histogram and words the verdict in the
signal's terms, so that a model owner reads "time to first token is longer" or "answers 50 %
longer, per-token latency unchanged" rather than a latency regression:

- ``ttft``: ``vllm:time_to_first_token_seconds`` (what a user waits for);
- ``inter-token``: time per output token, from ``vllm:request_time_per_output_token_seconds`` (one
  observation per request: that request's mean). vLLM's ``vllm:inter_token_latency_seconds`` (and
  its old name ``vllm:time_per_output_token_seconds``) counts one observation per *token*: tokens
  of one request share its speed, so they are not independent, and the conditional binomial would
  count one slow request hundreds of times (``analysis/calibration_ml.py`` measures the false
  rollbacks that causes). Such a histogram (``Histogram.per_token``) is never judged: the metric
  stays inconclusive and says why;
- ``output-length``: ``vllm:request_generation_tokens``. The verdict also reports, descriptively,
  the per-token latency and the prompt lengths when the source carries them, so that a longer
  answer is not mistaken for a slower model, nor a different traffic mix for a longer answer.

Only the longer direction is tested (a higher share above each boundary), as for latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from canaryd.jsonnum import decode_float, encode_float
from canaryd.observation import Histogram, Signal, VersionCounts
from canaryd.stats.histogram import histogram_quantile
from canaryd.stats.sequential import SequentialLatencyJudge
from canaryd.stats.verdict import Status, Verdict

UNCHANGED = 0.05
"""A descriptive median that moved less than this (relative), or less than twice its sampling
noise, reads "unchanged": bucket interpolation is not finer than 5 %, and a median of a few
hundred answers moves more than that by chance."""


@dataclass(frozen=True)
class Wording:
    """How one signal reads in a verdict."""

    signal: Signal
    subject: str
    unit: str  # "ms" or "tokens"
    who: str  # what one observation is, plural
    above: str  # "{b}" is the boundary, formatted with its unit


WORDINGS: dict[str, Wording] = {
    "ttft": Wording(
        "ttft", "time to first token", "ms", "requests", "wait more than {b} for the first token"
    ),
    "inter-token": Wording(
        "inter_token", "inter-token latency", "ms", "answers", "take more than {b} per token"
    ),
    "output-length": Wording(
        "generation_tokens", "answer length", "tokens", "answers", "exceed {b}"
    ),
}

PER_TOKEN_REASON = (
    "only per-token inter-token latency is exported ({series}, vLLM < 0.11): its observations "
    "are tokens, clustered by request, so they cannot be tested as independent requests; "
    "upgrade to vLLM >= 0.11, which exports vllm:request_time_per_output_token_seconds (one "
    "observation per request), or drop this metric"
)


def _fmt(x: float, unit: str) -> str:
    if math.isnan(x):
        return "-"
    if unit == "ms":
        return f"{x / 1000:.3g} s" if x >= 1000 else f"{x:.3g} ms"
    return f"{x:.3g} tokens"


def _pair(c: float, s: float, unit: str) -> str:
    """``canary vs stable`` with the unit once when both read in the same one."""
    a, b = _fmt(c, unit), _fmt(s, unit)
    ua, ub = a.rsplit(" ", 1)[-1], b.rsplit(" ", 1)[-1]
    if ua == ub and " " in a:
        return f"{a.rsplit(' ', 1)[0]} vs {b}"
    return f"{a} vs {b}"


def _change(c: float, s: float) -> str:
    if math.isnan(c) or math.isnan(s) or s <= 0:
        return "?"
    return f"{100 * (c / s - 1):+.0f} %"


def _same_or_change(c: float, s: float, noise: float = 0.0) -> str:
    """``unchanged``, or the relative change of ``c`` against ``s``; ``noise`` is the standard
    error of ``log(c / s)``."""
    if math.isnan(c) or math.isnan(s) or s <= 0 or c <= 0:
        return "?"
    within = abs(math.log(c / s)) < max(math.log1p(UNCHANGED), 2.0 * noise)
    return "unchanged" if within else _change(c, s)


class _Cumulative:
    """A histogram summed over intervals (descriptive only), on its first layout."""

    def __init__(self) -> None:
        self.bounds: tuple[float, ...] = ()
        self.s: list[float] = []
        self.c: list[float] = []

    def add(self, hs: Histogram | None, hc: Histogram | None) -> None:
        if hs is None or hc is None or hs.bounds != hc.bounds:
            return
        if not self.bounds:
            self.bounds = hs.bounds
            self.s = [0.0] * len(hs.bounds)
            self.c = [0.0] * len(hs.bounds)
        if hs.bounds != self.bounds:
            return
        self.s = (np.asarray(self.s) + hs.cumulative).tolist()
        self.c = (np.asarray(self.c) + hc.cumulative).tolist()

    def median_noise(self) -> float:
        """Standard error of log(canary median / stable median), for lognormal-like data: the
        log-scale spread from each histogram's quartiles, 1.2533 x sigma / sqrt(n) each."""
        if not self.bounds:
            return math.inf
        var = 0.0
        for cum in (self.c, self.s):
            n = cum[-1]
            q25 = histogram_quantile(0.25, self.bounds, cum)
            q75 = histogram_quantile(0.75, self.bounds, cum)
            if not (n > 0 and q25 > 0 and q75 > q25):
                return math.inf
            sigma = math.log(q75 / q25) / 1.349
            var += (1.2533 * sigma) ** 2 / n
        return math.sqrt(var)

    def quantiles(self, q: float) -> tuple[float, float]:
        if not self.bounds:
            return math.nan, math.nan
        return (
            histogram_quantile(q, self.bounds, self.c),
            histogram_quantile(q, self.bounds, self.s),
        )

    def state(self) -> dict[str, Any]:
        return {"bounds": [encode_float(b) for b in self.bounds], "s": self.s, "c": self.c}

    def load(self, d: dict[str, Any]) -> None:
        self.bounds = tuple(decode_float(b) for b in d["bounds"])
        self.s = [float(x) for x in d["s"]]
        self.c = [float(x) for x in d["c"]]


class SignalJudge:
    """``SequentialLatencyJudge`` on one LLM signal's histogram, with the signal's wording."""

    judge_name: ClassVar[str] = "sequential"
    peeking_safe: ClassVar[bool] = True

    def __init__(
        self,
        kind: str,
        metric: str,
        alpha: float,
        tolerance: float,
        quantiles: tuple[float, ...],
        omnibus: bool = False,
        critical: bool = True,
    ) -> None:
        self.kind = kind
        self.wording = WORDINGS[kind]
        self.metric = metric
        self.critical = critical
        self.inner = SequentialLatencyJudge(
            metric, alpha, tolerance, quantiles, omnibus=omnibus, critical=critical
        )
        self.skipped: dict[str, int] = {}
        self.per_token_series = ""
        self.per_token_ctx = _Cumulative()  # output-length: per-token latency, descriptive
        self.prompt_ctx = _Cumulative()  # output-length: prompt lengths, descriptive

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def update(self, stable: VersionCounts, canary: VersionCounts) -> None:
        sig = self.wording.signal
        hs, hc = stable.histograms.get(sig), canary.histograms.get(sig)
        if hs is None or hc is None:
            self._skip(
                f"no {'stable' if hs is None else 'canary'} {self.wording.subject} histogram"
            )
            return
        if hs.per_token or hc.per_token:
            self.per_token_series = hs.series if hs.per_token else hc.series
            self._skip("per-token observations (not judged)")
            return
        if self.kind == "output-length":
            self.per_token_ctx.add(
                stable.histograms.get("inter_token"), canary.histograms.get("inter_token")
            )
            self.prompt_ctx.add(
                stable.histograms.get("prompt_tokens"), canary.histograms.get("prompt_tokens")
            )
        self.inner.update(
            VersionCounts(stable.requests, 0.0, hs.bounds, hs.cumulative),
            VersionCounts(canary.requests, 0.0, hc.bounds, hc.cumulative),
        )

    def prime(self, stable: VersionCounts) -> None:
        """Boundaries from stable's pre-canary histogram of this signal (see
        ``SequentialLatencyJudge.prime``); a per-token histogram is never judged."""
        hs = stable.histograms.get(self.wording.signal)
        if hs is not None and not hs.per_token:
            self.inner.prime(VersionCounts(stable.requests, 0.0, hs.bounds, hs.cumulative))

    def history_note(self) -> str:
        return self.inner.history_note()

    # --- the verdict ---------------------------------------------------------------------
    def verdict(self) -> Verdict:
        v = self.inner.verdict()
        w = self.wording
        details = self._details(dict(v.details))
        if self.skipped:
            details["skipped_intervals"] = {
                **details.get("skipped_intervals", {}),
                **self.skipped,
            }
        if v.status is Status.INCONCLUSIVE:
            if self.inner.engine is None and self.per_token_series:
                reason = PER_TOKEN_REASON.format(series=self.per_token_series)
            elif self.inner.engine is None and self.inner.pending_s:
                reason = (
                    f"waiting for {self.inner.selection_requests} stable {w.who} to choose the "
                    f"{w.subject} boundaries"
                )
            elif self.skipped and self.inner.engine is None:
                reason = "no comparable histograms: " + "; ".join(self.skipped)
            else:
                reason = f"{w.subject}: {v.reason}"
            return replace(v, reason=reason, details=details)
        rows = details.get("boundaries", [])
        worst = max(range(len(rows)), key=lambda i: rows[i]["e_value"]) if rows else None
        q_txt = self._quantile_text(details)
        if v.status is Status.FAIL:
            reason = self._fail_text(details, rows[worst] if worst is not None else None, q_txt)
        elif v.status is Status.PASS:
            reason = f"{w.subject} shown no longer than tolerated at every tested boundary; {q_txt}"
        else:
            b = "" if worst is None else f" at {_fmt(rows[worst]['le'], w.unit)}"
            reason = f"{w.subject} not yet shown either way{b}; {q_txt}"
        return replace(v, reason=reason, details=details)

    def _details(self, d: dict[str, Any]) -> dict[str, Any]:
        """The inner judge's details, with its ``_ms`` keys in this signal's unit."""
        unit = self.wording.unit
        out: dict[str, Any] = {}
        for k, val in d.items():
            if k.endswith("_ms") and unit != "ms":
                out[k[: -len("_ms")] + f"_{unit}"] = val
            else:
                out[k] = val
        rows = []
        for row in out.get("boundaries", []):
            row = dict(row)
            row["le"] = row.pop("le_ms")
            row["unit"] = unit
            rows.append(row)
        if rows:
            out["boundaries"] = rows
        out["signal"] = self.wording.signal
        return out

    def _q(self, d: dict[str, Any], q: float) -> tuple[float, float]:
        tag = f"p{q * 100:g}_{self.wording.unit}"
        return d.get(f"canary_{tag}", math.nan), d.get(f"stable_{tag}", math.nan)

    def _quantile_text(self, d: dict[str, Any], skip_median: bool = False) -> str:
        unit = self.wording.unit
        parts = []
        for q in self.inner.quantiles:
            if skip_median and q == 0.5:
                continue
            c, s = self._q(d, q)
            name = "median" if q == 0.5 and unit == "tokens" else f"p{q * 100:g}"
            parts.append(f"{name} {_pair(c, s, unit)} ({_change(c, s)})")
        return ("canary vs stable " + ", ".join(parts)) if parts else ""

    def _fail_text(self, d: dict[str, Any], row: dict[str, Any] | None, q_txt: str) -> str:
        w = self.wording
        tol = d.get("max_ratio_tolerated", math.nan)
        share = ""
        if row is not None:
            share = (
                f"{100 * row['canary_share_slower']:.0f} % of canary {w.who} "
                f"{w.above.format(b=_fmt(row['le'], w.unit))} vs "
                f"{100 * row['stable_share_slower']:.0f} % of stable's (tolerated {tol:.3g}x)"
            )
        if self.kind != "output-length":
            return f"{w.subject} is longer than tolerated: {share}; {q_txt}"
        c50, s50 = self._q(d, 0.5)
        if not math.isnan(c50) and not math.isnan(s50) and c50 > s50:
            pct = 100 * (c50 / s50 - 1)
            lead = f"answers {pct:.0f} % longer (median {_pair(c50, s50, 'tokens')})"
            q_txt = self._quantile_text(d, skip_median=True)
        else:
            lead = "answers longer in the tail"
        pc, ps = self.per_token_ctx.quantiles(0.5)
        if not math.isnan(pc):
            same = _same_or_change(pc, ps, self.per_token_ctx.median_noise())
            lead += f", per-token latency {same} (p50 {_pair(pc, ps, 'ms')})"
        tail = [share, q_txt]
        rc, rs = self.prompt_ctx.quantiles(0.5)
        if not math.isnan(rc):
            same = _same_or_change(rc, rs, self.prompt_ctx.median_noise())
            tail.append(f"prompts {same} (median {_pair(rc, rs, 'tokens')})")
        return lead + ": " + "; ".join(t for t in tail if t)

    # --- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state(),
            "skipped": dict(self.skipped),
            "per_token_series": self.per_token_series,
            "per_token_ctx": self.per_token_ctx.state(),
            "prompt_ctx": self.prompt_ctx.state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state["inner"])
        self.skipped = {str(k): int(v) for k, v in state["skipped"].items()}
        self.per_token_series = str(state["per_token_series"])
        self.per_token_ctx.load(state["per_token_ctx"])
        self.prompt_ctx.load(state["prompt_ctx"])
