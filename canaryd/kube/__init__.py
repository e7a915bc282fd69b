"""The Kubernetes side of canaryd, in verb-named modules (after kopf's ``clients/``).

- ``client``: building an ApiClient as kubectl does (kubeconfig, context, in-cluster);
- ``api``: one raw JSON call with a deadline; merge patches;
- ``errors``: typed API errors that keep the HTTP status (403 vs 409 vs 5xx);
- ``objects``: the read/patch/create protocol everything goes through, and read-decide-write;
- ``watching``: the watch-fed cache the daemon reads the cluster from;
- ``events``: decision Events (once per applied decision; series for repeats);
- ``memory``: the objects protocol over a dict, for unit tests;
- ``resources``: the resource types.
"""

from canaryd.kube.api import FIELD_MANAGER, JSON, MERGE_PATCH, merge_patch, raw_request
from canaryd.kube.client import KubeConfigError, bearer_token_client, load_api_client
from canaryd.kube.errors import (
    ApiConflictError,
    ApiError,
    ApiForbiddenError,
    ApiGoneError,
    ApiInvalidError,
    ApiNotFoundError,
    ApiServerError,
    ApiTooManyRequestsError,
    ApiUnauthorizedError,
    ApiUnreachableError,
)
from canaryd.kube.objects import (
    KubeObjects,
    Objects,
    as_objects,
    preferred_version,
    update_object,
)
from canaryd.kube.resources import (
    CONFIG_MAP,
    EVENT,
    HTTP_ROUTE,
    INFERENCE_SERVICE,
    LEASE,
    VIRTUAL_SERVICE,
    Resource,
)

__all__ = [
    "CONFIG_MAP",
    "EVENT",
    "FIELD_MANAGER",
    "HTTP_ROUTE",
    "INFERENCE_SERVICE",
    "JSON",
    "LEASE",
    "MERGE_PATCH",
    "VIRTUAL_SERVICE",
    "ApiConflictError",
    "ApiError",
    "ApiForbiddenError",
    "ApiGoneError",
    "ApiInvalidError",
    "ApiNotFoundError",
    "ApiServerError",
    "ApiTooManyRequestsError",
    "ApiUnauthorizedError",
    "ApiUnreachableError",
    "KubeConfigError",
    "KubeObjects",
    "Objects",
    "Resource",
    "as_objects",
    "bearer_token_client",
    "load_api_client",
    "merge_patch",
    "preferred_version",
    "raw_request",
    "update_object",
]
