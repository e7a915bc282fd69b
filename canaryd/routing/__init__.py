"""TrafficRouter implementations: one per way of splitting traffic (and mirroring it)."""

from canaryd.routing.base import (
    TrafficRouter,
    TrafficStatus,
    check_mirror_percent,
    check_percent,
)
from canaryd.routing.gateway import GatewayRouter, ServiceRef
from canaryd.routing.istio import IstioRouter
from canaryd.routing.kserve import KServeRouter
from canaryd.routing.kserve_raw import KServeRawRouter

__all__ = [
    "GatewayRouter",
    "IstioRouter",
    "KServeRawRouter",
    "KServeRouter",
    "ServiceRef",
    "TrafficRouter",
    "TrafficStatus",
    "check_mirror_percent",
    "check_percent",
]
