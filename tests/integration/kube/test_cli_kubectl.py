"""The CLI behaves like kubectl: connection flags, one-line errors, `status` lists and details.

Against the real kube-apiserver: a real rollout is driven by the daemon's Reconciler, and
`canaryd status` / `pause` run as processes (`python -m canaryd.cli`) the way a user runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from canaryd.daemon.reconciler import Reconciler
from canaryd.kube import KubeObjects
from canaryd.kube.events import EventRecorder

from .conftest import REPO, KubeEnv
from .test_daemon import ScriptedSource, make_isvc, policy

pytestmark = pytest.mark.integration


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "canaryd.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def bare_env(tmp_path: Path) -> dict[str, str]:
    """No kubeconfig anywhere, not in a pod."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}


@pytest.mark.parametrize(
    "args",
    [
        ["status", "models/m"],
        ["pause", "models/m"],
        ["status"],
        ["status", "models/m", "--kubeconfig", "/nonexistent/kubeconfig"],
    ],
)
def test_a_wrong_setup_is_one_line_and_exit_3(tmp_path: Path, args: list[str]) -> None:
    res = run(args, bare_env(tmp_path))
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, res.stderr
    assert "kubeconfig" in lines[0].lower() or "KUBECONFIG" in lines[0]


def test_run_without_kubeconfig_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: p}\n"
        "spec:\n  target: {namespace: models, inferenceService: m}\n"
    )
    res = run(
        [
            "run",
            "--policies",
            str(tmp_path / "p.yaml"),
            "--prometheus",
            "http://127.0.0.1:9",
            "--once",
        ],
        bare_env(tmp_path),
    )
    assert res.returncode == 3
    assert "Traceback" not in res.stderr
    assert "no cluster configuration" in res.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    res = run(["status", "models/m", "--debug"], bare_env(tmp_path))
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_context_and_merged_kubeconfig(kube: KubeEnv, namespace: str, tmp_path: Path) -> None:
    # KUBECONFIG with two files: the first names another current context, the second holds
    # the real cluster under a context picked with --context.
    real = yaml.safe_load(kube.kubeconfig.read_text())
    real["contexts"][0]["name"] = "real"
    real["contexts"][0]["context"]["namespace"] = namespace
    real["current-context"] = "real"
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(real))
    first = tmp_path / "first.yaml"
    first.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "elsewhere", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "nobody", "user": {"token": "x"}}],
                "contexts": [
                    {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "nobody"}}
                ],
                "current-context": "elsewhere",
            }
        )
    )
    make_isvc(kube, namespace, "m")
    env = {**bare_env(tmp_path), "KUBECONFIG": f"{first}{os.pathsep}{second}"}
    res = run(["status", "m", "--context", "real", "-o", "json"], env)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["rollout"] == f"{namespace}/m"  # the context's namespace
    assert info["state"] is None
    bad = run(["status", "m", "--context", "nope"], env)
    assert bad.returncode == 3 and "Traceback" not in bad.stderr
    assert len([x for x in bad.stderr.splitlines() if x.strip()]) == 1


def test_status_lists_details_and_watches(kube: KubeEnv, namespace: str, tmp_path: Path) -> None:
    for name in ("a", "b"):
        make_isvc(kube, namespace, name)
    client = kube.new_client()
    rec = Reconciler(
        [policy(namespace, "a"), policy(namespace, "b")],
        KubeObjects(client),
        ScriptedSource(),
        EventRecorder(client, "canaryd-test"),
    )
    rec.tick(0.0)
    rec.tick(60.0)  # step 1 met: both at 25 %
    env = {**bare_env(tmp_path), "KUBECONFIG": str(kube.kubeconfig)}

    listing = run(["status", "-n", namespace], env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "PHASE",
        "STEP",
        "WEIGHT",
        "AGE",
        "LAST",
        "DECISION",
        "NEXT",
    ]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"a", "b"}
    for row in rows.values():
        cols = row.split()
        assert cols[1] == "progressing" and cols[2] == "2/3" and cols[3] == "25%"
        assert "step 1 met" in row  # the same step numbers as the decision's reason

    every = run(["status", "-A"], env)
    assert every.returncode == 0 and every.stdout.splitlines()[0].startswith("NAMESPACE")
    assert f"{namespace} " in every.stdout

    detail = run(["status", "a", "-n", namespace, "-o", "json"], env)
    info = json.loads(detail.stdout)
    assert info["state"]["step"] == 2 and info["state"]["steps"] == 3
    assert info["state"]["reason"].startswith("step 1 met")  # not the start reason
    assert "next window in" in info["state"]["next"]
    verdict = info["last_decision"]["verdicts"][0]
    assert verdict["metric"] == "errors" and verdict["status"] in ("continue", "pass")
    assert isinstance(verdict["e_value"], float) and isinstance(verdict["interval"], list)
    as_yaml = yaml.safe_load(run(["status", f"{namespace}/a", "-o", "yaml"], env).stdout)
    assert as_yaml["state"]["step"] == 2

    text = run(["status", f"{namespace}/a"], env)
    assert "step 2 of 3" in text.stdout and "reason     step 1 met" in text.stdout

    watcher = subprocess.Popen(
        [sys.executable, "-m", "canaryd.cli", "status", "-n", namespace, "-w", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        time.sleep(4.0)
        rec.tick(120.0)  # step 2 met: 50 %
        time.sleep(4.0)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=20)
    assert out.count("NAME ") >= 2, out  # printed again after the change
    assert "3/3" in out and "50%" in out


def test_kubectl_plugin_entry_point() -> None:
    exe = Path(sys.executable).parent / "kubectl-canaryd"
    assert exe.is_file(), "pip install -e . installs kubectl-canaryd"
    res = subprocess.run(
        [str(exe), "status", "--help"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0 and "-A, --all-namespaces" in res.stdout
