"""The daemon under faults, as processes against a real kube-apiserver.

- a port already in use is one line and exit 3, not a traceback;
- /readyz answers at once while the apiserver is frozen (SIGSTOP): probes never call it;
- two daemons share a Lease; the leader is frozen past its Lease, the other takes over, and
  the old leader, resumed, writes nothing (fenced by its renew deadline).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from canaryd.kube import raw_request

from .conftest import (
    REPO,
    KubeEnv,
    PrivateKube,
    create_isvc,
    sample_predictor,
    serverless_status,
    set_isvc_status,
)
from .test_daemon import CLOSED_PORT, free_port, policy_yaml

pytestmark = pytest.mark.integration


def _env(tmp: Path, identity: str = "canaryd-0") -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "HOSTNAME": identity}


def _daemon(
    kubeconfig: Path, policies: Path, port: int, tmp: Path, *extra: str, identity: str = "canaryd-0"
) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "canaryd.cli",
        "run",
        *("--policies", str(policies), "--kubeconfig", str(kubeconfig)),
        *("--prometheus", CLOSED_PORT, "--port", str(port), "--host", "127.0.0.1"),
        *extra,
    ]
    log = (tmp / f"{identity}.log").open("w")
    return subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=_env(tmp, identity)
    )


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _wait(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_a_port_in_use_is_one_line(kube: KubeEnv, namespace: str, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(policy_yaml(namespace, "m"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "canaryd.cli",
                "run",
                *("--policies", str(tmp_path / "p.yaml"), "--kubeconfig", str(kube.kubeconfig)),
                *("--prometheus", CLOSED_PORT, "--port", str(port), "--host", "127.0.0.1"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=_env(tmp_path),
            check=False,
        )
    assert res.returncode == 3
    assert "Traceback" not in res.stderr
    assert f"127.0.0.1:{port}" in res.stderr and "--port" in res.stderr


def test_readyz_answers_while_the_apiserver_is_frozen(
    private_kube: PrivateKube, tmp_path: Path
) -> None:
    ns = "frozen"
    raw_request(private_kube.client, "POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    (tmp_path / "p.yaml").write_text(policy_yaml(ns, "m"))
    port = free_port()
    proc = _daemon(private_kube.dir / "kubeconfig", tmp_path / "p.yaml", port, tmp_path)
    pid = int((private_kube.dir / "kube-apiserver.pid").read_text())
    try:
        _wait("ready", lambda: _get(f"http://127.0.0.1:{port}/readyz") == 200)
        subprocess.run(["kill", "-STOP", str(pid)], check=True)
        try:
            for path in ("/readyz", "/healthz"):
                t = time.monotonic()
                code = _get(f"http://127.0.0.1:{port}{path}", timeout=5.0)
                took = time.monotonic() - t
                assert code in (200, 503)
                assert took < 1.0, f"{path} took {took:.1f}s with the apiserver frozen"
        finally:
            subprocess.run(["kill", "-CONT", str(pid)], check=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_leader_that_lost_its_lease_writes_nothing(
    kube: KubeEnv, namespace: str, tmp_path: Path
) -> None:
    create_isvc(kube, namespace, "m", {"predictor": sample_predictor("v2")})
    set_isvc_status(kube, namespace, "m", serverless_status("m-00001", "m-00002"))
    (tmp_path / "p.yaml").write_text(policy_yaml(namespace, "m", interval="5s"))
    lease = (
        "--lease-namespace",
        namespace,
        "--lease-duration",
        "4",
        "--tick",
        "0.5",
        "--settle",
        "0",
    )
    a_port, b_port = free_port(), free_port()
    a = _daemon(kube.kubeconfig, tmp_path / "p.yaml", a_port, tmp_path, *lease, identity="pod-a")
    b: subprocess.Popen[str] | None = None
    events_path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"

    def events() -> list[dict[str, object]]:
        return list(raw_request(kube.api_client, "GET", events_path).get("items", []))

    try:
        _wait(
            "pod-a to start the canary",
            lambda: any(e["reason"] == "CanaryStarted" for e in events()),
        )
        b = _daemon(
            kube.kubeconfig, tmp_path / "p.yaml", b_port, tmp_path, *lease, identity="pod-b"
        )
        _wait("pod-b up", lambda: _get(f"http://127.0.0.1:{b_port}/healthz") == 200)
        a.send_signal(signal.SIGSTOP)  # frozen mid-whatever, past its Lease
        before = {str(e["metadata"]["name"]) for e in events()}  # type: ignore[index]
        try:
            time.sleep(8.0)
            lease_obj = raw_request(
                kube.api_client,
                "GET",
                f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/canaryd-leader",
            )
            assert lease_obj["spec"]["holderIdentity"] == "pod-b"
        finally:
            a.send_signal(signal.SIGCONT)
        # A human pauses: exactly one daemon acts on it, the new leader.
        raw_request(
            kube.api_client,
            "PATCH",
            f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/m",
            body={"metadata": {"annotations": {"canaryd.io/action": "pause"}}},
            content_type="application/merge-patch+json",
        )
        _wait("the pause", lambda: any(e["reason"] == "Paused" for e in events()))
        time.sleep(6.0)  # a's ticks and renewals go on after SIGCONT
        after = [e for e in events() if str(e["metadata"]["name"]) not in before]  # type: ignore[index]
        writers = {str(e["reportingInstance"]) for e in after}
        assert writers <= {"pod-b"}, [(e["reason"], e["reportingInstance"]) for e in after]
        assert sum(1 for e in after if e["reason"] == "Paused") == 1
        log_a = (tmp_path / "pod-a.log").read_text()
        changes = [json.loads(x) for x in log_a.splitlines() if '"leadership changed"' in x]
        assert changes and changes[-1]["leader"] is False
    finally:
        for p in (a, b):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
