"""The daemon's policy directory (``PolicySet``): incremental reload, the size cap, alias bombs.

Counted, never timed: ``PolicySet.parses`` counts the files whose text was parsed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from canaryd.daemon.policies import PolicySet
from canaryd.policy import loader
from canaryd.policy.loader import MAX_DOCUMENT_BYTES

from ..policy.support import BOMB


def policy(name: str, weights: str = "[10, 50]") -> str:
    return f"""\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: {name}}}
spec:
  target: {{namespace: models, inferenceService: {name}}}
  steps: {{weights: {weights}}}
  analysis:
    source: {{preset: knative}}
    metrics:
      - {{name: errors, kind: errors}}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text(policy(name))
    return tmp_path


def names(ps: PolicySet) -> list[str]:
    return sorted(lp.policy.name for lp in ps.policies)


def test_an_unchanged_directory_parses_nothing(root: Path) -> None:
    ps = PolicySet([root])
    ps.load()
    assert ps.parses == 3
    for _ in range(5):
        ps.load()
    assert ps.parses == 3
    assert names(ps) == ["a", "b", "c"]
    assert not ps.changed()


def test_only_a_changed_file_is_parsed_again(root: Path) -> None:
    ps = PolicySet([root])
    ps.load()
    (root / "b.yaml").write_text(policy("b", "[20, 60]"))
    os.utime(root / "b.yaml", ns=(1, 1))  # a new mtime even on a coarse clock
    assert ps.changed()
    ps.load()
    assert ps.parses == 4
    b = next(lp for lp in ps.policies if lp.policy.name == "b")
    assert [s.weight for s in b.policy.spec.steps.resolved()] == [20, 60]


def test_a_relinked_file_with_the_same_bytes_is_not_parsed(root: Path) -> None:
    """A ConfigMap update swaps the ..data symlink: every file gets a new inode, most with the
    same content. The content hash keeps those from being parsed."""
    ps = PolicySet([root])
    ps.load()
    text = (root / "a.yaml").read_bytes()
    (root / "a.yaml").unlink()
    (root / "a.new").write_bytes(text)
    (root / "a.new").rename(root / "a.yaml")
    assert ps.changed()
    ps.load()
    assert ps.parses == 3
    assert names(ps) == ["a", "b", "c"]


def test_a_ten_megabyte_file_is_refused_by_its_size_alone(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = root / "big.yaml"
    big.write_text(policy("big") + "#" + "x" * (10 * MAX_DOCUMENT_BYTES) + "\n")
    read: list[str] = []
    real = Path.read_bytes

    def spy(self: Path) -> bytes:
        read.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    ps = PolicySet([root])
    ps.load()
    assert "big.yaml" not in read
    assert ps.parses == 3
    assert names(ps) == ["a", "b", "c"]
    size = big.stat().st_size
    assert ps.problems == [
        f"{big}: the file is {size} bytes, more than the limit of {MAX_DOCUMENT_BYTES} bytes "
        "(1 MiB); it was not read"
    ]


def test_an_alias_bomb_is_refused_and_the_other_policies_keep_being_served(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ps = PolicySet([root])
    ps.load()
    (root / "bomb.yaml").write_text(BOMB)
    validated = {"n": 0}
    load_model = loader.load_model

    def count(*args, **kwargs):  # type: ignore[no-untyped-def]
        validated["n"] += 1
        return load_model(*args, **kwargs)

    monkeypatch.setattr(loader, "load_model", count)
    ps.load()
    assert names(ps) == ["a", "b", "c"]
    assert validated["n"] == 0  # the bomb never reached pydantic
    assert len(ps.problems) == 1
    assert ps.problems[0].startswith(f"{root / 'bomb.yaml'}:6:7: YAML aliases expand this to")
    assert "(limit; an alias bomb?)" in ps.problems[0]


def test_a_template_the_runtime_refuses_is_refused_at_load(root: Path) -> None:
    """The same check as ``canaryd validate``: the policy is refused with the template's
    line:column instead of pausing for no data at its first fetch."""
    bad = root / "gpu.yaml"
    bad.write_text(
        policy("gpu").replace(
            "      - {name: errors, kind: errors}\n",
            "      - {name: errors, kind: errors}\n"
            "      - name: util\n        kind: custom\n        critical: false\n"
            "        query: 'avg by (revision_name) (gpu{revision_name=\"{revisions}\"})'\n",
        )
    )
    ps = PolicySet([root])
    ps.load()
    assert names(ps) == ["a", "b", "c"]
    assert ps.problems == [
        f"{bad}:14:16: spec.analysis.metrics[1].query: custom query uses {{revisions}} with '='; "
        "it is a regex alternation, use =~"
    ]
