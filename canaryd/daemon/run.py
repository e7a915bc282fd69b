"""``canaryd run``: the in-cluster daemon (and ``--once`` for cron jobs and tests).

Scheduling: an APScheduler ``BackgroundScheduler`` runs one **fixed tick every 5 s**
(``--tick``) that asks the reconciler which rollouts are due; each rollout's due time comes
from its own ``analysis.interval`` and the ``window_end`` stored with its state. A fixed tick
(rather than a job at the GCD of the intervals) keeps policy reloads trivial, bounds how long a
manual annotation waits, and lets a restarted daemon resume each rollout on its own schedule.
A second job renews the leader Lease (every ``retry_period``); ticks and renewals run in
separate executor threads, so a slow Prometheus cannot cost the Lease. Only the leader
reconciles; standbys keep serving ``/metrics`` and the probes.

Policies are loaded from ``--policies`` (files or directories). Invalid files are logged with
their located problems and the valid ones are served. They are reloaded on SIGHUP and when a
file changes (checked every tick, by path, size and mtime). SIGTERM/SIGINT stop the scheduler,
wait for a running tick, release the Lease and stop the HTTP server.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from kubernetes import client as k8s

from canaryd.daemon.leader import LeaderElector
from canaryd.daemon.reconciler import Reconciler, TickReport
from canaryd.daemon.server import HealthServer
from canaryd.errors import InputError
from canaryd.events import EventRecorder
from canaryd.kube import load_api_client
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation
from canaryd.policy.loader import YAML_SUFFIXES, load_policy_file
from canaryd.policy.model import CanaryPolicy
from canaryd.state.kubernetes import KubernetesStateStore

if TYPE_CHECKING:
    from canaryd.metrics.prometheus import PrometheusSource

log = logging.getLogger("canaryd.run")


@dataclass
class RunConfig:
    policies: Sequence[Path]
    prometheus: str | None = None
    kubeconfig: str | None = None
    namespaces: Sequence[str] | None = None
    port: int = 8080
    host: str = "0.0.0.0"
    once: bool = False
    tick_s: float = 5.0
    lease_namespace: str | None = None
    identity: str | None = None
    lease_duration_s: float = 15.0
    renew_period_s: float = 5.0


# -- policies --------------------------------------------------------------------------------


def _visible_policy_files(paths: Sequence[Path]) -> list[Path]:
    """YAML files under ``paths``, skipping hidden entries such as a mounted ConfigMap's
    ``..data`` / ``..2024_…`` directories (which would otherwise load every policy twice)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for root in paths:
        if root.is_dir():
            found = sorted(
                f
                for f in root.rglob("*")
                if f.suffix in YAML_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(root).parts)
                and f.is_file()
            )
        else:
            found = [root]
        for f in found:
            real = f.resolve()
            if real not in seen:
                seen.add(real)
                out.append(f)
    return out


@dataclass
class PolicySet:
    """The policies under some paths, with change detection."""

    paths: Sequence[Path]
    policies: list[CanaryPolicy] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    loaded: bool = False
    _signature: tuple[tuple[str, int, int], ...] = ()

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        sig = []
        for f in _visible_policy_files(self.paths):
            try:
                st = f.stat()
            except OSError:
                continue
            sig.append((str(f), st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def changed(self) -> bool:
        return self.signature() != self._signature

    def load(self) -> list[CanaryPolicy]:
        self._signature = self.signature()
        policies: list[CanaryPolicy] = []
        problems: list[str] = []
        files = _visible_policy_files(self.paths)
        if not files:
            problems.append(f"no policy files under {', '.join(map(str, self.paths))}")
        for f in files:
            try:
                policies.extend(lp.policy for lp in load_policy_file(f))
            except InputError as exc:
                problems.extend(str(p) for p in exc.problems)
        for p in problems:
            log.error("invalid policy", extra={"fields": {"problem": p}})
        log.info(
            "policies loaded",
            extra={
                "fields": {
                    "policies": [p.name for p in policies],
                    "files": len(files),
                    "problems": len(problems),
                }
            },
        )
        self.policies, self.problems, self.loaded = policies, problems, True
        return policies


# -- metrics source: one PrometheusSource per URL ---------------------------------------------


class PrometheusByUrl:
    """A MetricSource that sends each request to ``--prometheus`` if given, else to its policy's
    ``analysis.source.prometheus``; a request with neither is no-data."""

    def __init__(self, override: str | None) -> None:
        self.override = override
        self._sources: dict[str, PrometheusSource] = {}

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        from canaryd.metrics.prometheus import PrometheusSource

        out: dict[Hashable, Observation] = {}
        by_url: dict[str, list[FetchRequest]] = {}
        for r in requests:
            url = self.override or r.source.prometheus
            if not url:
                out[r.key] = Observation(
                    start_s,
                    end_s,
                    no_data_reason="no Prometheus URL (--prometheus or "
                    "spec.analysis.source.prometheus)",
                )
            else:
                by_url.setdefault(url, []).append(r)
        for url, reqs in by_url.items():
            if url not in self._sources:
                self._sources[url] = PrometheusSource(url)
            out.update(self._sources[url].fetch(reqs, start_s, end_s))
        return out

    def close(self) -> None:
        for s in self._sources.values():
            s.close()


# -- the daemon ----------------------------------------------------------------------------


class Daemon:
    """Wires policies, Kubernetes, Prometheus, the reconciler, the Lease and the HTTP server."""

    def __init__(self, config: RunConfig, api_client: k8s.ApiClient | None = None) -> None:
        self.config = config
        self.api = api_client or load_api_client(config.kubeconfig)
        self.policy_set = PolicySet(list(config.policies))
        self.source = PrometheusByUrl(config.prometheus)
        self.reconciler = Reconciler(
            self.policy_set.load(),
            self.api,
            self.source,
            KubernetesStateStore(self.api),
            EventRecorder(self.api, config.identity),
            namespaces=config.namespaces,
        )
        self.elector = (
            LeaderElector(
                self.api,
                config.lease_namespace,
                config.identity,
                lease_duration_s=config.lease_duration_s,
                retry_period_s=config.renew_period_s,
            )
            if config.lease_namespace
            else None
        )
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._heartbeat = time.monotonic()
        self._api_ok: tuple[float, str | None] = (0.0, "not checked yet")
        self._tick_lock = threading.Lock()

    # -- probes --------------------------------------------------------------------------

    def alive(self) -> bool:
        window = 3 * max(self.config.tick_s, self.reconciler.min_interval())
        return time.monotonic() - self._heartbeat < window

    def ready(self) -> str | None:
        if not self.policy_set.loaded:
            return "policies not loaded"
        if not self.reconciler.policies:
            return "no valid policy loaded"
        checked, why = self._api_ok
        if time.monotonic() - checked > 5.0:
            try:
                k8s.VersionApi(self.api).get_code(_request_timeout=3)
                why = None
            except Exception as exc:
                why = f"kube API unreachable: {type(exc).__name__}: {exc}"[:300]
            self._api_ok = (time.monotonic(), why)
        return why

    # -- the loop ------------------------------------------------------------------------

    def maybe_reload(self) -> None:
        if self._reload.is_set() or self.policy_set.changed():
            self._reload.clear()
            self.reconciler.set_policies(self.policy_set.load())

    def tick(self, *, force: bool = False) -> TickReport | None:
        with self._tick_lock:
            self._heartbeat = time.monotonic()
            try:
                self.maybe_reload()
                if self.elector is not None and not self.elector.is_leader:
                    return None
                return self.reconciler.tick(force=force)
            except Exception:
                log.exception("tick failed")
                return None
            finally:
                self._heartbeat = time.monotonic()

    def run_once(self) -> int:
        if self.elector is not None and not self.elector.try_acquire_or_renew():
            log.info("another canaryd holds the lease; nothing to do")
            return 0
        try:
            report = self.tick(force=True)
        finally:
            if self.elector is not None:
                self.elector.release()
            self.source.close()
        if report is None:
            return 1
        log.info(
            "tick done",
            extra={
                "fields": {
                    "decisions": {str(k): d.action.value for k, d in report.decisions.items()},
                    "errors": {str(k): e for k, e in report.errors.items()},
                    "conflicts": [str(k) for k in report.conflicts],
                }
            },
        )
        return 1 if report.errors or not self.reconciler.policies else 0

    def run_forever(self) -> int:
        from apscheduler.schedulers.background import BackgroundScheduler

        server = HealthServer(
            self.reconciler.metrics.registry,
            self.alive,
            self.ready,
            host=self.config.host,
            port=self.config.port,
        ).start()
        log.info("serving /metrics /healthz /readyz", extra={"fields": {"port": server.port}})
        self._install_signals()
        scheduler = BackgroundScheduler(timezone="UTC")
        if self.elector is not None:
            self.elector.try_acquire_or_renew()  # so the first tick does not wait a period
            scheduler.add_job(
                self.elector.try_acquire_or_renew,
                "interval",
                seconds=self.config.renew_period_s,
                id="lease",
                max_instances=1,
                coalesce=True,
            )
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=self.config.tick_s,
            id="tick",
            max_instances=1,
            coalesce=True,
            next_run_time=_now(),
        )
        scheduler.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            log.info("shutting down")
            scheduler.shutdown(wait=True)
            if self.elector is not None:
                self.elector.release()
            server.stop()
            self.source.close()
        return 0

    def _install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal received", extra={"fields": {"signal": signal.Signals(signum).name}})
            self._stop.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            log.info("SIGHUP: policies will be reloaded at the next tick")
            self._reload.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, reload)

    def stop(self) -> None:
        self._stop.set()


def _now() -> object:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def config_from_env(**kwargs: object) -> RunConfig:
    """A RunConfig with CANARYD_NAMESPACES / CANARYD_LEASE_NAMESPACE defaults from the env."""
    cfg = RunConfig(**kwargs)  # type: ignore[arg-type]
    if cfg.namespaces is None and os.environ.get("CANARYD_NAMESPACES"):
        cfg.namespaces = [
            n.strip() for n in os.environ["CANARYD_NAMESPACES"].split(",") if n.strip()
        ]
    if cfg.lease_namespace is None:
        cfg.lease_namespace = os.environ.get("CANARYD_LEASE_NAMESPACE") or None
    return cfg
