"""Istio router: the weights of one route in a user-owned VirtualService.

Set-up: two InferenceServices (stable and canary) and a VirtualService the user owns in front
of them. canaryd changes **only** the ``weight`` of the stable and canary destinations of the
*weighted route*, and nothing else: header-match routes, retries, timeouts, other hosts and
every other field stay as they are.

The weighted route is the one ``spec.http[]`` entry that

1. is named ``route_name``, when the router is given one; otherwise
2. has no ``match``, an empty ``match``, or only match entries without any request-cohort
   condition (no ``headers``, ``withoutHeaders``, ``queryParams``, ``sourceLabels``,
   ``sourceNamespace``; conditions on ``uri``, ``scheme``, ``method``, ``authority``,
   ``port``, ``gateways`` are allowed, since they select the endpoint, not a group of users),
   and
3. has exactly two destinations, one whose ``destination.host`` equals the stable host and
   one that equals the canary host (exact string comparison, as written in the object).

Exactly one route must qualify, otherwise the router raises ``RoutingError`` rather than
guess. Weights are integers that sum to 100: canary ``p``, stable ``100 - p``.

Mirroring (the shadow phase): ``set_mirror_percent(p)`` sets the weighted route's ``mirror``
(the canary destination: host, port and subset as the route names it) and
``mirrorPercentage.value = p``; ``0`` removes both. A route that already mirrors elsewhere
(``mirror`` to another host, or the ``mirrors[]`` list) is refused rather than overwritten.
Istio appends ``-shadow`` to the Host/Authority of mirrored requests and discards their
responses.

A VirtualService owned by KServe (``serving.kserve.io``) or Knative (``serving.knative.dev``,
``networking.internal.knative.dev``) is refused: its controller would overwrite the change.
"""

from __future__ import annotations

import copy
from typing import Any

from kubernetes import client as k8s

from canaryd.errors import RoutingError
from canaryd.kube import (
    JSON,
    VIRTUAL_SERVICE,
    Objects,
    Resource,
    as_objects,
    preferred_version,
    update_object,
)
from canaryd.routing.base import TrafficStatus, check_mirror_percent, check_percent

GROUP = "networking.istio.io"
VERSIONS = ("v1", "v1beta1")
FOREIGN_OWNER_GROUPS = frozenset(
    {"serving.kserve.io", "serving.knative.dev", "networking.internal.knative.dev"}
)
MIRROR_KEYS = ("mirror", "mirrorPercentage", "mirrorPercent", "mirror_percent")
"""The weighted route's fields canaryd sets for a mirror to the canary (and removes)."""
COHORT_CONDITIONS = frozenset(
    {"headers", "withoutHeaders", "queryParams", "sourceLabels", "sourceNamespace"}
)


class IstioRouter:
    """A TrafficRouter over the weighted route of one VirtualService."""

    can_mirror = True

    def __init__(
        self,
        objects: Objects | k8s.ApiClient,
        namespace: str,
        name: str,
        stable_host: str,
        canary_host: str,
        *,
        route_name: str | None = None,
        version: str | None = None,
    ) -> None:
        if stable_host == canary_host:
            raise RoutingError(f"stable and canary host are the same: {stable_host!r}")
        self._objects = as_objects(objects)
        self.namespace = namespace
        self.name = name
        self.stable_host = stable_host
        self.canary_host = canary_host
        self.route_name = route_name
        self._version = version

    def __repr__(self) -> str:
        return (
            f"IstioRouter({self.namespace}/{self.name}, stable={self.stable_host}, "
            f"canary={self.canary_host})"
        )

    @property
    def resource(self) -> Resource:
        """The VirtualService resource at the version the apiserver serves (v1 preferred)."""
        if self._version is None:
            self._version = preferred_version(self._objects, GROUP, VERSIONS)
        return VIRTUAL_SERVICE.with_version(self._version)

    def get(self) -> JSON:
        return self._objects.get(self.resource, self.namespace, self.name)

    def reads(self) -> list[tuple[Resource, str]]:
        return [(self.resource, self.namespace)]

    def status(self) -> TrafficStatus:
        obj = self.get()
        meta = obj.get("metadata") or {}
        index, route = self._weighted_route(obj)
        stable, canary = self._destinations(route, index)
        mirror = self._mirror_of(route)
        generation = int(meta.get("generation") or 0)
        observed = (obj.get("status") or {}).get("observedGeneration")
        # istiod reports observedGeneration only with status analysis on; absent means unknown.
        observed_gen = int(observed) if observed is not None else generation
        return TrafficStatus(
            stable_revision=self.stable_host,
            canary_revision=self.canary_host,
            canary_percent=_weight(canary),
            ready=observed_gen >= generation,
            generation=generation,
            observed_generation=observed_gen,
            message=(
                f"VirtualService {self.namespace}/{self.name} http[{index}]: "
                f"{self.stable_host}={_weight(stable)}, {self.canary_host}={_weight(canary)}"
                + (f", mirroring {mirror:g}% to the canary" if mirror else "")
            ),
            mirror_percent=mirror,
        )

    def set_canary_percent(self, percent: int) -> None:
        check_percent(percent)
        self._set(percent)

    def set_mirror_percent(self, percent: float) -> None:
        p = check_mirror_percent(percent)

        def mutate(obj: JSON) -> JSON:
            self._check_owner(obj)
            index, route = self._weighted_route(obj)
            _, canary = self._destinations(route, index)
            foreign = self._foreign_mirror(route)
            if p == 0:
                if foreign is None:  # someone else's mirror is theirs to keep
                    for key in MIRROR_KEYS:
                        route.pop(key, None)
                return obj
            if foreign is not None:
                raise RoutingError(f"{foreign}; canaryd will not overwrite it")
            route["mirror"] = {
                k: copy.deepcopy(v)
                for k, v in (canary.get("destination") or {}).items()
                if k in ("host", "port", "subset")
            }
            for key in MIRROR_KEYS[2:]:
                route.pop(key, None)  # the deprecated forms would contradict mirrorPercentage
            route["mirrorPercentage"] = {"value": p}
            return obj

        update_object(self._objects, self.resource, self.namespace, self.name, mutate)

    def promote(self) -> None:
        self._set(100)

    def rollback(self) -> None:
        self._set(0)

    def _set(self, percent: int) -> None:
        def mutate(obj: JSON) -> JSON:
            self._check_owner(obj)
            index, route = self._weighted_route(obj)
            stable, canary = self._destinations(route, index)
            stable["weight"] = 100 - percent
            canary["weight"] = percent
            return obj

        update_object(self._objects, self.resource, self.namespace, self.name, mutate)

    def _foreign_mirror(self, route: JSON) -> str | None:
        """Why the route mirrors somewhere canaryd does not manage, or None."""
        where = f"VirtualService {self.namespace}/{self.name} route {route.get('name')!r}"
        if route.get("mirrors"):
            return f"{where} mirrors with mirrors[] (canaryd manages only `mirror`)"
        mirror = route.get("mirror")
        if mirror is not None and _host(mirror) != self.canary_host:
            target = _host(mirror) or repr(mirror)
            return f"{where} already mirrors to {target}, not the canary"
        return None

    def _mirror_of(self, route: JSON) -> float:
        """The percent of the route's requests mirrored to the canary (0: none)."""
        if self._foreign_mirror(route) is not None or route.get("mirror") is None:
            return 0.0
        value = (route.get("mirrorPercentage") or {}).get("value")
        if value is None:
            value = route.get("mirrorPercent")  # deprecated integer form
        return 100.0 if value is None else float(value)  # Istio's default is 100 %

    def _check_owner(self, obj: JSON) -> None:
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            group = str(ref.get("apiVersion", "")).split("/")[0]
            if group in FOREIGN_OWNER_GROUPS:
                raise RoutingError(
                    f"VirtualService {self.namespace}/{self.name} is owned by "
                    f"{ref.get('kind')} {ref.get('name')} ({ref.get('apiVersion')}); its "
                    "controller would overwrite canaryd's weights. Put a VirtualService you own "
                    "in front of the two InferenceServices instead."
                )

    def _weighted_route(self, obj: JSON) -> tuple[int, JSON]:
        routes = (obj.get("spec") or {}).get("http") or []
        candidates = [
            (i, r) for i, r in enumerate(routes) if isinstance(r, dict) and self._qualifies(r)
        ]
        if len(candidates) != 1:
            what = (
                f"named {self.route_name!r}"
                if self.route_name
                else "without header/query/source conditions"
            )
            raise RoutingError(
                f"VirtualService {self.namespace}/{self.name}: expected exactly one http route "
                f"{what} with destinations {self.stable_host} and {self.canary_host}, "
                f"found {len(candidates)} (indexes {[i for i, _ in candidates]})"
            )
        return candidates[0]

    def _qualifies(self, route: JSON) -> bool:
        if self.route_name is not None:
            if route.get("name") != self.route_name:
                return False
        else:
            for match in route.get("match") or []:
                if isinstance(match, dict) and COHORT_CONDITIONS & match.keys():
                    return False
        hosts = sorted(_host(d) for d in route.get("route") or [])
        return hosts == sorted([self.stable_host, self.canary_host])

    def _destinations(self, route: JSON, index: int) -> tuple[JSON, JSON]:
        by_host = {_host(d): d for d in route.get("route") or [] if isinstance(d, dict)}
        try:
            return by_host[self.stable_host], by_host[self.canary_host]
        except KeyError as err:  # pragma: no cover - _qualifies checked it
            raise RoutingError(f"http[{index}] lost destination {err}") from err


def _host(dest: Any) -> str:
    """The host of a route destination (``{destination: {host}}``) or of a ``mirror``."""
    if not isinstance(dest, dict):
        return ""
    inner = dest.get("destination") if "destination" in dest else dest
    return str((inner or {}).get("host", ""))


def _weight(dest: JSON) -> int:
    return int(dest.get("weight") or 0)
