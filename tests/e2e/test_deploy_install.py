"""A new user installs deploy/ and canaryd decides: kustomize output applied, the daemon started
from the rendered Deployment's args and env, against a Prometheus with basic auth and TLS.

Every part is real:

- a Prometheus started with ``--web.config.file`` (a bcrypt user and a TLS certificate from a
  private CA generated here), backfilled with a canary whose error rate is four times stable's;
- ``deploy/kustomization.yaml`` configured in its one place (the URL, the user, the password
  file and the CA file), the user's policy added to ``policies/``, rendered by the real
  kustomize renderer (``scripts/kustomize``) and applied to the real kube-apiserver;
- the daemon started as the rendered container would start (its args, its env from the
  rendered ConfigMaps, its Secret and ConfigMap volumes written out as the kubelet would), with
  the rendered ServiceAccount's own token: the rendered RBAC is all it has.

Two flags are added for this machine only: ``--kubeconfig`` (a pod would use its mounted
ServiceAccount token) and the drills' ``--clock-offset`` (the backfilled data lies in the past).
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from kubernetes import client as k8s

from canaryd.identity import RolloutKey
from canaryd.kube import raw_request
from canaryd.metrics.openmetrics import tick_samples_from_observations, write_openmetrics
from canaryd.observation import Observation, VersionCounts
from canaryd.state.kubernetes import KubernetesStateStore
from tests.deploy_render import apply, configured_deploy, daemon_launch, render
from tests.integration.kube.conftest import (
    REPO,
    KubeEnv,
    create_isvc,
    get_isvc,
    sample_predictor,
    serverless_status,
    set_isvc_status,
)
from tests.integration.prometheus.conftest import data_origin, make_pki, start_prometheus

pytestmark = pytest.mark.integration

USER, PASSWORD = "canaryd", "a passphrase nobody guesses"
NS, NAME = "models", "install-check"
STABLE, CANARY = "install-check-predictor-00001", "install-check-predictor-00002"
INTERVAL = 5.0
BOUNDS = (25.0, 100.0, 250.0, float("inf"))

POLICY = f"""\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: {NAME}}}
spec:
  target: {{namespace: {NS}, inferenceService: {NAME}}}
  router: {{type: kserve}}
  steps: {{weights: [10, 50], minDwell: 10m, minCanaryRequests: 50}}
  analysis:
    interval: 5s
    source: {{preset: istio}}
    metrics:
      - {{name: errors, kind: errors, maxRelativeIncrease: 0.2}}
"""


def _apply(api: k8s.ApiClient, docs: list[dict[str, Any]]) -> None:
    """``kubectl apply --server-side -k``: namespaces first, then every other object."""
    for doc in sorted(docs, key=lambda d: d["kind"] != "Namespace"):
        apply(api, doc)


def _sa_kubeconfig(kube: KubeEnv, dest: Path) -> Path:
    """A kubeconfig holding the rendered ServiceAccount's token (what the pod would mount)."""
    token = k8s.CoreV1Api(kube.api_client).create_namespaced_service_account_token(
        "canaryd",
        "canaryd-system",
        k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[])),
    )
    assert token.status is not None and token.status.token
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": kube.host,
                    "certificate-authority-data": base64.b64encode(
                        kube.ca_file.read_bytes()
                    ).decode(),
                },
            }
        ],
        "users": [{"name": "canaryd", "user": {"token": token.status.token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "canaryd"}}],
        "current-context": "c",
    }
    dest.write_text(yaml.safe_dump(cfg))
    return dest


def test_deploy_as_applied_decides(kube: KubeEnv, tmp_path: Path) -> None:
    # 1. Prometheus with basic auth and TLS, holding a regressed canary.
    pki = make_pki(tmp_path / "pki")
    t0 = data_origin() - 3600.0
    obs = [
        Observation(
            t0 + k * INTERVAL,
            t0 + (k + 1) * INTERVAL,
            VersionCounts(450.0, 4.0 + k % 2, BOUNDS, (300.0, 420.0, 445.0, 450.0)),
            VersionCounts(50.0, 2.0, BOUNDS, (33.0, 46.0, 49.0, 50.0)),
        )
        for k in range(120)
    ]
    om = tmp_path / "install.om"
    with om.open("w") as f:
        write_openmetrics(
            f,
            tick_samples_from_observations(obs, 1.0, STABLE, CANARY),
            preset="istio",
            namespace=NS,
            workload_suffix="-deployment",
        )
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = (
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"basic_auth_users:\n  {USER}: '{hashed}'\n"
    )
    (tmp_path / "prom").mkdir()
    prom = start_prometheus(
        [om], tmp_path / "prom", web_config=web,
        ready_kwargs={"auth": (USER, PASSWORD), "verify": str(pki.ca)},
    )  # fmt: skip
    proc: subprocess.Popen[bytes] | None = None
    try:
        # 2. deploy/ configured in its one place, with the user's policy, rendered, applied.
        src = configured_deploy(
            tmp_path / "src",
            settings={
                "CANARYD_PROMETHEUS_URL": prom.url,
                "CANARYD_PROMETHEUS_USERNAME": USER,
                "CANARYD_PROMETHEUS_PASSWORD_FILE": "/etc/canaryd/prometheus/password",
                "CANARYD_PROMETHEUS_CA_FILE": "/etc/canaryd/prometheus/ca.crt",
            },
            prometheus_files={"password": PASSWORD.encode() + b"\n", "ca.crt": pki.ca.read_bytes()},
        )
        policies = tmp_path / "src" / "policies"
        (policies / "install-check.yaml").write_text(POLICY)
        kust = yaml.safe_load((policies / "Kustomization").read_text())
        kust["configMapGenerator"][0]["files"].append("install-check.yaml")
        (policies / "Kustomization").write_text(yaml.safe_dump(kust, sort_keys=False))
        docs = render(src)
        _apply(
            kube.api_client,
            [*docs, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}],
        )
        create_isvc(kube, NS, NAME, {"predictor": sample_predictor("v2")})
        set_isvc_status(kube, NS, NAME, serverless_status(STABLE, CANARY))

        # 3. The rendered container, started here with the rendered ServiceAccount's token.
        launch = daemon_launch(docs, tmp_path / "pod")
        assert launch.env["CANARYD_PROMETHEUS_URL"] == prom.url
        kubeconfig = _sa_kubeconfig(kube, tmp_path / "sa.kubeconfig")
        offset = time.time() - (t0 + 1.0)
        args = [
            *launch.args,
            *("--kubeconfig", str(kubeconfig), "--port", "0", "--host", "127.0.0.1"),
            *("--settle", "0", "--tick", "1", "--clock-offset", f"{offset:.3f}"),
        ]
        env = {**launch.env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        log = (tmp_path / "daemon.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "canaryd.cli", *args], stdout=log, stderr=subprocess.STDOUT,
            cwd=REPO, env=env,
        )  # fmt: skip

        # 4. It decides: the canary is rolled back, the Events say why.
        store = KubernetesStateStore(kube.api_client)

        deadline = time.monotonic() + 180
        phase = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            got = store.load(RolloutKey(NS, NAME))
            phase = None if got is None else got.data["state"]["phase"]
            # The decision is stored before it is acted on (with the router change pending):
            # wait for the router write too.
            pct = get_isvc(kube, NS, NAME)["spec"]["predictor"].get("canaryTrafficPercent")
            if phase == "rolled_back" and pct == 0:
                break
            time.sleep(0.5)
        log_text = (tmp_path / "daemon.log").read_text()
        assert phase == "rolled_back", log_text[-4000:]
        assert get_isvc(kube, NS, NAME)["spec"]["predictor"]["canaryTrafficPercent"] == 0
        events = raw_request(
            kube.api_client, "GET", f"/apis/events.k8s.io/v1/namespaces/{NS}/events"
        )
        reasons = [e["reason"] for e in events["items"] if e["regarding"]["name"] == NAME]
        assert "CanaryStarted" in reasons and "RolledBack" in reasons
        assert "unauthorized" not in log_text.lower() and "tls:" not in log_text.lower()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        prom.stop()
