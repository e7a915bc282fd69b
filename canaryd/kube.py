"""Small helpers around the official ``kubernetes`` client: construction, raw JSON calls, errors.

Everything canaryd sends to or reads from the apiserver is plain JSON (``dict``), never the
client's generated models: a round trip through the models can drop fields it does not know
(custom resources, new API fields), and canaryd promises to leave what it does not own intact.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from canaryd.errors import CanarydError, ConflictError, NotFoundError, RoutingError

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "canaryd"


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An ApiClient from ``kubeconfig`` if given, else in-cluster config, else ~/.kube/config."""
    if kubeconfig is not None:
        return k8s_config.new_client_from_config(config_file=kubeconfig, context=context)
    try:
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    except k8s_config.ConfigException:
        return k8s_config.new_client_from_config(context=context)


def bearer_token_client(host: str, token: str, ca_cert_file: str | None) -> k8s.ApiClient:
    """An ApiClient that authenticates with a bearer token (for example a ServiceAccount's)."""
    configuration = k8s.Configuration(host=host)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    if ca_cert_file is not None:
        configuration.ssl_ca_cert = ca_cert_file
    return k8s.ApiClient(configuration)


def raw_request(
    api_client: k8s.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> JSON:
    """One HTTP call to the apiserver with a JSON body; returns the decoded JSON response.

    Raises the client's ``ApiException`` subclasses on non-2xx, like the generated APIs do.
    """
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    params = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=list((query or {}).items()) or None,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*params)
    response.read()
    data = api_client.response_deserialize(
        response_data=response, response_types_map={"2XX": "object"}
    ).data
    return data if isinstance(data, dict) else {}


def api_status(err: ApiException) -> int:
    return int(err.status or 0)


def translate(
    err: ApiException, what: str, default: type[CanarydError] = RoutingError
) -> CanarydError:
    """Map an ApiException to canaryd's errors: 404 → NotFound, 409 → Conflict, else default."""
    status = api_status(err)
    reason = _reason(err)
    if status == 404:
        return NotFoundError(f"{what} not found: {reason}")
    if status == 409:
        return ConflictError(f"{what} changed concurrently: {reason}")
    return default(f"{what}: apiserver said {status} {reason}")


def _reason(err: ApiException) -> str:
    import json

    body = err.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            message = json.loads(body).get("message")
        except ValueError:
            message = None
        if isinstance(message, str):
            return message
        return body[:300]
    return str(err.reason or "")


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 JSON merge patch that turns ``old`` into ``new``.

    Keys missing from ``new`` become ``None`` (delete); nested objects recurse; anything else
    (lists included) is replaced whole. Returns ``{}`` when nothing differs. ``new`` must not
    hold JSON nulls (Kubernetes objects do not), since a merge patch cannot express them.
    """
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


@dataclass(frozen=True)
class Resource:
    """A custom resource type, as CustomObjectsApi addresses it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


INFERENCE_SERVICE = Resource(
    "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
)


def custom_objects(api: k8s.ApiClient | k8s.CustomObjectsApi) -> k8s.CustomObjectsApi:
    return api if isinstance(api, k8s.CustomObjectsApi) else k8s.CustomObjectsApi(api)


def get_custom_object(
    api: k8s.CustomObjectsApi, resource: Resource, namespace: str, name: str
) -> JSON:
    what = f"{resource.kind} {namespace}/{name}"
    try:
        obj = api.get_namespaced_custom_object(
            resource.group, resource.version, namespace, resource.plural, name
        )
    except ApiException as err:
        raise translate(err, what) from err
    if not isinstance(obj, dict):
        raise RoutingError(f"{what}: unexpected response {type(obj).__name__}")
    return obj


Mutation = Callable[[JSON], JSON]
"""Given a deep copy of the current object, return the object as it should be (or raise)."""


def update_custom_object(
    api: k8s.CustomObjectsApi,
    resource: Resource,
    namespace: str,
    name: str,
    mutate: Mutation,
    *,
    attempts: int = 5,
) -> tuple[JSON, bool]:
    """Read, decide, write with optimistic concurrency; returns (object, whether it wrote).

    The write is a JSON merge patch of exactly the differences outside ``status``, carrying
    ``metadata.resourceVersion`` so the apiserver rejects it with 409 if anyone wrote in
    between. On 409 the object is read again and ``mutate`` decides again (it may now decide
    that nothing is to be done). No difference means no write at all.
    """
    what = f"{resource.kind} {namespace}/{name}"
    for attempt in range(attempts):
        current = get_custom_object(api, resource, namespace, name)
        desired = mutate(copy.deepcopy(current))
        patch = merge_patch(_without_status(current), _without_status(desired))
        if patch == {}:
            return current, False
        version = current.get("metadata", {}).get("resourceVersion")
        if not version:
            raise RoutingError(f"{what} has no metadata.resourceVersion; refusing a blind write")
        patch.setdefault("metadata", {})["resourceVersion"] = version
        try:
            written = api.patch_namespaced_custom_object(
                resource.group,
                resource.version,
                namespace,
                resource.plural,
                name,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
            )
        except ApiException as err:
            if api_status(err) == 409 and attempt + 1 < attempts:
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            raise translate(err, what) from err
        return (written if isinstance(written, dict) else desired), True
    raise ConflictError(f"{what} kept changing; gave up after {attempts} attempts")


def _without_status(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k != "status"}


def preferred_version(api_client: k8s.ApiClient, group: str, candidates: Sequence[str]) -> str:
    """The first of ``candidates`` that the apiserver serves for ``group`` (API discovery)."""
    try:
        info = raw_request(api_client, "GET", f"/apis/{group}")
    except ApiException as err:
        raise translate(err, f"API group {group}") from err
    served = [v.get("version") for v in info.get("versions", []) if isinstance(v, dict)]
    for candidate in candidates:
        if candidate in served:
            return candidate
    raise RoutingError(f"API group {group} serves {served}, none of {list(candidates)}")
