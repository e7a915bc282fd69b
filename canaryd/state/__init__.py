"""StateStore implementations: durable rollout state with optimistic concurrency."""

from canaryd.state.base import RolloutKey, StateStore, StoredState
from canaryd.state.kubernetes import KubernetesStateStore
from canaryd.state.memory import MemoryStateStore

__all__ = ["KubernetesStateStore", "MemoryStateStore", "RolloutKey", "StateStore", "StoredState"]
