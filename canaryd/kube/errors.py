"""Typed Kubernetes API errors that keep the HTTP status.

Every call canaryd makes to the apiserver raises one of these, never the client library's
``ApiException`` or a urllib3 error, so callers decide by type: an RBAC mistake (403) is
reported as such and never retried like a transient fault; a 409 means "re-read and re-decide";
a 429 or 5xx may succeed later. The apiserver's ``Status.message`` is kept (it names the field
or the permission); any other body is cut to a short, single-line excerpt.

    ApiError (status 0: the apiserver could not be reached or did not answer in time)
    ├── ApiUnauthorizedError 401       ├── ApiForbiddenError 403      ├── ApiNotFoundError 404 (also NotFoundError)
    ├── ApiConflictError 409 (also ConflictError; AlreadyExists is a ApiConflictError with reason AlreadyExists)
    ├── ApiGoneError 410 (a watch's resourceVersion is too old: re-list)
    ├── ApiInvalidError 422            ├── ApiTooManyRequestsError 429 (retryable)
    └── ApiServerError 5xx (retryable)
"""

from __future__ import annotations

import json
from typing import Any

from canaryd.errors import CanarydError, ConflictError, NotFoundError

_EXCERPT = 300


class ApiError(CanarydError):
    """A failed apiserver call: ``status`` (0 when there was no HTTP answer), the Status
    ``reason`` (e.g. ``AlreadyExists``, ``ApiForbiddenError``) and the message, for ``what``."""

    retryable = False

    def __init__(self, what: str, status: int, reason: str = "", message: str = "") -> None:
        self.what = what
        self.status = status
        self.reason = reason
        self.message = message
        head = f"{what}: " if what else ""
        code = f"{status} {reason}".strip() if status else (reason or "no answer")
        super().__init__(f"{head}apiserver said {code}" + (f": {message}" if message else ""))


class ApiUnreachableError(ApiError):
    """No HTTP answer: connection refused or reset, TLS failure, timeout."""

    retryable = True


class ApiUnauthorizedError(ApiError):
    """401: the credentials were not accepted."""


class ApiForbiddenError(ApiError):
    """403: RBAC does not allow this; retrying will not help."""


class ApiNotFoundError(ApiError, NotFoundError):
    """404: the object (or its namespace, or the API) does not exist."""


class ApiConflictError(ApiError, ConflictError):
    """409: the object changed since it was read (or already exists): re-read, re-decide."""

    @property
    def already_exists(self) -> bool:
        return self.reason == "AlreadyExists"


class ApiGoneError(ApiError):
    """410: a watch or list continuation is too old; list again."""


class ApiInvalidError(ApiError):
    """422: the object was refused by validation (the message names the field)."""


class ApiTooManyRequestsError(ApiError):
    """429: the apiserver is shedding load; try again later."""

    retryable = True


class ApiServerError(ApiError):
    """5xx: the apiserver failed; try again later."""

    retryable = True


_BY_STATUS: dict[int, type[ApiError]] = {
    401: ApiUnauthorizedError,
    403: ApiForbiddenError,
    404: ApiNotFoundError,
    409: ApiConflictError,
    410: ApiGoneError,
    422: ApiInvalidError,
    429: ApiTooManyRequestsError,
}


def error_for(what: str, status: int, body: Any = None, reason: str = "") -> ApiError:
    """The typed error for an HTTP ``status`` with the apiserver's ``body`` (Status JSON)."""
    status_reason, message = _status_fields(body)
    reason = status_reason or reason
    if status >= 500:
        cls: type[ApiError] = ApiServerError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    return cls(what, status, reason, message)


def from_exception(exc: BaseException, what: str) -> ApiError:
    """Translate the client library's ``ApiException`` (or a transport error) to a typed one."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status == 0:
            return ApiUnreachableError(what, 0, "", _one_line(str(exc.reason or exc)))
        return error_for(what, status, exc.body, str(exc.reason or ""))
    return ApiUnreachableError(what, 0, type(exc).__name__, _one_line(str(exc)))


def _status_fields(body: Any) -> tuple[str, str]:
    """(reason, message) of a Kubernetes Status body; an excerpt of any other body."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            body = json.loads(body)
        except ValueError:
            return "", _one_line(body)
    if isinstance(body, dict):
        reason = body.get("reason")
        message = body.get("message")
        return (
            str(reason) if isinstance(reason, str) else "",
            _one_line(message) if isinstance(message, str) else "",
        )
    return "", ""


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[: _EXCERPT - 1] + "…"
