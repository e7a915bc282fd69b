"""The HTTP transport to Prometheus: one instant query, its faults classified.

A ``Transport`` runs one PromQL instant query and returns the ``result`` vector, or raises
``QueryError`` saying what kind of fault it was and whether trying again may help.
``HttpTransport`` speaks the HTTP API (``/api/v1/query``, GET with the query in the URL or POST
with the form in the body) through ``canaryd.outbound``: a total deadline per request, no
redirect to another origin, a bounded body, no body text in errors but a redacted excerpt of
Prometheus' own ``error`` field.

Classification (``QueryError.kind``), as the reason text shows it:

- ``auth``: HTTP 401/403, named after the credentials configured ("unauthorized: wrong
  username or password", "unauthorized: bearer token rejected", "unauthorized: the server
  wants credentials and none are configured", "forbidden"); not retried;
- ``tls``: "TLS: unknown CA ...", "TLS: the server's certificate does not match the host",
  "TLS: the server requires a client certificate"; not retried;
- ``timeout``, ``connection``: retried;
- ``http``: 5xx and 429 (retried), other 4xx (a bad query; not retried);
- ``redirect``, ``too-large``, ``config`` (an unreadable token file), ``protocol`` (not a
  Prometheus answer).
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Protocol

from canaryd import outbound
from canaryd.errors import MetricsError
from canaryd.metrics.connection import Credentials, PrometheusConfig
from canaryd.outbound import FaultKind, OutboundError

AUTH = "auth"
HTTP = "http"
PROTOCOL = "protocol"


class QueryError(MetricsError):
    """One query failed; ``kind`` classifies it, ``retryable`` says whether to try again."""

    def __init__(self, reason: str, *, retryable: bool, kind: str = PROTOCOL) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.kind = kind


class Transport(Protocol):
    """Runs one instant query; raises QueryError."""

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class HttpTransport:
    """Prometheus' HTTP API over ``canaryd.outbound`` (see the module docstring)."""

    def __init__(self, config: PrometheusConfig) -> None:
        self._config = config
        self._base = config.url.rstrip("/")
        self._credentials = Credentials(config.auth, config.tls)

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
        """``timeout_s`` bounds the whole request (connect, TLS, headers, body)."""
        form = urllib.parse.urlencode({"query": promql, "time": f"{time_s:.3f}"})
        try:
            headers = self._credentials.headers()
            tls = self._credentials.ssl_context() if self._base.startswith("https:") else None
            if self._config.method == "GET":
                resp = outbound.request(
                    "GET",
                    f"{self._base}/api/v1/query?{form}",
                    timeout_s=timeout_s,
                    headers=headers,
                    tls=tls,
                    max_body_bytes=self._config.max_response_bytes,
                    client_cert=self._config.tls.cert_file is not None,
                )
            else:
                resp = outbound.request(
                    "POST",
                    f"{self._base}/api/v1/query",
                    timeout_s=timeout_s,
                    body=form.encode("ascii"),
                    headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
                    tls=tls,
                    max_body_bytes=self._config.max_response_bytes,
                    client_cert=self._config.tls.cert_file is not None,
                )
        except OutboundError as exc:
            raise QueryError(exc.reason, retryable=exc.retryable, kind=exc.kind.value) from None
        return self._parse(resp)

    def close(self) -> None:
        """Nothing to release: every request has its own connection."""

    def _parse(self, resp: outbound.Response) -> list[dict[str, Any]]:
        status = resp.status
        if status in (401, 403):
            raise QueryError(
                f"{self._auth_reason(status)} (HTTP {status}: {outbound.body_excerpt(resp)})",
                retryable=False,
                kind=AUTH,
            )
        body = resp.json()
        if status != 200:
            excerpt = outbound.body_excerpt(resp)
            if status == 400 and b"HTTP request to an HTTPS server" in resp.body[:200]:
                excerpt = "the server speaks HTTPS: use an https:// URL"
            raise QueryError(
                f"HTTP {status} from Prometheus: {excerpt}",
                retryable=status >= 500 or status == 429,
                kind=HTTP,
            )
        if not isinstance(body, dict) or body.get("status") != "success":
            raise QueryError(
                f"not a Prometheus answer ({outbound.body_excerpt(resp)})",
                retryable=True,
                kind=PROTOCOL,
            )
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            raise QueryError(
                "Prometheus answered with a non-vector result", retryable=False, kind=PROTOCOL
            )
        return _check_result(data.get("result"))

    def _auth_reason(self, status: int) -> str:
        scheme = self._config.auth.scheme
        if status == 403:
            return "forbidden: the credentials are valid but not allowed to query"
        if scheme == "basic":
            return "unauthorized: wrong username or password"
        if scheme == "bearer":
            return "unauthorized: bearer token rejected"
        return "unauthorized: the server wants credentials and none are configured"


def _check_result(result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, list):
        raise QueryError("malformed Prometheus result", retryable=True, kind=PROTOCOL)
    return result


__all__ = ["AUTH", "HTTP", "PROTOCOL", "FaultKind", "HttpTransport", "QueryError", "Transport"]
