"""Every documented policy field is read by some code: a field nobody reads is a defect.

The policy model is walked recursively; for each field, canaryd's source outside the model
module must read it as an attribute (``.field_name``) somewhere. Reading it only in the model's
own validators does not count: those check it, they do not act on it. A field consumed in
another way (by name, in bulk) is listed in ``INDIRECT`` with the place that consumes it, and
that place is checked to exist.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from canaryd.policy.model import CanaryPolicy

ROOT = Path(__file__).resolve().parents[3] / "canaryd"
MODEL = ROOT / "policy" / "model.py"

INDIRECT: dict[str, tuple[str, str]] = {
    # field path: (file under canaryd/, text that shows it is consumed there)
    "CanaryPolicy.metadata": ("daemon/reconciler.py", "policy.name"),  # through .name
    "Steps.weights": ("controller/controller.py", "steps.resolved()"),
    "Steps.step_weight": ("controller/controller.py", "steps.resolved()"),
    "Steps.max_weight": ("controller/controller.py", "steps.resolved()"),
    "Metric.max_relative_increase": ("stats/factory.py", "metric.tolerance"),
}
IDENTITY = {
    "CanaryPolicy.api_version": "the document's API version: a Literal that refuses any other",
    "CanaryPolicy.kind": "the document's kind: a Literal that refuses any other",
}


def _models(tp: object) -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    for arg in typing.get_args(tp):
        out.extend(_models(arg))
    return out


def _fields() -> list[tuple[str, str]]:
    seen: set[type[BaseModel]] = set()
    out: list[tuple[str, str]] = []

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            out.append((f"{model.__name__}.{name}", name))
            for sub in _models(info.annotation):
                walk(sub)

    walk(CanaryPolicy)
    return out


def _source() -> str:
    return "\n".join(
        p.read_text()
        for p in sorted(ROOT.rglob("*.py"))
        if p != MODEL and "__pycache__" not in p.parts
    )


def test_every_policy_field_is_read_somewhere() -> None:
    source = _source()
    dead = []
    for path, name in _fields():
        if path in IDENTITY:
            continue
        if path in INDIRECT:
            file, text = INDIRECT[path]
            assert text in (ROOT / file).read_text(), (path, file, text)
            continue
        # an attribute read, not a method call of the same name (prometheus' .labels(...))
        if not re.search(rf"\.{re.escape(name)}\b(?!\s*\()", source):
            dead.append(path)
    assert dead == [], (
        "documented policy fields that no code outside policy/model.py reads: " + ", ".join(dead)
    )
