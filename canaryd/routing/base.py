"""The TrafficRouter protocol: read and set the canary's share of traffic, and its mirror."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from canaryd.errors import RoutingError
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
    mirror_percent: float | None = None
    """The share of requests mirrored to the canary (0: off); None when the router cannot mirror."""


class TrafficRouter(Protocol):
    """One implementation per way of splitting traffic (KServe, KServe raw, Istio, Gateway API).

    Every write is idempotent: repeating a call with the same argument changes nothing.
    Reads go through ``canaryd.kube.Objects`` (the daemon's watch cache); ``reads`` names the
    collections a router reads, so the daemon watches them.

    ``set_mirror_percent(p)`` copies ``p`` percent of the requests that the weighted route
    carries to the canary (their responses are discarded: no user depends on them); ``0``
    turns mirroring off. Routers that cannot mirror (``can_mirror`` false) accept ``0`` (there
    is nothing to turn off) and raise ``RoutingError`` for anything else.
    """

    def reads(self) -> list[tuple[Resource, str]]:
        """(resource, namespace) of every object ``status`` and the writes read."""
        ...

    @property
    def can_mirror(self) -> bool: ...

    def status(self) -> TrafficStatus: ...

    def set_canary_percent(self, percent: int) -> None: ...

    def set_mirror_percent(self, percent: float) -> None: ...

    def promote(self) -> None: ...

    def rollback(self) -> None: ...


def check_percent(percent: int) -> int:
    """Validate a canary percent (the KServe CRD does not bound it; Knative rejects it later)."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise RoutingError(f"canary percent must be an integer in 0..100, got {percent!r}")
    return percent


def check_mirror_percent(percent: float) -> float:
    """Validate a mirror percent: a number in 0..100 with at most two decimals."""
    if (
        isinstance(percent, bool)
        or not isinstance(percent, int | float)
        or not math.isfinite(percent)
        or not 0 <= percent <= 100
        or abs(percent * 100 - round(percent * 100)) > 1e-6
    ):
        raise RoutingError(
            f"mirror percent must be a number in 0..100 with at most two decimals, got {percent!r}"
        )
    return float(percent)


def refuse_mirror(what: str, why: str, percent: float) -> None:
    """``set_mirror_percent`` of a router that cannot mirror: 0 is a no-op, else RoutingError."""
    if check_mirror_percent(percent) != 0:
        raise RoutingError(f"{what} cannot mirror traffic: {why}")
