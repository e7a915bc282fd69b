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
    SHADOW_STARTED = "ShadowStarted"
    CANARY_STARTED = "CanaryStarted"
    WEIGHT_CHANGED = "WeightChanged"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    AWAITING_CONFIRMATION = "AwaitingConfirmation"
    """Ready to promote, holding at the last step until ``promotion.confirm`` approves."""
    WINDOW_CLOSED = "WindowClosed"
    """The rollout window closed: holding at this weight until it opens (a rollback still acts)."""
    # -- the daemon's own ---------------------------------------------------------------
    ABORTED = "Aborted"
    INVALID_ACTION = "InvalidAction"
    ACTION_IGNORED = "ActionIgnored"
    POLICY_CHANGED = "PolicyChanged"
    """The policy was edited mid-rollout; the note says what changed and what was done."""
    POLICY_CONFLICT = "ConflictingPolicies"
    """Several policies target one InferenceService: none of them acts on it."""
    POLICY_REFUSED = "PolicyRefused"
    """The policy is not allowed to act (e.g. a route in another namespace)."""
    STATE_INVALID = "StateInvalid"
    """The stored state cannot be read or does not fit the policy: held, nothing moves."""
    STATE_LOST = "StateLost"
    """The stored state disappeared while the canary had traffic: paused for a human."""

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
        Reason.POLICY_CONFLICT,
        Reason.POLICY_REFUSED,
        Reason.STATE_INVALID,
        Reason.STATE_LOST,
    }
)
_VERBS: dict[Reason, str] = {
    Reason.SHADOW_STARTED: "StartShadow",
    Reason.CANARY_STARTED: "StartCanary",
    Reason.WEIGHT_CHANGED: "SetWeight",
    Reason.PROMOTED: "Promote",
    Reason.ROLLED_BACK: "Rollback",
    Reason.PAUSED: "Pause",
    Reason.RESUMED: "Resume",
    Reason.ANALYSIS_INCONCLUSIVE: "Analyze",
    Reason.AWAITING_CONFIRMATION: "AwaitConfirmation",
    Reason.WINDOW_CLOSED: "Hold",
    Reason.ABORTED: "Abort",
    Reason.INVALID_ACTION: "IgnoreAction",
    Reason.ACTION_IGNORED: "IgnoreAction",
    Reason.POLICY_CHANGED: "AdoptPolicy",
    Reason.POLICY_CONFLICT: "Hold",
    Reason.POLICY_REFUSED: "Hold",
    Reason.STATE_INVALID: "Hold",
    Reason.STATE_LOST: "Pause",
}
