"""deploy/ on a real apiserver: server-side dry run of every manifest, then the RBAC it grants,
exercised with a real ServiceAccount token (TokenRequest) — what works and what is 403."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from canaryd.kube import JSON, ApiError, bearer_token_client, raw_request
from canaryd.kube.events import EventRecorder
from canaryd.reasons import Reason
from canaryd.routing.gateway import GatewayRouter, ServiceRef
from canaryd.routing.istio import IstioRouter
from canaryd.routing.kserve import KServeRouter
from canaryd.state.base import RolloutKey
from canaryd.state.kubernetes import KubernetesStateStore

from .conftest import REPO, KubeEnv, create_isvc, get_isvc, sample_predictor

pytestmark = pytest.mark.integration

DEPLOY = REPO / "deploy"
SYSTEM_NS = "canaryd-system"
WATCHED_NS = "models"
OTHER_NS = "not-watched"


def _docs() -> list[tuple[Path, JSON]]:
    out: list[tuple[Path, JSON]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def _collection_path(api_client: k8s.ApiClient, doc: JSON) -> str:
    """The collection URL of ``doc``'s kind, found through API discovery."""
    api_version = doc["apiVersion"]
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    resources = raw_request(api_client, "GET", prefix)["resources"]
    (res,) = [r for r in resources if r["kind"] == doc["kind"] and "/" not in r["name"]]
    if res["namespaced"]:
        return f"{prefix}/namespaces/{doc['metadata']['namespace']}/{res['name']}"
    return f"{prefix}/{res['name']}"


def _create(api_client: k8s.ApiClient, doc: JSON, dry_run: bool = False) -> JSON:
    query = {"dryRun": "All", "fieldValidation": "Strict"} if dry_run else {}
    return raw_request(api_client, "POST", _collection_path(api_client, doc), body=doc, query=query)


def _ensure_namespace(api_client: k8s.ApiClient, name: str) -> None:
    try:
        raw_request(
            api_client,
            "POST",
            "/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
    except ApiError as err:
        if err.status != 409:
            raise


@dataclass
class Deployed:
    sa_client: k8s.ApiClient
    dry_run_results: list[tuple[str, str, str]]
    token_audiences: list[str]


@pytest.fixture(scope="module")
def deployed(kube: KubeEnv) -> Iterator[Deployed]:
    admin = kube.api_client
    docs = _docs()
    results = []
    # 1. Server-side dry run. Namespaces first (they do not exist yet), then create them for
    #    real, because a dry-run create of a namespaced object needs its namespace.
    for path, doc in docs:
        if doc["kind"] == "Namespace":
            out = _create(admin, doc, dry_run=True)
            results.append((path.name, doc["kind"], out["metadata"]["name"]))
    for name in (SYSTEM_NS, WATCHED_NS, OTHER_NS):
        _ensure_namespace(admin, name)
    for path, doc in docs:
        if doc["kind"] != "Namespace":
            out = _create(admin, doc, dry_run=True)
            results.append((path.name, doc["kind"], out["metadata"]["name"]))
    # 2. Apply for real (no controllers run, so the Deployment never starts a pod).
    for _, doc in docs:
        if doc["kind"] != "Namespace":
            _create(admin, doc)

    # 3. Objects canaryd works on, in the watched and in a non-watched namespace.
    for ns in (WATCHED_NS, OTHER_NS):
        create_isvc(kube, ns, "iris", {"predictor": sample_predictor()})
        raw_request(
            admin,
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            body={"metadata": {"name": "model-creds"}, "stringData": {"key": "s3cr3t"}},
        )
    raw_request(
        admin,
        "POST",
        f"/apis/networking.istio.io/v1/namespaces/{WATCHED_NS}/virtualservices",
        body={
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "iris"},
            "spec": {
                "hosts": ["iris.example.com"],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": "iris-v1"}, "weight": 100},
                            {"destination": {"host": "iris-v2"}, "weight": 0},
                        ]
                    }
                ],
            },
        },
    )

    route = raw_request(
        admin,
        "POST",
        f"/apis/gateway.networking.k8s.io/v1/namespaces/{WATCHED_NS}/httproutes",
        body={
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "iris"},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "rules": [
                    {
                        "name": "main",
                        "backendRefs": [
                            {"name": "iris-v1", "port": 80, "weight": 100},
                            {"name": "iris-v2", "port": 80, "weight": 0},
                        ],
                    }
                ],
            },
        },
    )
    route["status"] = {
        "parents": [
            {
                "parentRef": {"name": "gw"},
                "controllerName": "example.com/gateway",
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "True",
                        "reason": "Accepted",
                        "message": "",
                        "lastTransitionTime": "2026-01-05T10:00:00Z",
                    }
                ],
            }
        ]
    }
    raw_request(
        admin,
        "PUT",
        f"/apis/gateway.networking.k8s.io/v1/namespaces/{WATCHED_NS}/httproutes/iris/status",
        body=route,
    )

    # 4. A token for the ServiceAccount, as the kubelet would mount it.
    token_request = k8s.CoreV1Api(admin).create_namespaced_service_account_token(
        "canaryd",
        SYSTEM_NS,
        k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )
    assert token_request.status is not None and token_request.status.token
    sa_client = bearer_token_client(kube.host, token_request.status.token, str(kube.ca_file))
    audiences = token_request.spec.audiences if token_request.spec else None
    yield Deployed(sa_client, results, list(audiences or []))
    sa_client.close()


def test_every_manifest_passes_server_side_dry_run(deployed: Deployed) -> None:
    kinds = sorted({(f, k) for f, k, _ in deployed.dry_run_results})
    assert kinds == [
        ("configmap-policies.yaml", "ConfigMap"),
        ("deployment.yaml", "Deployment"),
        ("namespace.yaml", "Namespace"),
        ("rbac.yaml", "Role"),
        ("rbac.yaml", "RoleBinding"),
        ("serviceaccount.yaml", "ServiceAccount"),
    ]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert "namespace" not in kustomization  # it would move the watched-namespace Role


def test_deployment_is_hardened() -> None:
    (deployment,) = [d for _, d in _docs() if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["args"] == ["run", "--policies", "/etc/canaryd/policies"]
    assert container["ports"] == [
        {"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert set(container["resources"]) == {"requests", "limits"}


def test_service_account_can_do_its_job(kube: KubeEnv, deployed: Deployed) -> None:
    sa = deployed.sa_client
    key = RolloutKey(WATCHED_NS, "iris")

    # InferenceService: get + patch (through the real router).
    router = KServeRouter(sa, WATCHED_NS, "iris")
    router.status()
    router.set_canary_percent(10)
    assert get_isvc(kube, WATCHED_NS, "iris")["spec"]["predictor"]["canaryTrafficPercent"] == 10
    raw_request(
        sa, "GET", f"/apis/serving.kserve.io/v1beta1/namespaces/{WATCHED_NS}/inferenceservices"
    )

    # VirtualService: discovery + get + patch.
    istio = IstioRouter(sa, WATCHED_NS, "iris", "iris-v1", "iris-v2")
    istio.set_canary_percent(20)
    assert istio.status().canary_percent == 20
    istio.set_mirror_percent(5)
    assert istio.status().mirror_percent == 5

    # HTTPRoute: discovery + get + patch (weights and a RequestMirror filter).
    gateway = GatewayRouter(
        sa,
        WATCHED_NS,
        "iris",
        ServiceRef("iris-v1", 80),
        ServiceRef("iris-v2", 80),
        rule_name="main",
    )
    gateway.set_mirror_percent(10)
    gateway.set_canary_percent(30)
    assert (gateway.status().canary_percent, gateway.status().mirror_percent) == (30, 10)

    # ConfigMap state: create (reads the isvc uid), get, update, delete.
    store = KubernetesStateStore(sa)
    version = store.save(key, {"step": 1}, None)
    store.save(key, {"step": 2}, version)
    loaded = store.load(key)
    assert loaded is not None and loaded.data == {"step": 2}
    store.delete(key)

    # Events.
    recorder = EventRecorder(sa, instance="canaryd-0")
    assert recorder.record(key, Reason.WEIGHT_CHANGED, "10% → 20%"), recorder.last_error

    # Leader-election Lease in canaryd-system: create, get, update.
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NS}/leases"
    lease = raw_request(
        sa,
        "POST",
        leases,
        body={
            "metadata": {"name": "canaryd-leader"},
            "spec": {"holderIdentity": "canaryd-0", "leaseDurationSeconds": 15},
        },
    )
    lease = raw_request(sa, "GET", f"{leases}/canaryd-leader")
    lease["spec"]["holderIdentity"] = "canaryd-1"
    raw_request(sa, "PUT", f"{leases}/canaryd-leader", body=lease)


def _status_of(call: Any) -> int:
    try:
        call()
    except ApiError as err:
        return int(err.status)
    return 200


@pytest.mark.parametrize(
    ("what", "method", "path", "body"),
    [
        ("read secrets", "GET", f"/api/v1/namespaces/{WATCHED_NS}/secrets/model-creds", None),
        ("list secrets", "GET", f"/api/v1/namespaces/{WATCHED_NS}/secrets", None),
        ("list own-ns secrets", "GET", f"/api/v1/namespaces/{SYSTEM_NS}/secrets", None),
        (
            "delete an InferenceService",
            "DELETE",
            f"/apis/serving.kserve.io/v1beta1/namespaces/{WATCHED_NS}/inferenceservices/iris",
            None,
        ),
        (
            "create an InferenceService",
            "POST",
            f"/apis/serving.kserve.io/v1beta1/namespaces/{WATCHED_NS}/inferenceservices",
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": "new"},
                "spec": {"predictor": {}},
            },
        ),
        (
            "patch an InferenceService in a non-watched namespace",
            "PATCH",
            f"/apis/serving.kserve.io/v1beta1/namespaces/{OTHER_NS}/inferenceservices/iris",
            {"spec": {"predictor": {"canaryTrafficPercent": 10}}},
        ),
        (
            "read an InferenceService in a non-watched namespace",
            "GET",
            f"/apis/serving.kserve.io/v1beta1/namespaces/{OTHER_NS}/inferenceservices/iris",
            None,
        ),
        (
            "create a ConfigMap in a non-watched namespace",
            "POST",
            f"/api/v1/namespaces/{OTHER_NS}/configmaps",
            {"metadata": {"name": "canaryd-iris"}, "data": {}},
        ),
        (
            "create an Event in a non-watched namespace",
            "POST",
            f"/api/v1/namespaces/{OTHER_NS}/events",
            {"metadata": {"name": "x"}, "involvedObject": {"namespace": OTHER_NS}},
        ),
        (
            "delete the leader Lease",
            "DELETE",
            f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NS}/leases/canaryd-leader",
            None,
        ),
        (
            "create a Lease in a watched namespace",
            "POST",
            f"/apis/coordination.k8s.io/v1/namespaces/{WATCHED_NS}/leases",
            {"metadata": {"name": "x"}, "spec": {}},
        ),
        ("list namespaces", "GET", "/api/v1/namespaces", None),
        (
            "write an HTTPRoute's status",
            "PATCH",
            f"/apis/gateway.networking.k8s.io/v1/namespaces/{WATCHED_NS}/httproutes/iris/status",
            {"status": {"parents": []}},
        ),
        (
            "create an HTTPRoute",
            "POST",
            f"/apis/gateway.networking.k8s.io/v1/namespaces/{WATCHED_NS}/httproutes",
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "x"},
                "spec": {},
            },
        ),
        (
            "edit its own Role",
            "PATCH",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{WATCHED_NS}/roles/canaryd",
            {"rules": []},
        ),
    ],
)
def test_service_account_is_forbidden(
    deployed: Deployed, what: str, method: str, path: str, body: JSON | None
) -> None:
    status = _status_of(
        lambda: raw_request(
            deployed.sa_client,
            method,
            path,
            body=body,
            content_type="application/merge-patch+json"
            if method == "PATCH"
            else "application/json",
        )
    )
    assert status == 403, f"{what}: expected 403, got {status}"


def test_example_policy_matches_the_policy_schema() -> None:
    """The ConfigMap's policy must stay loadable as canaryd/policy evolves."""
    from canaryd.policy.loader import load_policies_text

    (cm,) = [d for _, d in _docs() if d["kind"] == "ConfigMap"]
    for key, text in cm["data"].items():
        (loaded,) = load_policies_text(text, f"deploy/configmap-policies.yaml:{key}")
        assert loaded.policy.spec.target.namespace == WATCHED_NS
