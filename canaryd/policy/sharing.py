"""``ModelPool``: equal parts of many policies held once (a daemon serving thousands of them).

A daemon serving one policy per InferenceService holds thousands of policies that differ in
their name and target and agree in most else (router, steps, analysis, promotion,
notifications, defaults). Parsed separately, each is a tree of about 16 pydantic models,
10 KB. ``ModelPool.share`` walks a freshly parsed policy from the top and replaces every
sub-model equal to one the pool already holds by that one, so the shared parts are held once.

Why this is safe: the models are frozen (``_Model``'s ``frozen=True``) and nothing in canaryd
mutates one; a sub-model is replaced only by an instance of the same class that compares equal
(pydantic equality: the same field values) and whose JSON dumps, with and without unset fields,
hash the same, so every read, dump, fingerprint and comparison sees the same values. The pool holds its
models weakly: a model no policy uses any more is dropped with the last policy that used it.
"""

from __future__ import annotations

import weakref
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


class ModelPool:
    """Canonical instances of frozen pydantic models, by class and content."""

    def __init__(self) -> None:
        self._pool: weakref.WeakValueDictionary[tuple[type, int, int], BaseModel] = (
            weakref.WeakValueDictionary()
        )

    def __len__(self) -> int:
        return len(self._pool)

    def share(self, model: M) -> M:
        """``model`` with each sub-model (at any depth, in fields, lists and tuples) replaced by
        an equal one already in the pool; the ones not in it yet are added. The top model is
        returned as it is (a policy's own identity, its name, is never shared)."""
        self._share_fields(model)
        return model

    def _canonical(self, model: BaseModel) -> BaseModel:
        """The pool's instance equal to ``model`` (``model`` itself when it is new)."""
        try:
            # Hashes, not the JSON itself: the pool must not hold a policy's text again. Two
            # models with equal hashes are shared only when they also compare equal.
            key = (
                type(model),
                hash(model.model_dump_json()),
                hash(model.model_dump_json(exclude_unset=True)),
            )
        except (ValueError, TypeError):  # a field JSON cannot hold: keep this one unshared
            self._share_fields(model)
            return model
        found = self._pool.get(key)
        if found is not None and found == model:
            return found
        self._share_fields(model)  # a new model: share what is below it first
        self._pool[key] = model
        return model

    def _share_fields(self, model: BaseModel) -> None:
        fields = model.__dict__
        for name, value in list(fields.items()):
            shared = self._value(value)
            if shared is not value:
                # The model is frozen; its field is replaced by an equal value (see the module
                # docstring), which is what pydantic's own copy would hold.
                fields[name] = shared

    def _value(self, value: Any) -> Any:
        if isinstance(value, BaseModel) and value.model_config.get("frozen"):
            return self._canonical(value)
        if isinstance(value, list):
            for i, item in enumerate(value):
                value[i] = self._value(item)  # the list belongs to this fresh, unshared model
            return value
        if isinstance(value, tuple) and any(isinstance(v, BaseModel) for v in value):
            return tuple(self._value(v) for v in value)
        return value
