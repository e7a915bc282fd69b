"""Real HTTP servers on 127.0.0.1 that misbehave on purpose, for the outbound-call tests.

``HttpStub`` runs a ``ThreadingHTTPServer`` in a thread; its behaviour is a function of the
request (``Handler``) that returns a ``Reply`` (status, headers, body, how to send it). Each
request is recorded (method, path, headers, body). ``drip_s`` sends the body (or, with
``drip_headers``, the headers too) one byte at a time with that pause: the slow-drip server of
issue 11. ``hang_s`` waits before answering at all.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

EMPTY_VECTOR = b'{"status":"success","data":{"resultType":"vector","result":[]}}'


@dataclass
class Reply:
    status: int = 200
    body: bytes = EMPTY_VECTOR
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    hang_s: float = 0.0
    drip_s: float = 0.0
    drip_headers: bool = False


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Seen], Reply]


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub: HttpStub

    def _serve(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        seen = Seen(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            self.rfile.read(n) if n else b"",
        )
        self.stub.seen.append(seen)
        reply = self.stub.handler(seen)
        if reply.hang_s and self.stub.stopping.wait(reply.hang_s):
            return
        head = f"HTTP/1.1 {reply.status} X\r\n"
        hdrs = {**reply.headers, "Content-Length": str(len(reply.body)), "Connection": "close"}
        head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        try:
            if reply.drip_s and reply.drip_headers:
                self._drip(head.encode() + reply.body, reply.drip_s)
                return
            self.wfile.write(head.encode())
            self.wfile.flush()
            if reply.drip_s:
                self._drip(reply.body, reply.drip_s)
            else:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        self.close_connection = True

    def _drip(self, data: bytes, pause: float) -> None:
        for i in range(len(data)):
            if self.stub.stopping.is_set():
                return
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            self.stub.stopping.wait(pause)

    do_GET = _serve  # noqa: N815
    do_POST = _serve  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


class HttpStub:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        cls = type("H", (_RequestHandler,), {"stub": self})
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cls)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> HttpStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@contextmanager
def http_stub(handler: Handler | Reply) -> Iterator[HttpStub]:
    """A started stub; a fixed ``Reply`` answers every request the same way."""
    fn: Handler = (lambda _seen: handler) if isinstance(handler, Reply) else handler
    stub = HttpStub(fn).start()
    try:
        yield stub
    finally:
        stub.stop()


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def elapsed(fn: Callable[[], object]) -> tuple[object, float]:
    t = time.monotonic()
    out = fn()
    return out, time.monotonic() - t
