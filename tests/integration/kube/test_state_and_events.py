"""KubernetesStateStore (ConfigMaps) and EventRecorder on a real apiserver."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from canaryd.errors import ConflictError, NotFoundError
from canaryd.kube import raw_request
from canaryd.kube.events import NOTE_LIMIT, EventRecorder, MemoryEventSink, truncate_note
from canaryd.reasons import Reason
from canaryd.state.base import RolloutKey, StateStore
from canaryd.state.kubernetes import KubernetesStateStore, configmap_name
from canaryd.state.memory import MemoryStateStore

from .conftest import KubeEnv, create_isvc, get_isvc, sample_predictor

pytestmark = pytest.mark.integration


@pytest.fixture
def key(kube: KubeEnv, namespace: str) -> RolloutKey:
    create_isvc(kube, namespace, "iris", {"predictor": sample_predictor()})
    return RolloutKey(namespace, "iris")


def test_create_load_update_conflict_delete(kube: KubeEnv, key: RolloutKey) -> None:
    store = KubernetesStateStore(kube.api_client)
    assert store.load(key) is None

    v1 = store.save(key, {"step": 0, "evidence": {"errors": [0.0, 1.5]}}, None)
    loaded = store.load(key)
    assert loaded is not None
    assert loaded.data == {"step": 0, "evidence": {"errors": [0.0, 1.5]}}
    assert loaded.version == v1

    with pytest.raises(ConflictError, match="already exists"):
        store.save(key, {"step": 9}, None)

    v2 = store.save(key, {"step": 1}, v1)
    assert v2 != v1
    with pytest.raises(ConflictError):  # stale version: someone (we) wrote since v1
        store.save(key, {"step": 2}, v1)
    stored = store.load(key)
    assert stored is not None and stored.data == {"step": 1}

    store.delete(key)
    assert store.load(key) is None
    store.delete(key)  # absent: no error
    with pytest.raises(ConflictError):  # updating a deleted document is a conflict too
        store.save(key, {"step": 3}, v2)


def test_configmap_shape_and_owner_reference(kube: KubeEnv, key: RolloutKey) -> None:
    store = KubernetesStateStore(kube.api_client)
    store.save(key, {"b": 2, "a": 1}, None)
    cm = store.get_configmap(key)
    assert cm is not None
    assert cm["metadata"]["name"] == "canaryd-iris"
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "canaryd"
    assert cm["data"]["state.json"] == '{"a": 1, "b": 2}'  # sorted keys
    isvc = get_isvc(kube, key.namespace, key.name)
    (owner,) = cm["metadata"]["ownerReferences"]
    assert owner["apiVersion"] == "serving.kserve.io/v1beta1"
    assert owner["kind"] == "InferenceService"
    assert owner["name"] == "iris"
    assert owner["uid"] == isvc["metadata"]["uid"]
    # Deleting the InferenceService would garbage-collect the ConfigMap, but the garbage
    # collector runs in kube-controller-manager, which this bare apiserver does not have:
    # the ownerReference is what is asserted here.


def test_create_needs_the_inference_service(kube: KubeEnv, namespace: str) -> None:
    with pytest.raises(NotFoundError):
        KubernetesStateStore(kube.api_client).save(RolloutKey(namespace, "ghost"), {}, None)


def test_names_are_sanitised() -> None:
    assert configmap_name("iris") == "canaryd-iris"
    long = configmap_name("x" * 400)
    assert len(long) == 253 and long.startswith("canaryd-xxx")
    assert configmap_name("x" * 400) == long  # stable
    assert configmap_name("Weird_Name") == "canaryd-weird-name"


def _contract(store: StateStore, key: RolloutKey) -> list[Any]:
    """The same script against any StateStore; returns what happened at each step."""
    seen: list[Any] = []

    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            out = fn()
        except ConflictError:
            seen.append("conflict")
            return None
        seen.append("ok")
        return out

    seen.append(store.load(key))
    v1 = attempt(lambda: store.save(key, {"n": 1}, None))
    attempt(lambda: store.save(key, {"n": 1}, None))
    v2 = attempt(lambda: store.save(key, {"n": 2}, v1))
    attempt(lambda: store.save(key, {"n": 3}, v1))
    loaded = store.load(key)
    seen.append(loaded.data if loaded else None)
    seen.append(loaded is not None and loaded.version == v2)
    store.delete(key)
    seen.append(store.load(key))
    attempt(lambda: store.save(key, {"n": 4}, v2))
    return seen


def test_same_contract_as_memory_store(kube: KubeEnv, key: RolloutKey) -> None:
    assert _contract(KubernetesStateStore(kube.api_client), key) == _contract(
        MemoryStateStore(), key
    )


def test_concurrent_savers_one_wins(kube: KubeEnv, key: RolloutKey) -> None:
    a = KubernetesStateStore(kube.api_client)
    other = kube.new_client()
    b = KubernetesStateStore(other)
    v = a.save(key, {"owner": None}, None)
    a.save(key, {"owner": "a"}, v)
    with pytest.raises(ConflictError):
        b.save(key, {"owner": "b"}, v)
    stored = b.load(key)
    assert stored is not None and stored.data == {"owner": "a"}
    other.close()


# -- events --------------------------------------------------------------------------------


def _events(kube: KubeEnv, namespace: str) -> list[dict]:
    items: list[dict] = raw_request(
        kube.api_client, "GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    )["items"]
    return items


def test_every_reason_is_recorded(kube: KubeEnv, key: RolloutKey) -> None:
    recorder = EventRecorder(kube.api_client, instance="canaryd-0")
    for reason in Reason:
        assert recorder.record(key, reason, f"because {reason}"), recorder.last_error
    uid = get_isvc(kube, key.namespace, key.name)["metadata"]["uid"]
    events = {e["reason"]: e for e in _events(kube, key.namespace)}
    assert set(events) == {r.value for r in Reason}
    for reason, event in events.items():
        assert event["reportingController"] == "canaryd.io/canaryd"
        assert event["reportingInstance"] == "canaryd-0"
        assert event["note"] == f"because {reason}"
        assert event["regarding"] == {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "namespace": key.namespace,
            "name": "iris",
            "uid": uid,
        }
    assert events["RolledBack"]["type"] == "Warning"
    assert events["Promoted"]["type"] == "Normal"
    assert events["WeightChanged"]["action"] == "SetWeight"
    # core/v1 view of the same events (what `kubectl describe` shows)
    core = raw_request(kube.api_client, "GET", f"/api/v1/namespaces/{key.namespace}/events")
    assert {e["reason"] for e in core["items"]} >= {"Promoted", "RolledBack"}


def test_long_multibyte_message_is_truncated_safely(kube: KubeEnv, key: RolloutKey) -> None:
    message = "ρ≤1.2 — " * 300  # multi-byte characters, far past the limit
    recorder = EventRecorder(kube.api_client, instance="canaryd-0")
    assert recorder.record(key, Reason.ANALYSIS_INCONCLUSIVE, message), recorder.last_error
    (event,) = [e for e in _events(kube, key.namespace) if e["reason"] == "AnalysisInconclusive"]
    note = event["note"]
    assert len(note.encode("utf-8")) <= NOTE_LIMIT
    assert note.endswith("…") and message.startswith(note[:-1])
    assert truncate_note("short") == "short"


def test_recording_failure_is_reported_not_raised(kube: KubeEnv) -> None:
    recorder = EventRecorder(kube.api_client, instance="canaryd-0")
    assert not recorder.record(RolloutKey("no-such-namespace", "iris"), Reason.PAUSED, "x")
    assert recorder.last_error is not None and "404" in recorder.last_error


def test_memory_sink() -> None:
    sink = MemoryEventSink()
    sink.record(RolloutKey("ns", "m"), Reason.CANARY_STARTED, "10%")
    sink.record(RolloutKey("ns", "m"), Reason.ROLLED_BACK, "errors ×3")
    assert sink.reasons() == ["CanaryStarted", "RolledBack"]
    assert [e.type for e in sink.events] == ["Normal", "Warning"]
    assert (
        json.dumps([e.message for e in sink.events], ensure_ascii=False) == '["10%", "errors ×3"]'
    )
