"""A live canary on this machine: real kserve model servers, a real Prometheus scraping them
through Kubernetes service discovery, real HTTP load, and canaryd's Reconciler deciding.

Used by ``tests/live`` (pytest), ``tests/live/demo.py`` (``scripts/demo``) and
``analysis/counting.py``. Everything listens on 127.0.0.1; every process it starts it stops.

The pieces, and what each stands in for:

- ``ModelServer``: ``python -m tests.live.model_server``, kserve 0.21's ModelServer around a
  small scikit-learn model (v1 stable, v2 canary, both trained on iris by ``train_models``).
- ``Cluster``: the InferenceService ``m`` (Serverless) on the envtest kube-apiserver with stable
  revision ``m-predictor-00001`` and canary ``m-predictor-00002``, and one Pod per revision
  labelled as Knative labels a revision's pod (``serving.knative.dev/revision``), with
  ``status.podIP: 127.0.0.1`` and the ``prometheus.io/*`` annotations: what Prometheus sees of
  a revision in a cluster.
- ``Prometheus``: the Debian ``prometheus`` scraping the Pods with the relabelling of the usual
  ``kubernetes-pods`` job (keep ``prometheus.io/scrape``, address from ``prometheus.io/port``,
  ``labelmap`` of the pod labels, ``namespace``, ``pod``), so every series of the model server
  carries ``serving_knative_dev_revision``, ``namespace`` and ``pod``. Debian builds Prometheus
  without Kubernetes discovery, so ``write_pod_targets`` lists the Pods from the apiserver with
  the meta labels Kubernetes pod discovery would give them, as a ``file_sd`` target file.
- ``LoadGenerator``: open-loop V1 ``:predict`` requests at a fixed rate, each sent to the canary
  with the probability ``spec.predictor.canaryTrafficPercent`` / 100 read from the
  InferenceService (absent after a promotion: all canary), i.e. the Knative/Istio data plane.
  It records the truth: every request's version, send/receive time, status and latency.
- ``DaemonLoop``: canaryd's ``Reconciler`` (the daemon's decision loop, its real state store,
  Events and router) ticking on the wall clock, through a recording ``PrometheusSource``.

``compare_counts`` checks every analysis window canaryd counted against the truth.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import requests
import yaml

from canaryd.controller import Phase
from canaryd.daemon.reconciler import Reconciler, TickReport
from canaryd.kube import JSON, KubeObjects, load_api_client, raw_request
from canaryd.kube.events import EventRecorder
from canaryd.metrics.pool import PrometheusPool
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation
from canaryd.policy.loader import load_policies_text
from canaryd.policy.model import CanaryPolicy
from canaryd.state.base import RolloutKey
from canaryd.state.document import StateDoc
from canaryd.state.kubernetes import KubernetesStateStore

ROOT = Path(__file__).resolve().parents[2]
NAME = "m"
STABLE_REV, CANARY_REV = f"{NAME}-predictor-00001", f"{NAME}-predictor-00002"
VERSIONS = ("stable", "canary")
ERRORS_METRIC = "request_predict_errors_total"
HISTOGRAM_LE_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""prometheus_client's default buckets, which kserve's request_predict_seconds uses."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- models -----------------------------------------------------------------------------------


def train_models(directory: Path) -> dict[str, Path]:
    """v1 (stable) and v2 (canary): two small scikit-learn classifiers of iris, joblib'd."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    out = {"stable": directory / "v1.joblib", "canary": directory / "v2.joblib"}
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), out["stable"])
    joblib.dump(DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y), out["canary"])
    return out


@dataclass(frozen=True)
class Fault:
    """What the canary does wrong (nothing, by default)."""

    error_share: float = 0.0
    slow_share: float = 0.0
    slow_ms: float = 0.0


@dataclass
class ModelServer:
    version: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls, version: str, model: Path, fault: Fault, seed: int, workdir: Path
    ) -> ModelServer:
        port = free_port()
        log = workdir / f"model-{version}.log"
        args = [
            sys.executable,
            "-m",
            "tests.live.model_server",
            *("--model", str(model), "--name", NAME, "--port", str(port)),
            *("--error-share", str(fault.error_share), "--slow-share", str(fault.slow_share)),
            *("--slow-ms", str(fault.slow_ms), "--seed", str(seed)),
        ]
        with log.open("wb") as f:
            proc = subprocess.Popen(
                args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
            )
        return cls(version, port, proc, log)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"model server {self.version} exited: {self.log.read_text()[-2000:]}"
                )
            with contextlib.suppress(requests.RequestException):
                r = requests.get(f"{self.url}/v1/models/{NAME}", timeout=1)
                if r.status_code == 200 and r.json().get("ready"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"model server {self.version} not ready within {timeout_s:.0f}s")

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


# -- the cluster objects ----------------------------------------------------------------------

ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"


@dataclass
class Cluster:
    """The InferenceService and the revisions' Pods in one namespace of a real apiserver."""

    api: k8s.ApiClient
    kubeconfig: Path
    namespace: str

    def create_namespace(self) -> None:
        raw_request(
            self.api,
            "POST",
            "/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
        )
        # No controller-manager: the ServiceAccount admission needs `default` to exist.
        raw_request(
            self.api,
            "POST",
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts",
            body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
        )

    def create_inference_service(self) -> None:
        """``m`` in Serverless mode: v1 rolled out, v2 ready, the canary at 0 % until canaryd
        starts it (what a user applies to hand the rollout to canaryd)."""
        predictor = {
            "canaryTrafficPercent": 0,
            "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://models/v2"},
        }
        body = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {
                "name": NAME,
                "namespace": self.namespace,
                "annotations": {"serving.kserve.io/deploymentMode": "Serverless"},
            },
            "spec": {"predictor": predictor},
        }
        path = ISVC_PATH.format(ns=self.namespace)
        obj = raw_request(self.api, "POST", path, body=body)
        # Play KServe's controller: the status of a Ready service with two revisions.
        obj["status"] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ],
            "components": {
                "predictor": {
                    "latestReadyRevision": CANARY_REV,
                    "latestCreatedRevision": CANARY_REV,
                    "latestRolledoutRevision": STABLE_REV,
                }
            },
        }
        raw_request(self.api, "PUT", f"{path}/{NAME}/status", body=obj)

    def create_pod(self, revision: str, port: int) -> str:
        """A revision's pod as Prometheus discovers it: labels, scrape annotations, pod IP."""
        name = f"{revision}-deployment-{port}"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {
                    "serving.knative.dev/revision": revision,
                    "serving.knative.dev/configuration": f"{NAME}-predictor",
                    "serving.kserve.io/inferenceservice": NAME,
                    "component": "predictor",
                },
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "kserve/sklearnserver:v0.21.0",
                        "ports": [{"containerPort": port, "protocol": "TCP"}],
                    }
                ],
            },
        }
        base = f"/api/v1/namespaces/{self.namespace}/pods"
        pod = raw_request(self.api, "POST", base, body=body)
        pod["status"] = {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }
        raw_request(self.api, "PUT", f"{base}/{name}/status", body=pod)
        return name

    def canary_percent(self, api: k8s.ApiClient | None = None) -> int | None:
        obj = raw_request(api or self.api, "GET", f"{ISVC_PATH.format(ns=self.namespace)}/{NAME}")
        value = obj["spec"]["predictor"].get("canaryTrafficPercent")
        return value if isinstance(value, int) else None

    def events(self) -> list[JSON]:
        got = raw_request(
            self.api, "GET", f"/apis/events.k8s.io/v1/namespaces/{self.namespace}/events"
        )
        items = [e for e in got.get("items", []) if e["regarding"]["name"] == NAME]
        return sorted(items, key=lambda e: (e["eventTime"], e["metadata"]["name"]))


def _meta_name(key: str) -> str:
    """A Kubernetes label or annotation key as kubernetes_sd spells it in a meta label."""
    return "".join(ch if ch.isalnum() else "_" for ch in key)


def write_pod_targets(api: k8s.ApiClient, namespace: str, path: Path) -> int:
    """One file_sd target per container port of every Pod in ``namespace``, with the meta
    labels Prometheus' Kubernetes pod discovery gives it (``__meta_kubernetes_namespace``,
    ``..._pod_name``, ``..._pod_ip``, ``..._pod_label_<k>``, ``..._pod_annotation_<k>``,
    ``..._pod_container_port_number``, ``..._pod_phase``, ``..._pod_ready``)."""
    pods = raw_request(api, "GET", f"/api/v1/namespaces/{namespace}/pods").get("items", [])
    groups = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        ip = status.get("podIP")
        if not ip:
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        base = {
            "__meta_kubernetes_namespace": namespace,
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_ready": "true" if ready else "false",
        }
        for k, v in (meta.get("labels") or {}).items():
            base[f"__meta_kubernetes_pod_label_{_meta_name(k)}"] = v
        for k, v in (meta.get("annotations") or {}).items():
            base[f"__meta_kubernetes_pod_annotation_{_meta_name(k)}"] = v
        for c in pod["spec"]["containers"]:
            for port in c.get("ports") or []:
                labels = {
                    **base,
                    "__meta_kubernetes_pod_container_name": c["name"],
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                }
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": labels})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=1))
    tmp.replace(path)  # file_sd reads whole files: never a half-written one
    return len(groups)


# -- Prometheus -------------------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    @classmethod
    def start(
        cls, workdir: Path, api: k8s.ApiClient, namespace: str, scrape_s: float
    ) -> Prometheus:
        if not shutil.which("prometheus"):
            raise RuntimeError("prometheus is not installed (run scripts/install-prometheus)")
        targets = workdir / "targets.json"
        write_pod_targets(api, namespace, targets)
        config = {
            "global": {"scrape_interval": f"{scrape_s:g}s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "kubernetes-pods",
                    # What `kubernetes_sd_configs: [{role: pod}]` discovers, written by
                    # write_pod_targets: Debian's prometheus is built without Kubernetes
                    # discovery (it refuses kubernetes_sd_configs).
                    "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
                    # The relabelling of the usual `kubernetes-pods` job.
                    "relabel_configs": [
                        {
                            "source_labels": [
                                "__meta_kubernetes_pod_annotation_prometheus_io_scrape"
                            ],
                            "action": "keep",
                            "regex": "true",
                        },
                        {
                            "source_labels": [
                                "__meta_kubernetes_pod_annotation_prometheus_io_path"
                            ],
                            "target_label": "__metrics_path__",
                            "regex": "(.+)",
                        },
                        {
                            "source_labels": [
                                "__address__",
                                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                            ],
                            "regex": r"([^:]+)(?::\d+)?;(\d+)",
                            "replacement": "$1:$2",
                            "target_label": "__address__",
                        },
                        {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                        {
                            "source_labels": ["__meta_kubernetes_namespace"],
                            "target_label": "namespace",
                        },
                        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    ],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        (workdir / "data").mkdir()
        port = free_port()
        log = workdir / "prometheus.log"
        with log.open("wb") as f:
            proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        prom = cls(f"http://127.0.0.1:{port}", proc, workdir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{prom.url}/-/ready", timeout=1).status_code == 200:
                    return prom
            time.sleep(0.2)
        prom.stop()
        raise RuntimeError("prometheus not ready within 60s")

    def query(self, promql: str, at: float | None = None) -> Any:
        data = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        r = requests.post(f"{self.url}/api/v1/query", data=data, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def wait_for_targets(self, pods: Sequence[str], timeout_s: float = 60.0) -> None:
        """Until every pod's /metrics has been scraped successfully."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            up = {row["metric"].get("pod") for row in self.query("up == 1")}
            if set(pods) <= up:
                return
            time.sleep(0.5)
        raise RuntimeError(f"prometheus did not scrape {sorted(pods)} within {timeout_s:.0f}s")

    def scrapes(self, pod: str, since: float, until: float) -> list[tuple[float, float]]:
        """(timestamp, scrape duration) of every scrape of ``pod`` in [since, until]."""
        span = max(1, math.ceil(until - since) + 1)
        rows = self.query(f'scrape_duration_seconds{{pod="{pod}"}}[{span}s]', until)
        return sorted((float(t), float(v)) for row in rows for t, v in row["values"])

    def stop(self) -> None:
        stop_process(self.process)


# -- the load and its truth -------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One inference request as the load generator saw it."""

    version: str
    t_send: float
    t_recv: float
    status: int
    slept_ms: float
    """The injected sleep of a slowed prediction (the response says), else 0."""

    @property
    def slowed(self) -> bool:
        return self.slept_ms > 0

    @property
    def latency_s(self) -> float:
        return self.t_recv - self.t_send

    @property
    def error(self) -> bool:
        return self.status >= 500


INSTANCES = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


class LoadGenerator:
    """Open-loop V1 inference requests at ``rate`` per second, split by the canary weight."""

    def __init__(
        self,
        urls: dict[str, str],
        weight: Callable[[], int | None],
        rate: float,
        seed: int,
        workers: int = 16,
    ) -> None:
        self.urls = urls
        self.weight = weight
        self.rate = rate
        self.rng = random.Random(seed)
        self.sent: list[Sent] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load")
        self._local = threading.local()
        self._percent: int | None = 0
        self._threads = [
            threading.Thread(target=self._dispatch, name="load-dispatch", daemon=True),
            threading.Thread(target=self._watch_weight, name="load-weight", daemon=True),
        ]

    def start(self) -> LoadGenerator:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self._pool.shutdown(wait=True)

    def canary_share(self) -> float:
        p = self._percent
        return 1.0 if p is None else p / 100.0  # no canaryTrafficPercent: the latest, all of it

    def _watch_weight(self) -> None:
        while not self._stop.is_set():
            try:
                self._percent = self.weight()
            except Exception as exc:  # the apiserver is gone at shutdown: keep the last split
                self.failures.append(f"weight: {exc}")
            self._stop.wait(0.2)

    def _dispatch(self) -> None:
        t0 = time.monotonic()
        k = 0
        while not self._stop.is_set():
            due = t0 + k / self.rate
            pause = due - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                break
            version = "canary" if self.rng.random() < self.canary_share() else "stable"
            self._pool.submit(self._send, version)
            k += 1

    def _send(self, version: str) -> None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        url = f"{self.urls[version]}/v1/models/{NAME}:predict"
        t_send = time.time()
        try:
            r = session.post(url, json={"instances": INSTANCES}, timeout=10)
        except requests.RequestException as exc:
            self.failures.append(f"{version}: {type(exc).__name__}")
            return
        t_recv = time.time()
        slept_ms = 0.0
        if r.status_code == 200:
            slept_ms = float(r.json().get("slept_ms") or 0.0)
        with self._lock:
            self.sent.append(Sent(version, t_send, t_recv, r.status_code, slept_ms))


# -- the daemon -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One analysis window as canaryd fetched it."""

    start_s: float
    end_s: float
    observation: Observation


class RecordingSource:
    """The daemon's metric source, unchanged; remembers every window it answered."""

    def __init__(self, inner: PrometheusPool) -> None:
        self.inner = inner
        self.windows: list[Window] = []

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        got = self.inner.fetch(requests, start_s, end_s)
        self.windows.extend(Window(start_s, end_s, o) for o in got.values())
        return got


class DaemonLoop:
    """canaryd's Reconciler on the wall clock, one tick every ``tick_s`` (as ``canaryd run``)."""

    def __init__(
        self,
        policy: CanaryPolicy,
        cluster: Cluster,
        prometheus_url: str,
        tick_s: float = 1.0,
        on_tick: Callable[[TickReport], None] | None = None,
    ) -> None:
        self.api = load_api_client(str(cluster.kubeconfig))
        self.source = RecordingSource(PrometheusPool(prometheus_url))
        self.store = KubernetesStateStore(self.api)
        self.reconciler = Reconciler(
            [policy],
            KubeObjects(self.api),
            self.source,
            EventRecorder(self.api, "canaryd-live"),
            store=self.store,
        )
        self.key = RolloutKey(cluster.namespace, NAME)
        self.tick_s = tick_s
        self.on_tick = on_tick
        self.reports: list[TickReport] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canaryd", daemon=True)

    def start(self) -> DaemonLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.reconciler.tick()
            except Exception as exc:  # the reconciler isolates faults; record a bug, go on
                self.errors.append(repr(exc))
            else:
                self.reports.append(report)
                self.errors.extend(f"{k}: {e}" for k, e in report.errors.items())
                if self.on_tick is not None:
                    try:
                        self.on_tick(report)
                    except Exception as exc:  # a printer's bug must not stop the daemon
                        self.errors.append(f"on_tick: {exc!r}")
            self._stop.wait(self.tick_s)

    def document(self) -> StateDoc | None:
        stored = self.store.load(self.key)
        return None if stored is None else StateDoc.from_dict(stored.data)

    def phase(self) -> Phase | None:
        doc = self.document()
        return None if doc is None else doc.state.phase

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.source.inner.close()
        self.api.close()


# -- one live rollout -------------------------------------------------------------------------


def policy_yaml(
    namespace: str,
    interval: str = "10s",
    weights: Sequence[int] = (20, 50),
    min_dwell: str = "60s",
    alpha: float = 0.001,
) -> str:
    """A policy sized for a live run of a few minutes: 10 s windows, two short steps (60 s each:
    with one pod per version the judges test against a null widened by ``podSpread``, x4 for
    errors, and 40 s let a canary failing 5 % of its requests reach promotion before the errors
    judge had the evidence). Both versions run the same server on this machine, so the latency
    metric declares its pods alike (``podSpread: 1``). Any larger value is read off stable's
    histogram, and this server answers mostly within prometheus_client's first bucket (0-5 ms):
    the tested boundary is then that bucket's bound, and ``b / podSpread`` falls inside the
    bucket, where the count is interpolated linearly from 0 as Prometheus does. At 1.2 that
    counts a sixth of all of stable's requests as slower than 4.2 ms, and the 30 %-slow canary
    was promoted before the latency judge crossed.
    """
    return f"""\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: {NAME}-live}}
spec:
  target: {{namespace: {namespace}, inferenceService: {NAME}}}
  router: {{type: kserve}}
  steps: {{weights: {list(weights)}, minDwell: {min_dwell}, minCanaryRequests: 100}}
  noData: {{timeout: 1m, action: pause}}
  analysis:
    interval: {interval}
    alpha: {alpha}
    source: {{preset: kserve, errorsMetric: {ERRORS_METRIC}}}
    metrics:
      - {{name: errors, kind: errors, judge: sequential, maxRelativeIncrease: 0.2}}
      - {{name: latency, kind: latency, judge: sequential, maxRelativeIncrease: 0.1,
          quantiles: [0.5, 0.9], podSpread: 1}}
"""


@dataclass
class LiveRun:
    """Everything one live rollout started, and what it recorded."""

    cluster: Cluster
    workdir: Path
    servers: dict[str, ModelServer]
    pods: dict[str, str]
    prometheus: Prometheus
    load: LoadGenerator
    daemon: DaemonLoop | None = None
    started_at: float = field(default_factory=time.time)

    def wait_for(self, done: Callable[[], bool], timeout_s: float, poll_s: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(poll_s)
        return done()


@contextlib.contextmanager
def live_run(
    api: k8s.ApiClient,
    kubeconfig: Path,
    namespace: str,
    fault: Fault,
    *,
    rate: float = 30.0,
    scrape_s: float = 2.0,
    seed: int = 1,
    workdir: Path | None = None,
    policy: str | None = None,
    weight: Callable[[Cluster], int | None] | None = None,
    on_tick: Callable[[TickReport], None] | None = None,
) -> Iterator[LiveRun]:
    """Start servers, pods, Prometheus and load (and the daemon if ``policy`` is given)."""
    own_dir = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="canaryd-live-")) if workdir is None else workdir
    cluster = Cluster(api, kubeconfig, namespace)
    cluster.create_namespace()
    cluster.create_inference_service()
    models = train_models(wd)
    started: list[Callable[[], None]] = []
    try:
        servers = {
            v: ModelServer.start(v, models[v], fault if v == "canary" else Fault(), seed + i, wd)
            for i, v in enumerate(VERSIONS)
        }
        started.extend(s.stop for s in servers.values())
        for s in servers.values():
            s.wait_ready()
        pods = {
            v: cluster.create_pod(STABLE_REV if v == "stable" else CANARY_REV, s.port)
            for v, s in servers.items()
        }
        (wd / "prometheus").mkdir(exist_ok=True)
        prom = Prometheus.start(wd / "prometheus", api, namespace, scrape_s)
        started.append(prom.stop)
        prom.wait_for_targets(list(pods.values()))
        weight_api = load_api_client(str(kubeconfig))
        started.append(weight_api.close)
        read_weight = (
            (lambda: weight(cluster))
            if weight is not None
            else (lambda: cluster.canary_percent(weight_api))
        )
        load = LoadGenerator(
            {v: s.url for v, s in servers.items()}, read_weight, rate, seed
        ).start()
        started.append(load.stop)
        run = LiveRun(cluster, wd, servers, pods, prom, load)
        if policy is not None:
            parsed = load_policies_text(policy, "live-policy.yaml")[0].policy
            run.daemon = DaemonLoop(parsed, cluster, prom.url, on_tick=on_tick).start()
            started.append(run.daemon.stop)
        yield run
    finally:
        for stop in reversed(started):
            with contextlib.suppress(Exception):
                stop()
        if own_dir:
            shutil.rmtree(wd, ignore_errors=True)


# -- counts against the truth -----------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """What a counter delta between two scrapes can be, given the requests' send/receive times:
    ``low`` counts requests certainly counted inside, ``high`` those possibly counted inside."""

    low: int
    high: int

    def holds(self, x: float) -> bool:
        return self.low <= x <= self.high

    @property
    def in_flight(self) -> int:
        return self.high - self.low


@dataclass(frozen=True)
class WindowCheck:
    start_s: float
    end_s: float
    version: str
    counted: dict[str, float]
    """requests, errors and each bucket (``le=<ms>``) as canaryd counted them."""
    bounds: dict[str, Bound]
    wall_clock: dict[str, int]
    """The same quantities by receive time in [start, end): the window by the wall clock."""

    def failures(self) -> list[str]:
        return [
            f"{k}: counted {self.counted[k]:g}, truth {b.low}..{b.high}"
            for k, b in self.bounds.items()
            if not b.holds(self.counted[k])
        ]


class _Timeline:
    """Sorted send and receive times of one version's requests that match a predicate."""

    def __init__(self, sent: Sequence[Sent]) -> None:
        self.send = sorted(s.t_send for s in sent)
        self.recv = sorted(s.t_recv for s in sent)

    def received_by(self, t: float) -> int:
        return bisect.bisect_right(self.recv, t)

    def sent_by(self, t: float) -> int:
        return bisect.bisect_right(self.send, t)

    def between_scrapes(self, a: tuple[float, float] | None, b: tuple[float, float]) -> Bound:
        """Requests counted between the scrape ``a`` (None: before any request) and ``b``.

        A scrape at ``t`` taking ``d`` reads the counter at some instant in [t, t + d]; the
        server counts a request after it was sent and before it is answered.
        """
        tb, db = b
        low_b, high_b = self.received_by(tb), self.sent_by(tb + db)
        if a is None:
            return Bound(low_b, high_b)
        ta, da = a
        return Bound(max(0, low_b - self.sent_by(ta + da)), high_b - self.received_by(ta))

    def wall(self, start: float, end: float) -> int:
        return bisect.bisect_left(self.recv, end) - bisect.bisect_left(self.recv, start)


def _quantities(
    sent: Sequence[Sent], le_ms: Sequence[float]
) -> dict[str, tuple[_Timeline, _Timeline]]:
    """Per quantity: (timeline of requests certainly in it, of requests possibly in it)."""
    out: dict[str, tuple[_Timeline, _Timeline]] = {}
    everything = _Timeline(sent)
    out["requests"] = (everything, everything)
    errors = _Timeline([s for s in sent if s.error])
    out["errors"] = (errors, errors)
    for le in le_ms:
        if math.isinf(le):
            out["le=+Inf"] = (everything, everything)
            continue
        # kserve times predict() alone: at most the request's latency, at least the injected
        # sleep of a slowed one (an unslowed prediction of a tiny model takes well under 1 ms).
        certain = _Timeline([s for s in sent if s.latency_s * 1000 <= le])
        possible = _Timeline([s for s in sent if s.slept_ms <= le])
        out[f"le={le:g}"] = (certain, possible)
    return out


def compare_counts(run: LiveRun, windows: Sequence[Window] | None = None) -> list[WindowCheck]:
    """Every usable window canaryd counted, per version, against the load generator's truth."""
    assert run.daemon is not None or windows is not None
    wins = list(windows if windows is not None else run.daemon.source.windows)  # type: ignore[union-attr]
    if not wins:
        return []
    until = max(w.end_s for w in wins)
    scrapes = {
        v: run.prometheus.scrapes(run.pods[v], run.started_at - 600, until) for v in VERSIONS
    }
    checks: list[WindowCheck] = []
    cache: dict[tuple[str, tuple[float, ...]], dict[str, tuple[_Timeline, _Timeline]]] = {}
    for w in wins:
        o = w.observation
        if not o.usable:
            continue
        for v in VERSIONS:
            vc = getattr(o, v)
            key = (v, vc.bounds_ms)
            if key not in cache:
                cache[key] = _quantities([s for s in run.load.sent if s.version == v], vc.bounds_ms)
            quantities = cache[key]
            sc = scrapes[v]
            times = [t for t, _ in sc]
            i_end = bisect.bisect_right(times, w.end_s) - 1
            i_start = bisect.bisect_right(times, w.start_s) - 1
            if i_end < 0:
                continue
            edge_a = sc[i_start] if i_start >= 0 else None
            counted = {"requests": vc.requests, "errors": vc.errors}
            for le, c in zip(vc.bounds_ms, vc.bucket_counts, strict=True):
                counted["le=+Inf" if math.isinf(le) else f"le={le:g}"] = c
            bounds: dict[str, Bound] = {}
            wall: dict[str, int] = {}
            for k, (certain, possible) in quantities.items():
                lo = certain.between_scrapes(edge_a, sc[i_end]).low
                hi = possible.between_scrapes(edge_a, sc[i_end]).high
                bounds[k] = Bound(lo, hi)
                wall[k] = certain.wall(w.start_s, w.end_s)
            checks.append(WindowCheck(w.start_s, w.end_s, v, counted, bounds, wall))
    return checks


def increase_counts(
    prom: Prometheus, namespace: str, revision: str, start_s: float, end_s: float
) -> dict[str, float]:
    """What the previous counting method (``increase(x[window])`` at the window end) gives."""
    window = f"{round((end_s - start_s) * 1000)}ms"
    sel = f'namespace="{namespace}", serving_knative_dev_revision="{revision}"'
    out: dict[str, float] = {}
    for kind, metric in (
        ("requests", "request_predict_seconds_count"),
        ("errors", ERRORS_METRIC),
    ):
        rows = prom.query(f"sum(increase({metric}{{{sel}}}[{window}]))", end_s)
        out[kind] = float(rows[0]["value"][1]) if rows else 0.0
    return out


def summary(checks: Sequence[WindowCheck]) -> dict[str, Any]:
    """Totals for a report: windows, requests counted vs true, worst in-flight tolerance."""
    out: dict[str, Any] = {"windows": len({(c.start_s, c.end_s) for c in checks})}
    for v in VERSIONS:
        mine = [c for c in checks if c.version == v]
        out[v] = {
            "requests": sum(c.counted["requests"] for c in mine),
            "errors": sum(c.counted["errors"] for c in mine),
            "max_in_flight": max((c.bounds["requests"].in_flight for c in mine), default=0),
        }
    return out


def dump_truth(run: LiveRun, path: Path) -> None:
    """The truth as JSON lines (one request a line), for a look after the fact."""
    with path.open("w") as f:
        for s in run.load.sent:
            f.write(json.dumps(s.__dict__) + "\n")
