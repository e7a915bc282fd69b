"""The policy ``canaryd simulate`` uses when neither the scenario nor --policy names one."""

from __future__ import annotations

from canaryd.policy.model import CanaryPolicy

DEFAULT_POLICY_DOC = {
    "apiVersion": "canaryd.io/v1alpha1",
    "kind": "CanaryPolicy",
    "metadata": {"name": "default"},
    "spec": {
        "target": {"namespace": "default", "inferenceService": "model"},
        "steps": {"stepWeight": 5, "maxWeight": 50, "minDwell": "5m", "minCanaryRequests": 100},
        "analysis": {
            "interval": "1m",
            "alpha": 0.01,
            "metrics": [
                {
                    "name": "errors",
                    "kind": "errors",
                    "judge": "sequential",
                    "maxRelativeIncrease": 0.2,
                },
                {
                    "name": "latency",
                    "kind": "latency",
                    "judge": "sequential",
                    "quantiles": [0.5, 0.99],
                    "maxRelativeIncrease": 0.1,
                },
            ],
        },
        "noData": {"timeout": "10m", "action": "pause"},
        "onFailure": "rollback",
        "promotion": {"criterion": "afterSteps", "maxDuration": "24h"},
    },
}
"""Sequential errors and latency judges, alpha 0.01, steps 5% -> 50% by 5% every 5 minutes."""


def default_policy() -> CanaryPolicy:
    return CanaryPolicy.model_validate(DEFAULT_POLICY_DOC)
