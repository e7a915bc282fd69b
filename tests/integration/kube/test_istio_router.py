"""IstioRouter against the upstream VirtualService CRD: only two weights ever change."""

from __future__ import annotations

import copy
import json

import pytest

from canaryd.errors import NotFoundError, RoutingError
from canaryd.kube import raw_request
from canaryd.routing.istio import IstioRouter

from .conftest import ConcurrentWriter, KubeEnv, as_json, rv

pytestmark = pytest.mark.integration

STABLE = "fraud-v1-predictor.fraud.svc.cluster.local"
CANARY = "fraud-v2-predictor.fraud.svc.cluster.local"


def _vs_spec() -> dict:
    return {
        "hosts": ["fraud.example.com"],
        "gateways": ["kserve/kserve-ingress-gateway"],
        "http": [
            {
                # Testers: header route straight to the canary. Must never change.
                "name": "testers",
                "match": [{"headers": {"version": {"exact": "v2"}}}],
                "route": [{"destination": {"host": CANARY, "port": {"number": 80}}}],
                "headers": {"request": {"set": {"x-route": "testers"}}},
            },
            {
                # Opt-out cohort by query parameter: stays on stable.
                "name": "pinned",
                "match": [{"queryParams": {"pin": {"exact": "stable"}}}],
                "route": [
                    {"destination": {"host": STABLE}, "weight": 100},
                    {"destination": {"host": CANARY}, "weight": 0},
                ],
            },
            {
                # The weighted route: endpoint match only (uri), both destinations.
                "name": "main",
                "match": [{"uri": {"prefix": "/v1/models/fraud"}}],
                "route": [
                    {
                        "destination": {"host": STABLE, "port": {"number": 80}},
                        "weight": 90,
                        "headers": {"response": {"add": {"x-version": "v1"}}},
                    },
                    {"destination": {"host": CANARY, "port": {"number": 80}}, "weight": 10},
                ],
                "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,reset"},
                "timeout": "10s",
            },
            {"name": "legacy", "route": [{"destination": {"host": "legacy.fraud.svc"}}]},
        ],
    }


def _create_vs(
    kube: KubeEnv, namespace: str, name: str, spec: dict, owners: list | None = None
) -> dict:
    meta: dict = {"name": name, "namespace": namespace, "labels": {"app": "fraud"}}
    if owners:
        meta["ownerReferences"] = owners
    body = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": meta,
        "spec": spec,
    }
    return as_json(
        kube.custom.create_namespaced_custom_object(
            "networking.istio.io", "v1", namespace, "virtualservices", body
        )
    )


def _get_vs_bytes(kube: KubeEnv, namespace: str, name: str) -> dict:
    return as_json(
        kube.custom.get_namespaced_custom_object(
            "networking.istio.io", "v1", namespace, "virtualservices", name
        )
    )


def _weights(obj: dict) -> tuple[int, int]:
    route = obj["spec"]["http"][2]["route"]
    return route[0]["weight"], route[1]["weight"]


def _canonical_minus_weights(obj: dict) -> str:
    """The whole object as canonical JSON, with the two managed weights and the write
    bookkeeping (resourceVersion, generation, managedFields) blanked."""
    o = copy.deepcopy(obj)
    for key in ("resourceVersion", "generation", "managedFields"):
        o["metadata"].pop(key, None)
    for dest in o["spec"]["http"][2]["route"]:
        dest["weight"] = "<managed>"
    return json.dumps(o, sort_keys=True, separators=(",", ":"))


@pytest.fixture
def vs(kube: KubeEnv, namespace: str) -> str:
    _create_vs(kube, namespace, "fraud", _vs_spec())
    return "fraud"


def test_steps_promote_rollback_touch_only_the_weights(
    kube: KubeEnv, namespace: str, vs: str
) -> None:
    router = IstioRouter(kube.api_client, namespace, vs, STABLE, CANARY)
    assert router.resource.version == "v1"  # detected from API discovery
    before = _get_vs_bytes(kube, namespace, vs)
    assert router.status().canary_percent == 10

    for action, expected in (
        (lambda: router.set_canary_percent(10), (90, 10)),
        (lambda: router.set_canary_percent(25), (75, 25)),
        (router.promote, (0, 100)),
        (router.rollback, (100, 0)),
    ):
        action()
        obj = _get_vs_bytes(kube, namespace, vs)
        assert _weights(obj) == expected
        assert sum(expected) == 100
        assert _canonical_minus_weights(obj) == _canonical_minus_weights(before)
        # The header and query routes, and everything but the weights, byte for byte.
        assert obj["spec"]["http"][0] == before["spec"]["http"][0]
        assert obj["spec"]["http"][1] == before["spec"]["http"][1]
        assert router.status().canary_percent == expected[1]


def test_repeating_a_decision_writes_nothing(kube: KubeEnv, namespace: str, vs: str) -> None:
    router = IstioRouter(kube.api_client, namespace, vs, STABLE, CANARY)
    version = rv(_get_vs_bytes(kube, namespace, vs))
    router.set_canary_percent(10)  # already 90/10 in the manifest
    assert rv(_get_vs_bytes(kube, namespace, vs)) == version
    router.promote()
    version = rv(_get_vs_bytes(kube, namespace, vs))
    router.promote()
    assert rv(_get_vs_bytes(kube, namespace, vs)) == version


def test_v1beta1_view_of_the_same_object(kube: KubeEnv, namespace: str, vs: str) -> None:
    router = IstioRouter(kube.api_client, namespace, vs, STABLE, CANARY, version="v1beta1")
    router.set_canary_percent(30)
    assert _weights(_get_vs_bytes(kube, namespace, vs)) == (70, 30)


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("serving.kserve.io/v1beta1", "InferenceService"),
        ("serving.knative.dev/v1", "Route"),
        ("networking.internal.knative.dev/v1alpha1", "Ingress"),
    ],
)
def test_controller_owned_virtualservice_is_refused(
    kube: KubeEnv, namespace: str, api_version: str, kind: str
) -> None:
    owner = {
        "apiVersion": api_version,
        "kind": kind,
        "name": "fraud",
        "uid": "5b0a4d4e-0000-4000-8000-000000000001",
        "controller": True,
    }
    _create_vs(kube, namespace, "owned", _vs_spec(), owners=[owner])
    router = IstioRouter(kube.api_client, namespace, "owned", STABLE, CANARY)
    version = rv(_get_vs_bytes(kube, namespace, "owned"))
    with pytest.raises(RoutingError, match=f"owned by {kind}"):
        router.set_canary_percent(50)
    with pytest.raises(RoutingError):
        router.promote()
    assert rv(_get_vs_bytes(kube, namespace, "owned")) == version
    assert router.status().canary_percent == 10  # reading is fine


def test_ambiguous_or_missing_route_is_refused(kube: KubeEnv, namespace: str) -> None:
    spec = _vs_spec()
    spec["http"].append(copy.deepcopy(spec["http"][2]) | {"name": "main-copy"})
    _create_vs(kube, namespace, "twice", spec)
    with pytest.raises(RoutingError, match="found 2"):
        IstioRouter(kube.api_client, namespace, "twice", STABLE, CANARY).set_canary_percent(5)
    # Naming the route settles it.
    named = IstioRouter(kube.api_client, namespace, "twice", STABLE, CANARY, route_name="main-copy")
    named.set_canary_percent(5)
    obj = _get_vs_bytes(kube, namespace, "twice")
    assert [d["weight"] for d in obj["spec"]["http"][4]["route"]] == [95, 5]
    assert [d["weight"] for d in obj["spec"]["http"][2]["route"]] == [90, 10]

    with pytest.raises(RoutingError, match="found 0"):
        IstioRouter(kube.api_client, namespace, "twice", STABLE, "other.svc").status()


def test_conflict_rereads(kube: KubeEnv, namespace: str, vs: str) -> None:
    other = kube.new_client()

    def bump() -> None:  # the owner edits the retries meanwhile
        obj = raw_request(
            other,
            "GET",
            f"/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices/{vs}",
        )
        obj["spec"]["http"][2]["retries"]["attempts"] = 5
        raw_request(
            other,
            "PUT",
            f"/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices/{vs}",
            body=obj,
        )

    api = ConcurrentWriter(kube.api_client, bump)
    IstioRouter(api, namespace, vs, STABLE, CANARY).set_canary_percent(50)
    assert api.conflicts == 1
    obj = _get_vs_bytes(kube, namespace, vs)
    assert _weights(obj) == (50, 50)
    assert obj["spec"]["http"][2]["retries"]["attempts"] == 5  # their write survived
    other.close()


def test_deleted(kube: KubeEnv, namespace: str, vs: str) -> None:
    router = IstioRouter(kube.api_client, namespace, vs, STABLE, CANARY)
    kube.custom.delete_namespaced_custom_object(
        "networking.istio.io", "v1", namespace, "virtualservices", vs
    )
    with pytest.raises(NotFoundError):
        router.rollback()


def test_mirror_on_and_off(kube: KubeEnv, namespace: str, vs: str) -> None:
    router = IstioRouter(kube.api_client, namespace, vs, STABLE, CANARY)
    router.rollback()  # shadow: no user traffic to the canary
    before = _get_vs_bytes(kube, namespace, vs)
    assert router.status().mirror_percent == 0.0

    router.set_mirror_percent(25)
    obj = _get_vs_bytes(kube, namespace, vs)
    main = obj["spec"]["http"][2]
    # The canary destination as the route names it (host and port), on the catch-all route.
    assert main["mirror"] == {"host": CANARY, "port": {"number": 80}}
    assert main["mirrorPercentage"] == {"value": 25}
    assert _weights(obj) == (100, 0)
    for i in (0, 1, 3):
        assert obj["spec"]["http"][i] == before["spec"]["http"][i]
    st = router.status()
    assert st.mirror_percent == 25.0 and "mirroring 25% to the canary" in st.message

    router.set_mirror_percent(0.5)
    assert _get_vs_bytes(kube, namespace, vs)["spec"]["http"][2]["mirrorPercentage"] == {
        "value": 0.5
    }
    version = rv(_get_vs_bytes(kube, namespace, vs))
    router.set_mirror_percent(0.5)
    assert rv(_get_vs_bytes(kube, namespace, vs)) == version  # idempotent

    router.set_mirror_percent(0)
    assert _canonical_minus_weights(_get_vs_bytes(kube, namespace, vs)) == (
        _canonical_minus_weights(before)
    )
    assert router.status().mirror_percent == 0.0


def test_a_users_mirror_is_not_overwritten(kube: KubeEnv, namespace: str) -> None:
    spec = _vs_spec()
    spec["http"][2]["mirror"] = {"host": "audit.fraud.svc"}
    spec["http"][2]["mirrorPercentage"] = {"value": 1.0}
    _create_vs(kube, namespace, "audited", spec)
    router = IstioRouter(kube.api_client, namespace, "audited", STABLE, CANARY)
    version = rv(_get_vs_bytes(kube, namespace, "audited"))
    assert router.status().mirror_percent == 0.0  # not a mirror to the canary
    with pytest.raises(RoutingError, match=r"already mirrors to audit\.fraud\.svc"):
        router.set_mirror_percent(10)
    router.set_mirror_percent(0)  # turning canaryd's mirror off leaves theirs alone
    assert rv(_get_vs_bytes(kube, namespace, "audited")) == version
