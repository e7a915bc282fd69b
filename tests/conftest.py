"""Session-wide fixtures shared by several suites.

``kube`` (a real etcd + kube-apiserver with the KServe and Istio CRDs) lives here, at the root,
so the kube integration suite and the end-to-end tests share one apiserver per session: a
fixture defined in two conftests would start two.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client as k8s
import pytest

from canaryd.kube import load_api_client, raw_request
from tests.integration.kube.conftest import (
    BUILD_TIMEOUT,
    ENVTEST,
    KubeEnv,
    _run_visible,
    apply_crds,
    crd_dir,
)


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[KubeEnv]:
    _run_visible(request, [str(ENVTEST), "build"], BUILD_TIMEOUT)
    workdir = Path(tempfile.mkdtemp(prefix="canaryd-envtest-"))
    client: k8s.ApiClient | None = None
    try:
        _run_visible(request, [str(ENVTEST), "start", str(workdir)], 300)
        kubeconfig = workdir / "kubeconfig"
        client = load_api_client(str(kubeconfig))
        source = crd_dir()
        apply_crds(client, source)
        yield KubeEnv(
            api_client=client,
            kubeconfig=kubeconfig,
            dir=workdir,
            host=client.configuration.host,
            ca_file=workdir / "pki" / "ca.crt",
            crd_source=source,
        )
    finally:
        if client is not None:
            client.close()
        subprocess.run([str(ENVTEST), "stop", str(workdir)], timeout=60, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def namespace(kube: KubeEnv) -> str:
    """A fresh namespace per test (never deleted: a bare apiserver has no namespace controller
    to finalize it, and the whole etcd goes away at the end of the session)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    raw_request(
        kube.api_client,
        "POST",
        "/api/v1/namespaces",
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    return name
