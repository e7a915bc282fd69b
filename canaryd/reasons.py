"""The one vocabulary of decision reasons: what a rollout did, as Kubernetes Event reasons.

Every decision the controller takes, and every thing the daemon does on its own (refusing an
annotation, a policy that changed mid-rollout, a state document it could not trust), is named by
one ``Reason``. The same names appear in Events (``kubectl events``), in the daemon's JSON log,
in ``canaryd status``, in notifications and in ``simulate``/``replay`` output, so a person
searching for ``RolledBack`` finds it everywhere.

``Reason.severity`` is the Event type (``Warning`` for anything a human should look at), and
``Reason.verb`` the events.k8s.io ``action`` (what canaryd did about it).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # -- controller decisions ---------------------------------------------------------
    CANARY_STARTED = "CanaryStarted"
    WEIGHT_CHANGED = "WeightChanged"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    # -- the daemon's own ---------------------------------------------------------------
    ABORTED = "Aborted"
    INVALID_ACTION = "InvalidAction"
    ACTION_IGNORED = "ActionIgnored"

    @property
    def severity(self) -> str:
        """``Warning`` or ``Normal``, the Event type this reason is recorded with."""
        return "Warning" if self in _WARNINGS else "Normal"

    @property
    def verb(self) -> str:
        """The events.k8s.io ``action``: what canaryd did."""
        return _VERBS[self]


_WARNINGS = frozenset(
    {
        Reason.ROLLED_BACK,
        Reason.PAUSED,
        Reason.ANALYSIS_INCONCLUSIVE,
        Reason.ABORTED,
        Reason.INVALID_ACTION,
        Reason.ACTION_IGNORED,
    }
)
_VERBS: dict[Reason, str] = {
    Reason.CANARY_STARTED: "StartCanary",
    Reason.WEIGHT_CHANGED: "SetWeight",
    Reason.PROMOTED: "Promote",
    Reason.ROLLED_BACK: "Rollback",
    Reason.PAUSED: "Pause",
    Reason.RESUMED: "Resume",
    Reason.ANALYSIS_INCONCLUSIVE: "Analyze",
    Reason.ABORTED: "Abort",
    Reason.INVALID_ACTION: "IgnoreAction",
    Reason.ACTION_IGNORED: "IgnoreAction",
}
