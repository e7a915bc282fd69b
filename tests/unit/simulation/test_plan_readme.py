"""The README's ``canaryd plan`` samples stay true: the same commands print the same lines.

Seeded runs make the output reproducible to the character, except the elapsed seconds on the
last line. The edge policy's sample takes about 40 s of CPU (its 3-day horizon) and is marked
slow; the other runs in seconds, and the shape of both is checked without running them.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryd.cli import main

ROOT = Path(__file__).resolve().parents[3]
SECONDS = re.compile(r", \d+(\.\d+)?s\)$")


def samples() -> list[tuple[list[str], list[str]]]:
    """``(argv, output lines)`` of every ``$ canaryd plan`` in the README's console blocks."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out: list[tuple[list[str], list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for cmd in re.split(r"^\$ ", block, flags=re.M)[1:]:
            first, *rest = cmd.rstrip("\n").split("\n")
            argv = shlex.split(first)
            if argv[:2] == ["canaryd", "plan"]:
                out.append((argv[1:], rest))
    return out


def test_the_readme_shows_plan_for_two_shipped_policies() -> None:
    found = samples()
    assert len({argv[1] for argv, _ in found}) >= 2
    heads = ["plan for policy", "steps", "detection horizon", "healthy canary", "errors"]
    for argv, lines in found:
        assert (ROOT / argv[1]).is_file() and argv[1].startswith("policies/")
        assert [line.split(":")[0].split(" ")[0] for line in lines[:5]] == [
            h.split(" ")[0] for h in heads
        ]
        assert SECONDS.search(lines[-1])


def _params() -> list[object]:
    # The edge policy's 3-day horizon costs about 40 s of CPU: a slow check; the other is fast.
    return [
        pytest.param(argv, lines, id=argv[1], marks=[pytest.mark.slow] if "edge" in argv[1] else [])
        for argv, lines in samples()
    ]


@pytest.mark.parametrize(("argv", "lines"), _params())
def test_the_readme_plan_samples_are_reproduced(argv: list[str], lines: list[str]) -> None:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        res = CliRunner().invoke(main, argv)
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.output
    got = res.output.rstrip("\n").split("\n")
    assert [SECONDS.sub("", g) for g in got] == [SECONDS.sub("", x) for x in lines]
