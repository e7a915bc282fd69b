"""``canaryd run``: the in-cluster daemon (and ``--once`` for cron jobs and tests).

Wiring: policies (``PolicySet``) → the rollouts they ask for (``Reconciler``) → the collections
the daemon must see, mirrored by a ``WatchCache`` → ``KubeObjects`` reading through it → routers,
the state store and manual controls. Metrics come from a ``PrometheusPool`` (each policy's own
Prometheus, else the daemon's default). Events from an ``EventRecorder``.

Scheduling: an APScheduler ``BackgroundScheduler`` runs one fixed tick every 5 s (``--tick``);
the reconciler judges each rollout's windows as they complete on its analysis grid. A second
job renews the leader Lease (every ``renew_period``) in its own thread, so a slow Prometheus
cannot cost the leadership; only the leader ticks, and every write checks that it still leads.

Probes never call the apiserver: ``/healthz`` is the tick heartbeat, ``/readyz`` the policies and
the watch cache's health (synced, no watch failing for long).

Policies are reloaded on SIGHUP and when a file changes (checked every tick; only changed files
are parsed again). SIGTERM/SIGINT stop the scheduler, wait for a running tick, flush Event
series, release the Lease and stop the HTTP server.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from kubernetes import client as k8s
from prometheus_client import CollectorRegistry

from canaryd.daemon.leader import LeaderElector
from canaryd.daemon.policies import PolicySet
from canaryd.daemon.reconciler import Reconciler, TickReport
from canaryd.daemon.server import HealthServer
from canaryd.errors import CanarydError
from canaryd.identity import RolloutKey
from canaryd.kube import INFERENCE_SERVICE, KubeObjects, load_api_client
from canaryd.kube.events import EventRecorder
from canaryd.kube.watching import WatchCache
from canaryd.metrics.connection import PrometheusDefaults
from canaryd.metrics.pool import PrometheusPool
from canaryd.notify import EndpointResolver, Notifier, PromotionGate
from canaryd.policy.model import CanaryPolicy

log = logging.getLogger("canaryd.run")

PROMETHEUS_ENV = "CANARYD_PROMETHEUS_URL"


class StartupError(CanarydError):
    """The daemon cannot start as configured; the message says what to change."""


@dataclass
class RunConfig:
    policies: Sequence[Path]
    prometheus: str | None = None
    prometheus_access: PrometheusDefaults | None = None
    """Credentials, TLS and credentials directory of the daemon's default Prometheus (whose
    URL is ``prometheus``); None: no credentials, the default credentials directory."""
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: Sequence[str] | None = None
    port: int = 8080
    host: str = "0.0.0.0"
    once: bool = False
    tick_s: float = 5.0
    lease_namespace: str | None = None
    identity: str | None = None
    lease_duration_s: float = 15.0
    renew_period_s: float = 5.0
    settle_s: float = 10.0
    """A window is judged this long after its end, so its last scrapes have landed."""
    checkpoint_every: int = 10
    cross_namespace: Sequence[tuple[str, str]] = field(default_factory=list)
    clock: Callable[[], float] = time.time
    """Wall time in epoch seconds (a drill may run the daemon on a shifted clock)."""


def prometheus_defaults(config: RunConfig) -> PrometheusDefaults:
    """The daemon's default Prometheus: ``config.prometheus`` with ``prometheus_access``."""
    return replace(config.prometheus_access or PrometheusDefaults(), url=config.prometheus)


def _check_sources(config: RunConfig, policies: PolicySet) -> None:
    """Refuse to start when the daemon's Prometheus settings are unusable (an unreadable
    credentials file, a PEM that does not load) or a policy has no Prometheus to read."""
    defaults = prometheus_defaults(config)
    problems = [f"Prometheus settings: {p}" for p in defaults.problems()]
    by_name = defaults.policy_problems([lp.policy for lp in policies.policies])
    problems += [
        f"policy {lp.policy.name!r} ({lp.file}): {by_name[lp.policy.name]}"
        for lp in policies.policies
        if lp.policy.name in by_name
    ]
    if problems:
        raise StartupError("; ".join(problems))


class Daemon:
    """Wires policies, the watch cache, Prometheus, the reconciler, the Lease and the server."""

    def __init__(self, config: RunConfig, api_client: k8s.ApiClient | None = None) -> None:
        self.config = config
        self.policy_set = PolicySet(list(config.policies))
        self.policy_set.load()
        _check_sources(config, self.policy_set)  # before the apiserver: a config mistake
        self.api = api_client or load_api_client(config.kubeconfig, config.context)
        self.cache = WatchCache(self.api)
        self.objects = KubeObjects(self.api, self.cache)
        self.source = PrometheusPool(prometheus_defaults(config))
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
        self.events = EventRecorder(self.api, config.identity, uid_of=self._uid_of)
        registry = CollectorRegistry()
        resolver = EndpointResolver(prometheus_defaults(config).credentials_dir)
        self.notifier = Notifier(registry, resolver=resolver)
        self.gate = PromotionGate(registry, resolver=resolver)
        defaults = prometheus_defaults(config)

        def source_problem(policy: CanaryPolicy) -> str | None:
            return defaults.policy_problems([policy]).get(policy.name)

        self.reconciler = Reconciler(
            self.policy_set.policies,
            self.objects,
            self.source,
            self.events,
            clock=config.clock,
            namespaces=config.namespaces,
            cross_namespace=config.cross_namespace,
            settle_s=config.settle_s,
            checkpoint_every=config.checkpoint_every,
            may_write=self.elector.may_write if self.elector is not None else None,
            registry=registry,
            notifier=self.notifier,
            gate=self.gate,
            gate_blocking=config.once,
            source_problem=source_problem,
        )
        self.cache.ensure(self.reconciler.collections())
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._heartbeat = time.monotonic()
        self._tick_lock = threading.Lock()

    def _uid_of(self, key: RolloutKey) -> str | None:
        got = self.cache.lookup(INFERENCE_SERVICE, key.namespace, key.name)
        if isinstance(got, dict):
            uid = (got.get("metadata") or {}).get("uid")
            return str(uid) if uid else None
        return None

    # -- probes --------------------------------------------------------------------------

    def alive(self) -> bool:
        window = 3 * max(self.config.tick_s, self.reconciler.min_interval())
        return time.monotonic() - self._heartbeat < window

    def ready(self) -> str | None:
        if not self.policy_set.loaded:
            return "policies not loaded"
        if not self.reconciler.policies:
            return "no valid policy loaded"
        return self.cache.problem()

    # -- the loop ------------------------------------------------------------------------

    def maybe_reload(self) -> None:
        if self._reload.is_set() or self.policy_set.changed():
            self._reload.clear()
            self.reconciler.set_policies(self.policy_set.load())
            self.cache.ensure(self.reconciler.collections())

    def tick(self) -> TickReport | None:
        with self._tick_lock:
            self._heartbeat = time.monotonic()
            try:
                self.maybe_reload()
                if self.elector is not None and not self.elector.is_leader:
                    return None
                return self.reconciler.tick()
            except Exception:
                log.exception("tick failed")
                return None
            finally:
                self._heartbeat = time.monotonic()

    def start_cache(self, timeout_s: float = 60.0) -> bool:
        self.cache.start()
        ok = self.cache.wait_synced(timeout_s)
        if not ok:
            log.warning(
                "watch cache not synced yet; reads fall back to the API",
                extra={"fields": {"problem": self.cache.problem()}},
            )
        return ok

    def run_once(self) -> int:
        if self.elector is not None and not self.elector.try_acquire_or_renew():
            log.info("another canaryd holds the lease; nothing to do")
            return 0
        try:
            self.start_cache()
            report = self.tick()
            self.reconciler.checkpoint_all()  # this process ends: keep what it judged
        finally:
            if self.elector is not None:
                self.elector.release()
            self._shutdown()
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

        try:
            server = HealthServer(
                self.reconciler.metrics.registry,
                self.alive,
                self.ready,
                host=self.config.host,
                port=self.config.port,
            ).start()
        except OSError as exc:
            raise StartupError(
                f"cannot serve on {self.config.host}:{self.config.port}: "
                f"{exc.strerror or exc} (choose another --port)"
            ) from None
        log.info("serving /metrics /healthz /readyz", extra={"fields": {"port": server.port}})
        self._install_signals()
        self.start_cache()
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
            with self._tick_lock:
                self.reconciler.checkpoint_all()
            if self.elector is not None:
                self.elector.release()
            server.stop()
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        self.notifier.flush(5.0)  # deliver what was decided before going
        self.notifier.close(5.0)
        self.gate.close()
        self.events.flush()
        self.cache.stop()
        self.source.close()

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


def parse_cross_namespace(values: Sequence[str]) -> list[tuple[str, str]]:
    """``TARGET_NS=ROUTE_NS`` pairs (comma-separated or repeated) -> pairs."""
    out: list[tuple[str, str]] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            target, sep, route = item.partition("=")
            if not sep or not target or not route:
                raise StartupError(
                    f"--allow-cross-namespace expects TARGET_NS=ROUTE_NS, got {item!r}"
                )
            out.append((target.strip(), route.strip()))
    return out


def config_from_env(**kwargs: object) -> RunConfig:
    """A RunConfig with CANARYD_* defaults from the environment for what was not given."""
    cfg = RunConfig(**kwargs)  # type: ignore[arg-type]
    if cfg.namespaces is None and os.environ.get("CANARYD_NAMESPACES"):
        cfg.namespaces = [
            n.strip() for n in os.environ["CANARYD_NAMESPACES"].split(",") if n.strip()
        ]
    if cfg.lease_namespace is None:
        cfg.lease_namespace = os.environ.get("CANARYD_LEASE_NAMESPACE") or None
    if cfg.prometheus is None:
        cfg.prometheus = os.environ.get(PROMETHEUS_ENV) or None
    return cfg
