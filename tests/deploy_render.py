"""deploy/ as a user applies it: rendered by a real kustomize, configured in its one place.

- ``render(directory)``: the documents ``kubectl apply -k directory`` would send, rendered by
  ``scripts/kustomize`` (the sigs.k8s.io/kustomize/api library; built once and cached).
- ``configured_deploy(dest, settings=..., prometheus_files=...)``: a copy of ``deploy/`` and
  ``policies/`` in which ``deploy/kustomization.yaml`` says what a new user writes there: the
  ``CANARYD_PROMETHEUS_*`` settings and the files of the ``canaryd-prometheus-auth`` Secret.
- ``daemon_launch(docs, root)``: how the rendered Deployment's container would start, made
  runnable here: its ConfigMap and Secret volumes written under ``root`` (Secret data
  base64-decoded, as the kubelet does), its ``env``/``envFrom`` resolved from the rendered
  ConfigMaps and Secrets (``fieldRef`` from the pod), and every path under a mount rewritten
  to its copy under ``root``. ``args`` + ``env`` then start ``canaryd`` exactly as in the pod.

For the end-to-end "a new user applies deploy/" test::

    deploy = configured_deploy(tmp / "src", settings={...}, prometheus_files={...})
    docs = render(deploy)
    launch = daemon_launch(docs, tmp / "pod")
    subprocess.Popen([sys.executable, "-m", "canaryd.cli", *launch.args, "--kubeconfig", ...],
                     env={**launch.env, "PATH": ...})
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from canaryd.kube import raw_request

REPO = Path(__file__).resolve().parents[1]
KUSTOMIZE = REPO / "scripts" / "kustomize"
DEFAULT_DIRS = {"/etc/canaryd/credentials": "CANARYD_CREDENTIALS_DIR"}
"""Mount paths the daemon uses by default, and the variable that moves the default."""

JSON = dict[str, Any]


def build_kustomize(timeout_s: int = 900) -> Path:
    """Build (or find) the cached renderer; RuntimeError with its output on failure."""
    proc = subprocess.run(
        [str(KUSTOMIZE), "build"], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/kustomize build failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def render(directory: Path) -> list[JSON]:
    """The rendered documents of the kustomization in ``directory``."""
    binary = build_kustomize()
    proc = subprocess.run(
        [str(binary), str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kustomize {directory} failed: {proc.stderr[-3000:]}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def configured_deploy(
    dest: Path,
    *,
    settings: Mapping[str, str],
    prometheus_files: Mapping[str, bytes] = {},
    credentials_files: Mapping[str, bytes] = {},
    components: Sequence[str] = (),
) -> Path:
    """Copy ``deploy/`` and ``policies/`` to ``dest`` and configure the copy as a user would:
    the ``canaryd-prometheus`` literals become ``settings``, ``prometheus_files`` are written to
    ``deploy/prometheus/`` and listed in the ``canaryd-prometheus-auth`` Secret (likewise
    ``credentials_files`` for ``canaryd-credentials``). Returns the copied ``deploy/``."""
    shutil.copytree(REPO / "deploy", dest / "deploy")
    shutil.copytree(REPO / "policies", dest / "policies")
    deploy = dest / "deploy"
    path = deploy / "kustomization.yaml"
    kust = yaml.safe_load(path.read_text())
    for gen in kust["configMapGenerator"]:
        if gen["name"] == "canaryd-prometheus":
            gen["literals"] = [f"{k}={v}" for k, v in settings.items()]
    secrets = {
        "canaryd-prometheus-auth": ("prometheus", prometheus_files),
        "canaryd-credentials": ("credentials", credentials_files),
    }
    for gen in kust["secretGenerator"]:
        sub, content = secrets[gen["name"]]
        gen["files"] = []
        for name, data in content.items():
            local = deploy / sub / name.replace("/", "_")
            local.write_bytes(data)
            gen["files"].append(f"{name}={sub}/{local.name}")
    if components:
        kust["components"] = list(components)
    path.write_text(yaml.safe_dump(kust, sort_keys=False))
    return deploy


@dataclass
class DaemonLaunch:
    """The canaryd container of the rendered Deployment, runnable on this machine."""

    args: list[str]
    env: dict[str, str]
    mounts: dict[str, Path] = field(default_factory=dict)
    """Mount path in the pod → its materialised copy."""
    image: str = ""


def one(docs: Sequence[JSON], kind: str, name: str) -> JSON:
    """The rendered object of ``kind`` whose name is ``name`` or ``name-<hash>``."""
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and (d["metadata"]["name"] == name or d["metadata"]["name"].startswith(f"{name}-"))
    ]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name!r}, found {len(found)}")
    return found[0]


def _data(obj: JSON) -> dict[str, bytes]:
    out = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    if obj["kind"] == "Secret":
        out = {k: base64.b64decode(v) for k, v in out.items()}
        out.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
    return out


def _by_name(docs: Sequence[JSON], kind: str, name: str) -> JSON:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise LookupError(f"the Deployment refers to {kind} {name!r}, which is not rendered")


def daemon_launch(
    docs: Sequence[JSON], root: Path, *, container: str = "canaryd", pod_name: str = "canaryd-0"
) -> DaemonLaunch:
    """See the module docstring."""
    deployment = one(docs, "Deployment", "canaryd")
    pod = deployment["spec"]["template"]["spec"]
    (c,) = [x for x in pod["containers"] if x["name"] == container]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for m in c.get("volumeMounts", []):
        vol = volumes[m["name"]]
        target = root / m["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in vol:
            src = _by_name(docs, "ConfigMap", vol["configMap"]["name"])
        elif "secret" in vol:
            src = _by_name(docs, "Secret", vol["secret"]["secretName"])
        else:
            mounts[m["mountPath"]] = target  # emptyDir
            continue
        for key, data in _data(src).items():
            (target / key).write_bytes(data)
        mounts[m["mountPath"]] = target

    env: dict[str, str] = {}
    for ref in c.get("envFrom", []):
        if "configMapRef" in ref:
            src = _by_name(docs, "ConfigMap", ref["configMapRef"]["name"])
        else:
            src = _by_name(docs, "Secret", ref["secretRef"]["name"])
        env.update({k: v.decode() for k, v in _data(src).items()})
    meta = {"metadata.namespace": deployment["metadata"]["namespace"], "metadata.name": pod_name}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = meta[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = e["valueFrom"].get("configMapKeyRef") or e["valueFrom"]["secretKeyRef"]
            kind = "ConfigMap" if "configMapKeyRef" in e["valueFrom"] else "Secret"
            env[e["name"]] = _data(_by_name(docs, kind, ref["name"]))[ref["key"]].decode()

    def local(value: str) -> str:
        for mount, target in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if value == mount or value.startswith(mount + "/"):
                return str(target) + value[len(mount) :]
        return value

    env = {k: local(v) for k, v in env.items()}
    for mount, var in DEFAULT_DIRS.items():
        if mount in mounts:
            env.setdefault(var, str(mounts[mount]))
    return DaemonLaunch(
        args=[local(a) for a in c.get("args", [])],
        env=env,
        mounts=mounts,
        image=str(c.get("image", "")),
    )


def collection_path(api_client: k8s.ApiClient, doc: JSON) -> str:
    """The collection URL of ``doc``'s kind, found through API discovery."""
    api_version = doc["apiVersion"]
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    resources = raw_request(api_client, "GET", prefix)["resources"]
    (res,) = [r for r in resources if r["kind"] == doc["kind"] and "/" not in r["name"]]
    if res["namespaced"]:
        return f"{prefix}/namespaces/{doc['metadata']['namespace']}/{res['name']}"
    return f"{prefix}/{res['name']}"


def apply(api_client: k8s.ApiClient, doc: JSON, *, dry_run: bool = False) -> JSON:
    """``kubectl apply --server-side [--dry-run=server]`` of one document: idempotent, so tests
    that share one apiserver may each apply ``deploy/`` (a create would 409 the second time)."""
    query = {"fieldManager": "kubectl", "force": "true", "fieldValidation": "Strict"}
    if dry_run:
        query["dryRun"] = "All"
    return raw_request(
        api_client,
        "PATCH",
        f"{collection_path(api_client, doc)}/{doc['metadata']['name']}",
        body=doc,
        query=query,
        content_type="application/apply-patch+yaml",
    )
