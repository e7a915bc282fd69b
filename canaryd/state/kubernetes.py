"""A StateStore that keeps each rollout's state in a ConfigMap next to its InferenceService.

One ConfigMap per rollout, ``canaryd-<inferenceservice>`` in the InferenceService's
namespace, labelled ``app.kubernetes.io/managed-by: canaryd``, with the state as JSON text
(sorted keys) under ``data["state.json"]``. Its ownerReference names the InferenceService, so
Kubernetes' garbage collector deletes the state together with the model (the GC runs in
kube-controller-manager; a bare apiserver keeps the ConfigMap).

Same contract as :class:`canaryd.state.memory.MemoryStateStore`:

- ``load`` returns ``StoredState(data, resourceVersion)`` or None;
- ``save(key, data, None)`` creates, and raises ``ConflictError`` if the ConfigMap exists;
- ``save(key, data, version)`` writes only if the ConfigMap is still at ``version``
  (a merge patch carrying ``metadata.resourceVersion``): 409, or a ConfigMap that has gone
  meanwhile, raise ``ConflictError``; it returns the new resourceVersion;
- ``delete`` removes it, and is a no-op when it is absent.

One difference: creating needs the InferenceService's uid for the ownerReference, so
``save(key, data, None)`` raises ``NotFoundError`` when the InferenceService does not exist.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from canaryd.errors import CanarydError, ConflictError
from canaryd.kube import (
    FIELD_MANAGER,
    INFERENCE_SERVICE,
    JSON,
    MERGE_PATCH,
    api_status,
    raw_request,
    translate,
)
from canaryd.state.base import RolloutKey, StoredState

DATA_KEY = "state.json"
MANAGED_BY = {"app.kubernetes.io/managed-by": "canaryd"}
ROLLOUT_LABEL = "canaryd.io/inferenceservice"
_MAX_NAME = 253
_MAX_LABEL = 63


def configmap_name(isvc: str, prefix: str = "canaryd-") -> str:
    """``<prefix><isvc>`` as a valid DNS-1123 subdomain of at most 253 characters."""
    raw = re.sub(r"[^a-z0-9.-]+", "-", (prefix + isvc).lower()).strip("-.")
    if len(raw) <= _MAX_NAME:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    return raw[: _MAX_NAME - 11].rstrip("-.") + "-" + digest


def _label_value(value: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:_MAX_LABEL]
    return clean.strip("-_.")


class KubernetesStateStore:
    """StateStore on ConfigMaps (see the module docstring for the contract)."""

    def __init__(self, api_client: k8s.ApiClient, prefix: str = "canaryd-") -> None:
        self._client = api_client
        self._prefix = prefix

    def name_for(self, key: RolloutKey) -> str:
        return configmap_name(key.name, self._prefix)

    def _path(self, key: RolloutKey, name: str | None = None) -> str:
        base = f"/api/v1/namespaces/{key.namespace}/configmaps"
        return f"{base}/{name}" if name else base

    def get_configmap(self, key: RolloutKey) -> JSON | None:
        """The raw ConfigMap, or None (for inspection and tests)."""
        try:
            return raw_request(self._client, "GET", self._path(key, self.name_for(key)))
        except ApiException as err:
            if api_status(err) == 404:
                return None
            raise translate(err, f"state ConfigMap for {key}", CanarydError) from err

    def load(self, key: RolloutKey) -> StoredState | None:
        cm = self.get_configmap(key)
        if cm is None:
            return None
        text = (cm.get("data") or {}).get(DATA_KEY)
        version = str(cm["metadata"]["resourceVersion"])
        if text is None:
            raise CanarydError(
                f"ConfigMap {key.namespace}/{self.name_for(key)} has no {DATA_KEY} key"
            )
        try:
            data = json.loads(text)
        except ValueError as err:
            raise CanarydError(
                f"ConfigMap {key.namespace}/{self.name_for(key)}: {DATA_KEY} is not JSON: {err}"
            ) from err
        if not isinstance(data, dict):
            raise CanarydError(
                f"ConfigMap {key.namespace}/{self.name_for(key)}: {DATA_KEY} is not an object"
            )
        return StoredState(data, version)

    def save(self, key: RolloutKey, data: dict[str, Any], expected_version: str | None) -> str:
        text = json.dumps(data, sort_keys=True, allow_nan=False)
        name = self.name_for(key)
        what = f"state ConfigMap {key.namespace}/{name}"
        query = {"fieldManager": FIELD_MANAGER}
        if expected_version is None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": key.namespace,
                    "labels": {**MANAGED_BY, ROLLOUT_LABEL: _label_value(key.name)},
                    "ownerReferences": [self._owner_reference(key)],
                },
                "data": {DATA_KEY: text},
            }
            try:
                created = raw_request(self._client, "POST", self._path(key), body=body, query=query)
            except ApiException as err:
                if api_status(err) == 409:
                    raise ConflictError(f"state for {key} already exists") from err
                raise translate(err, what, CanarydError) from err
            return str(created["metadata"]["resourceVersion"])
        patch = {"metadata": {"resourceVersion": expected_version}, "data": {DATA_KEY: text}}
        try:
            written = raw_request(
                self._client,
                "PATCH",
                self._path(key, name),
                body=patch,
                query=query,
                content_type=MERGE_PATCH,
            )
        except ApiException as err:
            if api_status(err) in (404, 409):
                raise ConflictError(
                    f"state for {key} changed (expected version {expected_version})"
                ) from err
            raise translate(err, what, CanarydError) from err
        return str(written["metadata"]["resourceVersion"])

    def delete(self, key: RolloutKey) -> None:
        try:
            raw_request(self._client, "DELETE", self._path(key, self.name_for(key)))
        except ApiException as err:
            if api_status(err) != 404:
                raise translate(err, f"state ConfigMap for {key}", CanarydError) from err

    def _owner_reference(self, key: RolloutKey) -> JSON:
        res = INFERENCE_SERVICE
        path = f"/apis/{res.api_version}/namespaces/{key.namespace}/{res.plural}/{key.name}"
        try:
            isvc = raw_request(self._client, "GET", path)
        except ApiException as err:
            raise translate(err, f"InferenceService {key}", CanarydError) from err
        return {
            "apiVersion": res.api_version,
            "kind": res.kind,
            "name": key.name,
            "uid": isvc["metadata"]["uid"],
            # Not a controller reference: KServe's controller owns the InferenceService's
            # children; this one only ties the state's lifetime to it.
            "blockOwnerDeletion": False,
        }
