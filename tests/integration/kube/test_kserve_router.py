"""KServeRouter (Serverless) against a real kube-apiserver with the upstream KServe CRD."""

from __future__ import annotations

import pytest

from canaryd.errors import NotFoundError, RoutingError
from canaryd.kube import raw_request
from canaryd.kube.events import EventRecorder
from canaryd.reasons import Reason
from canaryd.routing.kserve import KServeRouter
from canaryd.state.base import RolloutKey

from .conftest import (
    ISVC,
    ConcurrentWriter,
    KubeEnv,
    create_isvc,
    get_isvc,
    rv,
    sample_predictor,
    serverless_status,
    set_isvc_status,
    without_path,
)

pytestmark = pytest.mark.integration

FIELD = ("spec", "predictor", "canaryTrafficPercent")


def _serverless_status(stable: str, latest: str, canary_percent: int | None) -> dict:
    traffic = [{"revisionName": stable, "percent": 100, "latestRevision": False}]
    if canary_percent is not None and stable != latest:
        traffic = [
            {"revisionName": latest, "percent": canary_percent, "latestRevision": True},
            {"revisionName": stable, "percent": 100 - canary_percent, "latestRevision": False},
        ]
    status = serverless_status(stable, latest)
    status["components"]["predictor"].update(
        previousRolledoutRevision="iris-predictor-00000", traffic=traffic
    )
    return status


@pytest.fixture
def isvc(kube: KubeEnv, namespace: str) -> str:
    spec = {"predictor": sample_predictor("v2"), "transformer": {"minReplicas": 1}}
    create_isvc(kube, namespace, "iris", spec)
    return "iris"


def _spec_minus_field(obj: dict) -> dict:
    return without_path({"spec": obj["spec"], "labels": obj["metadata"].get("labels")}, FIELD)


def test_start_step_promote_rollback_only_touch_the_field(
    kube: KubeEnv, namespace: str, isvc: str
) -> None:
    router = KServeRouter(kube.api_client, namespace, isvc)
    before = get_isvc(kube, namespace, isvc)
    assert router.status().canary_percent is None

    router.set_canary_percent(10)  # start
    obj = get_isvc(kube, namespace, isvc)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert _spec_minus_field(obj) == _spec_minus_field(before)

    router.set_canary_percent(25)  # step
    obj = get_isvc(kube, namespace, isvc)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert _spec_minus_field(obj) == _spec_minus_field(before)
    assert router.status().canary_percent == 25

    router.promote()  # field removed (merge patch null)
    obj = get_isvc(kube, namespace, isvc)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert obj["spec"] == before["spec"]
    assert router.status().canary_percent is None

    router.set_canary_percent(10)  # a new canary...
    router.rollback()  # ...rolled back: 0 %, field kept so KServe stays on the old revision
    obj = get_isvc(kube, namespace, isvc)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert _spec_minus_field(obj) == _spec_minus_field(before)
    assert router.status().canary_percent == 0


def test_status_reads_revisions_generation_and_ready(
    kube: KubeEnv, namespace: str, isvc: str
) -> None:
    router = KServeRouter(kube.api_client, namespace, isvc)
    router.set_canary_percent(10)  # generation 2
    set_isvc_status(
        kube,
        namespace,
        isvc,
        _serverless_status("iris-predictor-00001", "iris-predictor-00002", 10),
    )
    st = router.status()
    assert st.stable_revision == "iris-predictor-00001"
    assert st.canary_revision == "iris-predictor-00002"
    assert st.canary_percent == 10
    assert (st.generation, st.observed_generation) == (2, 1)
    assert st.ready is False  # KServe has not observed generation 2 yet
    assert "iris-predictor-00002=10%" in st.message

    status = _serverless_status("iris-predictor-00001", "iris-predictor-00002", 10)
    status["observedGeneration"] = 2
    set_isvc_status(kube, namespace, isvc, status)
    st = router.status()
    assert st.ready is True and st.observed_generation == 2

    # The status write did not disturb the spec (status is a subresource).
    assert get_isvc(kube, namespace, isvc)["spec"]["predictor"]["canaryTrafficPercent"] == 10

    # Same revision rolled out and ready: no canary.
    status = _serverless_status("iris-predictor-00002", "iris-predictor-00002", None)
    status["observedGeneration"] = 2
    set_isvc_status(kube, namespace, isvc, status)
    assert router.status().canary_revision is None


def test_repeating_a_decision_writes_nothing(kube: KubeEnv, namespace: str, isvc: str) -> None:
    router = KServeRouter(kube.api_client, namespace, isvc)
    for action in (
        lambda: router.set_canary_percent(10),
        lambda: router.set_canary_percent(25),
        router.rollback,
        router.promote,
    ):
        action()
        version = rv(get_isvc(kube, namespace, isvc))
        action()
        action()
        assert rv(get_isvc(kube, namespace, isvc)) == version


@pytest.mark.parametrize("bad", [-1, 101, 12.5, True, "10"])
def test_out_of_range_percent_is_refused_without_a_write(
    kube: KubeEnv, namespace: str, isvc: str, bad: object
) -> None:
    router = KServeRouter(kube.api_client, namespace, isvc)
    version = rv(get_isvc(kube, namespace, isvc))
    with pytest.raises(RoutingError):
        router.set_canary_percent(bad)  # type: ignore[arg-type]
    assert rv(get_isvc(kube, namespace, isvc)) == version


def test_the_crd_itself_accepts_out_of_range(kube: KubeEnv, namespace: str, isvc: str) -> None:
    """Why canaryd checks 0..100 itself: the upstream CRD does not bound the field."""
    kube.custom.patch_namespaced_custom_object(
        *ISVC[:2], namespace, ISVC[2], isvc, {"spec": {"predictor": {"canaryTrafficPercent": 250}}}
    )
    assert get_isvc(kube, namespace, isvc)["spec"]["predictor"]["canaryTrafficPercent"] == 250


def test_conflict_rereads_and_keeps_the_other_write(
    kube: KubeEnv, namespace: str, isvc: str
) -> None:
    other = kube.new_client()

    def bump() -> None:  # someone else annotates the object between our read and our write
        raw_request(
            other,
            "PATCH",
            f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{isvc}",
            body={"metadata": {"annotations": {"someone/else": "was-here"}}},
            content_type="application/merge-patch+json",
        )

    api = ConcurrentWriter(kube.api_client, bump)
    KServeRouter(api, namespace, isvc).set_canary_percent(10)
    assert api.conflicts == 1 and api.patch_calls == 2
    obj = get_isvc(kube, namespace, isvc)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert obj["metadata"]["annotations"]["someone/else"] == "was-here"
    other.close()


def test_conflict_redecides_when_the_other_writer_already_did_it(
    kube: KubeEnv, namespace: str, isvc: str
) -> None:
    other = kube.new_client()

    def bump() -> None:  # a second canaryd replica got there first with the same decision
        raw_request(
            other,
            "PATCH",
            f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{isvc}",
            body={"spec": {"predictor": {"canaryTrafficPercent": 25}}},
            content_type="application/merge-patch+json",
        )

    api = ConcurrentWriter(kube.api_client, bump)
    KServeRouter(api, namespace, isvc).set_canary_percent(25)
    # First patch → 409; the re-read finds 25 already there, so no second patch is sent.
    assert (api.patch_calls, api.conflicts) == (1, 1)
    assert get_isvc(kube, namespace, isvc)["spec"]["predictor"]["canaryTrafficPercent"] == 25
    other.close()


def test_transformer_component(kube: KubeEnv, namespace: str, isvc: str) -> None:
    router = KServeRouter(kube.api_client, namespace, isvc, component="transformer")
    router.set_canary_percent(30)
    obj = get_isvc(kube, namespace, isvc)
    assert obj["spec"]["transformer"]["canaryTrafficPercent"] == 30
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    router.promote()
    assert "canaryTrafficPercent" not in get_isvc(kube, namespace, isvc)["spec"]["transformer"]
    with pytest.raises(RoutingError, match=r"spec\.explainer"):
        KServeRouter(kube.api_client, namespace, isvc, component="explainer").rollback()


def test_deleted_mid_rollout(kube: KubeEnv, namespace: str, isvc: str) -> None:
    router = KServeRouter(kube.api_client, namespace, isvc)
    router.set_canary_percent(10)
    uid = get_isvc(kube, namespace, isvc)["metadata"]["uid"]
    kube.custom.delete_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], isvc)

    with pytest.raises(NotFoundError):
        router.status()
    with pytest.raises(NotFoundError):
        router.set_canary_percent(25)
    with pytest.raises(NotFoundError):
        router.rollback()

    # The Aborted event is still recorded: the apiserver does not check that the regarded
    # object exists. The recorder cannot read the uid any more, so the event has none.
    recorder = EventRecorder(kube.api_client, instance="test")
    assert recorder.record(
        RolloutKey(namespace, isvc), Reason.ABORTED, "InferenceService deleted mid-rollout"
    ), recorder.last_error
    events = raw_request(
        kube.api_client, "GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    )["items"]
    (event,) = [e for e in events if e["reason"] == "Aborted"]
    assert event["regarding"]["name"] == isvc
    assert "uid" not in event["regarding"] and uid
    assert event["type"] == "Warning"
