"""The daemon's policies: loaded from files, reloaded incrementally, and resolved to rollouts.

``PolicySet`` loads the policy files under some paths (a mounted ConfigMap's hidden ``..data``
entries are skipped) and reloads incrementally, so one big or broken file never slows the
others: a file whose (size, mtime_ns, inode) is unchanged is not read again; one whose stat
changed is read and re-parsed only when its content hash changed too (a ConfigMap update
re-links every file, most with the same bytes). A file over the loader's size cap
(``MAX_DOCUMENT_BYTES``, 1 MiB) is refused from its stat alone, never read. Invalid files are
reported with their located problems (an alias bomb included, refused by the loader's
limits, and a PromQL template the runtime would refuse: the same checks as ``canaryd
validate``); the valid policies keep being served.

``resolve`` turns the loaded policies into the rollouts the daemon may act on, and the ones it
must refuse, each with a reason a person can act on:

- two or more policies for one InferenceService: **none** of them acts (an ambiguous policy must
  never move traffic; the alphabetically first file winning let a dropped-in file take over a
  running rollout);
- a policy whose routes live in another namespace than its InferenceService, unless the daemon
  was told to allow that pair (``--allow-cross-namespace TARGET_NS=ROUTE_NS``, a
  ReferenceGrant-like allow list): otherwise a policy in team-a could drive team-b's traffic;
- a policy for a namespace the daemon does not watch;
- a policy that cannot read any Prometheus (no URL in it nor in the daemon's flags, or files
  that do not load): at start-up the daemon refuses to start, but a policy added on reload
  must not sit paused on "no data" for its whole noData timeout.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from canaryd.errors import InputError, Problem
from canaryd.identity import RolloutKey
from canaryd.policy.loader import (
    MAX_DOCUMENT_BYTES,
    YAML_SUFFIXES,
    LoadedPolicy,
    load_policies_text,
)
from canaryd.policy.model import CanaryPolicy
from canaryd.policy.sharing import ModelPool
from canaryd.validation import template_problems

log = logging.getLogger("canaryd.policies")


def _visible_policy_files(paths: Sequence[Path]) -> list[Path]:
    """YAML files under ``paths``, skipping hidden entries such as a mounted ConfigMap's
    ``..data`` / ``..2024_…`` directories (which would otherwise load every policy twice)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for root in paths:
        if root.is_dir():
            found = sorted(
                f
                for f in root.rglob("*")
                if f.suffix in YAML_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(root).parts)
                and f.is_file()
            )
        else:
            found = [root]
        for f in found:
            real = f.resolve()
            if real not in seen:
                seen.add(real)
                out.append(f)
    return out


Stat = tuple[int, int, int]
"""(size, mtime_ns, inode) of a policy file."""


@dataclass
class _FileResult:
    stat: Stat
    digest: str
    policies: list[LoadedPolicy]
    problems: list[str]


@dataclass
class PolicySet:
    """The policies under some paths, with change detection and per-file caching."""

    paths: Sequence[Path]
    policies: list[LoadedPolicy] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    loaded: bool = False
    parses: int = 0
    """How many times a file's text was parsed, over this set's life (logged with each load:
    an unchanged directory adds none)."""
    _files: dict[str, _FileResult] = field(default_factory=dict)
    _pool: ModelPool = field(default_factory=ModelPool)
    """Equal parts of the policies, held once (``canaryd.policy.sharing``)."""
    _signature: tuple[tuple[str, int, int, int], ...] = ()

    def signature(self) -> tuple[tuple[str, int, int, int], ...]:
        sig = []
        for f in _visible_policy_files(self.paths):
            try:
                st = f.stat()
            except OSError:
                continue
            sig.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
        return tuple(sig)

    def changed(self) -> bool:
        return self.signature() != self._signature

    def load(self) -> list[LoadedPolicy]:
        """(Re)load incrementally (see the module docstring): only a file whose stat and content
        hash both changed is parsed again."""
        sig = self.signature()
        self._signature = sig
        files: dict[str, _FileResult] = {}
        parsed = 0
        for path, size, mtime, inode in sig:
            stat = (size, mtime, inode)
            old = self._files.get(path)
            if old is not None and old.stat == stat:
                files[path] = old
                continue
            if size > MAX_DOCUMENT_BYTES:
                files[path] = _FileResult(stat, "", [], [str(_too_big(path, size))])
                continue
            try:
                raw = Path(path).read_bytes()[: MAX_DOCUMENT_BYTES + 1]
            except OSError as exc:
                files[path] = _FileResult(stat, "", [], [f"{path}: {exc.strerror or exc}"])
                continue
            digest = hashlib.sha256(raw).hexdigest()
            if old is not None and old.digest == digest:
                files[path] = _FileResult(stat, digest, old.policies, old.problems)
                continue
            parsed += 1
            files[path] = _parse(path, stat, digest, raw, self._pool)
        self._files = files
        self.parses += parsed
        problems = [p for r in files.values() for p in r.problems]
        if not sig:
            problems.append(f"no policy files under {', '.join(map(str, self.paths))}")
        policies = [lp for r in files.values() for lp in r.policies]
        for p in problems:
            log.error("invalid policy", extra={"fields": {"problem": p}})
        log.info(
            "policies loaded",
            extra={
                "fields": {
                    "policies": [lp.policy.name for lp in policies],
                    "files": len(sig),
                    "parsed": parsed,
                    "problems": len(problems),
                }
            },
        )
        self.policies, self.problems, self.loaded = policies, problems, True
        return policies


def _too_big(path: str, size: int) -> Problem:
    return Problem(
        path,
        None,
        None,
        "",
        f"the file is {size} bytes, more than the limit of {MAX_DOCUMENT_BYTES} bytes (1 MiB); "
        "it was not read",
    )


def _parse(path: str, stat: Stat, digest: str, raw: bytes, pool: ModelPool) -> _FileResult:
    if len(raw) > MAX_DOCUMENT_BYTES:  # grew between the stat and the read
        return _FileResult(stat, digest, [], [str(_too_big(path, len(raw)))])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _FileResult(stat, digest, [], [f"{path}: not UTF-8 text ({exc.reason})"])
    try:
        loaded = load_policies_text(text, path, checks=[template_problems])
        # The YAML node tree is for validate's line:column warnings; a daemon serving
        # thousands of policies keeps only the policies (a tree is tens of KB each), and the
        # parts that equal another policy's are held once (about 8 of a policy's 10 KB).
        return _FileResult(
            stat,
            digest,
            [replace(lp, policy=pool.share(lp.policy), node=None) for lp in loaded],
            [],
        )
    except InputError as exc:
        return _FileResult(stat, digest, [], [str(p) for p in exc.problems])


def key_of(policy: CanaryPolicy) -> RolloutKey:
    return RolloutKey(policy.spec.target.namespace, policy.spec.target.inference_service)


def route_namespaces(policy: CanaryPolicy) -> set[str]:
    """Namespaces of the objects the policy's router writes besides the InferenceService."""
    router = policy.spec.router
    out: set[str] = set()
    if router.istio is not None and router.istio.namespace:
        out.add(router.istio.namespace)
    if router.gateway_api is not None and router.gateway_api.namespace:
        out.add(router.gateway_api.namespace)
    return out


@dataclass(frozen=True)
class Refusal:
    """A target canaryd will not act on, and why (recorded as an Event on it)."""

    key: RolloutKey
    why: str
    kind: str
    """``conflict``, ``cross-namespace``, ``unwatched`` or ``source``."""


@dataclass(frozen=True)
class Resolution:
    active: dict[RolloutKey, LoadedPolicy]
    refused: dict[RolloutKey, Refusal]


def resolve(
    loaded: Iterable[LoadedPolicy],
    *,
    namespaces: frozenset[str] | None = None,
    cross_namespace: frozenset[tuple[str, str]] = frozenset(),
    source_problem: Callable[[CanaryPolicy], str | None] | None = None,
) -> Resolution:
    """The rollouts the policies ask for, and the targets refused (see the module docstring).

    ``source_problem``: why a policy cannot read any Prometheus, or None when it can.
    """
    by_key: dict[RolloutKey, list[LoadedPolicy]] = {}
    for lp in loaded:
        by_key.setdefault(key_of(lp.policy), []).append(lp)
    active: dict[RolloutKey, LoadedPolicy] = {}
    refused: dict[RolloutKey, Refusal] = {}
    for key, lps in sorted(by_key.items()):
        if namespaces is not None and key.namespace not in namespaces:
            names = ", ".join(lp.policy.name for lp in lps)
            refused[key] = Refusal(
                key, f"policy {names} targets namespace {key.namespace}, not watched", "unwatched"
            )
            continue
        if len(lps) > 1:
            where = "; ".join(f"{lp.policy.name!r} ({lp.file}:{lp.line})" for lp in lps)
            refused[key] = Refusal(
                key,
                f"{len(lps)} policies target {key}: {where}; none of them acts until only one "
                "is left",
                "conflict",
            )
            continue
        lp = lps[0]
        foreign = {ns for ns in route_namespaces(lp.policy) if ns != key.namespace}
        denied = sorted(ns for ns in foreign if (key.namespace, ns) not in cross_namespace)
        if denied:
            refused[key] = Refusal(
                key,
                f"policy {lp.policy.name!r} routes traffic in namespace {', '.join(denied)}, not "
                f"in its InferenceService's namespace {key.namespace}; allow it with "
                f"--allow-cross-namespace {key.namespace}={denied[0]}",
                "cross-namespace",
            )
            continue
        why = source_problem(lp.policy) if source_problem is not None else None
        if why is not None:
            refused[key] = Refusal(key, f"policy {lp.policy.name!r} ({lp.file}): {why}", "source")
            continue
        active[key] = lp
    return Resolution(active, refused)
