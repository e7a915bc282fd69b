"""The Grafana dashboard in deploy/ and the names of the metrics the daemon exports.

``exported_names()`` reads the names from the daemon's own registry at test time (the
``# TYPE`` lines of its exposition, with the sample suffixes of each type), never from a copied
list, so a renamed metric breaks the dashboard's tests.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def daemon_metrics() -> Any:
    """A fresh ``DaemonMetrics`` (it is moving from daemon/reconciler.py to daemon/metrics.py)."""
    for module in ("canaryd.daemon.metrics", "canaryd.daemon.reconciler"):
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        if hasattr(found, "DaemonMetrics"):
            return found.DaemonMetrics()
    raise AssertionError("DaemonMetrics is in neither canaryd.daemon.metrics nor .reconciler")


def exported_names(registry: Any) -> set[str]:
    """Every sample name the registry can export, from its exposition's ``# TYPE`` lines."""
    from prometheus_client import generate_latest

    names: set[str] = set()
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + s for s in _SUFFIXES.get(kind, ("",)))
    return names


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def panel_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every panel target."""
    return [
        (p.get("title", ""), t["expr"])
        for p in _panels(doc.get("panels", []))
        for t in p.get("targets", [])
        if "expr" in t
    ]


def variable_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """``(variable name, query)`` of every query variable (``label_values(...)`` etc.)."""
    out = []
    for v in doc.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        out.append((v["name"], q["query"] if isinstance(q, dict) else q))
    return out


_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values``) selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables outside strings
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        before = text[: m.start()]
        if re.search(r"\d$", before):  # the unit of a number such as 5m
            continue
        names.add(word)
    # Grafana's label_values(label) or label_values(metric{...}, label): the label is no metric.
    lv = re.match(r"\s*label_values\s*\((.*)\)\s*$", expr, re.S)
    if lv:
        inner = re.sub(r"\{[^}]*\}", "", lv.group(1))
        first, comma, _ = inner.partition(",")
        names = {first.strip()} if comma and first.strip() else set()
    return names
