"""Build a policy's judges: one per metric, with the policy's alpha split by weight."""

from __future__ import annotations

from typing import Any

from canaryd.policy.model import CanaryPolicy, Metric
from canaryd.stats.categorical import SequentialCategoricalJudge
from canaryd.stats.judge import Judge
from canaryd.stats.llm import SignalJudge
from canaryd.stats.pods import DEFAULT_LATENCY_SPREAD, DEFAULT_RATE_SPREAD
from canaryd.stats.quality import SequentialQualityJudge
from canaryd.stats.sequential import SequentialErrorsJudge, SequentialLatencyJudge

FINISH_REASON_MEANINGS = {
    "stop": "a stop token or string",
    "length": "cut at max_tokens",
    "abort": "aborted by the client",
    "error": "an internal error",
    "repetition": "a repetitive output detected",
}
"""vLLM's finish reasons in words (vllm/v1/engine/__init__.py, ``FinishReason``)."""


def pod_spread_of(metric: Metric) -> float:
    """The pod spread the metric's judge assumes where stable's pods cannot show it: its
    ``podSpread``, else the default of its kind (a ratio of error rates, or of latencies)."""
    if metric.pod_spread is not None:
        return metric.pod_spread
    return DEFAULT_RATE_SPREAD if metric.kind == "errors" else DEFAULT_LATENCY_SPREAD


def build_judge(metric: Metric, alpha: float) -> Judge:
    """The judge for one metric at its share of alpha."""
    if metric.judge == "sequential":
        ml = _ml_judge(metric, alpha)
        if ml is not None:
            return ml
        if metric.kind == "errors":
            return SequentialErrorsJudge(
                metric.name,
                alpha,
                metric.tolerance,
                metric.critical,
                pod_spread=pod_spread_of(metric),
            )
        if metric.kind == "latency":
            return SequentialLatencyJudge(
                metric.name,
                alpha,
                metric.tolerance,
                tuple(metric.quantiles),
                metric.omnibus,
                metric.critical,
                pod_spread=pod_spread_of(metric),
            )
        raise ValueError(f"the sequential judge needs counts; {metric.kind!r} gives none")
    return _classic(metric, alpha)


def _ml_judge(metric: Metric, alpha: float) -> Judge | None:
    """The judges of the ML-aware kinds (LLM signals, categories, delayed-label quality)."""
    if metric.kind in ("ttft", "inter-token", "output-length"):
        return SignalJudge(
            metric.kind,
            metric.name,
            alpha,
            metric.tolerance,
            tuple(metric.quantiles),
            metric.omnibus,
            metric.critical,
        )
    if metric.kind in ("categorical", "finish-reason"):
        noun = (
            "finish reason"
            if metric.kind == "finish-reason"
            else (metric.category_label or "category").replace("_", " ")
        )
        return SequentialCategoricalJudge(
            metric.name,
            alpha,
            metric.tolerance,
            metric.fixed_categories,
            noun=noun,
            critical=metric.critical,
            meanings=FINISH_REASON_MEANINGS if metric.kind == "finish-reason" else None,
        )
    if metric.kind == "quality":
        return SequentialQualityJudge(metric.name, alpha, metric.tolerance, metric.critical)
    return None


def _classic(metric: Metric, alpha: float) -> Judge:
    """Classic (fixed-horizon) judges, mapped from the policy's fields."""
    from canaryd.stats.classic import make_classic_judge

    common: dict[str, Any] = {
        "metric": metric.name,
        "kind": metric.kind,
        "critical": metric.critical,
        "quantiles": tuple(metric.quantiles),
        "custom_name": metric.name if metric.kind == "custom" else None,
    }
    if metric.judge == "threshold":
        return make_classic_judge(
            "threshold",
            **common,
            min=metric.min,
            max=metric.max,
            failure_limit=metric.failure_limit,
        )
    common["min_intervals"] = metric.min_intervals
    if metric.judge == "mann-whitney":
        # Kayenta's semantics: its own tolerance and confidence; allowed increase = tolerance.
        return make_classic_judge(
            "mann-whitney",
            **common,
            confidence=metric.confidence,
            effect_size_thresholds=(1.0, 1.0 + metric.tolerance),
        )
    if metric.judge == "welch-t":
        return make_classic_judge("welch-t", **common, alpha=alpha, tolerance=metric.tolerance)
    return make_classic_judge(metric.judge, **common, alpha=alpha)


def build_judges(policy: CanaryPolicy) -> list[Judge]:
    analysis = policy.spec.analysis
    return [build_judge(m, analysis.alpha_for(m)) for m in analysis.metrics]
