"""What a notification says: the versioned JSON document, and the Slack / Teams bodies.

Schema ``canaryd.io/notification/v1`` (documented in ``docs/notifications.md``; fields are only
ever added within a version)::

    {
      "schema": "canaryd.io/notification/v1",
      "kind": "Decision" | "ConfirmPromotion",
      "id": "<namespace>/<name>/<canary revision>/<t>/<kind>",   # idempotency key
      "time": "2026-01-05T10:42:00Z",                              # of the decision
      "rollout": {"namespace", "name", "policy", "stableRevision", "canaryRevision"},
      "decision": {"action", "reason", "severity", "message", "weight", "phase", "step"},
      "verdicts": [{"metric", "judge", "status", "critical", "summary",
                    "estimate", "interval", "eValue", "pValue"}]
    }

``decision.reason`` is a ``canaryd.reasons.Reason`` value (``RolledBack``, ...), ``severity``
its Event type (``Normal``/``Warning``), ``message`` the controller's explanation. Non-finite
numbers are the strings ``"NaN"``, ``"+Inf"``, ``"-Inf"`` (``canaryd.jsonnum``). A receiver may
see a notice twice (a retry after a lost answer): ``id`` tells them apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from canaryd.controller import Decision, RolloutState
from canaryd.jsonnum import encode_optional
from canaryd.reasons import Reason

SCHEMA = "canaryd.io/notification/v1"
Kind = Literal["Decision", "ConfirmPromotion"]
Format = Literal["json", "slack", "teams"]


@dataclass(frozen=True)
class Notice:
    """One notification, independent of how it is formatted."""

    kind: Kind
    namespace: str
    name: str
    policy: str
    stable_revision: str
    canary_revision: str
    action: str
    reason: Reason | None
    message: str
    weight: int | None
    phase: str
    step: int
    t: float
    """Unix seconds of the decision."""
    verdicts: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    labels: dict[str, str] = field(default_factory=dict)
    """The policy's ``metadata.labels`` (team, tier, ...), for routing on the receiver's side."""
    annotations: dict[str, str] = field(default_factory=dict)
    """The policy's ``metadata.annotations`` (runbook links, owners, ...)."""

    @property
    def severity(self) -> str:
        return self.reason.severity if self.reason is not None else "Normal"

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}/{self.canary_revision}/{self.t:.3f}/{self.kind}"

    def document(self) -> dict[str, Any]:
        """The ``canaryd.io/notification/v1`` JSON document."""
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            "id": self.id,
            "time": _iso(self.t),
            "rollout": {
                "namespace": self.namespace,
                "name": self.name,
                "policy": self.policy,
                "stableRevision": self.stable_revision,
                "canaryRevision": self.canary_revision,
                "labels": dict(self.labels),
                "annotations": dict(self.annotations),
            },
            "decision": {
                "action": self.action,
                "reason": None if self.reason is None else self.reason.value,
                "severity": self.severity,
                "message": self.message,
                "weight": self.weight,
                "phase": self.phase,
                "step": self.step,
            },
            "verdicts": list(self.verdicts),
        }

    def headline(self) -> str:
        what = self.reason.value if self.reason is not None else self.action
        weight = "" if self.weight is None else f" at {self.weight}%"
        return f"{what}: {self.namespace}/{self.name} {self.canary_revision}{weight}"


def _iso(t: float) -> str:
    if t < 1e9:  # a simulator's virtual clock: no calendar date
        return f"t={t:g}s"
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def decision_notice(
    namespace: str,
    name: str,
    policy: str,
    decision: Decision,
    state: RolloutState,
    kind: Kind = "Decision",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Notice:
    """The notice of one controller decision, with the state the decision produced."""
    return Notice(
        labels=dict(labels or {}),
        annotations=dict(annotations or {}),
        kind=kind,
        namespace=namespace,
        name=name,
        policy=policy,
        stable_revision=state.stable_revision,
        canary_revision=state.canary_revision,
        action=decision.action.value,
        reason=decision.event,
        message=decision.reason,
        weight=decision.weight if decision.weight is not None else state.weight,
        phase=state.phase.value,
        step=state.step,
        t=decision.t,
        verdicts=tuple(
            {
                "metric": v.metric,
                "judge": v.judge,
                "status": v.status.value,
                "critical": v.critical,
                "summary": v.summary(),
                "estimate": encode_optional(v.estimate),
                "interval": None
                if v.interval is None
                else [encode_optional(x) for x in v.interval],
                "eValue": encode_optional(v.e_value),
                "pValue": encode_optional(v.p_value),
            }
            for v in decision.verdicts
        ),
    )


_COLOURS = {"Normal": "2EB886", "Warning": "D00000"}


def render(notice: Notice, fmt: Format) -> bytes:
    """The request body for ``fmt``: the JSON document, a Slack message or a Teams card."""
    if fmt == "json":
        body: dict[str, Any] = notice.document()
    else:
        lines = [notice.message] + [f"• {v['summary']}" for v in notice.verdicts]
        detail = "\n".join(lines)
        if fmt == "slack":
            body = {
                "text": f"{notice.headline()}\n{detail}",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": notice.headline()}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": detail}},
                ],
            }
        else:  # teams: an Office 365 connector MessageCard
            body = {
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": notice.headline(),
                "themeColor": _COLOURS.get(notice.severity, "808080"),
                "title": notice.headline(),
                "text": detail.replace("\n", "<br>"),
            }
    return json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8")
