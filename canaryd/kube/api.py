"""One HTTP call to the apiserver with a JSON body and a JSON answer, typed errors on failure.

Everything canaryd sends to or reads from the apiserver is plain JSON (``dict``), never the
client's generated models: a round trip through the models can drop fields it does not know
(custom resources, new API fields), and canaryd promises to leave what it does not own intact.
Every call has a deadline (``DEFAULT_TIMEOUT_S`` unless the caller passes one) and raises only
``canaryd.kube.errors.ApiError`` subclasses.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k8s

from canaryd.kube.client import DEFAULT_TIMEOUT_S
from canaryd.kube.errors import ApiError, error_for, from_exception

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "canaryd"

Timeout = float | tuple[float, float]


def raw_request(
    api_client: k8s.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, str] | None = None,
    content_type: str = "application/json",
    timeout: Timeout | None = None,
    what: str = "",
) -> JSON:
    """Send one request; return the decoded JSON answer (``{}`` for an empty one).

    Raises the ``ApiError`` subclass of the HTTP status, or ``ApiUnreachableError`` when there was no
    answer within ``timeout`` (connect, read).
    """
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    label = what or f"{method} {path}"
    try:
        params = api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = api_client.call_api(
            *params, _request_timeout=timeout if timeout is not None else DEFAULT_TIMEOUT_S
        )
        data = response.read()
    except ApiError:
        raise
    except Exception as exc:  # urllib3/ssl/socket errors, the client's ApiException
        raise from_exception(exc, label) from None
    status = int(getattr(response, "status", 0) or 0)
    if not 200 <= status <= 299:
        raise error_for(label, status, data, str(getattr(response, "reason", "") or ""))
    if not data:
        return {}
    try:
        decoded = json.loads(data)
    except ValueError as exc:
        raise ApiError(label, status, "BadResponse", f"answer is not JSON: {exc}") from None
    return decoded if isinstance(decoded, dict) else {}


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 JSON merge patch that turns ``old`` into ``new``.

    Keys missing from ``new`` become ``None`` (delete); nested objects recurse; anything else
    (lists included) is replaced whole. Returns ``{}`` when nothing differs. ``new`` must not
    hold JSON nulls (Kubernetes objects do not), since a merge patch cannot express them.
    """
    import copy

    if not isinstance(old, dict) or not isinstance(new, dict):
        return copy.deepcopy(new)
    patch: JSON = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = copy.deepcopy(value)
        elif old[key] != value:
            if isinstance(old[key], dict) and isinstance(value, dict):
                sub = merge_patch(old[key], value)
                if sub != {}:
                    patch[key] = sub
            else:
                patch[key] = copy.deepcopy(value)
    return patch


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the document ``target`` becomes after ``patch`` (a new object; inputs kept)."""
    import copy

    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out: JSON = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out
