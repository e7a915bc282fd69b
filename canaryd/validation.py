"""Checks of a policy document that need the runtime's own code (``canaryd validate`` runs them).

The policy model cannot import the metrics layer (that layer imports the model), so what only
the runtime can judge is checked here, with the very functions the runtime calls, and passed
to the loader as a ``DocumentCheck``: a policy that passes ``validate`` is never refused by the
daemon for the same reason, and these problems come in the same pass as the model's own.
"""

from __future__ import annotations

import yaml

from canaryd.errors import MetricsError, Problem
from canaryd.metrics.presets import check_label_name, render_template
from canaryd.policy.loader import node_problem

_METRIC_TEMPLATES = ("query", "correctQuery", "labelledQuery")
_SOURCE_TEMPLATES = ("requests", "errors", "latencyBuckets")
_CHECK_REVISIONS = ("stable-00001", "canary-00002")


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def template_problems(node: yaml.Node, file: str) -> list[Problem]:
    """Errors for every PromQL template in the document that ``render_template`` refuses, as
    the runtime would at the first fetch (``revision={revisions}``, an unquoted placeholder),
    and for a ``versionLabel`` that is no Prometheus label name; each at its own line:column.
    Values that are not strings are left to the model's own errors."""
    analysis = _child(_child(node, "spec"), "analysis")
    source = _child(analysis, "source")
    out: list[Problem] = []
    label = _child(source, "versionLabel")
    if isinstance(label, yaml.ScalarNode) and isinstance(label.value, str):
        try:
            check_label_name(label.value)
        except MetricsError as exc:
            out.append(node_problem(file, label, "spec.analysis.source.versionLabel", str(exc)))
    templates: list[tuple[str, yaml.Node]] = []
    metrics = _child(analysis, "metrics")
    if isinstance(metrics, yaml.SequenceNode):
        for i, metric in enumerate(metrics.value):
            for key in _METRIC_TEMPLATES:
                found = _child(metric, key)
                if found is not None:
                    templates.append((f"spec.analysis.metrics[{i}].{key}", found))
    queries = _child(source, "queries")
    for key in _SOURCE_TEMPLATES:
        found = _child(queries, key)
        if found is not None:
            templates.append((f"spec.analysis.source.queries.{key}", found))
    for path, tnode in templates:
        if not isinstance(tnode, yaml.ScalarNode) or tnode.tag != "tag:yaml.org,2002:str":
            continue
        try:
            render_template(
                tnode.value,
                revisions=_CHECK_REVISIONS,
                namespace="models",
                window_s=60.0,
                version_label="revision",
            )
        except MetricsError as exc:
            out.append(node_problem(file, tnode, path, str(exc)))
    return out
