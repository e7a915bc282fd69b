"""PrometheusPool: one MetricSource over every Prometheus the policies read.

Each request goes to the server (URL, credentials, TLS) its policy's source resolves to
(``PrometheusDefaults.resolve``: the policy's ``source.prometheus`` always wins over the
daemon's default, ``--prometheus`` / ``$CANARYD_PROMETHEUS_URL``; the daemon's credentials go
only to the daemon's own origin). Requests that resolve to the same server share one ``PrometheusSource`` (and its
batching); different servers are fetched **concurrently**, each within its own budget
(``RetryPolicy``: ``min(budget_s, budget_fraction * window)``), so a slow or hung server costs
the tick its own budget, never the sum over servers, and cannot starve the others.

A request whose policy has no Prometheus, or whose file references leave the credentials
directory, is no-data with that reason (``canaryd run`` refuses such policies at start).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Hashable, Sequence

from canaryd.metrics.connection import PrometheusConfig, PrometheusDefaults
from canaryd.metrics.prometheus import FetchStats, PrometheusSource
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation

log = logging.getLogger("canaryd.metrics.pool")

GRACE_S = 1.0
"""How long past a server's budget its answer is awaited before it is declared lost (the
transport's deadline makes this a safety net, not a path taken)."""


NO_URL = (
    "no Prometheus URL (--prometheus, $CANARYD_PROMETHEUS_URL or spec.analysis.source.prometheus)"
)


class PrometheusPool:
    """One ``PrometheusSource`` per distinct server, fetched concurrently (module docstring).

    ``defaults`` is the daemon's default server and credentials; a plain URL (or None) means
    a default without credentials (or no default).
    """

    def __init__(
        self,
        defaults: PrometheusDefaults | str | None,
        *,
        max_parallel: int = 8,
        source_factory: Callable[[PrometheusConfig], PrometheusSource] = PrometheusSource,
    ) -> None:
        if not isinstance(defaults, PrometheusDefaults):
            defaults = PrometheusDefaults(url=defaults)
        self.defaults = defaults
        self._factory = source_factory
        self._sources: dict[PrometheusConfig, PrometheusSource] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, max_parallel), thread_name_prefix="canaryd-prometheus"
        )
        self.last_stats: dict[str, FetchStats] = {}
        """Per server URL, what the last fetch cost and which faults it met."""
        self._last_fault: dict[str, str | None] = {}

    def _source(self, config: PrometheusConfig) -> PrometheusSource:
        src = self._sources.get(config)
        if src is None:
            src = self._sources[config] = self._factory(config)
        return src

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        out: dict[Hashable, Observation] = {}
        groups: dict[PrometheusConfig, list[FetchRequest]] = {}
        for r in requests:
            try:
                config = self.defaults.resolve(r.source)
            except ValueError as exc:
                out[r.key] = Observation(start_s, end_s, no_data_reason=f"prometheus: {exc}")
                continue
            if config is None:
                out[r.key] = Observation(start_s, end_s, no_data_reason=NO_URL)
                continue
            groups.setdefault(config, []).append(r)
        if len(groups) == 1:
            ((config, reqs),) = groups.items()
            out.update(self._fetch_one(config, reqs, start_s, end_s))
            return out
        futures = {
            self._pool.submit(self._fetch_one, config, reqs, start_s, end_s): (config, reqs)
            for config, reqs in groups.items()
        }
        window = end_s - start_s
        wait_s = max((_budget(c, window) for c in groups), default=0.0) + GRACE_S
        done, lost = concurrent.futures.wait(futures, timeout=wait_s)
        for fut in done:
            try:
                out.update(fut.result())
            except Exception as exc:  # the source contract says never; isolate a bug anyway
                config, reqs = futures[fut]
                log.exception("metric source failed", extra={"fields": {"url": config.url}})
                for r in reqs:
                    out[r.key] = Observation(
                        start_s, end_s, no_data_reason=f"metric source failed: {exc}"
                    )
        for fut in lost:
            config, reqs = futures[fut]
            log.error(
                "Prometheus fetch overran its budget",
                extra={"fields": {"prometheus": config.url, "rollouts": len(reqs)}},
            )
            for r in reqs:
                out[r.key] = Observation(
                    start_s, end_s, no_data_reason=f"prometheus {config.url}: budget overrun"
                )
        return out

    def _fetch_one(
        self, config: PrometheusConfig, reqs: list[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        src = self._source(config)
        got = src.fetch(reqs, start_s, end_s)
        stats = src.last_stats
        self.last_stats[config.url] = stats
        fault = stats.last_fault if stats.failures else None
        if fault != self._last_fault.get(config.url):
            # Once per change, not once a tick: a wrong password is one line, then its fix.
            self._last_fault[config.url] = fault
            if fault is None:
                log.info("Prometheus answers again", extra={"fields": {"prometheus": config.url}})
            else:
                log.warning(
                    "Prometheus queries fail",
                    extra={
                        "fields": {
                            "prometheus": config.url,
                            "fault": fault,
                            "kinds": dict(stats.faults),
                        }
                    },
                )
        return got

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for s in self._sources.values():
            s.close()


def _budget(config: PrometheusConfig, window: float) -> float:
    r = config.retry
    return min(r.budget_s, r.budget_fraction * window) if window > 0 else 0.0
