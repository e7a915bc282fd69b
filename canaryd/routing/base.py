"""The TrafficRouter protocol: read and set the canary's share of traffic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from canaryd.kube.resources import Resource


@dataclass(frozen=True)
class TrafficStatus:
    """What the router sees of the target right now."""

    stable_revision: str | None
    canary_revision: str | None
    canary_percent: int | None
    """The canary's current share, or None when no canary is configured."""
    ready: bool = True
    generation: int = 0
    observed_generation: int = 0
    message: str = ""


class TrafficRouter(Protocol):
    """One implementation per way of splitting traffic (KServe, KServe raw, Istio, simulated).

    Every write is idempotent: repeating a call with the same argument changes nothing.
    Reads go through ``canaryd.kube.Objects`` (the daemon's watch cache); ``reads`` names the
    collections a router reads, so the daemon watches them.
    """

    def reads(self) -> list[tuple[Resource, str]]:
        """(resource, namespace) of every object ``status`` and the writes read."""
        ...

    def status(self) -> TrafficStatus: ...

    def set_canary_percent(self, percent: int) -> None: ...

    def promote(self) -> None: ...

    def rollback(self) -> None: ...


def check_percent(percent: int) -> int:
    """Validate a canary percent (the KServe CRD does not bound it; Knative rejects it later)."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        from canaryd.errors import RoutingError

        raise RoutingError(f"canary percent must be an integer in 0..100, got {percent!r}")
    return percent
