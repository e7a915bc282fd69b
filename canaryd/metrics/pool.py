"""One MetricSource over several Prometheus servers: each policy reads its own.

A request goes to its policy's ``analysis.source.prometheus`` when the policy names one, else to
the daemon's default (``--prometheus`` / ``$CANARYD_PROMETHEUS_URL``): a policy always wins over
the daemon, so one model can read a tenant's Prometheus while the rest read the shared one. A
request with neither is no-data (``canaryd run`` refuses to start in that case).

The servers of one fetch are queried **concurrently**, each within its own budget (the
``RetryPolicy`` bound of its ``PrometheusSource``), so one slow or hostile server delays only
the rollouts that read it: the others' answers do not wait for it beyond that bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation

if TYPE_CHECKING:
    from canaryd.metrics.prometheus import PrometheusSource

log = logging.getLogger("canaryd.metrics.pool")

NO_URL = (
    "no Prometheus URL (--prometheus, $CANARYD_PROMETHEUS_URL or spec.analysis.source.prometheus)"
)

SourceFactory = Callable[[str], "PrometheusSource"]


def _default_factory(url: str) -> PrometheusSource:
    from canaryd.metrics.prometheus import PrometheusSource

    return PrometheusSource(url)


class PrometheusPool:
    """A MetricSource routing each request to its Prometheus (see the module docstring)."""

    def __init__(
        self,
        default_url: str | None,
        *,
        factory: SourceFactory = _default_factory,
        max_parallel: int = 8,
    ) -> None:
        self.default_url = default_url
        self._factory = factory
        self._sources: dict[str, PrometheusSource] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="prom")

    def url_for(self, request: FetchRequest) -> str | None:
        return request.source.prometheus or self.default_url

    def source(self, url: str) -> PrometheusSource:
        if url not in self._sources:
            self._sources[url] = self._factory(url)
        return self._sources[url]

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        out: dict[Hashable, Observation] = {}
        by_url: dict[str, list[FetchRequest]] = {}
        for r in requests:
            url = self.url_for(r)
            if not url:
                out[r.key] = Observation(start_s, end_s, no_data_reason=NO_URL)
            else:
                by_url.setdefault(url, []).append(r)
        if len(by_url) == 1:
            ((url, reqs),) = by_url.items()
            out.update(self.source(url).fetch(reqs, start_s, end_s))
            return out
        futures = {
            url: self._pool.submit(self.source(url).fetch, reqs, start_s, end_s)
            for url, reqs in by_url.items()
        }
        for url, fut in futures.items():
            try:
                out.update(fut.result())
            except Exception as exc:  # the source contract says never; isolate a bug anyway
                log.exception("metric source failed", extra={"fields": {"url": url}})
                for r in by_url[url]:
                    out[r.key] = Observation(
                        start_s, end_s, no_data_reason=f"metric source failed: {exc}"
                    )
        return out

    def close(self) -> None:
        for s in self._sources.values():
            s.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
