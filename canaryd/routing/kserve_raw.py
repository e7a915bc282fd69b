"""KServe Standard (raw deployment) mode router, KServe ≥ 0.20: drives ``spec.canary[]``.

In the v0.20 CRD ``spec.canary`` is an atomic list of ``{predictor: <predictor spec>,
trafficPercent: int32 0..100}``; each entry runs next to ``spec.predictor`` and gets
``trafficPercent`` of the traffic (the rest stays on ``spec.predictor``). The entries have no
name of their own; KServe reports them, in order, in ``status.canaryStatuses[]``
(``name``, ``ready``, ``trafficPercent``).

canaryd does not create canary entries: a user (or CI) adds one with the new predictor and
``trafficPercent: 0``, and canaryd drives it:

- ``set_canary_percent(p)`` sets the entry's ``trafficPercent`` (0 is a no-op when there is no
  entry; a positive share without an entry is a ``RoutingError``);
- ``promote()`` moves the entry's ``predictor`` to ``spec.predictor`` (the whole object,
  replacing the old one) and drops the entry; ``spec.canary`` is removed when it empties;
- ``rollback()`` drops the entry.

With several entries, pass ``canary_index``; without it the router refuses to guess.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from kubernetes import client as k8s

from canaryd.errors import RoutingError
from canaryd.kube import INFERENCE_SERVICE, JSON, Objects, Resource, as_objects, update_object
from canaryd.policy.model import MIRROR_UNSUPPORTED
from canaryd.routing.base import TrafficStatus, check_percent, refuse_mirror
from canaryd.routing.kserve import condition


class KServeRawRouter:
    """A TrafficRouter for a Standard/raw-mode InferenceService's ``spec.canary`` entry."""

    can_mirror = False
    """Neither KServe mode can mirror: ``steps.shadow`` is refused by the policy model."""

    def __init__(
        self,
        objects: Objects | k8s.ApiClient,
        namespace: str,
        name: str,
        canary_index: int | None = None,
    ) -> None:
        self._objects = as_objects(objects)
        self.namespace = namespace
        self.name = name
        self.canary_index = canary_index

    def __repr__(self) -> str:
        return f"KServeRawRouter({self.namespace}/{self.name}, canary_index={self.canary_index})"

    def get(self) -> JSON:
        return self._objects.get(INFERENCE_SERVICE, self.namespace, self.name)

    def reads(self) -> list[tuple[Resource, str]]:
        return [(INFERENCE_SERVICE, self.namespace)]

    def status(self) -> TrafficStatus:
        obj = self.get()
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        entries = _entries(obj)
        index = self._index(entries)
        predictor = (status.get("components") or {}).get("predictor") or {}
        stable = predictor.get("latestRolledoutRevision") or predictor.get("latestReadyRevision")
        generation = int(meta.get("generation") or 0)
        observed = int(status.get("observedGeneration") or 0)
        ready_cond = condition(status, "Ready")
        ready = ready_cond is not None and ready_cond.get("status") == "True"
        ready = ready and observed >= generation
        canary_name: str | None = None
        percent: int | None = None
        message = "no canary entry"
        if index is not None:
            percent = int(entries[index].get("trafficPercent") or 0)
            statuses = status.get("canaryStatuses") or []
            if index < len(statuses) and isinstance(statuses[index], dict):
                st = statuses[index]
                canary_name = st.get("name")
                ready = ready and bool(st.get("ready"))
                message = f"canary {canary_name}: ready={st.get('ready')}, applied {st.get('trafficPercent')}%"
            else:
                ready = False
                message = "canary entry not yet reported in status.canaryStatuses"
        if observed < generation:
            message += f"; generation {generation} not yet observed (at {observed})"
        return TrafficStatus(
            stable_revision=stable,
            canary_revision=canary_name,
            canary_percent=percent,
            ready=ready,
            generation=generation,
            observed_generation=observed,
            message=message,
        )

    def set_canary_percent(self, percent: int) -> None:
        check_percent(percent)

        def change(spec: JSON, entries: list[JSON], index: int | None) -> None:
            if index is None:
                if percent == 0:
                    return
                raise RoutingError(
                    f"InferenceService {self.namespace}/{self.name} has no spec.canary entry "
                    f"to send {percent}% to"
                )
            entries[index]["trafficPercent"] = percent

        self._write(change)

    def set_mirror_percent(self, percent: float) -> None:
        refuse_mirror(
            f"InferenceService {self.namespace}/{self.name}",
            MIRROR_UNSUPPORTED["kserve-raw"],
            percent,
        )

    def promote(self) -> None:
        def change(spec: JSON, entries: list[JSON], index: int | None) -> None:
            if index is None:
                return  # already promoted (or never started): nothing to do
            predictor = entries[index].get("predictor")
            if not isinstance(predictor, dict) or not predictor:
                raise RoutingError(
                    f"InferenceService {self.namespace}/{self.name}: spec.canary[{index}] has "
                    "no predictor to promote"
                )
            spec["predictor"] = copy.deepcopy(predictor)
            del entries[index]

        self._write(change)

    def rollback(self) -> None:
        def change(spec: JSON, entries: list[JSON], index: int | None) -> None:
            if index is not None:
                del entries[index]

        self._write(change)

    def _write(self, change: Callable[[JSON, list[JSON], int | None], None]) -> None:
        def mutate(obj: JSON) -> JSON:
            spec = obj.get("spec")
            if not isinstance(spec, dict):
                raise RoutingError(f"InferenceService {self.namespace}/{self.name} has no spec")
            entries = _entries(obj)
            change(spec, entries, self._index(entries))
            if entries:
                spec["canary"] = entries
            else:
                spec.pop("canary", None)
            return obj

        update_object(self._objects, INFERENCE_SERVICE, self.namespace, self.name, mutate)

    def _index(self, entries: list[JSON]) -> int | None:
        if self.canary_index is not None:
            # Out of range means the entry is gone (promoted or rolled back): nothing to drive.
            return self.canary_index if self.canary_index < len(entries) else None
        if len(entries) > 1:
            raise RoutingError(
                f"InferenceService {self.namespace}/{self.name} has {len(entries)} spec.canary "
                "entries; construct the router with canary_index to pick one"
            )
        return 0 if entries else None


def _entries(obj: JSON) -> list[JSON]:
    raw = (obj.get("spec") or {}).get("canary") or []
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise RoutingError("spec.canary is not a list of objects")
    return raw
