"""The daemon's watch cache against a real kube-apiserver: sync, events, 410 Gone, an apiserver
restart, and an object deleted and created again under the same name.

These tests restart their apiserver, so they run on a private envtest instance (not the
session's shared one).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Callable

import pytest
from kubernetes import client as k8s

from canaryd.daemon.reconciler import Reconciler
from canaryd.identity import RolloutKey
from canaryd.kube import CONFIG_MAP, INFERENCE_SERVICE, KubeObjects, load_api_client, raw_request
from canaryd.kube.events import MemoryEventSink
from canaryd.kube.watching import Collection, WatchCache
from canaryd.policy.loader import load_policies_text
from canaryd.state.kubernetes import MANAGED_SELECTOR, KubernetesStateStore

from .conftest import KubeEnv, PrivateKube, sample_predictor, serverless_status

pytestmark = pytest.mark.integration


def _namespace(client: k8s.ApiClient) -> str:
    name = f"w-{uuid.uuid4().hex[:8]}"
    raw_request(client, "POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    return name


def _isvc(name: str) -> dict[str, object]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": sample_predictor("v2")},
    }


def _create_isvc(client: k8s.ApiClient, ns: str, name: str) -> dict[str, object]:
    created = raw_request(client, "POST", INFERENCE_SERVICE.collection_path(ns), body=_isvc(name))
    obj = raw_request(client, "GET", INFERENCE_SERVICE.path(ns, name))
    obj["status"] = serverless_status(f"{name}-00001", f"{name}-00002")
    raw_request(client, "PUT", INFERENCE_SERVICE.path(ns, name) + "/status", body=obj)
    return created


def _until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _etcd_post(base: str, path: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def test_lists_then_follows_every_change(private_kube: PrivateKube) -> None:
    ns = _namespace(private_kube.client)
    _create_isvc(private_kube.client, ns, "a")
    cache = WatchCache(private_kube.client, watch_timeout_s=5)
    cache.ensure([Collection(INFERENCE_SERVICE, ns), Collection(CONFIG_MAP, ns, MANAGED_SELECTOR)])
    cache.start()
    try:
        assert cache.wait_synced(30)
        assert cache.problem() is None
        got = cache.lookup(INFERENCE_SERVICE, ns, "a")
        assert isinstance(got, dict) and got["status"]["components"]["predictor"]
        assert cache.lookup(INFERENCE_SERVICE, ns, "nope") is None  # synced: known absent
        assert cache.lookup(INFERENCE_SERVICE, "elsewhere", "a") is False  # not watched

        _create_isvc(private_kube.client, ns, "b")
        _until("b", lambda: cache.has(INFERENCE_SERVICE, ns, "b"))
        raw_request(
            private_kube.client,
            "PATCH",
            INFERENCE_SERVICE.path(ns, "b"),
            body={"metadata": {"annotations": {"canaryd.io/action": "pause"}}},
            content_type="application/merge-patch+json",
        )

        def annotated() -> bool:
            obj = cache.lookup(INFERENCE_SERVICE, ns, "b")
            return (
                isinstance(obj, dict)
                and (obj["metadata"].get("annotations") or {}).get("canaryd.io/action") == "pause"
            )

        _until("the annotation", annotated)
        # What is cached is the server's object without managedFields, its keys interned: "a"
        # came with the LIST, "b" from watch events, and they share their key strings.
        server = raw_request(private_kube.client, "GET", INFERENCE_SERVICE.path(ns, "b"))
        server["metadata"].pop("managedFields", None)
        _until("the cached copy", lambda: cache.lookup(INFERENCE_SERVICE, ns, "b") == server)
        a_obj, b_obj = (cache.lookup(INFERENCE_SERVICE, ns, n) for n in ("a", "b"))
        assert isinstance(a_obj, dict) and isinstance(b_obj, dict)
        a_keys = {k: k for k in a_obj["status"]["components"]["predictor"]}
        for k in b_obj["status"]["components"]["predictor"]:
            assert a_keys[k] is k
        raw_request(private_kube.client, "DELETE", INFERENCE_SERVICE.path(ns, "b"))
        _until("b deleted", lambda: cache.lookup(INFERENCE_SERVICE, ns, "b") is None)

        # Only canaryd's labelled ConfigMaps are mirrored.
        for name, labels in (
            ("canaryd-x", {"app.kubernetes.io/managed-by": "canaryd"}),
            ("other", {}),
        ):
            raw_request(
                private_kube.client,
                "POST",
                CONFIG_MAP.collection_path(ns),
                body={"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}},
            )
        _until("the state ConfigMap", lambda: cache.has(CONFIG_MAP, ns, "canaryd-x"))
        assert cache.lookup(CONFIG_MAP, ns, "other") is None
    finally:
        cache.stop()


def test_recovers_from_410_gone_after_an_apiserver_restart(private_kube: PrivateKube) -> None:
    ns = _namespace(private_kube.client)
    _create_isvc(private_kube.client, ns, "a")
    cache = WatchCache(private_kube.client, watch_timeout_s=30, backoff_max_s=2.0)
    cache.ensure([Collection(INFERENCE_SERVICE, ns)])
    cache.start()
    try:
        assert cache.wait_synced(30)

        def compact() -> None:
            # While the apiserver is down: advance etcd's revision and compact it away, so the
            # cache's resourceVersion is too old when it resumes (410 Gone).
            key = base64.b64encode(b"/canaryd-drill/tick").decode()
            put = _etcd_post(private_kube.etcd, "/v3/kv/put", {"key": key, "value": key})
            revision = int(put["header"]["revision"])  # type: ignore[index]
            _etcd_post(
                private_kube.etcd, "/v3/kv/compaction", {"revision": revision, "physical": True}
            )

        private_kube.restart_apiserver(compact)
        fresh = load_api_client(str(private_kube.dir / "kubeconfig"))
        try:
            _create_isvc(fresh, ns, "after-restart")
        finally:
            fresh.close()
        _until(
            "an object created after the restart",
            lambda: cache.has(INFERENCE_SERVICE, ns, "after-restart"),
            timeout=90,
        )
        assert cache.stats["relists_gone"] >= 1, dict(cache.stats)
        assert cache.stats["errors"] >= 1  # the broken stream during the restart
        _until("health", lambda: cache.problem() is None)
    finally:
        cache.stop()


POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: m-policy}}
spec:
  target: {{namespace: {ns}, inferenceService: m}}
  steps: {{weights: [10, 50], minDwell: 60s, minCanaryRequests: 0}}
  analysis:
    metrics: [{{name: errors, kind: errors}}]
"""


def test_a_model_deleted_and_created_again_starts_a_fresh_rollout(
    private_kube: PrivateKube,
) -> None:
    ns = _namespace(private_kube.client)
    first = _create_isvc(private_kube.client, ns, "m")
    cache = WatchCache(private_kube.client, watch_timeout_s=10)
    objects = KubeObjects(private_kube.client, cache)
    policy = load_policies_text(POLICY.format(ns=ns), "p.yaml")[0]
    events = MemoryEventSink()

    class NoData:
        def fetch(self, requests, start_s, end_s):  # type: ignore[no-untyped-def]
            from canaryd.observation import Observation

            return {r.key: Observation(start_s, end_s, no_data_reason="none") for r in requests}

    rec = Reconciler([policy], objects, NoData(), events)
    cache.ensure(rec.collections())
    cache.start()
    try:
        assert cache.wait_synced(30)
        rec.tick(0.0)
        state_cm = "canaryd-m"
        _until("the state in the cache", lambda: cache.has(CONFIG_MAP, ns, state_cm))
        rec.tick(60.0)
        cached = cache.lookup(CONFIG_MAP, ns, state_cm)
        assert isinstance(cached, dict) and "data" not in cached  # the cache keeps metadata
        store = KubernetesStateStore(objects)
        stored = store.load(RolloutKey(ns, "m"))
        assert stored is not None
        assert stored.data["target_uid"] == first["metadata"]["uid"]  # type: ignore[index]

        # Delete and create again (a bare apiserver has no garbage collector: the state stays).
        raw_request(private_kube.client, "DELETE", INFERENCE_SERVICE.path(ns, "m"))
        second = _create_isvc(private_kube.client, ns, "m")
        new_uid = second["metadata"]["uid"]  # type: ignore[index]
        assert new_uid != first["metadata"]["uid"]  # type: ignore[index]

        def recreated() -> bool:
            obj = cache.lookup(INFERENCE_SERVICE, ns, "m")
            return isinstance(obj, dict) and obj["metadata"]["uid"] == new_uid

        _until("the new object in the cache", recreated)
        rec.tick(70.0)

        def fresh_state() -> bool:
            got = store.load(RolloutKey(ns, "m"))
            return got is not None and got.data["target_uid"] == new_uid

        _until("a fresh rollout's state", fresh_state)
        assert [str(e.reason) for e in events.events].count("CanaryStarted") == 2
    finally:
        cache.stop()


def test_the_tick_reads_nothing_from_the_api_once_cached(kube: KubeEnv, namespace: str) -> None:
    """Counted on the client side: a tick of a synced daemon makes no GET or LIST."""
    _create_isvc(kube.api_client, namespace, "m")
    client = kube.new_client()
    calls: list[str] = []
    original = client.call_api

    def counting(method, url, *a, **kw):  # type: ignore[no-untyped-def]
        if "watch=" not in url:
            calls.append(f"{method} {url.split('?')[0]}")
        return original(method, url, *a, **kw)

    client.call_api = counting  # type: ignore[method-assign]
    cache = WatchCache(client, watch_timeout_s=30)
    objects = KubeObjects(client, cache)
    policy = load_policies_text(POLICY.format(ns=namespace), "p.yaml")[0]

    class Quiet:
        def fetch(self, requests, start_s, end_s):  # type: ignore[no-untyped-def]
            from canaryd.observation import Observation, VersionCounts

            return {
                r.key: Observation(
                    start_s, end_s, VersionCounts(1000, 10), VersionCounts(100, 1)
                ).validated()
                for r in requests
            }

    rec = Reconciler([policy], objects, Quiet(), MemoryEventSink(), checkpoint_every=1000)
    cache.ensure(rec.collections())
    cache.start()
    try:
        assert cache.wait_synced(30)
        rec.tick(0.0)  # starts: writes (create, patch)
        _until("own write seen", lambda: cache.has(CONFIG_MAP, namespace, "canaryd-m"))
        calls.clear()
        for t in (10.0, 20.0, 30.0, 40.0, 50.0):
            rec.tick(t)  # holds between windows: nothing to read from the API
        assert [c for c in calls if c.startswith("GET")] == [], calls
    finally:
        cache.stop()
        client.close()
