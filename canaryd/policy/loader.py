"""Load YAML documents into pydantic models with errors that name the file, line and column.

YAML is parsed with PyYAML's *safe* loader, node by node, so every value keeps its position.
Pydantic's error locations are then walked back through the node tree to the exact place.

Hostile input is bounded before any work proportional to it:

- a file larger than ``MAX_DOCUMENT_BYTES`` (1 MiB) is refused without being read or parsed;
- aliases may not expand the document beyond ``MAX_EXPANDED_NODES`` nodes nor be used more than
  ``MAX_ALIASES`` times (a 650-byte "billion laughs" expands to 10^9 nodes). The check counts
  each distinct node once (the composed tree shares aliased nodes), so it is linear in the
  text, and it runs before the duplicate-key walk and before pydantic, which would both walk
  the expansion.

Validation reports every problem in one pass where it can: when a document fails, the fields
in error are removed (so their defaults apply; a required string gets ``PLACEHOLDER``) and the
document is validated again, up to ``MAX_VALIDATION_ROUNDS`` times, so that cross-field checks
of the parts that are valid run too. An object that still fails only because of a removal is
removed in turn (its default applies). Problems caused by a removal (a required field now
missing, "give exactly one of file or env" once ``env`` is gone) are not reported.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from canaryd.errors import InputError, PolicyError, Problem
from canaryd.policy.model import LOC_MARK, CanaryPolicy

M = TypeVar("M", bound=BaseModel)

POLICY_README = "policies/README.md"
"""Where a policy's fields are described (an unknown field's error points there)."""

YAML_SUFFIXES = (".yaml", ".yml")

DocumentCheck = Callable[[yaml.Node, str], list[Problem]]
"""A check of one policy document's YAML node (in ``file``) that the model cannot make itself,
run on every document, valid or not, so its problems come in the same pass."""

MAX_DOCUMENT_BYTES = 1 << 20
"""Largest policy or scenario file read (1 MiB); a real policy is a few KiB."""
MAX_EXPANDED_NODES = 100_000
"""Most YAML nodes a file may hold once its aliases are expanded."""
MAX_ALIASES = 1_000
"""Most alias uses (``*name``) in one file."""
MAX_VALIDATION_ROUNDS = 8
"""Most validation passes one document gets while collecting its problems (module docstring)."""


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy with where it came from.

    ``line`` is the document's first line. ``node`` is the document's YAML node tree (None for a
    policy built in code), so a warning can point at a field's own line and column; ``offset``
    is added to the node's (line, column) when the document is embedded in another file (a
    ConfigMap's data value).
    """

    policy: CanaryPolicy
    file: str
    line: int
    node: yaml.Node | None = field(default=None, compare=False, repr=False)
    offset: tuple[int, int] = (0, 0)

    def position(self, path: str) -> tuple[int, int | None]:
        """(line, column) of the field at ``path`` (``spec.analysis.metrics[0].judge``), or of
        its nearest ancestor that the document spells out; the document's line without a node."""
        if self.node is None:
            return self.line, None
        node, _ = _locate(self.node, parse_path(path))
        return node.start_mark.line + 1 + self.offset[0], node.start_mark.column + 1 + self.offset[
            1
        ]


def parse_path(path: str) -> list[int | str]:
    """``spec.steps.weights[1]`` -> ``["spec", "steps", "weights", 1]`` (the inverse of the
    paths problems print)."""
    out: list[int | str] = []
    for piece in path.split("."):
        name, *indices = piece.split("[")
        if name:
            out.append(name)
        for idx in indices:
            idx = idx.rstrip("]")
            out.append(int(idx) if idx.isdigit() else idx)
    return out


NON_SCALAR_KEY = "expected a plain key, got a list or mapping"


class _NodeLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _check_expansion(root: yaml.Node, file: str) -> Problem | None:
    """A problem when aliases expand ``root`` beyond the limits, naming the smallest node that
    does. Each distinct node is walked once (the composed tree shares aliased nodes), so this is
    linear in the text however far the aliases would expand."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    aliases = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        children = _children(node)
        if not leaving:
            if key in on_path:
                return node_problem(file, node, "", "a YAML alias refers to its own ancestor")
            if key in sizes:
                aliases += 1
                if aliases > MAX_ALIASES:
                    return node_problem(
                        file,
                        node,
                        "",
                        f"more than {MAX_ALIASES} uses of YAML aliases (limit; an alias bomb?)",
                    )
                continue
            on_path.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(children))
            continue
        on_path.discard(key)
        size = 1 + sum(sizes[id(c)] for c in children)
        sizes[key] = size
        if size > MAX_EXPANDED_NODES:
            return node_problem(
                file,
                node,
                "",
                f"YAML aliases expand this to more than {MAX_EXPANDED_NODES} nodes (limit; an "
                "alias bomb?): write the values out instead of nesting aliases",
            )
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_duplicates(
    node: yaml.Node,
    file: str,
    problems: list[Problem],
    path: str,
    seen_nodes: set[int] | None = None,
) -> None:
    """Duplicate and non-scalar keys; each distinct node is walked once (the composed tree
    shares aliased nodes, which need no second look)."""
    if seen_nodes is None:
        seen_nodes = {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(node_problem(file, key_node, path, NON_SCALAR_KEY))
                continue
            key = key_node.value
            if key in seen:
                problems.append(
                    node_problem(
                        file,
                        key_node,
                        _join(path, str(key)),
                        f"duplicate key {key!r} (first at line {seen[key]})",
                    )
                )
            else:
                seen[key] = key_node.start_mark.line + 1
            if id(value_node) not in seen_nodes:
                seen_nodes.add(id(value_node))
                _check_duplicates(value_node, file, problems, _join(path, str(key)), seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if id(item) not in seen_nodes:
                seen_nodes.add(id(item))
                _check_duplicates(item, file, problems, f"{path}[{i}]", seen_nodes)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def node_problem(file: str, node: yaml.Node | None, path: str, message: str) -> Problem:
    """A problem at ``node``'s line and column of ``file`` (unlocated without a node)."""
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


def problem_at(file: str, root: yaml.Node, path: str, message: str) -> Problem:
    """A problem at the field ``path`` (``pods``, ``stable.llm``) of the document ``root`` read
    from ``file``: at its line and column, or its nearest ancestor's when it is not spelled
    out (a problem found after loading, e.g. against the policy it is run with)."""
    node, _ = _locate(root, parse_path(path))
    return node_problem(file, node, path, message)


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


def _message(err: dict[str, Any], readme: str = POLICY_README) -> tuple[list[str], str]:
    """(extra path parts, message) for one pydantic error, in canaryd's wording; an unknown
    field's message points to ``readme``, where the document's fields are described."""
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
        return [], f"unknown field (check the spelling; see {readme})"
    if kind == "missing":
        return [], "required field is missing"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return [], f"{msg[0].lower()}{msg[1:]}, got {given!r}"
    msg = f"{msg[:1].lower()}{msg[1:]}"  # pydantic capitalises; canaryd's messages do not
    return [], f"{msg}, got {given!r}" if given is not None and not isinstance(given, dict) else msg


def validation_problems(
    exc: ValidationError,
    root: yaml.Node,
    file: str,
    prefix: list[int | str] | None = None,
    readme: str = POLICY_README,
) -> list[Problem]:
    """Turn a pydantic ValidationError into located problems (``readme``: see ``_message``)."""
    problems: list[Problem] = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"])
        extra, message = _message(dict(err), readme)
        for part in extra:
            loc.append(int(part) if part.isdigit() else part)
        full = list(prefix or []) + loc
        if err["type"] == "extra_forbidden":
            node: yaml.Node | None = _key_node(root, loc)
        else:
            node, found = _locate(root, loc)
            if not found and err["type"] == "missing":
                message = f"required field {loc[-1]!r} is missing"
        problems.append(node_problem(file, node, _format_path(full), message))
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


def _too_big(file: str, size: int) -> Problem:
    return Problem(
        file,
        None,
        None,
        "",
        f"the file is {size} bytes, more than the limit of {MAX_DOCUMENT_BYTES} bytes (1 MiB): "
        "split it into one file per policy",
    )


def compose_checked(text: str, file: str) -> tuple[list[yaml.Node], list[Problem]]:
    """Parse YAML into nodes (safe) and the problems that do not stop validation (duplicate
    keys). Raise InputError, located, for what does: a syntax error, a text over
    ``MAX_DOCUMENT_BYTES``, aliases beyond the expansion limits."""
    size = len(text.encode("utf-8", "surrogatepass")) if len(text) * 4 > MAX_DOCUMENT_BYTES else 0
    if size > MAX_DOCUMENT_BYTES:
        raise InputError([_too_big(file, size)])
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=_NodeLoader) if n is not None]
    except yaml.YAMLError as exc:
        raise InputError([_yaml_problem(file, exc)]) from None
    except RecursionError:
        raise InputError(
            [Problem(file, None, None, "", "invalid YAML: nested too deeply")]
        ) from None
    bombs = [p for p in (_check_expansion(n, file) for n in nodes) if p is not None]
    if bombs:
        raise InputError(bombs)
    problems: list[Problem] = []
    for node in nodes:
        _check_duplicates(node, file, problems, "")
    if any(p.message == NON_SCALAR_KEY for p in problems):
        raise InputError(problems)  # no Python mapping can hold such a key: nothing to validate
    return nodes, problems


def compose_documents(text: str, file: str) -> list[yaml.Node]:
    """Parse YAML into nodes (safe), raising InputError with the position of a syntax error, a
    duplicate key or a limit exceeded (see ``compose_checked``)."""
    nodes, problems = compose_checked(text, file)
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


def _removal_paths(loc: list[int | str]) -> list[list[int | str]]:
    """What to remove so that a problem at ``loc`` goes away, in order of preference: the
    field itself, else the list that holds the item in error (removing one item would renumber
    the others)."""
    out = list(loc)
    while out and isinstance(out[-1], int):
        out.pop()
    paths = [out]
    last_int = max((i for i, p in enumerate(out) if isinstance(p, int)), default=None)
    if last_int is not None:
        paths.append(out[:last_int])
    return paths


def _remove(data: Any, path: list[int | str]) -> Any:
    """Remove the key at ``path`` from nested dicts and lists; its value, or ``_ABSENT``."""
    if not path:
        return _ABSENT
    node = data
    for part in path[:-1]:
        inside = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if not inside:
            return _ABSENT
        node = node[part]
    if isinstance(node, dict) and path[-1] in node:
        return node.pop(path[-1])
    return _ABSENT


def _put(data: Any, path: list[int | str], value: Any) -> None:
    """Set the key at ``path`` (whose parents exist: it was just removed)."""
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


_ABSENT = object()
PLACEHOLDER = "x0"
"""Stands in for a required string removed for its error, so that the checks of the objects
above it still run (a valid DNS label and label name). Never for a ``name``: other fields
refer to names, and a stand-in would make those references look wrong."""


def _consequence(err: dict[str, Any], removed: list[list[int | str]]) -> bool:
    """Whether ``err`` may be caused by a removal: it is at or under a removed field, or it is
    a check of the object that held a removed field and names that field ("give exactly one
    of file or env" once ``env`` is gone)."""
    loc = _full_loc(err)
    own = _clean_loc(err["loc"])
    _, message = _message(err)
    for r in removed:
        if loc[: len(r)] == r:
            return True
        if len(r) == len(own) + 1 and r[: len(own)] == own:
            name = str(r[-1])
            if re.search(rf"\b{re.escape(name)}\b", message):
                return True
    return False


def load_model(model: type[M], node: yaml.Node, file: str, readme: str = POLICY_README) -> M:
    """Validate one YAML node as ``model``; raise InputError with located problems.

    Every problem the document has is reported at once where it can be: see the module
    docstring (fields in error are removed and the rest validated again). ``readme`` is where
    the model's fields are described: an unknown field's problem points there."""
    try:
        data = construct(node)
    except yaml.YAMLError as exc:
        raise InputError([_yaml_problem(file, exc)]) from None
    except RecursionError:
        raise InputError(
            [node_problem(file, node, "", "invalid YAML: nested too deeply")]
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            [node_problem(file, node, "", f"expected a mapping, got {type(data).__name__}")]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    removed: list[list[int | str]] = []
    strings: dict[tuple[int | str, ...], str | None] = {}  # removed strings (None: replaced)
    try:
        data = copy.deepcopy(data)
    except RecursionError:
        raise InputError(validation_problems(first, node, file, readme=readme)) from None
    exc_: ValidationError | None = first
    for _ in range(MAX_VALIDATION_ROUNDS):
        if exc_ is None:
            break
        new = False
        blocked: list[dict[str, Any]] = []
        located = zip(
            exc_.errors(), validation_problems(exc_, node, file, readme=readme), strict=True
        )
        for err, problem in located:
            loc = _full_loc(dict(err))
            if err["type"] == "missing" and strings.get(tuple(loc)) is not None:
                _put(data, loc, PLACEHOLDER)  # a required string: a stand-in, once
                strings[tuple(loc)] = None
                new = True
                continue
            if _consequence(dict(err), removed):
                blocked.append(dict(err))
                continue  # a consequence of an earlier removal
            if (problem.path, problem.message) in seen:
                continue
            seen.add((problem.path, problem.message))
            problems.append(problem)
            new = True
            for target in _removal_paths(loc):
                value = _remove(data, target)
                if value is not _ABSENT:
                    removed.append(target)
                    if isinstance(value, str) and target[-1] != "name":
                        strings[tuple(target)] = value
                    break
            else:
                if err["type"] != "missing":
                    removed.append(_removal_paths(loc)[0])
        if not new:
            # Only consequences left: remove the objects that still fail because of a
            # removal (``steps`` without its ``weights``), so their defaults apply.
            for failed in blocked:
                own = _clean_loc(failed["loc"])
                if own and _remove(data, own) is not _ABSENT:
                    removed.append(own)
                    new = True
        if not new:
            break
        try:
            model.model_validate(data)
            exc_ = None
        except ValidationError as again:
            exc_ = again
    raise InputError(problems)


def _full_loc(err: dict[str, Any]) -> list[int | str]:
    """The cleaned pydantic location of ``err`` with the sub-path a cross-field error names."""
    loc = _clean_loc(err["loc"])
    extra, _ = _message(err)
    loc.extend(int(part) if part.isdigit() else part for part in extra)
    return loc


def read_document(path: Path) -> str:
    """The UTF-8 text of a policy or scenario file; InputError naming the file when it is over
    ``MAX_DOCUMENT_BYTES`` (checked before reading), unreadable or not UTF-8."""
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise InputError([_too_big(str(path), size)])
        with path.open("rb") as f:
            raw = f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise InputError([Problem(str(path), None, None, "", exc.strerror or str(exc))]) from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise InputError([_too_big(str(path), len(raw))])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            [Problem(str(path), None, None, "", f"not UTF-8 text ({exc.reason})")]
        ) from None


def load_policies_text(
    text: str,
    file: str,
    *,
    configmaps: bool = False,
    offset: tuple[int, int] = (0, 0),
    checks: Sequence[DocumentCheck] = (),
) -> list[LoadedPolicy]:
    """Every CanaryPolicy document in ``text``; all problems at once in one PolicyError.

    With ``configmaps``, a ``v1 ConfigMap`` document stands for the policy files in its
    ``data`` (keys ending in .yaml or .yml), each loaded with its lines and columns mapped into
    ``file``. ``offset`` is added to every position (the text is embedded in ``file``).
    ``checks`` run on every policy document; their problems are errors like the model's.
    """
    try:
        nodes, problems = compose_checked(text, file)
    except InputError as exc:
        raise PolicyError(_shifted(exc.problems, offset)) from None
    out: list[LoadedPolicy] = []
    for node in nodes:
        if configmaps and _is_configmap(node):
            for key, value in _configmap_policies(node):
                inner = _embedded_offset(text, value)
                try:
                    out.extend(
                        load_policies_text(str(value.value), file, offset=inner, checks=checks)
                    )
                except PolicyError as exc:
                    problems.extend(
                        replace(p, path=f"data[{key}]: {p.path}" if p.path else f"data[{key}]")
                        for p in exc.problems
                    )
            continue
        checked = [p for check in checks for p in check(node, file)]
        try:
            policy = load_model(CanaryPolicy, node, file)
        except InputError as exc:
            problems.extend(exc.problems)
            problems.extend(checked)
            continue
        problems.extend(checked)
        if checked:
            continue
        line = node.start_mark.line + 1 + offset[0]
        out.append(LoadedPolicy(policy, file, line, node, offset))
    if not nodes:
        problems.append(Problem(file, None, None, "", "no policy documents in the file"))
    if problems:
        raise PolicyError(_shifted(problems, offset))
    return out


def _shifted(problems: list[Problem], offset: tuple[int, int]) -> list[Problem]:
    if offset == (0, 0):
        return problems
    return [
        replace(
            p,
            line=None if p.line is None else p.line + offset[0],
            column=None if p.column is None else p.column + offset[1],
        )
        for p in problems
    ]


def _is_configmap(node: yaml.Node) -> bool:
    if not isinstance(node, yaml.MappingNode):
        return False
    top = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    kind, api = top.get("kind"), top.get("apiVersion")
    return (
        isinstance(kind, yaml.ScalarNode)
        and kind.value == "ConfigMap"
        and isinstance(api, yaml.ScalarNode)
        and api.value == "v1"
    )


def _configmap_policies(node: yaml.Node) -> Iterator[tuple[str, yaml.ScalarNode]]:
    if not isinstance(node, yaml.MappingNode):
        return
    for key, value in node.value:
        if key.value != "data" or not isinstance(value, yaml.MappingNode):
            continue
        for k, v in value.value:
            if (
                isinstance(k, yaml.ScalarNode)
                and isinstance(v, yaml.ScalarNode)
                and str(k.value).endswith(YAML_SUFFIXES)
            ):
                yield str(k.value), v


def _embedded_offset(text: str, value: yaml.ScalarNode) -> tuple[int, int]:
    """(lines, columns) to add to a position inside ``value``'s text to get one in ``text``.

    Exact for a literal block scalar (``|``), the way policy files are put in a ConfigMap; for
    another style the first line's position is exact and later lines approximate."""
    if value.style == "|":
        lines = text.splitlines()
        first = value.start_mark.line + 1
        for line in lines[first : value.end_mark.line + 1]:
            if line.strip():
                return first, len(line) - len(line.lstrip(" "))
        return first, 0
    return value.start_mark.line, value.start_mark.column + (1 if value.style else 0)


def load_policy_file(
    path: str | Path, *, configmaps: bool = False, checks: Sequence[DocumentCheck] = ()
) -> list[LoadedPolicy]:
    """Every policy in the file at ``path`` (see ``load_policies_text``). A file over
    ``MAX_DOCUMENT_BYTES`` is refused before it is read."""
    p = Path(path)
    return load_policies_text(read_document(p), str(path), configmaps=configmaps, checks=checks)


KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def policy_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Expand directories into their YAML files (sorted); files are yielded as given.

    A kustomization file stands for the sources of its ``configMapGenerator`` files (how
    policies become the daemon's ConfigMap), resolved from its directory; in a directory the
    kustomization file is expanded the same way rather than read as a policy.
    """
    seen: set[Path] = set()

    def once(files: Iterable[Path]) -> Iterator[Path]:
        for f in files:  # a policy file listed by a kustomization beside it is read once
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                yield f

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.name in KUSTOMIZATION_NAMES and f.is_file():
                    yield from once(kustomization_sources(f))
                elif f.suffix in YAML_SUFFIXES and f.is_file():
                    yield from once([f])
        elif p.name in KUSTOMIZATION_NAMES and p.is_file():
            yield from once(kustomization_sources(p))
        else:
            yield from once([p])


def kustomization_sources(path: Path, _seen: set[Path] | None = None) -> list[Path]:
    """The files of ``path``'s ``configMapGenerator`` entries (``key=file`` or ``file``), and
    those of the kustomizations its ``resources`` directories hold (as ``kubectl apply -k``
    would build them).

    A kustomization that does not parse is returned as itself, so that loading it reports the
    located YAML error.
    """
    seen = _seen if _seen is not None else set()
    if path.resolve() in seen:
        return []
    seen.add(path.resolve())
    try:
        doc = yaml.safe_load(read_document(path))
    except (InputError, yaml.YAMLError):
        return [path]
    if not isinstance(doc, dict):
        return [path]
    out: list[Path] = []
    resources = doc.get("resources")
    for res in resources if isinstance(resources, list) else []:
        sub = path.parent / str(res)
        if sub.is_dir():
            for name in KUSTOMIZATION_NAMES:
                if (sub / name).is_file():
                    out.extend(kustomization_sources(sub / name, seen))
                    break
    generators = doc.get("configMapGenerator")
    for gen in generators if isinstance(generators, list) else []:
        files = gen.get("files") if isinstance(gen, dict) else None
        for entry in files if isinstance(files, list) else []:
            if isinstance(entry, str):
                out.append(path.parent / entry.split("=", 1)[-1].strip())
    return out


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
