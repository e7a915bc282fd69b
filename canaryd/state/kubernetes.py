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

Reads go through ``canaryd.kube.Objects``: in the daemon that is the watch cache (the
ConfigMaps labelled ``app.kubernetes.io/managed-by=canaryd``), so ``load`` and ``version``
cost no API call; writes are merge patches carrying the resourceVersion.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from kubernetes import client as k8s

from canaryd.errors import CanarydError, ConflictError
from canaryd.kube import (
    CONFIG_MAP,
    INFERENCE_SERVICE,
    JSON,
    ApiConflictError,
    ApiNotFoundError,
    Objects,
    as_objects,
)
from canaryd.state.base import RolloutKey, StoredState

DATA_KEY = "state.json"
MANAGED_BY = {"app.kubernetes.io/managed-by": "canaryd"}
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=canaryd"
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

    def __init__(self, objects: Objects | k8s.ApiClient, prefix: str = "canaryd-") -> None:
        self._objects = as_objects(objects)
        self._prefix = prefix

    def name_for(self, key: RolloutKey) -> str:
        return configmap_name(key.name, self._prefix)

    def get_configmap(self, key: RolloutKey) -> JSON | None:
        """The ConfigMap (cached where the daemon caches it), or None."""
        try:
            return self._objects.get(CONFIG_MAP, key.namespace, self.name_for(key))
        except ApiNotFoundError:
            return None

    def version(self, key: RolloutKey) -> str | None:
        """The stored document's version (resourceVersion) without decoding it; None if absent."""
        cm = self.get_configmap(key)
        return None if cm is None else str(cm["metadata"]["resourceVersion"])

    def load(self, key: RolloutKey) -> StoredState | None:
        cm = self.get_configmap(key)
        if cm is None:
            return None
        where = f"ConfigMap {key.namespace}/{self.name_for(key)}"
        if "data" not in cm:  # the watch cache keeps metadata only: read the document
            try:
                cm = self._objects.fresh(CONFIG_MAP, key.namespace, self.name_for(key))
            except ApiNotFoundError:
                return None
        text = (cm.get("data") or {}).get(DATA_KEY)
        version = str(cm["metadata"]["resourceVersion"])
        if text is None:
            raise CanarydError(f"{where} has no {DATA_KEY} key")
        try:
            data = json.loads(text)
        except ValueError as err:
            raise CanarydError(f"{where}: {DATA_KEY} is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise CanarydError(f"{where}: {DATA_KEY} is not an object")
        return StoredState(data, version)

    def save(self, key: RolloutKey, data: dict[str, Any], expected_version: str | None) -> str:
        return self.save_text(
            key, json.dumps(data, sort_keys=True, allow_nan=False), expected_version
        )

    def save_text(self, key: RolloutKey, text: str, expected_version: str | None) -> str:
        """``save`` with the document already encoded (the daemon encodes once)."""
        name = self.name_for(key)
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
                created = self._objects.create(CONFIG_MAP, key.namespace, body)
            except ApiConflictError as err:
                raise ConflictError(f"state for {key} already exists") from err
            return str(created["metadata"]["resourceVersion"])
        patch = {"metadata": {"resourceVersion": expected_version}, "data": {DATA_KEY: text}}
        try:
            written = self._objects.patch(CONFIG_MAP, key.namespace, name, patch)
        except (ApiConflictError, ApiNotFoundError) as err:
            raise ConflictError(
                f"state for {key} changed (expected version {expected_version})"
            ) from err
        return str(written["metadata"]["resourceVersion"])

    def delete(self, key: RolloutKey) -> None:
        self._objects.delete(CONFIG_MAP, key.namespace, self.name_for(key))

    def _owner_reference(self, key: RolloutKey) -> JSON:
        isvc = self._objects.get(INFERENCE_SERVICE, key.namespace, key.name)
        return {
            "apiVersion": INFERENCE_SERVICE.api_version,
            "kind": INFERENCE_SERVICE.kind,
            "name": key.name,
            "uid": isvc["metadata"]["uid"],
            # Not a controller reference: KServe's controller owns the InferenceService's
            # children; this one only ties the state's lifetime to it.
            "blockOwnerDeletion": False,
        }
