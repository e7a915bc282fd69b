"""Load YAML documents into pydantic models with errors that name the file, line and column.

YAML is parsed with PyYAML's *safe* loader, node by node, so every value keeps its position.
Pydantic's error locations are then walked back through the node tree to the exact place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from canaryd.errors import InputError, PolicyError, Problem
from canaryd.policy.model import LOC_MARK, CanaryPolicy

M = TypeVar("M", bound=BaseModel)

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedPolicy:
    policy: CanaryPolicy
    file: str
    line: int


class _NodeLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _check_duplicates(node: yaml.Node, file: str, problems: list[Problem], path: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(
                    _problem(file, key_node, path, "expected a plain key, got a list or mapping")
                )
                continue
            key = key_node.value
            if key in seen:
                problems.append(
                    _problem(
                        file,
                        key_node,
                        _join(path, str(key)),
                        f"duplicate key {key!r} (first at line {seen[key]})",
                    )
                )
            else:
                seen[key] = key_node.start_mark.line + 1
            _check_duplicates(value_node, file, problems, _join(path, str(key)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, file, problems, f"{path}[{i}]")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _problem(file: str, node: yaml.Node | None, path: str, message: str) -> Problem:
    if node is None:
        return Problem(file, None, None, path, message)
    return Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, path, message)


def _locate(root: yaml.Node, loc: Iterable[int | str]) -> tuple[yaml.Node, bool]:
    """The node at ``loc``, or the deepest existing ancestor (and False) when it is absent."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    node = value_node
                    break
            else:
                return node, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return node, False
        else:
            return node, False
    return node, True


def _key_node(root: yaml.Node, loc: list[int | str]) -> yaml.Node | None:
    """For an unknown-field error, the key itself is the place to point at."""
    if not loc:
        return None
    parent, found = _locate(root, loc[:-1])
    if found and isinstance(parent, yaml.MappingNode):
        for key_node, _ in parent.value:
            if key_node.value == loc[-1]:
                return key_node
    return None


def _format_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = _join(out, part)
    return out


_PYDANTIC_STEP = re.compile(
    r"^(function-(before|after|wrap|plain)|tagged-union|union|chain|lax-or-strict|"
    r"json-or-python|nullable|default|model|list|dict)\[.*\]$"
)


def _clean_loc(loc: tuple[int | str, ...]) -> list[int | str]:
    # pydantic inserts validator names (e.g. "function-before[_step()]") and union tags into
    # locations; user keys (even odd ones like "0[") are kept.
    return [p for p in loc if isinstance(p, int) or not _PYDANTIC_STEP.match(p)]


def _message(err: dict[str, Any]) -> tuple[list[str], str]:
    """(extra path parts, message) for one pydantic error, in canaryd's wording."""
    kind = err["type"]
    msg: str = err["msg"]
    given = err.get("input")
    if kind == "value_error" and LOC_MARK in msg:
        _, sub, text = msg.split(LOC_MARK, 2)
        parts: list[str] = []
        for piece in sub.replace("]", "").split("."):
            if "[" in piece:
                name, idx = piece.split("[", 1)
                parts.append(name)
                parts.append(idx)
            elif piece:
                parts.append(piece)
        return parts, text
    if kind == "value_error":
        return [], msg.removeprefix("Value error, ")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
        return [], f"expected one of {', '.join(options)}, got {given!r}"
    if kind == "extra_forbidden":
        return [], "unknown field (check the spelling; see policies/README.md)"
    if kind == "missing":
        return [], "required field is missing"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return [], f"{msg[0].lower()}{msg[1:]}, got {given!r}"
    msg = f"{msg[:1].lower()}{msg[1:]}"  # pydantic capitalises; canaryd's messages do not
    return [], f"{msg}, got {given!r}" if given is not None and not isinstance(given, dict) else msg


def validation_problems(
    exc: ValidationError, root: yaml.Node, file: str, prefix: list[int | str] | None = None
) -> list[Problem]:
    """Turn a pydantic ValidationError into located problems."""
    problems: list[Problem] = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"])
        extra, message = _message(dict(err))
        for part in extra:
            loc.append(int(part) if part.isdigit() else part)
        full = list(prefix or []) + loc
        if err["type"] == "extra_forbidden":
            node: yaml.Node | None = _key_node(root, loc)
        else:
            node, found = _locate(root, loc)
            if not found and err["type"] == "missing":
                message = f"required field {loc[-1]!r} is missing"
        problems.append(_problem(file, node, _format_path(full), message))
    return problems


def _yaml_problem(file: str, exc: yaml.YAMLError) -> Problem:
    """A PyYAML error (syntax, or a tag the safe constructor refuses) as a located problem."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        what = exc.problem or exc.context or "invalid YAML"
        return Problem(file, line, col, "", f"invalid YAML: {what}")
    return Problem(file, None, None, "", f"invalid YAML: {exc}")


def compose_documents(text: str, file: str) -> list[yaml.Node]:
    """Parse YAML into nodes (safe), raising InputError with the position of a syntax error."""
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=_NodeLoader) if n is not None]
    except yaml.YAMLError as exc:
        raise InputError([_yaml_problem(file, exc)]) from None
    except RecursionError:
        raise InputError(
            [Problem(file, None, None, "", "invalid YAML: nested too deeply")]
        ) from None
    problems: list[Problem] = []
    for node in nodes:
        _check_duplicates(node, file, problems, "")
    if problems:
        raise InputError(problems)
    return nodes


def construct(node: yaml.Node) -> Any:
    """Build plain Python data from a node with the safe constructor."""
    loader = _NodeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_model(model: type[M], node: yaml.Node, file: str) -> M:
    """Validate one YAML node as ``model``; raise InputError with located problems."""
    try:
        data = construct(node)
    except yaml.YAMLError as exc:
        raise InputError([_yaml_problem(file, exc)]) from None
    except RecursionError:
        raise InputError([_problem(file, node, "", "invalid YAML: nested too deeply")]) from None
    if not isinstance(data, dict):
        raise InputError(
            [_problem(file, node, "", f"expected a mapping, got {type(data).__name__}")]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(validation_problems(exc, node, file)) from None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            [Problem(str(path), None, None, "", f"not UTF-8 text ({exc.reason})")]
        ) from None
    except OSError as exc:
        raise InputError([Problem(str(path), None, None, "", exc.strerror or str(exc))]) from None


def load_policies_text(text: str, file: str) -> list[LoadedPolicy]:
    """Every CanaryPolicy document in ``text``; all problems at once in one PolicyError."""
    try:
        nodes = compose_documents(text, file)
    except InputError as exc:
        raise PolicyError(exc.problems) from None
    problems: list[Problem] = []
    out: list[LoadedPolicy] = []
    for node in nodes:
        try:
            policy = load_model(CanaryPolicy, node, file)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        out.append(LoadedPolicy(policy, file, node.start_mark.line + 1))
    if not nodes:
        problems.append(Problem(file, None, None, "", "no policy documents in the file"))
    if problems:
        raise PolicyError(problems)
    return out


def load_policy_file(path: str | Path) -> list[LoadedPolicy]:
    p = Path(path)
    return load_policies_text(_read(p), str(path))


def policy_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Expand directories into their YAML files (sorted); files are yielded as given."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.suffix in YAML_SUFFIXES and f.is_file())
        else:
            yield p


def load_policy(path: str | Path, name: str | None = None) -> CanaryPolicy:
    """Exactly one policy from a file (by ``name`` when the file holds several)."""
    loaded = load_policy_file(path)
    if name is not None:
        for lp in loaded:
            if lp.policy.name == name:
                return lp.policy
        names = ", ".join(lp.policy.name for lp in loaded)
        raise PolicyError(
            [Problem(str(path), None, None, "", f"no policy named {name!r} ({names})")]
        )
    if len(loaded) != 1:
        names = ", ".join(lp.policy.name for lp in loaded)
        raise PolicyError(
            [
                Problem(
                    str(path),
                    None,
                    None,
                    "",
                    f"file holds {len(loaded)} policies ({names}); name one",
                )
            ]
        )
    return loaded[0].policy
