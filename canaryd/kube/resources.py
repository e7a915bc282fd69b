"""The Kubernetes resource types canaryd reads and writes, addressed the way the API paths are."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    """A namespaced resource type: ``group`` ('' for the core API), ``version``, ``plural``."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{prefix}/namespaces/{namespace}/{self.plural}"

    def path(self, namespace: str, name: str) -> str:
        return f"{self.collection_path(namespace)}/{name}"

    def with_version(self, version: str) -> Resource:
        return Resource(self.group, version, self.plural, self.kind)

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


INFERENCE_SERVICE = Resource(
    "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
)
CONFIG_MAP = Resource("", "v1", "configmaps", "ConfigMap")
LEASE = Resource("coordination.k8s.io", "v1", "leases", "Lease")
EVENT = Resource("events.k8s.io", "v1", "events", "Event")
VIRTUAL_SERVICE = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
"""Served as v1 by Istio >= 1.22 and as v1beta1 before: routers ask discovery which."""
HTTP_ROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
"""Gateway API HTTPRoute, v1 since Gateway API 1.0 (v1beta1 before): routers ask discovery."""
