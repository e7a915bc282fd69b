"""KServe Serverless (Knative) router: drives ``spec.<component>.canaryTrafficPercent``.

KServe keeps the previous rolled-out revision and sends ``canaryTrafficPercent`` of the
traffic to the latest ready revision. canaryd writes only that one field:

- ``set_canary_percent(p)`` sets it to ``p`` (0..100, checked here: the CRD does not bound it);
- ``promote()`` removes it (JSON merge patch ``null``): KServe rolls the latest revision out
  to 100% and it becomes ``latestRolledoutRevision``;
- ``rollback()`` sets it to ``0``: all traffic back on the previous rolled-out revision.

Every write is a merge patch that carries ``metadata.resourceVersion`` (409 → re-read and
re-decide), and a call that finds the field already as wanted writes nothing.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from canaryd.errors import RoutingError
from canaryd.kube import INFERENCE_SERVICE, JSON, Objects, Resource, as_objects, update_object
from canaryd.policy.model import MIRROR_UNSUPPORTED
from canaryd.routing.base import TrafficStatus, check_percent, refuse_mirror

FIELD = "canaryTrafficPercent"
COMPONENTS = ("predictor", "transformer", "explainer")


class KServeRouter:
    """A TrafficRouter for one component of one Serverless-mode InferenceService."""

    can_mirror = False
    """Neither KServe mode can mirror: ``steps.shadow`` is refused by the policy model."""

    def __init__(
        self,
        objects: Objects | k8s.ApiClient,
        namespace: str,
        name: str,
        component: str = "predictor",
    ) -> None:
        if component not in COMPONENTS:
            raise RoutingError(f"component must be one of {COMPONENTS}, got {component!r}")
        self._objects = as_objects(objects)
        self.namespace = namespace
        self.name = name
        self.component = component

    def __repr__(self) -> str:
        return f"KServeRouter({self.namespace}/{self.name}, component={self.component})"

    # -- reading -----------------------------------------------------------------------

    def get(self) -> JSON:
        """The InferenceService (from the watch cache when cached; ApiNotFoundError when absent)."""
        return self._objects.get(INFERENCE_SERVICE, self.namespace, self.name)

    def reads(self) -> list[tuple[Resource, str]]:
        return [(INFERENCE_SERVICE, self.namespace)]

    def status(self) -> TrafficStatus:
        return traffic_status(self.get(), self.component)

    # -- writing -----------------------------------------------------------------------

    def set_canary_percent(self, percent: int) -> None:
        check_percent(percent)
        self._write(lambda spec: spec.__setitem__(FIELD, percent))

    def set_mirror_percent(self, percent: float) -> None:
        refuse_mirror(
            f"InferenceService {self.namespace}/{self.name}", MIRROR_UNSUPPORTED["kserve"], percent
        )

    def promote(self) -> None:
        self._write(lambda spec: spec.pop(FIELD, None))

    def rollback(self) -> None:
        self._write(lambda spec: spec.__setitem__(FIELD, 0))

    def _write(self, change: Any) -> bool:
        def mutate(obj: JSON) -> JSON:
            change(self._component_spec(obj))
            return obj

        _, wrote = update_object(
            self._objects, INFERENCE_SERVICE, self.namespace, self.name, mutate
        )
        return wrote

    def _component_spec(self, obj: JSON) -> JSON:
        spec = obj.get("spec")
        component = spec.get(self.component) if isinstance(spec, dict) else None
        if not isinstance(component, dict):
            raise RoutingError(
                f"InferenceService {self.namespace}/{self.name} has no spec.{self.component}"
            )
        return component


def traffic_status(obj: JSON, component: str = "predictor") -> TrafficStatus:
    """Read a Serverless InferenceService's traffic state.

    stable = ``latestRolledoutRevision``; canary = ``latestReadyRevision`` when it differs.
    ``canary_percent`` is the *desired* share (``spec.<component>.canaryTrafficPercent``, None
    when unset); the split Knative actually applied (``status.components.<c>.traffic``) is in
    ``message``. ``ready`` needs the Ready condition True and observedGeneration ≥ generation.
    """
    meta = obj.get("metadata") or {}
    spec = (obj.get("spec") or {}).get(component) or {}
    status = obj.get("status") or {}
    comp = (status.get("components") or {}).get(component) or {}
    stable = comp.get("latestRolledoutRevision")
    latest_ready = comp.get("latestReadyRevision")
    canary = latest_ready if latest_ready and latest_ready != stable else None
    percent = spec.get(FIELD)
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    ready_cond = condition(status, "Ready")
    ready = ready_cond is not None and ready_cond.get("status") == "True" and observed >= generation
    parts = []
    for entry in comp.get("traffic") or []:
        if isinstance(entry, dict):
            rev = entry.get("revisionName") or ("latest" if entry.get("latestRevision") else "?")
            parts.append(f"{rev}={entry.get('percent', 0)}%")
    message = "traffic " + ", ".join(parts) if parts else "no traffic status yet"
    if ready_cond is not None and ready_cond.get("status") != "True":
        message += f"; Ready={ready_cond.get('status')}: {ready_cond.get('message', '')}".rstrip()
    if observed < generation:
        message += f"; generation {generation} not yet observed (at {observed})"
    return TrafficStatus(
        stable_revision=stable,
        canary_revision=canary,
        canary_percent=int(percent) if isinstance(percent, int) else None,
        ready=ready,
        generation=generation,
        observed_generation=observed,
        message=message,
    )


def condition(status: JSON, kind: str) -> JSON | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None
