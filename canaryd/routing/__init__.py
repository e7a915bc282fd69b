"""TrafficRouter implementations: one per way of splitting traffic."""

from canaryd.routing.base import TrafficRouter, TrafficStatus, check_percent
from canaryd.routing.istio import IstioRouter
from canaryd.routing.kserve import KServeRouter
from canaryd.routing.kserve_raw import KServeRawRouter

__all__ = [
    "IstioRouter",
    "KServeRawRouter",
    "KServeRouter",
    "TrafficRouter",
    "TrafficStatus",
    "check_percent",
]
