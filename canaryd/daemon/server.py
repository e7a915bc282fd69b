"""The daemon's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz`` (stdlib, one thread).

- ``/metrics``: ``prometheus_client.generate_latest`` of the daemon's own registry.
- ``/healthz``: 200 while ``alive()`` is true (the reconcile loop ticked recently), else 503.
- ``/readyz``: 200 while ``ready()`` returns None (policies loaded, kube API reachable), else
  503 with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("canaryd.http")
T = TypeVar("T")


class HealthServer:
    """Serves the three endpoints on ``host:port`` (port 0: any free port) in a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        alive: Callable[[], bool],
        ready: Callable[[], str | None],
        host: str = "0.0.0.0",
        port: int = 8080,
    ) -> None:
        self.registry = registry
        self.alive = alive
        self.ready = ready
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = _safe(server.alive, False)
                    self._send(200 if ok else 503, b"ok\n" if ok else b"loop stalled\n")
                elif path == "/readyz":
                    failed: str | None = "readiness check failed"
                    why = _safe(server.ready, failed)
                    if why is None:
                        self._send(200, b"ok\n")
                    else:
                        self._send(503, f"not ready: {why}\n".encode())
                else:
                    self._send(404, b"not found\n")

            def _send(
                self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http " + format, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="canaryd-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _safe(fn: Callable[[], T], fallback: T) -> T:
    try:
        return fn()
    except Exception:
        log.exception("health check raised")
        return fallback
