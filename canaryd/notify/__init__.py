"""Notifications of decisions, and the promotion gate, over canaryd's outbound HTTP.

- ``Notifier``: each decision POSTed to the policy's ``spec.notifications.webhooks`` as the
  versioned JSON document (``payload``), or a Slack / Teams body; bounded queues, retries,
  drop-oldest, never blocking the caller; ``canaryd_notifications_total{result}``.
- ``PromotionGate``: ``spec.promotion.confirm``, a webhook that must answer 2xx before a
  promotion; ``approved(request)`` never blocks.

See ``docs/notifications.md``. Depends on the policy model, the controller's types and
``canaryd.outbound`` only: the daemon calls it, never the other way round.
"""

from canaryd.notify.endpoint import EndpointResolver, describe
from canaryd.notify.gate import (
    GateAnswer,
    GateRequest,
    GateStatus,
    PromotionGate,
    confirm_request,
)
from canaryd.notify.notifier import Backoff, Notifier
from canaryd.notify.payload import SCHEMA, Notice, decision_notice, render

__all__ = [
    "SCHEMA",
    "Backoff",
    "EndpointResolver",
    "GateAnswer",
    "GateRequest",
    "GateStatus",
    "Notice",
    "Notifier",
    "PromotionGate",
    "confirm_request",
    "decision_notice",
    "describe",
    "render",
]
