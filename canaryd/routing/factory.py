"""Build the TrafficRouter a policy asks for (``spec.router``): the one place that knows them all.

A router is constructed from the policy's target (namespace, InferenceService, component) and
its ``spec.router`` settings. Adding a way of splitting traffic means adding a branch here and a
module beside this one; the daemon, ``canaryd status`` and the tests all come through here.
"""

from __future__ import annotations

from canaryd.kube import Objects
from canaryd.policy.model import CanaryPolicy, Router
from canaryd.routing.base import TrafficRouter
from canaryd.routing.gateway import GatewayRouter, ServiceRef
from canaryd.routing.istio import IstioRouter
from canaryd.routing.kserve import KServeRouter
from canaryd.routing.kserve_raw import KServeRawRouter


def build_router(
    objects: Objects, namespace: str, name: str, component: str, router: Router
) -> TrafficRouter:
    """The TrafficRouter for ``router`` settings, acting on ``namespace/name``'s ``component``."""
    if router.type == "kserve-raw":
        return KServeRawRouter(objects, namespace, name)
    if router.type == "istio":
        assert router.istio is not None  # the policy model refuses istio without settings
        return IstioRouter(
            objects,
            router.istio.namespace or namespace,
            router.istio.virtual_service,
            router.istio.stable_host,
            router.istio.canary_host,
        )
    if router.type == "gateway-api":
        g = router.gateway_api
        assert g is not None  # the policy model refuses gateway-api without settings
        return GatewayRouter(
            objects,
            g.namespace or namespace,
            g.http_route,
            ServiceRef(g.stable_backend.name, g.stable_backend.port, g.stable_backend.namespace),
            ServiceRef(g.canary_backend.name, g.canary_backend.port, g.canary_backend.namespace),
            rule_name=g.rule_name,
            rule_index=g.rule_index,
        )
    return KServeRouter(objects, namespace, name, component)


def router_for_policy(policy: CanaryPolicy, objects: Objects) -> TrafficRouter:
    """The router of ``policy`` (its target and ``spec.router``)."""
    t = policy.spec.target
    return build_router(objects, t.namespace, t.inference_service, t.component, policy.spec.router)
