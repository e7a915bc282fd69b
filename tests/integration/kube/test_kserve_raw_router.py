"""KServeRawRouter (Standard mode, spec.canary[]) against the upstream v0.20 CRD."""

from __future__ import annotations

import copy

import pytest
from kubernetes.client.exceptions import ApiException

from canaryd.errors import NotFoundError, RoutingError
from canaryd.kube import raw_request
from canaryd.routing.kserve_raw import KServeRawRouter

from .conftest import (
    ISVC,
    ConcurrentWriter,
    KubeEnv,
    create_isvc,
    get_isvc,
    rv,
    sample_predictor,
    set_isvc_status,
)

pytestmark = pytest.mark.integration


def _canary_predictor() -> dict:
    new = sample_predictor("v3")
    del new["maxReplicas"]  # the old predictor has it: promote must not keep it
    new["minReplicas"] = 2
    new["model"]["runtime"] = "kserve-sklearnserver"
    return new


@pytest.fixture
def isvc(kube: KubeEnv, namespace: str) -> str:
    spec = {
        "predictor": sample_predictor("v2"),
        "canary": [{"predictor": _canary_predictor(), "trafficPercent": 0}],
    }
    create_isvc(kube, namespace, "raw", spec)
    return "raw"


def test_start_step_promote(kube: KubeEnv, namespace: str, isvc: str) -> None:
    router = KServeRawRouter(kube.api_client, namespace, isvc)
    before = get_isvc(kube, namespace, isvc)

    for percent in (10, 25):
        router.set_canary_percent(percent)
        obj = get_isvc(kube, namespace, isvc)
        expected = copy.deepcopy(before["spec"])
        expected["canary"][0]["trafficPercent"] = percent
        assert obj["spec"] == expected
        assert obj["metadata"]["labels"] == before["metadata"]["labels"]
        assert router.status().canary_percent == percent

    router.promote()
    obj = get_isvc(kube, namespace, isvc)
    assert obj["spec"] == {"predictor": before["spec"]["canary"][0]["predictor"]}
    assert "maxReplicas" not in obj["spec"]["predictor"]
    assert router.status().canary_percent is None

    version = rv(obj)
    router.promote()  # idempotent: nothing left to promote
    router.rollback()
    router.set_canary_percent(0)
    assert rv(get_isvc(kube, namespace, isvc)) == version
    with pytest.raises(RoutingError, match=r"no spec\.canary entry"):
        router.set_canary_percent(10)


def test_rollback_drops_the_entry(kube: KubeEnv, namespace: str, isvc: str) -> None:
    router = KServeRawRouter(kube.api_client, namespace, isvc)
    before = get_isvc(kube, namespace, isvc)
    router.set_canary_percent(10)
    router.rollback()
    obj = get_isvc(kube, namespace, isvc)
    assert obj["spec"] == {"predictor": before["spec"]["predictor"]}
    version = rv(obj)
    router.rollback()
    assert rv(get_isvc(kube, namespace, isvc)) == version


def test_idempotent_set(kube: KubeEnv, namespace: str, isvc: str) -> None:
    router = KServeRawRouter(kube.api_client, namespace, isvc)
    router.set_canary_percent(40)
    version = rv(get_isvc(kube, namespace, isvc))
    router.set_canary_percent(40)
    assert rv(get_isvc(kube, namespace, isvc)) == version


def test_status_from_canary_statuses(kube: KubeEnv, namespace: str, isvc: str) -> None:
    router = KServeRawRouter(kube.api_client, namespace, isvc)
    router.set_canary_percent(10)
    set_isvc_status(
        kube,
        namespace,
        isvc,
        {
            "observedGeneration": 2,
            "deploymentMode": "Standard",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ],
            "components": {"predictor": {"latestReadyRevision": "raw-predictor-v2"}},
            "canaryStatuses": [{"name": "raw-canary-0", "ready": True, "trafficPercent": 10}],
        },
    )
    st = router.status()
    assert (st.stable_revision, st.canary_revision, st.canary_percent) == (
        "raw-predictor-v2",
        "raw-canary-0",
        10,
    )
    assert st.ready and st.generation == 2


def test_crd_bounds_and_router_check(kube: KubeEnv, namespace: str, isvc: str) -> None:
    """The v0.20 CRD bounds trafficPercent to 0..100 (422); the router refuses before that."""
    obj = get_isvc(kube, namespace, isvc)
    obj["spec"]["canary"][0]["trafficPercent"] = 101
    with pytest.raises(ApiException) as info:
        kube.custom.replace_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], isvc, obj)
    assert info.value.status == 422
    with pytest.raises(RoutingError):
        KServeRawRouter(kube.api_client, namespace, isvc).set_canary_percent(101)


def test_several_entries_need_an_index(kube: KubeEnv, namespace: str) -> None:
    spec = {
        "predictor": sample_predictor("v1"),
        "canary": [
            {"predictor": sample_predictor("a"), "trafficPercent": 0},
            {"predictor": sample_predictor("b"), "trafficPercent": 0},
        ],
    }
    create_isvc(kube, namespace, "two", spec)
    with pytest.raises(RoutingError, match="canary_index"):
        KServeRawRouter(kube.api_client, namespace, "two").set_canary_percent(10)
    KServeRawRouter(kube.api_client, namespace, "two", canary_index=1).set_canary_percent(20)
    obj = get_isvc(kube, namespace, "two")
    assert [c["trafficPercent"] for c in obj["spec"]["canary"]] == [0, 20]


def test_conflict_then_correct(kube: KubeEnv, namespace: str, isvc: str) -> None:
    other = kube.new_client()

    def bump() -> None:
        raw_request(
            other,
            "PATCH",
            f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{isvc}",
            body={"metadata": {"labels": {"bumped": "yes"}}},
            content_type="application/merge-patch+json",
        )

    api = ConcurrentWriter(kube.api_client, bump)
    KServeRawRouter(api, namespace, isvc).promote()
    assert api.conflicts == 1
    obj = get_isvc(kube, namespace, isvc)
    assert obj["metadata"]["labels"]["bumped"] == "yes"
    assert obj["spec"]["predictor"] == _canary_predictor() and "canary" not in obj["spec"]
    other.close()


def test_not_found(kube: KubeEnv, namespace: str) -> None:
    with pytest.raises(NotFoundError):
        KServeRawRouter(kube.api_client, namespace, "missing").promote()
