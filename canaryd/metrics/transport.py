"""The HTTP transport to Prometheus: one instant query, its faults classified.

A ``Transport`` runs one PromQL instant query and returns the ``result`` vector, or raises
``QueryError`` saying whether trying again may help (connection refused, timeouts, 5xx and 429
may; a 4xx, a non-vector answer do not). ``HttpTransport`` speaks the HTTP API through
prometheus-api-client's session: GET via ``custom_query``, POST with the form in the request
body (the client puts a POST's parameters in the URL, and URL length limits a batched query).
"""

from __future__ import annotations

from typing import Any, Protocol

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from canaryd.errors import MetricsError
from canaryd.metrics.connection import PrometheusConfig


class QueryError(MetricsError):
    """One query failed; ``retryable`` says whether trying again may help."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Transport(Protocol):
    """Runs one instant query; raises QueryError."""

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class HttpTransport:
    """prometheus-api-client based transport (GET via ``custom_query``, POST with a form body)."""

    def __init__(self, config: PrometheusConfig) -> None:
        self._config = config
        self._session = requests.Session()
        self._session.verify = config.verify_tls
        # Retries are ours (bounded by the tick budget), never urllib3's.
        no_retry = Retry(total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False)
        self._client = PrometheusConnect(
            url=config.url.rstrip("/"),
            headers=config.headers,
            disable_ssl=not config.verify_tls,
            retry=no_retry,
            session=self._session,
            method=config.method,
        )

    def query(self, promql: str, time_s: float, timeout_s: float) -> list[dict[str, Any]]:
        ts = f"{time_s:.3f}"
        try:
            if self._config.method == "GET":
                try:
                    result = self._client.custom_query(
                        promql, params={"time": ts}, timeout=timeout_s
                    )
                except PrometheusApiClientException as exc:
                    raise _status_failure(str(exc)) from None
                return _check_result(result)
            resp = self._session.post(
                f"{self._client.url}/api/v1/query",
                data={"query": promql, "time": ts},
                headers=self._config.headers,
                timeout=timeout_s,
            )
        except requests.Timeout:
            raise QueryError(f"timeout after {timeout_s:.3g}s", retryable=True) from None
        except requests.ConnectionError as exc:
            raise QueryError(_connection_reason(exc), retryable=True) from None
        except requests.RequestException as exc:
            raise QueryError(f"request failed: {type(exc).__name__}", retryable=True) from None
        return _parse_response(resp)

    def close(self) -> None:
        self._session.close()


def _connection_reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "ECONNREFUSED" in text:
        return "connection refused"
    if "Name or service not known" in text or "Failed to resolve" in text:
        return "host not found"
    if "reset by peer" in text or "RemoteDisconnected" in text:
        return "connection reset"
    return f"connection failed ({type(exc).__name__})"


def _status_failure(text: str) -> QueryError:
    """Classify prometheus-api-client's 'HTTP Status Code NNN (...)' message."""
    code = 0
    parts = text.split()
    if len(parts) >= 4 and parts[:3] == ["HTTP", "Status", "Code"] and parts[3].isdigit():
        code = int(parts[3])
    return QueryError(
        f"HTTP {code or '?'} from Prometheus: {text[:200]}",
        retryable=code == 0 or code >= 500 or code == 429,
    )


def _parse_response(resp: requests.Response) -> list[dict[str, Any]]:
    status = resp.status_code
    try:
        body = resp.json()
    except ValueError:
        body = None
    if status != 200:
        msg = body.get("error", "") if isinstance(body, dict) else resp.text[:200]
        raise QueryError(
            f"HTTP {status} from Prometheus: {msg}".rstrip(": "),
            retryable=status >= 500 or status == 429,
        )
    if not isinstance(body, dict) or body.get("status") != "success":
        raise QueryError("malformed Prometheus response", retryable=True)
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise QueryError("Prometheus answered with a non-vector result", retryable=False)
    return _check_result(data.get("result"))


def _check_result(result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, list):
        raise QueryError("malformed Prometheus result", retryable=True)
    return result
