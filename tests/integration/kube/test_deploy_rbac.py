"""deploy/ on a real apiserver: rendered by a real kustomize (``scripts/kustomize``), every
rendered object server-side dry-run (also with the optional ServiceMonitor / PodMonitor
components), then applied, and the RBAC it grants exercised with a real ServiceAccount token
(TokenRequest) — what works and what is 403."""

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
from tests.deploy_render import apply, configured_deploy, daemon_launch, one, render

from .conftest import REPO, KubeEnv, apply_crds, create_isvc, get_isvc, sample_predictor

pytestmark = pytest.mark.integration

DEPLOY = REPO / "deploy"
SYSTEM_NS = "canaryd-system"
WATCHED_NS = "models"
OTHER_NS = "not-watched"


POLICIES = REPO / "policies"
STANDIN_CRDS = REPO / "tests" / "fixtures" / "crds-standin"


def _docs() -> list[JSON]:
    """What ``kubectl apply -k deploy/`` sends."""
    return render(DEPLOY)


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
    dry_run_results: list[tuple[str, str]]
    token_audiences: list[str]


@pytest.fixture(scope="module")
def deployed(kube: KubeEnv) -> Iterator[Deployed]:
    admin = kube.api_client
    docs = _docs()
    results = []
    # 1. Server-side dry run. Namespaces first, then apply them for real, because a dry-run of a
    #    namespaced object needs its namespace. (Apply, not create: the end-to-end install test
    #    shares this apiserver and may have applied deploy/ already.)
    for doc in docs:
        if doc["kind"] == "Namespace":
            out = apply(admin, doc, dry_run=True)
            results.append((doc["kind"], out["metadata"]["name"]))
    for name in (SYSTEM_NS, WATCHED_NS, OTHER_NS):
        _ensure_namespace(admin, name)
    for doc in docs:
        if doc["kind"] != "Namespace":
            out = apply(admin, doc, dry_run=True)
            results.append((doc["kind"], out["metadata"]["name"]))
    # 2. Apply for real (no controllers run, so the Deployment never starts a pod).
    for doc in docs:
        if doc["kind"] != "Namespace":
            apply(admin, doc)

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


def test_every_rendered_object_passes_server_side_dry_run(deployed: Deployed) -> None:
    kinds = sorted(
        (k, n.rsplit("-", 1)[0] if k in ("ConfigMap", "Secret") else n)
        for k, n in deployed.dry_run_results
    )
    assert kinds == [
        ("ConfigMap", "canaryd-policies"),
        ("ConfigMap", "canaryd-prometheus"),
        ("Deployment", "canaryd"),
        ("Namespace", "canaryd-system"),
        ("Role", "canaryd"),
        ("Role", "canaryd-leader-election"),
        ("RoleBinding", "canaryd"),
        ("RoleBinding", "canaryd-leader-election"),
        ("Secret", "canaryd-credentials"),
        ("Secret", "canaryd-prometheus-auth"),
        ("ServiceAccount", "canaryd"),
    ]


def test_the_monitoring_components_pass_server_side_dry_run(
    kube: KubeEnv, deployed: Deployed, tmp_path: Path
) -> None:
    """With the Prometheus Operator's kinds known to the apiserver (stand-in CRDs, see their
    README), the ServiceMonitor and PodMonitor components render and dry-run cleanly."""
    apply_crds(kube.api_client, STANDIN_CRDS)
    src = configured_deploy(
        tmp_path,
        settings={"CANARYD_PROMETHEUS_URL": "http://prometheus.monitoring.svc:9090"},
        components=["components/servicemonitor", "components/podmonitor"],
    )
    docs = render(src)
    extra = {d["kind"]: d for d in docs if d["kind"] in ("Service", "ServiceMonitor", "PodMonitor")}
    assert set(extra) == {"Service", "ServiceMonitor", "PodMonitor"}
    for doc in extra.values():
        apply(kube.api_client, doc, dry_run=True)
    pod_labels = one(docs, "Deployment", "canaryd")["spec"]["template"]["metadata"]["labels"]
    service = extra["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    sm = extra["ServiceMonitor"]["spec"]
    assert sm["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["endpoints"] == [{"port": "http-metrics", "path": "/metrics", "interval": "30s"}]
    pm = extra["PodMonitor"]["spec"]
    assert pm["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["podMetricsEndpoints"][0]["port"] == "http-metrics"


def test_every_base_manifest_is_in_the_base_kustomization() -> None:
    kustomization = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert "namespace" not in kustomization  # it would move the watched-namespace Role
    top = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert "namespace" not in top and top["resources"] == ["base", "../policies"]


def test_the_policies_configmap_is_every_policy_file_verbatim() -> None:
    """The generator lists exactly policies/*.yaml, and the ConfigMap holds them byte for byte:
    a new policy file that is not listed, or a listed one that is gone, fails here."""
    generator = yaml.safe_load((POLICIES / "Kustomization").read_text())["configMapGenerator"]
    (gen,) = generator
    assert sorted(gen["files"]) == sorted(p.name for p in POLICIES.glob("*.yaml"))
    cm = one(_docs(), "ConfigMap", "canaryd-policies")
    assert cm["metadata"]["namespace"] == SYSTEM_NS
    assert cm["data"] == {p.name: p.read_text() for p in POLICIES.glob("*.yaml")}
    deployment = one(_docs(), "Deployment", "canaryd")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["policies"]["configMap"]["name"] == cm["metadata"]["name"]  # with its hash


def test_deployment_is_hardened() -> None:
    deployment = one(_docs(), "Deployment", "canaryd")
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
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/etc/canaryd/policies", "/etc/canaryd/prometheus", "/etc/canaryd/credentials"):
        assert mounts[path]["readOnly"] is True


def test_the_prometheus_url_is_set_in_one_place(tmp_path: Path) -> None:
    """As shipped, the Deployment's environment has the default URL from
    deploy/kustomization.yaml; configured there, it has the user's settings and files."""
    shipped = daemon_launch(_docs(), tmp_path / "shipped")
    assert shipped.env["CANARYD_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring.svc:9090"
    src = configured_deploy(
        tmp_path / "src",
        settings={
            "CANARYD_PROMETHEUS_URL": "https://thanos.monitoring.svc:9091",
            "CANARYD_PROMETHEUS_BEARER_TOKEN_FILE": "/etc/canaryd/prometheus/token",
            "CANARYD_PROMETHEUS_HEADERS": "X-Scope-OrgID: team-a",
        },
        prometheus_files={"token": b"sa-token\n"},
    )
    launch = daemon_launch(render(src), tmp_path / "pod")
    assert launch.env["CANARYD_PROMETHEUS_URL"] == "https://thanos.monitoring.svc:9091"
    assert launch.env["CANARYD_PROMETHEUS_HEADERS"] == "X-Scope-OrgID: team-a"
    token = Path(launch.env["CANARYD_PROMETHEUS_BEARER_TOKEN_FILE"])
    assert token.read_bytes() == b"sa-token\n"
    assert token.parent == launch.mounts["/etc/canaryd/prometheus"]
    assert launch.args == ["run", "--policies", str(launch.mounts["/etc/canaryd/policies"])]


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

    # Leader-election Lease in canaryd-system: create, get, update. (A daemon started from
    # deploy/ earlier in the session, by the end-to-end install test, may have left its Lease.)
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NS}/leases"
    try:
        raw_request(kube.api_client, "DELETE", f"{leases}/canaryd-leader")
    except ApiError as err:
        if err.status != 404:
            raise
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


def test_the_shipped_policies_load_from_the_configmap() -> None:
    """The ConfigMap's policies stay loadable as canaryd/policy evolves."""
    from canaryd.policy.loader import load_policies_text

    cm = one(_docs(), "ConfigMap", "canaryd-policies")
    names = []
    for key, text in cm["data"].items():
        names += [lp.policy.name for lp in load_policies_text(text, f"canaryd-policies:{key}")]
    assert len(names) == len(set(names)) >= len(cm["data"])
