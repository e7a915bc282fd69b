"""policies/README.md documents every field of the model."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from canaryd.policy.model import CanaryPolicy

from .support import POLICIES


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                _models(t, seen)
            stack.extend(typing.get_args(t))


def test_every_field_is_documented() -> None:
    readme = (POLICIES / "README.md").read_text(encoding="utf-8")
    models: set[type[BaseModel]] = set()
    _models(CanaryPolicy, models)
    missing = sorted(
        f"{m.__name__}.{f.alias or name}"
        for m in models
        for name, f in m.model_fields.items()
        if f"`{f.alias or name}`" not in readme
    )
    assert not missing, f"not in policies/README.md: {missing}"
