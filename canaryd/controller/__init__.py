"""The rollout controller: a pure state machine shared by the daemon and the simulator."""

from canaryd.controller.controller import Decision, RolloutController, RolloutWindow
from canaryd.controller.state import Action, Manual, Phase, RolloutState, StepRecord

__all__ = [
    "Action",
    "Decision",
    "Manual",
    "Phase",
    "RolloutController",
    "RolloutState",
    "RolloutWindow",
    "StepRecord",
]
