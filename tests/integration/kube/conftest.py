"""A real kube-apiserver + etcd for the whole session (scripts/envtest), with the CRDs applied.

``pytest tests/integration/kube`` is enough: the fixture builds kube-apiserver on demand
(``scripts/envtest build``: a few minutes cold, instant when cached) and prints its progress.
A failed build or start FAILS the session; these tests never skip for a missing apiserver.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from canaryd.kube import (
    JSON,
    ApiConflictError,
    ApiError,
    KubeObjects,
    Resource,
    load_api_client,
    raw_request,
)

REPO = Path(__file__).resolve().parents[3]
ENVTEST = REPO / "scripts" / "envtest"
BUILD_TIMEOUT = int(os.environ.get("CANARYD_ENVTEST_BUILD_TIMEOUT", "3600"))


@dataclass
class KubeEnv:
    api_client: k8s.ApiClient
    kubeconfig: Path
    dir: Path
    host: str
    ca_file: Path
    crd_source: Path

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api_client)

    def new_client(self) -> k8s.ApiClient:
        """A second, independent admin client (a concurrent writer)."""
        return load_api_client(str(self.kubeconfig))


def _run_visible(request: pytest.FixtureRequest, args: list[str], timeout: int) -> None:
    """Run a command with pytest's capture off, so build/start progress reaches the terminal."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    started = time.monotonic()
    quiet = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    with quiet:
        print(f"\n[kube fixture] $ {' '.join(args)}", file=sys.stderr, flush=True)
        try:
            env = {**os.environ, "CANARYD_ENVTEST_PARENT_PID": str(os.getpid())}
            proc = subprocess.run(args, timeout=timeout, check=False, cwd=REPO, env=env)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(args)} did not finish within {timeout}s", pytrace=False)
        print(
            f"[kube fixture] exit {proc.returncode} after {time.monotonic() - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} failed with exit code {proc.returncode}; the kube integration "
            "tests need a real kube-apiserver (see the output above)",
            pytrace=False,
        )


def crd_dir() -> Path:
    """The upstream CRDs the tests apply: the project's own copies (see their README)."""
    return REPO / "tests" / "fixtures" / "crds"


def as_json(value: object) -> JSON:
    """CustomObjectsApi returns ``object``; it is a decoded JSON object."""
    assert isinstance(value, dict), type(value)
    return value


def _established(api: k8s.CustomObjectsApi, name: str) -> bool:
    crd = as_json(
        api.get_cluster_custom_object(
            "apiextensions.k8s.io", "v1", "customresourcedefinitions", name
        )
    )
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def apply_crds(api_client: k8s.ApiClient, directory: Path) -> list[str]:
    api = k8s.CustomObjectsApi(api_client)
    names = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            api.create_cluster_custom_object(
                "apiextensions.k8s.io", "v1", "customresourcedefinitions", doc
            )
            names.append(doc["metadata"]["name"])
    deadline = time.monotonic() + 60
    pending = set(names)
    while pending:
        pending = {n for n in pending if not _established(api, n)}
        if pending and time.monotonic() > deadline:
            pytest.fail(f"CRDs not Established after 60s: {sorted(pending)}", pytrace=False)
        if pending:
            time.sleep(0.2)
    # The apiserver's discovery and REST mapping take a moment to serve a new CRD.
    for name in names:
        group = name.split(".", 1)[1]
        for _ in range(100):
            try:
                raw_request(api_client, "GET", f"/apis/{group}")
                break
            except ApiError:
                time.sleep(0.1)
    return names


# -- objects -------------------------------------------------------------------------------

ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")


def sample_predictor(image_tag: str = "v1") -> JSON:
    return {
        "minReplicas": 1,
        "maxReplicas": 3,
        "model": {
            "name": "kserve-container",  # required by the CRD inside spec.canary[].predictor
            "modelFormat": {"name": "sklearn"},
            "storageUri": f"gs://kfserving-examples/models/sklearn/1.0/model-{image_tag}",
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
            "env": [{"name": "MODEL_TAG", "value": image_tag}],
        },
    }


def serverless_status(stable: str, latest: str, ready_since: str = "2026-01-01T00:00:00Z") -> JSON:
    """A Ready Serverless InferenceService status: ``stable`` rolled out, ``latest`` ready."""
    return {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_since}],
        "components": {
            "predictor": {
                "latestReadyRevision": latest,
                "latestCreatedRevision": latest,
                "latestRolledoutRevision": stable,
            }
        },
    }


def create_isvc(kube: KubeEnv, namespace: str, name: str, spec: JSON) -> JSON:
    body = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"team": "ml"},
            "annotations": {"serving.kserve.io/deploymentMode": "Serverless"},
        },
        "spec": spec,
    }
    return as_json(kube.custom.create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], body))


def set_isvc_status(kube: KubeEnv, namespace: str, name: str, status: JSON) -> JSON:
    """Play KServe's controller: write the status subresource."""
    obj = get_isvc(kube, namespace, name)
    obj["status"] = status
    return as_json(
        kube.custom.replace_namespaced_custom_object_status(
            *ISVC[:2], namespace, ISVC[2], name, obj
        )
    )


def get_isvc(kube: KubeEnv, namespace: str, name: str) -> JSON:
    return as_json(kube.custom.get_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], name))


def without_path(obj: Any, path: tuple[str | int, ...]) -> Any:
    """A deep copy of ``obj`` with ``path`` removed (for "nothing else changed" comparisons)."""
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return out
    if isinstance(node, dict):
        node.pop(path[-1], None)
    return out


def rv(obj: JSON) -> str:
    return str(obj["metadata"]["resourceVersion"])


class ConcurrentWriter(KubeObjects):
    """Real object reads and writes; before the router's first patch lands, ``bump`` runs
    through a second client (a real concurrent write), so the router's resourceVersion is stale
    and the apiserver answers 409."""

    def __init__(self, api_client: k8s.ApiClient, bump: Callable[[], None], times: int = 1):
        super().__init__(api_client)
        self._bump = bump
        self.remaining = times
        self.patch_calls = 0
        self.conflicts = 0

    def patch(self, resource: Resource, namespace: str, name: str, patch: JSON) -> JSON:
        self.patch_calls += 1
        if self.remaining > 0:
            self.remaining -= 1
            self._bump()
        try:
            return super().patch(resource, namespace, name, patch)
        except ApiConflictError:
            self.conflicts += 1
            raise


# -- a private apiserver, for tests that stop or restart it -----------------------------------


@dataclass
class PrivateKube:
    dir: Path
    client: k8s.ApiClient

    @property
    def etcd(self) -> str:
        return f"http://127.0.0.1:{(self.dir / 'etcd.port').read_text().strip()}"

    def restart_apiserver(self, down: Callable[[], None] | None = None) -> None:
        """Stop kube-apiserver, run ``down`` (against etcd) while it is down, start it again."""
        pid = (self.dir / "kube-apiserver.pid").read_text().strip()
        subprocess.run(["kill", "-TERM", pid], check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(self.dir / "kube-apiserver.pid"):
            time.sleep(0.1)
        if down is not None:
            down()
        subprocess.run([str(ENVTEST), "restart-apiserver", str(self.dir)], check=True, timeout=120)


def _alive(pidfile: Path) -> bool:
    try:
        Path(f"/proc/{pidfile.read_text().strip()}").stat()
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def private_kube() -> Iterator[PrivateKube]:
    workdir = Path(tempfile.mkdtemp(prefix="canaryd-watch-"))
    client = None
    try:
        subprocess.run([str(ENVTEST), "start", str(workdir)], check=True, timeout=300)
        client = load_api_client(str(workdir / "kubeconfig"))
        apply_crds(client, crd_dir())
        yield PrivateKube(workdir, client)
    finally:
        if client is not None:
            client.close()
        subprocess.run([str(ENVTEST), "stop", str(workdir)], timeout=60, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
