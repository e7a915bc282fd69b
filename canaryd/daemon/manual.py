"""Manual controls: the ``canaryd.io/action`` annotation on an InferenceService.

A human (or CI) sets ``canaryd.io/action: promote|rollback|pause|resume`` on the
InferenceService, so Kubernetes RBAC (patch on inferenceservices) decides who may use them. The
daemon reads it from its watch cache at every tick, acts on it through the controller (which
alone decides what an action does: ``RolloutController.changes``) and removes it. An annotation
acts only on the rollout of the object it is set on.
"""

from __future__ import annotations

from canaryd.controller import Manual
from canaryd.identity import RolloutKey
from canaryd.kube import INFERENCE_SERVICE, JSON, ApiNotFoundError, Objects, update_object

ACTION_ANNOTATION = "canaryd.io/action"


def parse_manual(value: str) -> Manual | None:
    """The Manual control ``value`` names, or None for anything else."""
    try:
        return Manual(value.strip().lower())
    except ValueError:
        return None


def requested_action(isvc: JSON) -> str | None:
    """The raw ``canaryd.io/action`` value on an InferenceService, if any."""
    ann = (isvc.get("metadata") or {}).get("annotations") or {}
    value = ann.get(ACTION_ANNOTATION) if isinstance(ann, dict) else None
    return None if value is None else str(value)


def clear_action(objects: Objects, key: RolloutKey, value: str) -> bool:
    """Remove the annotation if it still holds ``value`` (merge patch with resourceVersion).

    Returns whether it wrote. An annotation changed meanwhile (a newer command) is kept.
    """

    def mutate(obj: JSON) -> JSON:
        ann = (obj.get("metadata") or {}).get("annotations") or {}
        if ann.get(ACTION_ANNOTATION) == value:
            del ann[ACTION_ANNOTATION]
        return obj

    try:
        _, wrote = update_object(objects, INFERENCE_SERVICE, key.namespace, key.name, mutate)
    except ApiNotFoundError:
        return False
    return wrote


def request_action(objects: Objects, key: RolloutKey, action: Manual) -> bool:
    """Set ``canaryd.io/action`` on the InferenceService (the CLI's manual controls)."""

    def mutate(obj: JSON) -> JSON:
        meta = obj.setdefault("metadata", {})
        ann = meta.get("annotations")
        if not isinstance(ann, dict):
            ann = meta["annotations"] = {}
        ann[ACTION_ANNOTATION] = action.value
        return obj

    _, wrote = update_object(objects, INFERENCE_SERVICE, key.namespace, key.name, mutate)
    return wrote
