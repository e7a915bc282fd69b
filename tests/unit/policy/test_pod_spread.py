"""``podSpread``: refused where no judge reads it, bounded per kind, and passed to the judges."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from canaryd.cli import main
from canaryd.policy.loader import load_policies_text
from canaryd.stats.factory import build_judges
from canaryd.stats.pods import DEFAULT_LATENCY_SPREAD, DEFAULT_RATE_SPREAD

from .support import BASE, variant

LATENCY = "        kind: latency\n        judge: sequential\n"


def _validate(tmp_path: Path, text: str) -> tuple[Path, int, str]:
    f = tmp_path / "p.yaml"
    f.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(f)], catch_exceptions=False)
    return f, result.exit_code, result.output


def test_defaults_and_declared_values_reach_the_judges() -> None:
    (plain,) = load_policies_text(BASE, "plain.yaml")
    errors, latency = build_judges(plain.policy)
    assert errors.pod_spread == DEFAULT_RATE_SPREAD  # type: ignore[attr-defined]
    assert latency.pod_spread == DEFAULT_LATENCY_SPREAD  # type: ignore[attr-defined]
    text = variant(LATENCY, LATENCY + "        podSpread: 1.2\n")
    (declared,) = load_policies_text(text, "declared.yaml")
    assert build_judges(declared.policy)[1].pod_spread == 1.2  # type: ignore[attr-defined]


def test_pod_spread_out_of_range_names_the_line(tmp_path: Path) -> None:
    f, code, out = _validate(tmp_path, variant(LATENCY, LATENCY + "        podSpread: 12\n"))
    assert code == 1, out
    assert f"{f}:" in out and "expected a latency podSpread of at most 10, got 12" in out
    f, code, out = _validate(tmp_path, variant(LATENCY, LATENCY + "        podSpread: 0.5\n"))
    assert code == 1 and "podSpread" in out and "greater than or equal to 1" in out, out


def test_pod_spread_where_no_judge_reads_it_is_refused(tmp_path: Path) -> None:
    text = variant(
        "        kind: latency\n        judge: sequential\n",
        "        kind: latency\n        judge: mann-whitney\n        podSpread: 2\n",
    )
    _f, code, out = _validate(tmp_path, text)
    assert code == 1, out
    assert "podSpread is read by the sequential errors and latency judges only" in out
    assert "'mann-whitney'" in out


def test_pod_spread_without_per_pod_counts_is_a_warning(tmp_path: Path) -> None:
    text = variant(LATENCY, LATENCY + "        podSpread: 1.2\n")
    text = variant(
        "    metrics:\n", '    source: {preset: istio, podLabel: ""}\n    metrics:\n', text
    )
    f, code, out = _validate(tmp_path, text)
    assert code == 0, out
    assert "podSpread" in out and "has no effect: podLabel is off" in out
    assert f"{f}:25:" in out  # the podSpread line


def test_no_history_warns_what_learning_the_spread_during_the_canary_costs(
    tmp_path: Path,
) -> None:
    text = variant("    interval: 1m\n", "    interval: 1m\n    history: 0s\n")
    f, code, out = _validate(tmp_path, text)
    assert code == 0, out
    assert f"{f}:" in out and "spec.analysis.history" in out
    assert "learned during the canary" in out and "75 min" in out and "0.58 %" in out
    plain = _validate(tmp_path, BASE)[2]
    assert "spec.analysis.history" not in plain
    off = variant(
        "    metrics:\n", '    source: {preset: istio, podLabel: ""}\n    metrics:\n', text
    )
    assert "learned during the canary" not in _validate(tmp_path, off)[2]
