"""Every outbound HTTP call canaryd makes: a total deadline, no cross-origin redirect, bounded
and redacted bodies.

``request`` is the one function the Prometheus transport, the notification webhooks and the
promotion gate use. Its contract:

- **A total deadline.** ``timeout_s`` bounds the whole call: DNS-free connect, TLS handshake,
  sending, the response headers and the body, across redirects. A socket timeout alone is per
  read, so a server that sends its headers and then one byte every 2 s would hold a call
  forever; here a watchdog shuts the socket down at the deadline, and the call raises
  ``OutboundError(kind=TIMEOUT)`` within a few milliseconds of it. (Name resolution through the
  system resolver is the one step it cannot interrupt; in a cluster it is a local cache.)
- **Redirects stay on one origin.** A 307/308 to the same scheme, host and port is followed
  (method and body kept), as is a 301/302/303 of a GET; at most ``max_redirects``. A redirect to
  another origin, or one that would turn a POST into a GET, is refused
  (``kind=REDIRECT``): the data must come from the server that was configured.
- **Bounded bodies.** At most ``max_body_bytes`` are read (``kind=TOO_LARGE`` beyond).
- **Nothing secret in errors.** Error messages never contain a response body verbatim:
  ``body_excerpt`` shows a JSON ``error`` field redacted and truncated, and of anything else
  only its type and size. ``redact`` removes things that look like credentials.

No proxy support (``HTTP(S)_PROXY`` are ignored) and no connection reuse: one call is one
connection, so a broken keep-alive connection can never poison the next call.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from enum import StrEnum

from canaryd.errors import CanarydError

USER_AGENT = "canaryd/0.1"
MAX_BODY_BYTES = 64 * 1024 * 1024


class FaultKind(StrEnum):
    """What went wrong with an outbound call (the classification shown to people)."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    TLS = "tls"
    REDIRECT = "redirect"
    TOO_LARGE = "too-large"
    CONFIG = "config"
    """A local problem: a credentials file that cannot be read, a bad URL."""


class OutboundError(CanarydError):
    """An outbound call failed before an HTTP status was received; ``reason`` is safe to log."""

    def __init__(self, kind: FaultKind, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    url: str
    """The URL that answered (after same-origin redirects)."""
    redirects: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> object:
        """The body decoded as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


def origin_of(url: str) -> str:
    """``scheme://host:port`` (default ports made explicit), no user info, path or query."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment (for messages)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be called (not http(s), no host, user info in it), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"expected an http:// or https:// URL, got {safe_url(url)!r}"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL (user:password@) are not allowed; use a file"
    return None


# -- redaction ------------------------------------------------------------------------------

_SECRET_ASSIGN = re.compile(
    r"(?i)\b([\w.-]*(?:secret|token|passw(?:or)?d|pwd|api[_-]?key|access[_-]?key|"
    r"authorization|bearer|cookie|credential|session)[\w.-]*)(\s*[:=]\s*|\s+)"
    r"(\"[^\"]*\"|'[^']*'|[^\s,;&\"'<>]+)"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/_=.-]{32,}")
_AWS_KEY = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_URL_SECRET = re.compile(r"(https?://)[^/\s:@]+:[^/\s@]+@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def redact(text: str, limit: int = 200) -> str:
    """``text`` with anything credential-like replaced by ``<redacted>``, control characters
    collapsed to spaces, and cut to ``limit`` characters (with an ellipsis)."""
    out = _CONTROL.sub(" ", text)
    out = _URL_SECRET.sub(r"\1<redacted>@", out)
    out = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} <redacted>", out)
    out = _JWT.sub("<redacted>", out)
    out = _SECRET_ASSIGN.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", out)
    out = _AWS_KEY.sub("<redacted>", out)
    out = _LONG_TOKEN.sub("<redacted>", out)
    out = out.strip()
    if len(out) > limit:
        out = out[: max(0, limit - 1)].rstrip() + "…"
    return out


def body_excerpt(resp: Response, limit: int = 200) -> str:
    """A loggable description of a response body: the ``error`` (or ``message``) string of a
    JSON object, redacted and truncated; for anything else only its content type and size."""
    doc = resp.json()
    if isinstance(doc, dict):
        for key in ("error", "message"):
            value = doc.get(key)
            if isinstance(value, str) and value.strip():
                return redact(value, limit)
    ctype = resp.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    if not resp.body:
        return "empty body"
    return f"{ctype} body of {len(resp.body)} bytes, not shown"


# -- the call -------------------------------------------------------------------------------


class _Watchdog:
    """Shuts the connection's socket down at the deadline, which ends any blocked read.

    ``hold`` must be called once the socket exists: ``HTTPConnection.getresponse`` drops
    ``conn.sock`` when the server says ``Connection: close`` (the response reads through its
    own file object on the same descriptor), so the watchdog keeps its own reference.
    """

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self._conn = conn
        self._sock: socket.socket | None = None
        self.fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def hold(self) -> None:
        self._sock = self._conn.sock

    def _fire(self) -> None:
        self.fired = True
        sock = self._sock if self._sock is not None else self._conn.sock
        if sock is not None:
            # The base class's shutdown also works on an SSLSocket (it acts on the fd).
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _tls_reason(exc: ssl.SSLError, client_cert: bool) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        msg = getattr(exc, "verify_message", None) or str(exc)
        if code in (18, 19, 20, 21, 2):
            return f"TLS: unknown CA (certificate verify failed: {msg})"
        if code == 10:
            return f"TLS: the server's certificate has expired ({msg})"
        if code in (62, 64) or "hostname" in msg.lower() or "ip address" in msg.lower():
            return f"TLS: the server's certificate does not match the host ({msg})"
        return f"TLS: certificate verify failed ({msg})"
    text = str(exc)
    low = text.lower()
    refused = ("certificate required", "bad certificate", "unknown ca", "certificate unknown")
    if any(r in low for r in refused):
        # Go's TLS server answers a missing client certificate with "bad certificate" too.
        if client_cert:
            return "TLS: the server rejected the client certificate"
        return "TLS: the server requires a client certificate (set the cert and key files)"
    if "wrong version number" in low or "record layer failure" in low or "packet length" in low:
        return "TLS: the server did not answer TLS (is it an http:// URL?)"
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return f"TLS: handshake failed ({reason})"


def _closed_after_handshake(client_cert: bool) -> str:
    """A TLS server that ends the connection right after the handshake, before any answer,
    is refusing the client at the TLS layer; whether its alert or only the close arrives first
    depends on timing (a POST body still being sent, say), so both read the same."""
    if client_cert:
        return (
            "TLS: the server closed the connection after the handshake (it may have rejected "
            "the client certificate)"
        )
    return (
        "TLS: the server closed the connection after the handshake (it may require a client "
        "certificate: set the cert and key files)"
    )


def _connection_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, ConnectionResetError | http.client.RemoteDisconnected | BrokenPipeError):
        return "connection reset"
    if isinstance(exc, http.client.HTTPException):
        return f"malformed HTTP answer ({type(exc).__name__})"
    return f"connection failed ({type(exc).__name__}: {redact(str(exc), 120)})"


def request(
    method: str,
    url: str,
    *,
    timeout_s: float,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    max_redirects: int = 3,
    max_body_bytes: int = MAX_BODY_BYTES,
    client_cert: bool = False,
) -> Response:
    """One HTTP call bounded by ``timeout_s`` in total (see the module docstring).

    Returns the final ``Response`` whatever its status; raises ``OutboundError`` when no
    complete answer arrived (timeout, connection, TLS, a refused redirect, too large a body).
    ``client_cert`` says whether ``tls`` presents a client certificate (it only words the
    reason of a TLS refusal).
    """
    problem = check_url(url)
    if problem is not None:
        raise OutboundError(FaultKind.CONFIG, problem, retryable=False)
    deadline = time.monotonic() + max(0.0, timeout_s)
    first_origin = origin_of(url)
    hops: list[str] = []
    current_method, current_body = method.upper(), body
    current = url
    for _ in range(max_redirects + 1):
        resp = _one(
            current_method,
            current,
            current_body,
            headers or {},
            tls,
            deadline,
            timeout_s,
            max_body_bytes,
            client_cert,
        )
        if resp.status not in (301, 302, 303, 307, 308):
            return Response(resp.status, resp.headers, resp.body, current, hops)
        location = resp.headers.get("location")
        if not location:
            return Response(resp.status, resp.headers, resp.body, current, hops)
        target = urllib.parse.urljoin(current, location)
        if origin_of(target) != first_origin:
            raise OutboundError(
                FaultKind.REDIRECT,
                f"HTTP {resp.status} redirect to another origin ({origin_of(target)}) refused; "
                f"only {first_origin} is trusted",
                retryable=False,
            )
        if resp.status in (301, 302, 303) and current_method != "GET":
            raise OutboundError(
                FaultKind.REDIRECT,
                f"HTTP {resp.status} redirect of a {current_method} to {safe_url(target)} refused "
                "(it would drop the request body); configure the URL it redirects to",
                retryable=False,
            )
        hops.append(safe_url(target))
        current = target
    raise OutboundError(FaultKind.REDIRECT, f"more than {max_redirects} redirects", retryable=False)


def _one(
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    tls: ssl.SSLContext | None,
    deadline: float,
    timeout_s: float,
    max_body_bytes: int,
    client_cert: bool,
) -> Response:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _timeout(timeout_s)
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = tls if tls is not None else ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, parts.port, timeout=remaining, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=remaining)
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    send = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
    if body is not None:
        send.setdefault("Content-Length", str(len(body)))
    watchdog = _Watchdog(conn, remaining)
    handshaken = False
    try:
        conn.connect()  # TCP, and for https the whole TLS handshake
        watchdog.hold()
        handshaken = parts.scheme == "https"
        conn.request(method, path, body=body, headers=send)
        raw = conn.getresponse()
        data = raw.read(max_body_bytes + 1)
        if watchdog.fired:
            raise _timeout(timeout_s)  # the read ended because the deadline shut the socket
        if raw.length:  # Content-Length said more than arrived
            raise OutboundError(
                FaultKind.CONNECTION,
                f"the answer ended {raw.length} bytes short of its Content-Length",
                retryable=True,
            )
        if len(data) > max_body_bytes:
            raise OutboundError(
                FaultKind.TOO_LARGE,
                f"response larger than {max_body_bytes} bytes",
                retryable=False,
            )
        got = {k.lower(): v for k, v in raw.getheaders()}
        return Response(raw.status, got, data, url)
    except OutboundError:
        raise
    except ssl.SSLError as exc:
        if watchdog.fired:
            raise _timeout(timeout_s) from None
        if handshaken and isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            # Retried: a proxy that merely dropped the connection looks the same.
            reason = _closed_after_handshake(client_cert)
            raise OutboundError(FaultKind.TLS, reason, retryable=True) from None
        reason = _tls_reason(exc, client_cert)
        raise OutboundError(FaultKind.TLS, reason, retryable=False) from None
    except TimeoutError:
        raise _timeout(timeout_s) from None
    except (OSError, http.client.HTTPException) as exc:
        if watchdog.fired or time.monotonic() >= deadline:
            raise _timeout(timeout_s) from None
        reset = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)
        if handshaken and isinstance(exc, reset):
            raise OutboundError(
                FaultKind.TLS, _closed_after_handshake(client_cert), retryable=True
            ) from None
        if parts.scheme == "http" and isinstance(exc, reset):
            # A TLS server answers plain HTTP with a 400 and a close that often arrives as a
            # reset first, losing the 400: ask the port directly whether it speaks TLS.
            left = min(1.0, deadline - time.monotonic())
            if left > 0 and _speaks_tls(host, parts.port or 80, left):
                raise OutboundError(
                    FaultKind.TLS,
                    "the server speaks HTTPS: use an https:// URL",
                    retryable=False,
                ) from None
        raise OutboundError(FaultKind.CONNECTION, _connection_reason(exc), retryable=True) from None
    finally:
        watchdog.cancel()
        conn.close()


def _speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (certificates not checked: this only
    names the mistake of an http:// URL for a TLS server, nothing is sent after it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def _timeout(timeout_s: float) -> OutboundError:
    return OutboundError(FaultKind.TIMEOUT, f"timeout after {timeout_s:.3g}s", retryable=True)
