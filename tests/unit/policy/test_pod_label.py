"""``source.podLabel``: checked where the policy is validated, with the file and line."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from canaryd.cli import main
from canaryd.policy.loader import load_policies_text

from .support import variant


def _validate(tmp_path: Path, source: str) -> tuple[Path, int, str]:
    f = tmp_path / "p.yaml"
    f.write_text(variant("    metrics:\n", f"    source: {source}\n    metrics:\n"))
    result = CliRunner().invoke(main, ["validate", str(f)], catch_exceptions=False)
    return f, result.exit_code, result.output


def test_pod_label_clashing_with_the_version_label_or_le_is_refused(tmp_path: Path) -> None:
    for source, label in (
        (
            "{preset: istio, versionLabel: destination_version, podLabel: destination_version}",
            "destination_version",
        ),
        ("{preset: knative, podLabel: le}", "le"),
    ):
        f, code, out = _validate(tmp_path, source)
        assert code == 1, out
        assert f"{f}:17:" in out
        assert f"podLabel {label!r} would group by a label the queries already use" in out


def test_pod_label_must_be_a_label_name_and_may_be_turned_off(tmp_path: Path) -> None:
    f, code, out = _validate(tmp_path, '{preset: istio, podLabel: "pod-name"}')
    assert code == 1 and f"{f}:17:" in out and "podLabel" in out
    text = variant("    metrics:\n", '    source: {preset: istio, podLabel: ""}\n    metrics:\n')
    (loaded,) = load_policies_text(text, "off.yaml")
    assert loaded.policy.spec.analysis.source.pod_label == ""
    _, code, out = _validate(tmp_path, "{preset: kserve, podLabel: kubernetes_pod_name}")
    assert code == 0, out
