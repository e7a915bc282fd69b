"""Hostile and wrong policy input: alias bombs, oversized files, non-finite numbers.

Each is refused fast, with a located error, through the same code ``canaryd validate`` runs
(``CliRunner`` with ``catch_exceptions=False``: a traceback fails the test).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from canaryd.cli import main
from canaryd.errors import PolicyError
from canaryd.policy import loader
from canaryd.policy.loader import MAX_DOCUMENT_BYTES, MAX_EXPANDED_NODES, load_policies_text

from .support import BASE, BOMB, variant


def validate(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["validate", *map(str, args)], catch_exceptions=False)


def test_the_bomb_is_small_and_would_expand_to_a_billion_nodes() -> None:
    assert len(BOMB.encode()) < 700
    assert 9**10 > 10**9  # ten levels of nine: the expansion the loader must never walk


def test_an_alias_bomb_is_refused_with_its_line_and_the_limit(tmp_path: Path) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB)
    result = validate(f)
    assert result.exit_code == 1
    # the first node whose expansion crosses the limit: level 5 holds 9^5 * 9 > 100,000 nodes
    assert result.stderr.startswith(f"{f}:6:7: YAML aliases expand this to more than ")
    assert f"{MAX_EXPANDED_NODES} nodes (limit; an alias bomb?)" in result.stderr


def test_an_alias_bomb_costs_work_linear_in_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: the expansion check visits each distinct node once plus one visit
    per alias use, and neither the duplicate-key walk nor pydantic ever sees the expansion."""
    calls = {"children": 0, "duplicates": 0, "validate": 0}
    children, duplicates, load_model = loader._children, loader._check_duplicates, loader.load_model

    def count_children(node):  # type: ignore[no-untyped-def]
        calls["children"] += 1
        return children(node)

    def count_duplicates(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["duplicates"] += 1
        return duplicates(*args, **kwargs)

    def count_validate(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["validate"] += 1
        return load_model(*args, **kwargs)

    monkeypatch.setattr(loader, "_children", count_children)
    monkeypatch.setattr(loader, "_check_duplicates", count_duplicates)
    monkeypatch.setattr(loader, "load_model", count_validate)
    with pytest.raises(PolicyError) as info:
        load_policies_text(BOMB, "bomb.yaml")
    assert "alias bomb" in str(info.value)
    # 10 anchored lists + 9 "lol"s + 10 keys + the root: 30 distinct nodes, 81 alias uses
    assert calls["children"] <= 2 * (30 + 81)
    assert calls["duplicates"] == 0 and calls["validate"] == 0


def test_shared_nodes_are_walked_once_for_duplicate_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Legitimate aliases below the limits: the duplicate-key walk visits each node once."""
    text = variant(
        "  promotion:\n",
        "  notifications:\n    webhooks:\n"
        + "".join(
            "      - &h {url: 'http://hooks.example/a'}\n" if i == 0 else "      - *h\n"
            for i in range(200)
        )
        + "  promotion:\n",
    )
    calls = {"n": 0}
    duplicates = loader._check_duplicates

    def count(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return duplicates(*args, **kwargs)

    monkeypatch.setattr(loader, "_check_duplicates", count)
    [lp] = load_policies_text(text, "p.yaml")
    assert len(lp.policy.spec.notifications.webhooks) == 200
    assert calls["n"] < 120  # the distinct nodes of the document, not 200 copies of the hook


def test_a_recursive_alias_is_refused_with_its_line() -> None:
    with pytest.raises(PolicyError) as info:
        load_policies_text("a: &x [1, *x]\n", "r.yaml")
    assert [str(p) for p in info.value.problems] == [
        "r.yaml:1:4: a YAML alias refers to its own ancestor"
    ]


def test_a_file_over_the_size_cap_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "big.yaml"
    f.write_text(BASE + "# " + "x" * MAX_DOCUMENT_BYTES + "\n")
    opened: list[Path] = []
    real_open = Path.open

    def spy_open(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy_open)
    result = validate(f)
    assert result.exit_code == 1
    size = f.stat().st_size
    assert result.stderr == (
        f"{f}: the file is {size} bytes, more than the limit of {MAX_DOCUMENT_BYTES} bytes "
        "(1 MiB): split it into one file per policy\n"
    )
    assert f not in opened


# -- every number finite and in range (policy and scenario) ---------------------------------

NON_FINITE = {
    "weight-inf": (
        variant("        kind: errors\n", "        kind: errors\n        weight: .inf\n"),
        "p.yaml:20:17: spec.analysis.metrics[0].weight: input should be a finite number, got inf",
    ),
    "weight-1e300": (
        variant("        kind: errors\n", "        kind: errors\n        weight: 1.0e+300\n"),
        "p.yaml:20:17: spec.analysis.metrics[0].weight: input should be less than or equal to "
        "1000, got 1e+300",
    ),
    "weight-tiny": (
        variant("        kind: errors\n", "        kind: errors\n        weight: 1.0e-300\n"),
        "p.yaml:20:17: spec.analysis.metrics[0].weight: input should be greater than or equal "
        "to 0.001, got 1e-300",
    ),
    "mde-inf": (
        variant("    criterion: afterSteps\n", "    minDetectableEffect: {errors: .inf}\n"),
        "p.yaml:25:35: spec.promotion.minDetectableEffect.errors: input should be a finite "
        "number, got inf",
    ),
    "mde-1e300": (
        variant("    criterion: afterSteps\n", "    minDetectableEffect: {errors: 1.0e+300}\n"),
        "p.yaml:25:35: spec.promotion.minDetectableEffect.errors: input should be less than "
        "or equal to 100, got 1e+300",
    ),
    "tolerance-nan": (
        variant(
            "        kind: errors\n", "        kind: errors\n        maxRelativeIncrease: .nan\n"
        ),
        "p.yaml:20:30: spec.analysis.metrics[0].maxRelativeIncrease: input should be a finite "
        "number, got nan",
    ),
    "alpha-nan": (
        variant("alpha: 0.01", "alpha: .nan"),
        "p.yaml:16:12: spec.analysis.alpha: input should be a finite number, got nan",
    ),
    "quantile-inf": (
        variant(
            "        kind: latency\n", "        kind: latency\n        quantiles: [0.5, .inf]\n"
        ),
        "p.yaml:23:26: spec.analysis.metrics[1].quantiles[1]: input should be a finite number, got inf",
    ),
}


@pytest.mark.parametrize(("text", "expected"), list(NON_FINITE.values()), ids=list(NON_FINITE))
def test_every_policy_number_is_finite_and_in_range(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policies_text(text, "p.yaml")
    assert [str(p) for p in info.value.problems] == [expected]


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1.0e+300", "-1.0e+300"])
def test_threshold_bounds_are_finite(value: str) -> None:
    text = variant(
        "      - name: latency\n",
        "      - name: gpu\n        kind: custom\n        judge: threshold\n"
        f"        max: {value}\n"
        '        query: sum by (revision) (gpu{{revision=~"{{revisions}}"}})\n'
        "      - name: latency\n",
    )
    if "e+300" in value:  # finite: allowed (an absolute bound in the metric's own unit)
        [lp] = load_policies_text(text, "p.yaml")
        assert math.isfinite(lp.policy.spec.analysis.metrics[1].max or 0.0)
        return
    with pytest.raises(PolicyError, match="input should be a finite number"):
        load_policies_text(text, "p.yaml")


@pytest.mark.parametrize("module", ["canaryd.policy.model", "canaryd.simulation.scenario"])
def test_every_model_refuses_non_finite_floats(module: str) -> None:
    """Every pydantic model of the policy and of the scenario refuses .inf and .nan, whatever
    field a future change adds (the config is inherited from the module's base model)."""
    import importlib
    import inspect

    from pydantic import BaseModel

    mod = importlib.import_module(module)
    models = [
        obj
        for _, obj in inspect.getmembers(mod, inspect.isclass)
        if issubclass(obj, BaseModel) and obj.__module__ == module
    ]
    assert len(models) > 10
    assert [m.__name__ for m in models if m.model_config.get("allow_inf_nan") is not False] == []
