"""canaryd: progressive-delivery canary analysis for KServe models.

The public API: the policy model and loader, the judges and their verdicts, the rollout
controller, and the simulator.

Names are imported lazily (PEP 562): ``import canaryd.cli`` runs this file first, and the
controller pulls in scipy, which ``canaryd --help`` must not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canaryd.controller import (
        Action,
        Decision,
        Manual,
        Phase,
        RolloutController,
        RolloutState,
    )
    from canaryd.errors import CanarydError, InputError, PolicyError, Problem, ScenarioError
    from canaryd.observation import Observation, VersionCounts
    from canaryd.policy.loader import load_policy, load_policy_file
    from canaryd.policy.model import CanaryPolicy
    from canaryd.stats.verdict import Status, Verdict

__version__ = "0.1.0"

_WHERE = {
    "Action": "canaryd.controller",
    "Decision": "canaryd.controller",
    "Manual": "canaryd.controller",
    "Phase": "canaryd.controller",
    "RolloutController": "canaryd.controller",
    "RolloutState": "canaryd.controller",
    "CanarydError": "canaryd.errors",
    "InputError": "canaryd.errors",
    "PolicyError": "canaryd.errors",
    "Problem": "canaryd.errors",
    "ScenarioError": "canaryd.errors",
    "Observation": "canaryd.observation",
    "VersionCounts": "canaryd.observation",
    "load_policy": "canaryd.policy.loader",
    "load_policy_file": "canaryd.policy.loader",
    "CanaryPolicy": "canaryd.policy.model",
    "Status": "canaryd.stats.verdict",
    "Verdict": "canaryd.stats.verdict",
}

__all__ = [
    "Action",
    "CanaryPolicy",
    "CanarydError",
    "Decision",
    "InputError",
    "Manual",
    "Observation",
    "Phase",
    "PolicyError",
    "Problem",
    "RolloutController",
    "RolloutState",
    "ScenarioError",
    "Status",
    "Verdict",
    "VersionCounts",
    "load_policy",
    "load_policy_file",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'canaryd' has no attribute {name!r}")
