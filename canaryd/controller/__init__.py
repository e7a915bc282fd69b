"""The rollout controller: a pure state machine shared by the daemon and the simulator.

The state types (``controller.state``) are plain and cheap; the controller itself pulls in the
judges and scipy. Names are resolved lazily (PEP 562) so that ``from canaryd.controller import
Manual`` in a CLI module does not import scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canaryd.controller.controller import (
        Confirmation,
        Decision,
        RolloutController,
        RolloutWindow,
    )
    from canaryd.controller.state import (
        Action,
        Manual,
        Phase,
        RolloutState,
        StepRecord,
        UserImpact,
    )

_WHERE = {
    "Confirmation": "controller",
    "Decision": "controller",
    "RolloutController": "controller",
    "RolloutWindow": "controller",
    "Action": "state",
    "Manual": "state",
    "Phase": "state",
    "RolloutState": "state",
    "StepRecord": "state",
    "UserImpact": "state",
}

__all__ = [
    "Action",
    "Confirmation",
    "Decision",
    "Manual",
    "Phase",
    "RolloutController",
    "RolloutState",
    "RolloutWindow",
    "StepRecord",
    "UserImpact",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"canaryd.controller.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'canaryd.controller' has no attribute {name!r}")
