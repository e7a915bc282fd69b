"""canaryd: progressive-delivery canary analysis for KServe models.

The public API: the policy model and loader, the judges and their verdicts, the rollout
controller, and the simulator.
"""

from canaryd.controller import Action, Decision, Manual, Phase, RolloutController, RolloutState
from canaryd.errors import CanarydError, InputError, PolicyError, Problem, ScenarioError
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.loader import load_policy, load_policy_file
from canaryd.policy.model import CanaryPolicy
from canaryd.stats.verdict import Status, Verdict

__version__ = "0.1.0"

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
