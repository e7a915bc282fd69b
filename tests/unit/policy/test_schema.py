"""policies/schema.json is current, and the shipped policies fit it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from canaryd.policy.model import policy_json_schema

from .support import POLICIES

SCHEMA_FILE = POLICIES / "schema.json"


def _documents() -> list[Any]:
    out = []
    for f in sorted(POLICIES.rglob("*.y*ml")):
        for i, doc in enumerate(yaml.safe_load_all(f.read_text(encoding="utf-8"))):
            out.append(pytest.param(f.name, doc, id=f"{f.name}[{i}]"))
    return out


def test_schema_file_is_current() -> None:
    expected = json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == expected, (
        "policies/schema.json is stale: run scripts/gen-schema"
    )


def test_schema_shape() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    assert {"PolicySpec", "Steps", "Step", "Analysis", "Metric", "Source", "Window"} <= set(
        schema["$defs"]
    )
    # Durations are strings in YAML; the schema must say so.
    assert schema["$defs"]["Analysis"]["properties"]["interval"]["type"] == "string"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives a node stands for, with $ref followed."""
    if "$ref" in node:
        return _resolve(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[-1]])
    if "anyOf" in node:
        return [alt for sub in node["anyOf"] for alt in _resolve(schema, sub)]
    return [node]


def _keys_declared(schema: dict[str, Any], node: dict[str, Any], value: Any, path: str) -> None:
    """Every mapping key in ``value`` is a property the schema declares at that place."""
    alts = _resolve(schema, node)
    if isinstance(value, dict):
        objects = [a for a in alts if a.get("type") == "object"]
        assert objects, f"{path}: the schema has no object here"
        for key, sub in value.items():
            where = f"{path}.{key}"
            for obj in objects:
                if key in obj.get("properties", {}):
                    _keys_declared(schema, obj["properties"][key], sub, where)
                    break
                extra = obj.get("additionalProperties")
                if isinstance(extra, dict):
                    _keys_declared(schema, extra, sub, where)
                    break
            else:
                pytest.fail(f"{where}: not declared in the schema")
    elif isinstance(value, list):
        arrays = [a for a in alts if a.get("type") == "array"]
        assert arrays, f"{path}: the schema has no array here"
        for i, item in enumerate(value):
            _keys_declared(schema, arrays[0].get("items", {}), item, f"{path}[{i}]")


@pytest.mark.parametrize(("name", "doc"), _documents())
def test_policies_use_only_declared_fields(name: str, doc: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    _keys_declared(schema, schema, doc, name)


def _plain_weights_refused(schema: dict[str, Any]) -> bool:
    # model.py bug: Steps.weights accepts a bare integer per step (BeforeValidator _step), but
    # the generated schema says each item must be a Step object, so "weights: [10, 25]" fails
    # JSON Schema validation although canaryd accepts it.
    items = schema["$defs"]["Steps"]["properties"]["weights"]["anyOf"][0]["items"]
    return not any(a.get("type") == "integer" for a in _resolve(schema, items))


_SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def test_schema_accepts_plain_integer_weights() -> None:
    assert not _plain_weights_refused(_SCHEMA)


@pytest.mark.parametrize(("name", "doc"), _documents())
def test_policies_validate_against_schema(name: str, doc: dict[str, Any]) -> None:
    import jsonschema  # a test dependency (pyproject [test])

    jsonschema.Draft202012Validator(_SCHEMA).validate(doc)
