"""GatewayRouter against the upstream Gateway API HTTPRoute CRD (v1.6.1, standard channel).

Only the two weights of the chosen rule (and, for a shadow phase, canaryd's RequestMirror
filter on that rule) ever change; everything else comes back from the apiserver byte for byte.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from canaryd.errors import NotFoundError, RoutingError
from canaryd.kube import raw_request
from canaryd.policy.loader import load_policies_text
from canaryd.routing.factory import router_for_policy
from canaryd.routing.gateway import GatewayRouter, ServiceRef

from .conftest import REPO, ConcurrentWriter, KubeEnv, as_json, rv

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
STABLE = ServiceRef("fraud-v1-predictor", 80)
CANARY = ServiceRef("fraud-v2-predictor", 80)


def _route_spec(stable_weight: int | None = 90, canary_weight: int | None = 10) -> dict:
    stable: dict[str, Any] = {"name": STABLE.name, "port": 80}
    canary: dict[str, Any] = {"name": CANARY.name, "port": 80}
    if stable_weight is not None:
        stable["weight"] = stable_weight
    if canary_weight is not None:
        canary["weight"] = canary_weight
    return {
        "parentRefs": [{"name": "kserve-ingress-gateway", "namespace": "kserve"}],
        "hostnames": ["fraud.example.com"],
        "rules": [
            {
                # The seed's case: testers pin themselves to v2 with a header. Never changes.
                "name": "testers",
                "matches": [{"headers": [{"name": "version", "value": "v2"}]}],
                "filters": [
                    {
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"set": [{"name": "x-route", "value": "testers"}]},
                    }
                ],
                "backendRefs": [{"name": CANARY.name, "port": 80}],
            },
            {
                # The weighted rule: a path match, both backends, a filter and timeouts.
                "name": "main",
                "matches": [{"path": {"type": "PathPrefix", "value": "/v1/models/fraud"}}],
                "filters": [
                    {
                        "type": "ResponseHeaderModifier",
                        "responseHeaderModifier": {"add": [{"name": "x-split", "value": "1"}]},
                    }
                ],
                "backendRefs": [stable, canary],
                "timeouts": {"request": "10s", "backendRequest": "8s"},
            },
            {"name": "legacy", "backendRefs": [{"name": "legacy", "port": 8080}]},
        ],
    }


def _create(
    kube: KubeEnv,
    namespace: str,
    name: str,
    spec: dict,
    *,
    owners: list | None = None,
    accepted: str | None = "True",
) -> dict:
    meta: dict = {"name": name, "namespace": namespace, "labels": {"app": "fraud"}}
    if owners:
        meta["ownerReferences"] = owners
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HTTPRoute", "metadata": meta, "spec": spec}
    obj = as_json(
        kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    )
    if accepted is not None:
        obj = set_accepted(kube.custom, namespace, name, accepted)
    return obj


def set_accepted(custom: k8s.CustomObjectsApi, namespace: str, name: str, accepted: str) -> dict:
    """Play the Gateway controller: report the route on its parent (status subresource)."""
    obj = as_json(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    gen = obj["metadata"]["generation"]
    reason = "Accepted" if accepted == "True" else "NotAllowedByListeners"

    def cond(kind: str, status: str, why: str) -> dict:
        return {
            "type": kind,
            "status": status,
            "reason": why,
            "message": f"{kind} {status}",
            "observedGeneration": gen,
            "lastTransitionTime": "2026-01-05T10:00:00Z",
        }

    obj["status"] = {
        "parents": [
            {
                "parentRef": {
                    "group": GROUP,
                    "kind": "Gateway",
                    "name": "kserve-ingress-gateway",
                    "namespace": "kserve",
                },
                "controllerName": "istio.io/gateway-controller",
                "conditions": [
                    cond("Accepted", accepted, reason),
                    cond("ResolvedRefs", "True", "ResolvedRefs"),
                ],
            }
        ]
    }
    return as_json(
        custom.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, obj)
    )


def _get(kube: KubeEnv, namespace: str, name: str) -> dict:
    return as_json(
        kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    )


def _weights(obj: dict, rule: int = 1) -> tuple[int, int]:
    refs = obj["spec"]["rules"][rule]["backendRefs"]
    return refs[0]["weight"], refs[1]["weight"]


def _canonical(obj: dict, *, weights: bool = False, rule: int = 1) -> str:
    """The whole object as canonical JSON without the write bookkeeping; with ``weights`` the
    two managed weights are blanked too."""
    o = copy.deepcopy(obj)
    for key in ("resourceVersion", "generation", "managedFields"):
        o["metadata"].pop(key, None)
    o.pop("status", None)
    if weights:
        for ref in o["spec"]["rules"][rule]["backendRefs"]:
            ref["weight"] = "<managed>"
    return json.dumps(o, sort_keys=True, separators=(",", ":"))


def _router(kube: KubeEnv, namespace: str, name: str = "fraud", **kw: Any) -> GatewayRouter:
    kw.setdefault("rule_name", "main")
    return GatewayRouter(kube.api_client, namespace, name, STABLE, CANARY, **kw)


@pytest.fixture
def route(kube: KubeEnv, namespace: str) -> str:
    _create(kube, namespace, "fraud", _route_spec())
    return "fraud"


def test_the_upstream_crd_is_in_use(kube: KubeEnv) -> None:
    crd = as_json(
        kube.custom.get_cluster_custom_object(
            "apiextensions.k8s.io", "v1", "customresourcedefinitions", f"{PLURAL}.{GROUP}"
        )
    )
    ours = yaml.safe_load(
        (
            REPO / "tests" / "fixtures" / "crds" / "gateway.networking.k8s.io_httproutes.yaml"
        ).read_text()
    )
    annotations = crd["metadata"]["annotations"]
    assert annotations["gateway.networking.k8s.io/bundle-version"] == "v1.6.1"
    assert annotations["gateway.networking.k8s.io/channel"] == "standard"
    assert crd["spec"]["versions"] == ours["spec"]["versions"]


def test_start_step_promote_rollback_touch_only_the_weights(
    kube: KubeEnv, namespace: str, route: str
) -> None:
    router = _router(kube, namespace)
    assert router.resource.version == "v1"  # from API discovery
    before = _get(kube, namespace, route)
    st = router.status()
    assert (st.stable_revision, st.canary_revision, st.canary_percent) == (
        STABLE.name,
        CANARY.name,
        10,
    )
    assert st.ready and st.mirror_percent == 0.0

    for action, expected in (
        (lambda: router.set_canary_percent(10), (90, 10)),  # start: already 90/10, no write
        (lambda: router.set_canary_percent(25), (75, 25)),  # step
        (lambda: router.set_canary_percent(50), (50, 50)),
        (router.promote, (0, 100)),  # 100 % onto the new backend
        (router.rollback, (100, 0)),
    ):
        action()
        obj = _get(kube, namespace, route)
        assert _weights(obj) == expected
        assert _canonical(obj, weights=True) == _canonical(before, weights=True)
        # The header rule, the other rule, parentRefs, filters, timeouts: byte for byte.
        assert obj["spec"]["rules"][0] == before["spec"]["rules"][0]
        assert obj["spec"]["rules"][2] == before["spec"]["rules"][2]
        assert obj["spec"]["parentRefs"] == before["spec"]["parentRefs"]
        assert router.status().canary_percent == expected[1]


def test_repeating_a_decision_writes_nothing(kube: KubeEnv, namespace: str, route: str) -> None:
    router = _router(kube, namespace)
    version = rv(_get(kube, namespace, route))
    router.set_canary_percent(10)  # the manifest's 90/10 is 10 % already
    router.rollback()
    version = rv(_get(kube, namespace, route))
    router.rollback()
    router.set_canary_percent(0)
    assert rv(_get(kube, namespace, route)) == version


@pytest.mark.parametrize(
    ("stable_w", "canary_w", "percent", "exact"),
    [
        (900, 100, 10, True),
        (3, 1, 25, True),
        (1, 2, 67, False),  # 66.67 %
        (None, None, 50, True),  # the CRD's default weight 1 on both
        (0, 7, 100, True),
        (1_000_000, 1, 1, False),  # 0.0001 %: some traffic, never reported as 0
        (1, 1_000_000, 99, False),
        (5, 0, 0, True),
    ],
)
def test_arbitrary_relative_weights_are_read_correctly(
    kube: KubeEnv,
    namespace: str,
    stable_w: int | None,
    canary_w: int | None,
    percent: int,
    exact: bool,
) -> None:
    _create(kube, namespace, "odd", _route_spec(stable_w, canary_w))
    router = _router(kube, namespace, "odd")
    st = router.status()
    assert st.canary_percent == percent, st.message
    assert ("canary share" in st.message) is (not exact)
    # Writing the percent the weights already express exactly changes nothing...
    version = rv(_get(kube, namespace, "odd"))
    if exact:
        router.set_canary_percent(percent)
        assert rv(_get(kube, namespace, "odd")) == version
    # ...and any other percent is written as exact integer weights.
    router.set_canary_percent(30)
    obj = _get(kube, namespace, "odd")
    assert _weights(obj) == (70, 30)
    assert router.status().canary_percent == 30


def test_both_weights_zero_is_not_ready(kube: KubeEnv, namespace: str) -> None:
    _create(kube, namespace, "dark", _route_spec(0, 0))
    st = _router(kube, namespace, "dark").status()
    assert st.canary_percent == 0 and not st.ready
    assert "HTTP 500" in st.message


def test_rule_by_index_and_wrong_rules(kube: KubeEnv, namespace: str, route: str) -> None:
    _router(kube, namespace, rule_name=None, rule_index=1).set_canary_percent(40)
    assert _weights(_get(kube, namespace, route)) == (60, 40)
    with pytest.raises(RoutingError, match="no rules\\[7\\]"):
        _router(kube, namespace, rule_name=None, rule_index=7).status()
    with pytest.raises(RoutingError, match="expected one rule named 'nope'"):
        _router(kube, namespace, rule_name="nope").status()
    # The header rule has one backend only: not a weighted pair.
    with pytest.raises(RoutingError, match="expected exactly two backendRefs"):
        _router(kube, namespace, rule_name="testers").set_canary_percent(5)
    other = GatewayRouter(
        kube.api_client, namespace, route, STABLE, ServiceRef(CANARY.name, 8080), rule_name="main"
    )
    with pytest.raises(RoutingError, match="fraud-v2-predictor:8080"):
        other.status()
    assert _weights(_get(kube, namespace, route)) == (60, 40)


def test_a_route_not_accepted_is_refused(kube: KubeEnv, namespace: str) -> None:
    _create(kube, namespace, "rejected", _route_spec(), accepted="False")
    router = _router(kube, namespace, "rejected")
    version = rv(_get(kube, namespace, "rejected"))
    st = router.status()
    assert not st.ready and "Accepted=False" in st.message
    for send_traffic in (
        lambda: router.set_canary_percent(50),
        router.promote,
        lambda: router.set_mirror_percent(10),
    ):
        with pytest.raises(RoutingError, match=r"not accepted by its Gateway.*Accepted=False"):
            send_traffic()
    assert rv(_get(kube, namespace, "rejected")) == version
    # Taking traffic away still works: the route is safe whenever it is accepted again.
    router.rollback()
    assert _weights(_get(kube, namespace, "rejected")) == (100, 0)
    set_accepted(kube.custom, namespace, "rejected", "True")
    router.set_canary_percent(20)
    assert _weights(_get(kube, namespace, "rejected")) == (80, 20)


def test_a_route_no_gateway_reported_on_is_refused(kube: KubeEnv, namespace: str) -> None:
    _create(kube, namespace, "fresh", _route_spec(), accepted=None)
    with pytest.raises(RoutingError, match=r"status\.parents is empty"):
        _router(kube, namespace, "fresh").set_canary_percent(20)


@pytest.mark.parametrize(
    ("api_version", "kind", "controller"),
    [
        ("serving.kserve.io/v1beta1", "InferenceService", True),
        ("example.com/v1", "Platform", True),  # any controller owner
        ("serving.kserve.io/v1beta1", "InferenceService", False),
    ],
)
def test_a_route_owned_by_a_controller_is_refused(
    kube: KubeEnv, namespace: str, api_version: str, kind: str, controller: bool
) -> None:
    owner = {
        "apiVersion": api_version,
        "kind": kind,
        "name": "fraud",
        "uid": "5b0a4d4e-0000-4000-8000-000000000001",
        "controller": controller,
    }
    _create(kube, namespace, "owned", _route_spec(), owners=[owner])
    router = _router(kube, namespace, "owned")
    version = rv(_get(kube, namespace, "owned"))
    for write in (lambda: router.set_canary_percent(50), router.promote, router.rollback):
        with pytest.raises(RoutingError, match=f"owned by {kind}"):
            write()
    assert rv(_get(kube, namespace, "owned")) == version
    assert router.status().canary_percent == 10  # reading is fine


def test_an_owner_that_is_not_a_controller_is_fine(kube: KubeEnv, namespace: str) -> None:
    owner = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "name": "fraud",
        "uid": "5b0a4d4e-0000-4000-8000-000000000002",
    }
    _create(kube, namespace, "gc-owned", _route_spec(), owners=[owner])
    _router(kube, namespace, "gc-owned").set_canary_percent(30)
    assert _weights(_get(kube, namespace, "gc-owned")) == (70, 30)


def _raw_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def test_a_409_is_resolved_by_rereading(kube: KubeEnv, namespace: str, route: str) -> None:
    other = kube.new_client()

    def bump() -> None:  # the owner edits the timeouts meanwhile
        obj = raw_request(other, "GET", _raw_path(namespace, route))
        obj["spec"]["rules"][1]["timeouts"]["request"] = "20s"
        raw_request(other, "PUT", _raw_path(namespace, route), body=obj)

    api = ConcurrentWriter(kube.api_client, bump)
    GatewayRouter(api, namespace, route, STABLE, CANARY, rule_name="main").set_canary_percent(50)
    assert api.conflicts == 1 and api.patch_calls == 2
    obj = _get(kube, namespace, route)
    assert _weights(obj) == (50, 50)
    assert obj["spec"]["rules"][1]["timeouts"]["request"] == "20s"  # their write survived
    other.close()


def test_a_409_re_decides(kube: KubeEnv, namespace: str, route: str) -> None:
    """Between the read and the write the Gateway rejects the route: the re-read refuses."""
    other_client = kube.new_client()

    def reject() -> None:
        set_accepted(k8s.CustomObjectsApi(other_client), namespace, route, "False")

    api = ConcurrentWriter(kube.api_client, reject)
    router = GatewayRouter(api, namespace, route, STABLE, CANARY, rule_name="main")
    with pytest.raises(RoutingError, match="not accepted"):
        router.set_canary_percent(50)
    assert api.conflicts == 1
    assert _weights(_get(kube, namespace, route)) == (90, 10)
    other_client.close()


def test_mirror_on_and_off(kube: KubeEnv, namespace: str, route: str) -> None:
    router = _router(kube, namespace)
    router.rollback()  # shadow: no user traffic to the canary
    before = _get(kube, namespace, route)

    router.set_mirror_percent(10)
    obj = _get(kube, namespace, route)
    filters = obj["spec"]["rules"][1]["filters"]
    assert filters[0] == before["spec"]["rules"][1]["filters"][0]  # the user's filter stays first
    assert filters[1] == {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": CANARY.name, "port": 80},
            "percent": 10,
        },
    }
    assert router.status().mirror_percent == 10.0
    assert _weights(obj) == (100, 0)

    router.set_mirror_percent(12.5)  # not whole: a fraction, 125/1000 = 1/8
    obj = _get(kube, namespace, route)
    mirror = obj["spec"]["rules"][1]["filters"][1]["requestMirror"]
    assert "percent" not in mirror
    assert mirror["fraction"] == {"numerator": 1, "denominator": 8}
    assert router.status().mirror_percent == 12.5
    version = rv(obj)
    router.set_mirror_percent(12.5)
    assert rv(_get(kube, namespace, route)) == version  # idempotent

    router.set_mirror_percent(0)
    after = _get(kube, namespace, route)
    assert _canonical(after) == _canonical(before)  # exactly as before the shadow phase
    assert router.status().mirror_percent == 0.0


def test_mirror_leaves_a_users_mirror_alone(kube: KubeEnv, namespace: str) -> None:
    spec = _route_spec()
    spec["rules"][1]["filters"].append(
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": "audit-log", "port": 9000}, "percent": 1},
        }
    )
    _create(kube, namespace, "audited", spec)
    router = _router(kube, namespace, "audited")
    before = _get(kube, namespace, "audited")
    router.set_mirror_percent(50)
    filters = _get(kube, namespace, "audited")["spec"]["rules"][1]["filters"]
    assert [f["requestMirror"]["backendRef"]["name"] for f in filters[1:]] == [
        "audit-log",
        CANARY.name,
    ]
    assert router.status().mirror_percent == 50.0
    router.set_mirror_percent(0)
    assert _canonical(_get(kube, namespace, "audited")) == _canonical(before)


def test_the_example_policy_drives_the_example_route(kube: KubeEnv, namespace: str) -> None:
    """policies/gateway-api.yaml on policies/examples/credit-httproute.yaml.txt, as shipped."""
    examples = REPO / "policies"
    manifest = yaml.safe_load((examples / "examples" / "credit-httproute.yaml.txt").read_text())
    manifest["metadata"]["namespace"] = namespace
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    set_accepted(kube.custom, namespace, "credit", "True")
    doc = yaml.safe_load((examples / "gateway-api.yaml").read_text())
    doc["spec"]["target"]["namespace"] = namespace
    policy = load_policies_text(yaml.safe_dump(doc), "gateway-api.yaml")[0].policy
    router = router_for_policy(policy, kube.api_client)
    assert isinstance(router, GatewayRouter)
    assert (router.namespace, router.name, router.rule_name) == (namespace, "credit", "main")
    before = _get(kube, namespace, "credit")
    assert router.status().canary_percent == 10
    router.set_canary_percent(25)
    router.promote()
    after = _get(kube, namespace, "credit")
    assert _weights(after) == (0, 100)
    assert after["spec"]["rules"][0] == before["spec"]["rules"][0]  # the header rule
    assert _canonical(after, weights=True) == _canonical(before, weights=True)


def test_deleted(kube: KubeEnv, namespace: str, route: str) -> None:
    router = _router(kube, namespace)
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, route)
    with pytest.raises(NotFoundError):
        router.rollback()
