"""The daemon end to end against a real kube-apiserver (no mocks of Kubernetes).

The metric source is scripted (``ScriptedSource`` implements the MetricSource protocol offline);
everything Kubernetes does is real: the InferenceService's ``canaryTrafficPercent``, the state
ConfigMap with its resourceVersion, the manual-control annotation, the Events, the Lease.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.controller import Manual
from canaryd.daemon.commands import annotate
from canaryd.daemon.leader import LeaderElector
from canaryd.daemon.manual import ACTION_ANNOTATION
from canaryd.daemon.reconciler import Reconciler
from canaryd.daemon.run import Daemon, RunConfig
from canaryd.daemon.server import HealthServer
from canaryd.kube import JSON, KubeObjects, raw_request
from canaryd.kube.events import EventRecorder
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.loader import load_policies_text
from canaryd.policy.model import CanaryPolicy
from canaryd.state.base import RolloutKey, StoredState
from canaryd.state.kubernetes import KubernetesStateStore

from .conftest import (
    ISVC,
    REPO,
    KubeEnv,
    create_isvc,
    get_isvc,
    sample_predictor,
    serverless_status,
    set_isvc_status,
)

pytestmark = pytest.mark.integration

FIELD = "canaryTrafficPercent"
CLOSED_PORT = "http://127.0.0.1:9"


# -- helpers ---------------------------------------------------------------------------------


def policy_yaml(namespace: str, name: str, interval: str = "60s") -> str:
    return f"""\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata:
  name: {name}-policy
spec:
  target: {{namespace: {namespace}, inferenceService: {name}}}
  router: {{type: kserve}}
  steps: {{weights: [10, 25, 50], minDwell: 60s, minCanaryRequests: 50}}
  analysis:
    interval: {interval}
    metrics:
      - {{name: errors, kind: errors, judge: sequential, maxRelativeIncrease: 0.2}}
"""


def policy(namespace: str, name: str) -> CanaryPolicy:
    return load_policies_text(policy_yaml(namespace, name), "test.yaml")[0].policy


def make_isvc(kube: KubeEnv, namespace: str, name: str) -> None:
    create_isvc(kube, namespace, name, {"predictor": sample_predictor("v2")})
    set_isvc_status(kube, namespace, name, serverless_status("m-00001", "m-00002"))


class ScriptedSource:
    """An offline MetricSource: stable 1% errors, canary at ``rates[name]`` (default 1%)."""

    def __init__(self, rates: dict[str, float] | None = None) -> None:
        self.rates = rates or {}
        self.calls: list[tuple[list[Hashable], float, float]] = []

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        self.calls.append(([r.key for r in requests], start_s, end_s))
        out: dict[Hashable, Observation] = {}
        for r in requests:
            name = r.key.name if isinstance(r.key, RolloutKey) else str(r.key)
            rate = self.rates.get(name, 0.01)
            scale = (end_s - start_s) / 60.0
            stable = VersionCounts(round(1800 * scale), round(18 * scale))
            canary = VersionCounts(round(200 * scale), round(200 * scale * rate))
            out[r.key] = Observation(start_s, end_s, stable, canary).validated()
        return out


def reconciler(
    kube: KubeEnv,
    policies: list[CanaryPolicy],
    source: Any,
    store: Any = None,
) -> Reconciler:
    client = kube.new_client()  # fresh objects, as a restarted daemon would have
    return Reconciler(
        policies,
        KubeObjects(client),
        source,
        EventRecorder(client, "canaryd-test"),
        store=store,
    )


def percent(kube: KubeEnv, namespace: str, name: str) -> int | None:
    value = get_isvc(kube, namespace, name)["spec"]["predictor"].get(FIELD)
    return value if isinstance(value, int) else None


def events(kube: KubeEnv, namespace: str, name: str) -> list[JSON]:
    got = raw_request(
        kube.api_client, "GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    )
    items = [e for e in got.get("items", []) if e["regarding"]["name"] == name]
    return sorted(items, key=lambda e: (e["eventTime"], e["metadata"]["name"]))


def reasons(kube: KubeEnv, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events(kube, namespace, name)]


def stored(kube: KubeEnv, namespace: str, name: str) -> JSON:
    got = KubernetesStateStore(kube.api_client).load(RolloutKey(namespace, name))
    assert got is not None
    return got.data


def isvc_annotations(kube: KubeEnv, namespace: str, name: str) -> dict[str, str]:
    return get_isvc(kube, namespace, name)["metadata"].get("annotations") or {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- end to end ------------------------------------------------------------------------------


def test_regression_rolls_back_with_an_explaining_event(kube: KubeEnv, namespace: str) -> None:
    make_isvc(kube, namespace, "m")
    source = ScriptedSource({"m": 0.10})
    rec = reconciler(kube, [policy(namespace, "m")], source)

    r0 = rec.tick(0.0)
    assert r0.decisions[RolloutKey(namespace, "m")].event == "CanaryStarted"
    assert percent(kube, namespace, "m") == 10
    assert source.calls == []  # starting needs no data

    r1 = rec.tick(60.0)
    d = r1.decisions[RolloutKey(namespace, "m")]
    assert d.action.value == "rollback"
    assert percent(kube, namespace, "m") == 0
    # stable's 2h of history before the first window (read once), then the window
    key = RolloutKey(namespace, "m")
    assert source.calls == [([key], -7200.0, 0.0), ([key], 0.0, 60.0)]

    evs = events(kube, namespace, "m")
    assert [e["reason"] for e in evs] == ["CanaryStarted", "RolledBack"]
    rolled = evs[-1]
    assert rolled["type"] == "Warning"
    assert rolled["reportingController"] == "canaryd.io/canaryd"
    note = rolled["note"]
    assert "canary is worse" in note and "estimate" in note and "e=" in note and "[" in note

    doc = stored(kube, namespace, "m")
    assert doc["state"]["phase"] == "rolled_back"
    assert doc["state"]["canary_revision"] == "m-00002"
    assert doc["last_decision"]["action"] == "rollback"
    assert doc["last_decision"]["evidence"]["errors"] > 100

    # Never retried automatically: later ticks hold, write nothing, record nothing.
    before = get_isvc(kube, namespace, "m")["metadata"]["resourceVersion"]
    rec.tick(120.0)
    rec.tick(180.0)
    assert get_isvc(kube, namespace, "m")["metadata"]["resourceVersion"] == before
    assert reasons(kube, namespace, "m") == ["CanaryStarted", "RolledBack"]

    reg = rec.metrics.registry
    labels = {"namespace": namespace, "name": "m"}
    assert reg.get_sample_value("canaryd_decisions_total", {**labels, "action": "rollback"}) == 1
    assert reg.get_sample_value("canaryd_canary_weight", labels) == 0
    assert reg.get_sample_value("canaryd_rollout_phase", {**labels, "phase": "rolled_back"}) == 1
    assert reg.get_sample_value("canaryd_evidence", {**labels, "metric": "errors"}) > 100  # type: ignore[operator]


def test_healthy_canary_steps_then_promotes(kube: KubeEnv, namespace: str) -> None:
    make_isvc(kube, namespace, "m")
    source = ScriptedSource()
    rec = reconciler(kube, [policy(namespace, "m")], source)
    seen = []
    for t in (0.0, 30.0, 60.0, 120.0, 180.0):
        rec.tick(t)
        seen.append(percent(kube, namespace, "m"))
        if t == 30.0:
            assert stored(kube, namespace, "m")["window_end"] == 0.0  # not due: untouched
    assert seen == [10, 10, 25, 50, None]  # promoted: the field is removed
    assert "canaryTrafficPercent" not in get_isvc(kube, namespace, "m")["spec"]["predictor"]
    assert reasons(kube, namespace, "m") == [
        "CanaryStarted",
        "WeightChanged",
        "WeightChanged",
        "Promoted",
    ]
    assert [c[1:] for c in source.calls] == [
        (-7200.0, 0.0),  # stable's history, once
        (0.0, 60.0),
        (60.0, 120.0),
        (120.0, 180.0),
    ]
    doc = stored(kube, namespace, "m")
    assert doc["state"]["phase"] == "promoted"
    assert doc["pending"] is None  # applied, then cleared

    # KServe rolls the new revision out: no canary any more, nothing to do.
    set_isvc_status(kube, namespace, "m", serverless_status("m-00002", "m-00002"))
    report = rec.tick(240.0)
    assert report.decisions == {} and report.errors == {}


def test_restart_resumes_with_the_same_evidence(kube: KubeEnv, namespace: str) -> None:
    """A daemon restarted mid-rollout (fresh objects, same store) decides exactly as an
    uninterrupted one: the same actions, reasons and accumulated evidence."""
    for name in ("a", "b"):
        make_isvc(kube, namespace, name)
    rates = {"a": 0.013, "b": 0.013}
    times = [0.0, 60.0, 120.0, 180.0]

    def trace(rec_for: Any, name: str) -> list[tuple[Any, ...]]:
        out = []
        for i, t in enumerate(times):
            rec = rec_for(i)
            d = rec.tick(t).decisions[RolloutKey(namespace, name)]
            doc = stored(kube, namespace, name)
            out.append((d.action, d.weight, d.reason, json.dumps(doc["state"]["judges"])))
        return out

    single = reconciler(kube, [policy(namespace, "a")], ScriptedSource(rates))
    uninterrupted = trace(lambda i: single, "a")
    recs: dict[int, Reconciler] = {}

    def restarted(i: int) -> Reconciler:
        # A new Reconciler (new ApiClient, store, controllers) from the third tick on.
        gen = 0 if i < 2 else 1
        if gen not in recs:
            recs[gen] = reconciler(kube, [policy(namespace, "b")], ScriptedSource(rates))
        return recs[gen]

    resumed = trace(restarted, "b")
    assert [x[:3] for x in resumed] == [x[:3] for x in uninterrupted]
    assert [x[3] for x in resumed] == [x[3] for x in uninterrupted]
    assert uninterrupted[-1][0].value == "promote"


def test_manual_pause_resume_rollback(kube: KubeEnv, namespace: str) -> None:
    make_isvc(kube, namespace, "m")
    rec = reconciler(kube, [policy(namespace, "m")], ScriptedSource())
    rec.tick(0.0)
    assert percent(kube, namespace, "m") == 10

    # The CLI writes the annotation; the daemon acts at its next tick, between intervals.
    kubeconfig = str(kube.kubeconfig)
    result = CliRunner().invoke(main, ["pause", f"{namespace}/m", "--kubeconfig", kubeconfig])
    assert result.exit_code == 0, result.output
    assert isvc_annotations(kube, namespace, "m")[ACTION_ANNOTATION] == "pause"
    rec.tick(10.0)
    assert stored(kube, namespace, "m")["state"]["phase"] == "paused"
    assert ACTION_ANNOTATION not in isvc_annotations(kube, namespace, "m")
    assert reasons(kube, namespace, "m")[-1] == "Paused"

    # Paused holds at 10% even when the interval is due and the step is met.
    rec.tick(60.0)
    assert percent(kube, namespace, "m") == 10

    annotate(kube.api_client, namespace, "m", Manual.RESUME)
    rec.tick(70.0)
    assert stored(kube, namespace, "m")["state"]["phase"] == "progressing"
    assert reasons(kube, namespace, "m")[-1] == "Resumed"
    assert ACTION_ANNOTATION not in isvc_annotations(kube, namespace, "m")

    # An unknown value: a Warning Event, the annotation removed, nothing else.
    annotate_raw(kube, namespace, "m", "yolo")
    rec.tick(75.0)
    evs = events(kube, namespace, "m")
    assert evs[-1]["reason"] == "InvalidAction" and evs[-1]["type"] == "Warning"
    assert "yolo" in evs[-1]["note"]
    assert ACTION_ANNOTATION not in isvc_annotations(kube, namespace, "m")
    assert stored(kube, namespace, "m")["state"]["phase"] == "progressing"

    annotate(kube.api_client, namespace, "m", Manual.ROLLBACK)
    rec.tick(80.0)
    assert percent(kube, namespace, "m") == 0
    assert stored(kube, namespace, "m")["state"]["phase"] == "rolled_back"
    assert reasons(kube, namespace, "m")[-1] == "RolledBack"
    assert "manual rollback" in events(kube, namespace, "m")[-1]["note"]

    # `canaryd status` reads the ConfigMap and the live router status.
    result = CliRunner().invoke(
        main, ["status", f"{namespace}/m", "--kubeconfig", kubeconfig, "--json"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["state"]["phase"] == "rolled_back"
    assert info["router"]["canary_percent"] == 0
    assert info["last_decision"]["reason"] == "manual rollback"
    text = CliRunner().invoke(main, ["status", f"{namespace}/m", "--kubeconfig", kubeconfig])
    assert text.exit_code == 0 and "rolled_back" in text.output


def annotate_raw(kube: KubeEnv, namespace: str, name: str, value: str) -> None:
    kube.custom.patch_namespaced_custom_object(
        *ISVC[:2],
        namespace,
        ISVC[2],
        name,
        {"metadata": {"annotations": {ACTION_ANNOTATION: value}}},
        _content_type="application/merge-patch+json",
    )


def test_a_deleted_model_never_stops_the_others(kube: KubeEnv, namespace: str) -> None:
    for name in ("gone", "kept"):
        make_isvc(kube, namespace, name)
    rec = reconciler(kube, [policy(namespace, "gone"), policy(namespace, "kept")], ScriptedSource())
    rec.tick(0.0)
    assert percent(kube, namespace, "gone") == 10 and percent(kube, namespace, "kept") == 10

    kube.custom.delete_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], "gone")
    report = rec.tick(60.0)
    gone, kept = RolloutKey(namespace, "gone"), RolloutKey(namespace, "kept")
    assert "NotFoundError" in report.errors[gone]
    assert report.decisions[kept].weight == 25
    assert percent(kube, namespace, "kept") == 25
    assert reasons(kube, namespace, "gone")[-1] == "Aborted"
    assert stored(kube, namespace, "gone")["state"]["phase"] == "progressing"  # kept
    labels = {"namespace": namespace, "name": "gone"}
    assert rec.metrics.registry.get_sample_value("canaryd_reconcile_errors_total", labels) == 1

    rec.tick(120.0)  # still gone: no second Aborted Event
    assert reasons(kube, namespace, "gone").count("Aborted") == 1
    assert percent(kube, namespace, "kept") == 50


class RacingStore(KubernetesStateStore):
    """A real store; before its next save, another client writes the same ConfigMap."""

    def __init__(self, kube: KubeEnv) -> None:
        super().__init__(kube.new_client())
        self.other = KubernetesStateStore(kube.new_client())
        self.race = False

    def save(self, key: RolloutKey, data: dict[str, Any], expected_version: str | None) -> str:
        if self.race:
            self.race = False
            theirs = self.other.load(key)
            assert isinstance(theirs, StoredState)
            self.other.save(key, {**theirs.data, "updated": "someone-else"}, theirs.version)
        return super().save(key, data, expected_version)


def test_a_concurrent_state_write_is_never_overwritten(kube: KubeEnv, namespace: str) -> None:
    make_isvc(kube, namespace, "m")
    store = RacingStore(kube)
    rec = reconciler(kube, [policy(namespace, "m")], ScriptedSource(), store)
    rec.tick(0.0)
    store.race = True
    report = rec.tick(60.0)
    key = RolloutKey(namespace, "m")
    assert report.conflicts == [key] and key not in report.decisions
    doc = stored(kube, namespace, "m")
    assert doc["updated"] == "someone-else"  # their write stands
    assert doc["state"]["step"] == 0
    assert percent(kube, namespace, "m") == 10  # nothing actuated on a lost write
    report = rec.tick(65.0)  # re-read, re-decide
    assert report.decisions[key].weight == 25
    assert stored(kube, namespace, "m")["state"]["step"] == 1
    assert percent(kube, namespace, "m") == 25


# -- leader election -----------------------------------------------------------------------


def test_leader_election_one_leader_then_takeover(kube: KubeEnv, namespace: str) -> None:
    a = LeaderElector(kube.new_client(), namespace, "pod-a", lease_duration_s=1.0)
    b = LeaderElector(kube.new_client(), namespace, "pod-b", lease_duration_s=1.0)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    assert a.try_acquire_or_renew() is True  # renew
    assert b.try_acquire_or_renew() is False
    assert a.is_leader and not b.is_leader

    time.sleep(1.2)  # a stops renewing; b has seen the same record for > lease duration
    assert not a.is_leader  # past its renew deadline: a stops acting on its own
    assert b.try_acquire_or_renew() is True
    assert a.try_acquire_or_renew() is False
    lease = raw_request(
        kube.api_client,
        "GET",
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/canaryd-leader",
    )
    assert lease["spec"]["holderIdentity"] == "pod-b"
    assert lease["spec"]["leaseTransitions"] == 1

    b.release()  # graceful shutdown: a takes over at once
    assert a.try_acquire_or_renew() is True


# -- HTTP and the CLI ----------------------------------------------------------------------


def test_http_metrics_healthz_readyz(kube: KubeEnv, namespace: str, tmp_path: Path) -> None:
    make_isvc(kube, namespace, "m")
    (tmp_path / "m.yaml").write_text(policy_yaml(namespace, "m"))
    (tmp_path / "broken.yaml").write_text("apiVersion: canaryd.io/v1alpha1\nkind: Nope\n")
    daemon = Daemon(
        RunConfig(policies=[tmp_path], port=0, host="127.0.0.1", prometheus=CLOSED_PORT),
        api_client=kube.new_client(),
    )
    assert [p.name for p in daemon.reconciler.policies] == ["m-policy"]  # broken one logged
    assert any("broken.yaml" in p for p in daemon.policy_set.problems)
    assert daemon.ready() is not None  # the watch cache has not been listed yet
    assert daemon.start_cache(30.0)
    daemon.tick()
    server = HealthServer(
        daemon.reconciler.metrics.registry, daemon.alive, daemon.ready, "127.0.0.1", 0
    ).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            body = r.read().decode()
        assert r.status == 200
        assert (
            f'canaryd_decisions_total{{action="set_weight",name="m",namespace="{namespace}"}} 1.0'
            in body
        )
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(base + path, timeout=5) as r:
                assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/nope", timeout=5)
        assert err.value.code == 404
    finally:
        server.stop()
        daemon.cache.stop()


def test_run_once_with_prometheus_down_starts_then_holds(
    kube: KubeEnv, namespace: str, tmp_path: Path
) -> None:
    make_isvc(kube, namespace, "m")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "m.yaml").write_text(policy_yaml(namespace, "m", interval="5s"))
    args = [
        sys.executable,
        "-m",
        "canaryd.cli",
        "run",
        "--once",
        "--policies",
        str(tmp_path / "policies"),
        "--kubeconfig",
        str(kube.kubeconfig),
        "--prometheus",
        f"http://127.0.0.1:{free_port()}",
        "--namespaces",
        namespace,
        "--settle",
        "0",
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def next_window_done() -> None:
        # Windows are cut on the 5 s grid: wait until the one after the stored end is over.
        end = stored(kube, namespace, "m")["window_end"]
        time.sleep(max(0.0, end + 5.0 - time.time() + 0.2))

    first = subprocess.run(
        args, check=False, capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )
    assert first.returncode == 0, first.stderr
    assert percent(kube, namespace, "m") == 10
    lines = [json.loads(x) for x in first.stderr.splitlines() if x.startswith("{")]
    assert any(x["msg"] == "decision" and x["action"] == "set_weight" for x in lines)
    started = stored(kube, namespace, "m")["window_end"]

    def windows_judged() -> int:
        # Every 5 s window since the start, judged once: continuity across processes.
        doc = stored(kube, namespace, "m")
        n = round((doc["window_end"] - started) / 5.0)
        assert doc["state"]["intervals"] == n
        return n

    next_window_done()
    second = subprocess.run(
        args, check=False, capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )
    assert second.returncode == 0, second.stderr
    assert reasons(kube, namespace, "m") == ["CanaryStarted", "AnalysisInconclusive"]
    assert "no data" in events(kube, namespace, "m")[-1]["note"]
    doc = stored(kube, namespace, "m")
    judged = windows_judged()
    assert judged >= 1
    assert doc["state"]["phase"] == "progressing" and doc["state"]["no_data_intervals"] == judged
    assert percent(kube, namespace, "m") == 10  # no data never advances

    # A run of inconclusive intervals is one Event, not one per interval.
    next_window_done()
    third = subprocess.run(
        args, check=False, capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )
    assert third.returncode == 0, third.stderr
    assert reasons(kube, namespace, "m") == ["CanaryStarted", "AnalysisInconclusive"]
    later = windows_judged()
    assert later > judged
    assert stored(kube, namespace, "m")["state"]["no_data_intervals"] == later


def test_daemon_serves_and_stops_on_sigterm(kube: KubeEnv, namespace: str, tmp_path: Path) -> None:
    make_isvc(kube, namespace, "m")
    (tmp_path / "m.yaml").write_text(policy_yaml(namespace, "m"))
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "canaryd.cli",
        "run",
        "--policies",
        str(tmp_path),
        "--kubeconfig",
        str(kube.kubeconfig),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--lease-namespace",
        namespace,
        "--prometheus",
        CLOSED_PORT,
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HOSTNAME": "canaryd-0"}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and percent(kube, namespace, "m") != 10:
            time.sleep(0.2)
        assert percent(kube, namespace, "m") == 10  # elected, ticked, started the canary
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert '"msg": "shutting down"' in log
    lease = raw_request(
        kube.api_client,
        "GET",
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/canaryd-leader",
    )
    assert lease["spec"]["holderIdentity"] == ""  # released on SIGTERM


# -- least privilege -------------------------------------------------------------------------


def test_the_daemon_needs_no_more_than_deploy_rbac(kube: KubeEnv, namespace: str) -> None:
    """The deploy/base/rbac.yaml rules, bound to a ServiceAccount in a fresh namespace, are enough
    for a whole rollout: LIST, status, state ConfigMap, Events, annotations, Lease."""
    import yaml
    from kubernetes import client as k8s

    from canaryd.kube import bearer_token_client

    docs = list(yaml.safe_load_all((REPO / "deploy" / "base" / "rbac.yaml").read_text()))
    roles = [d for d in docs if d and d["kind"] == "Role"]
    admin = kube.api_client
    raw_request(
        admin,
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        body={"metadata": {"name": "canaryd"}},
    )
    for role in roles:  # the watched-namespace Role and the Lease Role, both in `namespace`
        name = role["metadata"]["name"]
        raw_request(
            admin,
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
            body={"metadata": {"name": name}, "rules": role["rules"]},
        )
        raw_request(
            admin,
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
            body={
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "canaryd", "namespace": namespace}],
            },
        )
    token = k8s.CoreV1Api(admin).create_namespaced_service_account_token(
        "canaryd",
        namespace,
        k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[])),
    )
    assert token.status is not None and token.status.token
    sa = bearer_token_client(kube.host, token.status.token, str(kube.ca_file))
    make_isvc(kube, namespace, "m")
    elector = LeaderElector(sa, namespace, "canaryd-0")
    assert elector.try_acquire_or_renew() is True
    rec = Reconciler(
        [policy(namespace, "m")],
        KubeObjects(sa),
        ScriptedSource(),
        EventRecorder(sa, "canaryd-0"),
    )
    for t in (0.0, 60.0):
        report = rec.tick(t)
        assert report.errors == {} and report.conflicts == []
    annotate(admin, namespace, "m", Manual.ROLLBACK)
    report = rec.tick(70.0)
    assert report.errors == {}
    assert percent(kube, namespace, "m") == 0
    assert ACTION_ANNOTATION not in isvc_annotations(kube, namespace, "m")
    assert reasons(kube, namespace, "m") == ["CanaryStarted", "WeightChanged", "RolledBack"]
    elector.release()
    sa.close()


def test_policies_reload_when_files_change(kube: KubeEnv, namespace: str, tmp_path: Path) -> None:
    for name in ("a", "b"):
        make_isvc(kube, namespace, name)
    (tmp_path / "a.yaml").write_text(policy_yaml(namespace, "a"))
    # A mounted ConfigMap's timestamped copy: hidden, must not load the policy twice.
    (tmp_path / "..2026_01_01").mkdir()
    (tmp_path / "..2026_01_01" / "a.yaml").write_text(policy_yaml(namespace, "a"))
    daemon = Daemon(
        RunConfig(policies=[tmp_path], port=0, prometheus=CLOSED_PORT), api_client=kube.new_client()
    )
    assert [p.name for p in daemon.reconciler.policies] == ["a-policy"]
    assert daemon.policy_set.problems == []
    first = daemon.tick()
    assert first is not None and list(first.decisions) == [RolloutKey(namespace, "a")]

    (tmp_path / "b.yaml").write_text(policy_yaml(namespace, "b"))  # checked every tick
    second = daemon.tick()
    assert sorted(p.name for p in daemon.reconciler.policies) == ["a-policy", "b-policy"]
    assert second is not None and RolloutKey(namespace, "b") in second.decisions
    assert percent(kube, namespace, "b") == 10
