"""Build a policy's judges: one per metric, with the policy's alpha split by weight."""

from __future__ import annotations

from canaryd.policy.model import CanaryPolicy, Metric
from canaryd.stats.judge import Judge
from canaryd.stats.sequential import SequentialErrorsJudge, SequentialLatencyJudge


def build_judge(metric: Metric, alpha: float) -> Judge:
    """The judge for one metric at its share of alpha."""
    if metric.judge == "sequential":
        if metric.kind == "errors":
            return SequentialErrorsJudge(metric.name, alpha, metric.tolerance, metric.critical)
        if metric.kind == "latency":
            return SequentialLatencyJudge(
                metric.name,
                alpha,
                metric.tolerance,
                tuple(metric.quantiles),
                metric.omnibus,
                metric.critical,
            )
        raise ValueError(f"the sequential judge needs counts; {metric.kind!r} gives none")
    from canaryd.stats.classic import make_classic_judge

    return make_classic_judge(metric, alpha)


def build_judges(policy: CanaryPolicy) -> list[Judge]:
    analysis = policy.spec.analysis
    return [build_judge(m, analysis.alpha_for(m)) for m in analysis.metrics]
