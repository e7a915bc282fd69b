"""The GatewayRouter's arithmetic and status reading, and which routers can mirror."""

from __future__ import annotations

from fractions import Fraction

import pytest
from kubernetes import client as k8s

from canaryd.errors import RoutingError
from canaryd.policy.model import MIRROR_UNSUPPORTED, Router
from canaryd.routing import GatewayRouter, IstioRouter, KServeRawRouter, KServeRouter
from canaryd.routing.base import check_mirror_percent
from canaryd.routing.gateway import (
    _mirror_share,
    acceptance,
    canary_share,
    expresses,
    mirror_share_of,
    observed_generation,
    reported_percent,
    unresolved_refs,
)


@pytest.mark.parametrize(
    ("ws", "wc", "share"),
    [(90, 10, 10), (900, 100, 10), (3, 1, 25), (1, 2, Fraction(200, 3)), (0, 1, 100), (7, 0, 0)],
)
def test_canary_share_is_exact(ws: int, wc: int, share: Fraction | int) -> None:
    assert canary_share(ws, wc) == share


def test_no_weight_means_no_traffic() -> None:
    assert canary_share(0, 0) is None
    assert not expresses(0, 0, 0)


def test_reported_percent_is_0_or_100_only_when_exact() -> None:
    assert reported_percent(Fraction(1, 10_000)) == 1
    assert reported_percent(Fraction(0)) == 0
    assert reported_percent(Fraction(999_999, 10_000)) == 99
    assert reported_percent(Fraction(100)) == 100
    assert reported_percent(Fraction(200, 3)) == 67


def test_every_percent_written_is_expressed_exactly() -> None:
    for p in range(101):
        assert expresses(100 - p, p, p)
        assert canary_share(100 - p, p) == p
    assert expresses(900, 100, 10) and not expresses(900, 100, 11)


def test_mirror_share_round_trips_every_hundredth() -> None:
    for hundredths in range(1, 10_001):
        p = hundredths / 100
        body = _mirror_share(p)
        if float(p).is_integer():
            assert body == {"percent": int(p)}
        else:
            f = body["fraction"]
            assert 0 < f["numerator"] <= f["denominator"]
        assert mirror_share_of(body) == pytest.approx(p, abs=1e-9)
    assert mirror_share_of({}) == 100.0  # neither field: everything is mirrored
    assert mirror_share_of({"fraction": {"numerator": 1}}) == 1.0  # denominator defaults to 100


def _parent(name: str, *conditions: tuple[str, str, int]) -> dict:
    return {
        "parentRef": {"name": name},
        "conditions": [
            {"type": t, "status": s, "reason": "R", "message": "m", "observedGeneration": g}
            for t, s, g in conditions
        ],
    }


def test_acceptance_needs_every_parent() -> None:
    ok = _parent("a", ("Accepted", "True", 3), ("ResolvedRefs", "True", 3))
    assert acceptance({"status": {"parents": [ok]}}) == (True, "")
    accepted, why = acceptance({"status": {}})
    assert not accepted and "status.parents is empty" in why
    bad = _parent("b", ("Accepted", "False", 3))
    accepted, why = acceptance({"status": {"parents": [ok, bad]}})
    assert not accepted and why == "parent 'b': Accepted=False (R: m)"
    accepted, why = acceptance({"status": {"parents": [_parent("c")]}})
    assert not accepted and "no Accepted condition" in why


def test_observed_generation_and_unresolved_refs() -> None:
    obj = {
        "status": {
            "parents": [
                _parent("a", ("Accepted", "True", 4)),
                _parent("b", ("Accepted", "True", 2), ("ResolvedRefs", "False", 2)),
            ]
        }
    }
    assert observed_generation(obj, 4) == 2
    assert observed_generation({"status": {}}, 4) == 4
    assert "ResolvedRefs=False" in unresolved_refs(obj)


@pytest.mark.parametrize("bad", [-1, 100.5, 0.123, float("nan"), True, "10"])
def test_mirror_percent_is_checked(bad: object) -> None:
    with pytest.raises(RoutingError, match="mirror percent"):
        check_mirror_percent(bad)  # type: ignore[arg-type]


def test_routers_that_cannot_mirror_say_why() -> None:
    api = k8s.ApiClient(k8s.Configuration(host="http://127.0.0.1:9"))  # never contacted
    for router in (KServeRouter(api, "ns", "m"), KServeRawRouter(api, "ns", "m")):
        assert not router.can_mirror
        router.set_mirror_percent(0)  # nothing to turn off: no call
        with pytest.raises(RoutingError, match="cannot mirror traffic"):
            router.set_mirror_percent(10)
    api.close()


def test_the_policy_model_and_the_routers_agree_on_mirroring() -> None:
    classes = {
        "kserve": KServeRouter,
        "kserve-raw": KServeRawRouter,
        "istio": IstioRouter,
        "gateway-api": GatewayRouter,
    }
    assert set(classes) == set(Router.model_fields["type"].annotation.__args__)  # type: ignore[union-attr]
    for kind, cls in classes.items():
        settings = {
            "istio": {"istio": {"virtualService": "v", "stableHost": "a", "canaryHost": "b"}},
            "gateway-api": {
                "gatewayApi": {
                    "httpRoute": "r",
                    "ruleIndex": 0,
                    "stableBackend": {"name": "a"},
                    "canaryBackend": {"name": "b"},
                }
            },
        }.get(kind, {})
        router = Router.model_validate({"type": kind, **settings})
        assert router.can_mirror is cls.can_mirror, kind
        assert (kind in MIRROR_UNSUPPORTED) is (not cls.can_mirror)
