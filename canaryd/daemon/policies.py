"""The daemon's policies: loaded from files, reloaded incrementally, and resolved to rollouts.

``PolicySet`` loads the policy files under some paths (a mounted ConfigMap's hidden ``..data``
entries are skipped) and reloads only files whose size or mtime changed, so one big or broken
file never slows the others. Invalid files are reported with their located problems; the valid
policies keep being served.

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

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from canaryd.errors import InputError
from canaryd.identity import RolloutKey
from canaryd.policy.loader import YAML_SUFFIXES, LoadedPolicy, load_policy_file
from canaryd.policy.model import CanaryPolicy

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


@dataclass
class _FileResult:
    signature: tuple[int, int]
    policies: list[LoadedPolicy]
    problems: list[str]


@dataclass
class PolicySet:
    """The policies under some paths, with change detection and per-file caching."""

    paths: Sequence[Path]
    policies: list[LoadedPolicy] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    loaded: bool = False
    _files: dict[str, _FileResult] = field(default_factory=dict)
    _signature: tuple[tuple[str, int, int], ...] = ()

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        sig = []
        for f in _visible_policy_files(self.paths):
            try:
                st = f.stat()
            except OSError:
                continue
            sig.append((str(f), st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def changed(self) -> bool:
        return self.signature() != self._signature

    def load(self) -> list[LoadedPolicy]:
        """(Re)load: files whose size and mtime are unchanged are not parsed again."""
        sig = self.signature()
        self._signature = sig
        files: dict[str, _FileResult] = {}
        for path, size, mtime in sig:
            old = self._files.get(path)
            if old is not None and old.signature == (size, mtime):
                files[path] = old
                continue
            try:
                got = load_policy_file(Path(path))
                files[path] = _FileResult((size, mtime), got, [])
            except InputError as exc:
                files[path] = _FileResult((size, mtime), [], [str(p) for p in exc.problems])
            except OSError as exc:
                files[path] = _FileResult((size, mtime), [], [f"{path}: {exc.strerror or exc}"])
        self._files = files
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
                    "problems": len(problems),
                }
            },
        )
        self.policies, self.problems, self.loaded = policies, problems, True
        return policies


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
