"""The ML-aware metric kinds: defaults, and located errors for every misuse."""

from __future__ import annotations

import pytest

from canaryd.errors import PolicyError
from canaryd.policy.loader import load_policies_text
from canaryd.policy.model import VLLM_FINISH_REASONS, CanaryPolicy

HEAD = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: m}
spec:
  target: {namespace: models, inferenceService: m}
  analysis:
    source: {preset: PRESET}
    metrics:
"""

CLASS_Q = (
    "'sum by ({version_label}, cls) (increase(p_total{namespace=\"{namespace}\"}[{interval}]))'"
)


def _load(metrics: str, preset: str = "vllm") -> CanaryPolicy:
    (lp,) = load_policies_text(HEAD.replace("PRESET", preset) + metrics, "p.yaml")
    return lp.policy


def _errors(metrics: str, preset: str = "vllm") -> list[str]:
    with pytest.raises(PolicyError) as exc:
        _load(metrics, preset)
    return [str(p) for p in exc.value.problems]


def test_llm_kinds_have_their_documented_defaults() -> None:
    p = _load(
        "      - {name: ttft, kind: ttft}\n"
        "      - {name: itl, kind: inter-token}\n"
        "      - {name: len, kind: output-length}\n"
        "      - {name: fin, kind: finish-reason}\n"
        "      - {name: e2e, kind: latency, critical: false}\n"
    )
    ms = {m.name: m for m in p.spec.analysis.metrics}
    assert [ms[n].tolerance for n in ("ttft", "itl", "len", "fin", "e2e")] == [
        0.1,
        0.1,
        0.2,
        0.25,
        0.1,
    ]
    assert ms["ttft"].quantiles == [0.5, 0.9] and ms["len"].quantiles == [0.5, 0.9]
    assert ms["e2e"].quantiles == [0.5, 0.99]
    assert ms["fin"].fixed_categories == VLLM_FINISH_REASONS
    assert all(m.judge == "sequential" for m in ms.values())


def test_categorical_and_quality_defaults() -> None:
    p = _load(
        f"      - {{name: cls, kind: categorical, categoryLabel: cls, query: {CLASS_Q}}}\n"
        "      - name: acc\n"
        "        kind: quality\n"
        "        correctQuery: 'sum by ({version_label}) (c{namespace=\"{namespace}\"})'\n"
        "        labelledQuery: 'sum by ({version_label}) (l{namespace=\"{namespace}\"})'\n",
        preset="kserve",
    )
    cls, acc = p.spec.analysis.metrics
    assert (cls.tolerance, acc.tolerance) == (0.2, 0.1)
    assert cls.fixed_categories is None


@pytest.mark.parametrize(
    ("metrics", "preset", "expected"),
    [
        (
            "      - {name: ttft, kind: ttft}\n",
            "knative",
            "p.yaml:9:28: spec.analysis.metrics[0].kind: kind 'ttft' reads vLLM's own series: "
            "set analysis.source.preset: vllm (the preset is 'knative')",
        ),
        (
            "      - {name: fin, kind: finish-reason, judge: mann-whitney}\n",
            "vllm",
            "p.yaml:9:49: spec.analysis.metrics[0].judge: kind 'finish-reason' is judged by the "
            "sequential judge only, not 'mann-whitney'",
        ),
        (
            "      - {name: cls, kind: categorical, categoryLabel: cls}\n",
            "vllm",
            "spec.analysis.metrics[0].query: a categorical metric needs a PromQL query template",
        ),
        (
            f"      - {{name: cls, kind: categorical, query: {CLASS_Q}}}\n",
            "vllm",
            "spec.analysis.metrics[0].categoryLabel: a categorical metric needs the label",
        ),
        (
            f"      - {{name: cls, kind: categorical, categoryLabel: 'a-b', query: {CLASS_Q}}}\n",
            "vllm",
            "expected a Prometheus label name, got 'a-b'",
        ),
        (
            "      - {name: e, kind: errors, categories: [a]}\n",
            "vllm",
            "categories are only for categorical and finish-reason metrics, not 'errors'",
        ),
        (
            "      - {name: fin, kind: finish-reason, categories: [stop, stop]}\n",
            "vllm",
            "spec.analysis.metrics[0].categories: categories repeat",
        ),
        (
            "      - {name: fin, kind: finish-reason, categories: ['(other)']}\n",
            "vllm",
            "'(other)' is reserved for unlisted categories",
        ),
        (
            "      - {name: acc, kind: quality, correctQuery: 'x'}\n",
            "vllm",
            "spec.analysis.metrics[0].labelledQuery: a quality metric needs correctQuery and "
            "labelledQuery",
        ),
        (
            "      - {name: e, kind: errors, labelledQuery: 'x'}\n",
            "vllm",
            "spec.analysis.metrics[0].labelledQuery: correctQuery and labelledQuery are only for "
            "quality metrics, not 'errors'",
        ),
        (
            "      - {name: fin, kind: finish-reason, quantiles: [0.5]}\n",
            "vllm",
            "spec.analysis.metrics[0].quantiles: only histogram metrics (latency, ttft",
        ),
        (
            "      - {name: fin, kind: finish-reason, omnibus: true}\n",
            "vllm",
            "spec.analysis.metrics[0].omnibus: only histogram metrics",
        ),
        (
            "      - {name: e, kind: errors, query: 'x'}\n",
            "vllm",
            "query is only for custom and categorical metrics, not 'errors'",
        ),
    ],
)
def test_misuse_is_a_located_error(metrics: str, preset: str, expected: str) -> None:
    problems = _errors(metrics, preset)
    assert any(expected in p for p in problems), problems


def test_no_minimum_detectable_effect_for_category_shares() -> None:
    text = (
        HEAD.replace("PRESET", "vllm")
        + "      - {name: fin, kind: finish-reason}\n"
        + "  promotion:\n    minDetectableEffect: {fin: 2.0}\n"
    )
    with pytest.raises(PolicyError) as exc:
        load_policies_text(text, "p.yaml")
    (problem,) = exc.value.problems
    assert "spec.promotion.minDetectableEffect.fin" in str(problem)
    assert "one ratio cannot say" in str(problem)


def test_quantiles_given_for_an_llm_kind_are_kept() -> None:
    p = _load("      - {name: ttft, kind: ttft, quantiles: [0.5, 0.99]}\n")
    assert p.spec.analysis.metrics[0].quantiles == [0.5, 0.99]
