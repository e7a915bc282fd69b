"""The Argo CD health checks of deploy/gitops/argocd-cm.yaml, on objects canaryd itself wrote.

A real daemon (``Reconciler``) drives an InferenceService on the real kube-apiserver through a
rollout, a pause, a rollback and a promotion; at each point the InferenceService and canaryd's
state ConfigMap are read back from the API, as Argo CD would see them, and both Lua scripts run
in Lua 5.1 (the dialect of Argo CD's gopher-lua) with the object as ``obj``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.controller import Manual
from canaryd.daemon.commands import annotate
from canaryd.kube import raw_request
from canaryd.state.kubernetes import configmap_name

from .conftest import REPO, KubeEnv, create_isvc, get_isvc, sample_predictor, set_isvc_status
from .test_daemon import ScriptedSource, make_isvc, policy, reconciler, serverless_status

pytestmark = pytest.mark.integration

CM = REPO / "deploy" / "gitops" / "argocd-cm.yaml"
ISVC_CHECK = "resource.customizations.health.serving.kserve.io_InferenceService"
CM_CHECK = "resource.customizations.health.ConfigMap"


def lua_binary() -> str:
    found = shutil.which("lua5.1")
    if not found:
        subprocess.run(
            [str(REPO / "scripts" / "install-lua")], check=False, timeout=900, capture_output=True
        )
        found = shutil.which("lua5.1")
    if not found:
        pytest.fail("lua5.1 is not installed (run scripts/install-lua as root)")
    return found


def lua_value(v: Any) -> str:
    """A JSON value as a Lua literal (null is nil, as in Argo CD's conversion)."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        assert math.isfinite(v)
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid Lua escapes for this text
    if isinstance(v, list):
        return "{" + ", ".join(lua_value(x) for x in v) + "}"
    assert isinstance(v, dict)
    items = [f"[{json.dumps(k)}] = {lua_value(x)}" for k, x in v.items() if x is not None]
    return "{" + ", ".join(items) + "}"


def health(check: str, obj: dict[str, Any], tmp: Path) -> tuple[str, str]:
    script = yaml.safe_load(CM.read_text())["data"][check]
    program = (
        f"obj = {lua_value(obj)}\n"
        f"local function check()\n{script}\nend\n"
        "local hs = check()\n"
        'io.write(hs.status, "\\t", hs.message or "")\n'
    )
    path = tmp / "check.lua"
    path.write_text(program)
    done = subprocess.run(
        [lua_binary(), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    status, _, message = done.stdout.partition("\t")
    return status, message


def observed(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any]:
    """Play KServe's controller: observe the generation canaryd's write made, then read."""
    obj = get_isvc(kube, namespace, name)
    status = dict(obj["status"], observedGeneration=obj["metadata"]["generation"])
    set_isvc_status(kube, namespace, name, status)
    return get_isvc(kube, namespace, name)


def state_configmap(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = raw_request(
        kube.api_client,
        "GET",
        f"/api/v1/namespaces/{namespace}/configmaps/{configmap_name(name)}",
    )
    return got


def test_health_through_a_rollout(kube: KubeEnv, namespace: str, tmp_path: Path) -> None:
    # Before any canary: one revision serves everything.
    create_isvc(kube, namespace, "steady", {"predictor": sample_predictor("v1")})
    set_isvc_status(kube, namespace, "steady", serverless_status("s-00001", "s-00001"))
    assert health(ISVC_CHECK, get_isvc(kube, namespace, "steady"), tmp_path) == (
        "Healthy",
        "revision s-00001 serves all traffic",
    )

    make_isvc(kube, namespace, "m")  # revision m-00002 is ready, m-00001 rolled out
    assert health(ISVC_CHECK, get_isvc(kube, namespace, "m"), tmp_path) == (
        "Progressing",
        "KServe is rolling out revision m-00002",
    )
    rec = reconciler(kube, [policy(namespace, "m")], ScriptedSource({"m": 0.2}))
    rec.tick(0.0)  # canaryd starts the canary at 10 %
    assert health(ISVC_CHECK, get_isvc(kube, namespace, "m"), tmp_path)[1] == (
        "KServe has not observed generation 2 yet"
    )
    status, message = health(ISVC_CHECK, observed(kube, namespace, "m"), tmp_path)
    assert status == "Progressing" and "canaryd sends 10% to revision m-00002" in message
    status, message = health(CM_CHECK, state_configmap(kube, namespace, "m"), tmp_path)
    assert status == "Progressing"
    assert message == f"canaryd: revision m-00002 rolling out (canaryd status {namespace}/m)"

    annotate(kube.api_client, namespace, "m", Manual.PAUSE)
    rec.tick(10.0)
    status, message = health(CM_CHECK, state_configmap(kube, namespace, "m"), tmp_path)
    assert status == "Suspended" and "paused, waiting for a human" in message

    rec.tick(60.0)  # 20 % canary errors against 1 %: a failing critical metric rolls back
    assert get_isvc(kube, namespace, "m")["spec"]["predictor"]["canaryTrafficPercent"] == 0
    status, message = health(ISVC_CHECK, observed(kube, namespace, "m"), tmp_path)
    assert status == "Suspended" and "m-00002 gets no traffic" in message
    status, message = health(CM_CHECK, state_configmap(kube, namespace, "m"), tmp_path)
    assert (status, message) == (
        "Degraded",
        f"canaryd: revision m-00002 rolled back (canaryd status {namespace}/m)",
    )


def test_health_of_a_promotion_and_of_other_configmaps(
    kube: KubeEnv, namespace: str, tmp_path: Path
) -> None:
    make_isvc(kube, namespace, "p")
    rec = reconciler(kube, [policy(namespace, "p")], ScriptedSource())
    rec.tick(0.0)
    annotate(kube.api_client, namespace, "p", Manual.PROMOTE)
    rec.tick(10.0)
    assert "canaryTrafficPercent" not in get_isvc(kube, namespace, "p")["spec"]["predictor"]
    assert health(CM_CHECK, state_configmap(kube, namespace, "p"), tmp_path) == (
        "Healthy",
        "canaryd: revision m-00002 promoted",
    )
    other = raw_request(
        kube.api_client,
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        body={"metadata": {"name": "unrelated"}, "data": {"state.json": "{}"}},
    )
    assert health(CM_CHECK, other, tmp_path) == ("Healthy", "")


def test_health_of_raw_mode_and_of_a_broken_predictor(tmp_path: Path) -> None:
    """Standard-mode shapes as the v0.20 CRD defines them (the raw router's tests use the same)."""
    base: dict[str, Any] = {
        "metadata": {"name": "r", "namespace": "ns", "generation": 2},
        "spec": {"predictor": {}, "canary": [{"predictor": {}, "trafficPercent": 25}]},
        "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert health(ISVC_CHECK, base, tmp_path)[0] == "Progressing"
    base["spec"]["canary"][0]["trafficPercent"] = 0
    assert health(ISVC_CHECK, base, tmp_path)[0] == "Suspended"
    del base["spec"]["canary"]
    base["status"]["conditions"] = [{"type": "Ready", "status": "False", "message": "OOMKilled"}]
    assert health(ISVC_CHECK, base, tmp_path) == ("Degraded", "OOMKilled")
    base["metadata"]["generation"] = 3
    assert health(ISVC_CHECK, base, tmp_path) == (
        "Progressing",
        "KServe has not observed generation 3 yet",
    )
