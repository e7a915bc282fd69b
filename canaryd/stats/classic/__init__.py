"""Classic fixed-horizon judges: Kayenta's Mann-Whitney, KS, Welch t, chi-square and thresholds.

These exist for compatibility (``mann-whitney`` reproduces Kayenta's classifier) and for
comparison with the anytime-valid judges. **None of them is safe to re-run every interval.**
Each is a fixed-horizon test: its error rate holds for *one* look at a sample size fixed in
advance. Looking again after every interval and rolling back at the first rejection inflates
false rollbacks: a cumulative z-test at a nominal 5%, looked at K times, rejects a healthy canary
14% of the time at K = 5, 19% at K = 10 and 25% at K = 20 (DESIGN.md §2). ``peeking_safe`` is
therefore False for every judge here, and ``canaryd validate`` warns about policies that re-run
them.

Samples. The sample-based judges (``mann-whitney``, ``ks``, ``welch-t``) treat each analysis
interval as one observation per version:

- ``errors``: the interval's error rate ``errors / requests``; an interval with no requests
  contributes nothing for that version;
- ``latency``: ``histogram_quantile(q)`` of the interval's histogram for each policy quantile
  (one series per quantile); an empty histogram (NaN) contributes nothing;
- ``custom``: ``VersionCounts.values[custom_name or metric]``; a missing or non-finite value
  contributes nothing.

Higher is worse for every kind. A version with fewer than ``min_intervals`` samples makes the
verdict INCONCLUSIVE, which never counts as a pass. No judge here ever returns PASS: a test of
"canary worse" that does not reject has not shown the canary is no worse.

Histogram layouts. When the two versions' buckets differ, both are re-bucketed to the
boundaries they share (``common_bounds``), which loses resolution but never invents data. When
they share no finite boundary the interval is skipped and the problem is remembered: the judge
keeps working, and a verdict that lacks data names the problem in its reason. Judges never raise
out of ``update`` or ``verdict`` on bad counts; they skip the interval or return INCONCLUSIVE.

State. ``state()`` is a JSON document (lists of floats, counts, strings); ``load_state`` on a
judge built with the same arguments restores it exactly, so later verdicts are identical.
"""

from __future__ import annotations

from typing import Any

from canaryd.stats.classic.chi_square import ChiSquareJudge
from canaryd.stats.classic.ks import KSJudge
from canaryd.stats.classic.mann_whitney import MannWhitneyJudge
from canaryd.stats.classic.threshold import ThresholdJudge
from canaryd.stats.classic.welch import WelchTJudge

__all__ = [
    "CLASSIC_JUDGES",
    "ChiSquareJudge",
    "ClassicJudge",
    "KSJudge",
    "MannWhitneyJudge",
    "ThresholdJudge",
    "WelchTJudge",
    "make_classic_judge",
]

ClassicJudge = MannWhitneyJudge | KSJudge | WelchTJudge | ChiSquareJudge | ThresholdJudge

ClassicJudgeClass = (
    type[MannWhitneyJudge]
    | type[KSJudge]
    | type[WelchTJudge]
    | type[ChiSquareJudge]
    | type[ThresholdJudge]
)

CLASSIC_JUDGES: dict[str, ClassicJudgeClass] = {
    "mann-whitney": MannWhitneyJudge,
    "ks": KSJudge,
    "welch-t": WelchTJudge,
    "chi-square": ChiSquareJudge,
    "threshold": ThresholdJudge,
}


def make_classic_judge(judge: str, **kwargs: Any) -> ClassicJudge:
    """Build a classic judge by its policy name (``mann-whitney``, ``ks``, ``welch-t``,
    ``chi-square``, ``threshold``); ``kwargs`` go to the class's constructor."""
    try:
        cls = CLASSIC_JUDGES[judge]
    except KeyError:
        raise ValueError(
            f"unknown classic judge {judge!r}; known: {', '.join(CLASSIC_JUDGES)}"
        ) from None
    return cls(**kwargs)
