"""'canaryd validate': the shipped policies pass, exit codes, warnings and cross-file checks."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from canaryd.cli import main

from . import support
from .support import POLICIES, REPO

# Router kserve with the default (istio) preset is warned about (test_kserve_with_istio_preset);
# these tests read the revisions with the knative preset: one line more after line 16.
BASE = support.variant("    alpha: 0.01\n", "    alpha: 0.01\n    source: {preset: knative}\n")


def variant(old: str, new: str) -> str:
    return support.variant(old, new, BASE)


def validate(*args: str | Path) -> Result:
    # catch_exceptions=False: a crash is a crash, not a non-zero exit code.
    return CliRunner().invoke(main, ["validate", *map(str, args)], catch_exceptions=False)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_policies_are_valid() -> None:
    result = validate(POLICIES)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("policies: 0 error(s), 0 warning(s)\n")


def test_shipped_policies_are_valid_strict() -> None:
    result = validate("--strict", POLICIES)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_every_example_file_is_read() -> None:
    files = sorted(p.name for p in POLICIES.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert files == [
        "classifier-drift.yaml",
        "edge-low-traffic.yaml",
        "gateway-api.yaml",
        "istio-header-route.yaml",
        "llm-kserve.yaml",
        "llm-vllm.yaml",
        "shadow-istio.yaml",
        "strict-noninferiority.yaml",
        "two-models.yaml",
    ]


def test_valid_file_exits_0(tmp_path: Path) -> None:
    f = write(tmp_path, "ok.yaml", BASE)
    result = validate(f)
    assert result.exit_code == 0
    assert result.stdout == "1 file(s), 1 policy: 0 error(s), 0 warning(s)\n"


def test_error_exits_1_and_goes_to_stderr(tmp_path: Path) -> None:
    f = write(tmp_path, "bad.yaml", variant("alpha: 0.01", "alpha: 0.7"))
    result = validate(f)
    assert result.exit_code == 1
    assert result.stderr == (
        f"{f}:16:12: spec.analysis.alpha: input should be less than 0.5, got 0.7\n"
    )
    assert result.stdout == "1 file(s), 0 policies: 1 error(s), 0 warning(s)\n"


def test_quiet_prints_problems_only(tmp_path: Path) -> None:
    f = write(tmp_path, "bad.yaml", variant("alpha: 0.01", "alpha: 0.7"))
    result = validate("-q", f)
    assert result.exit_code == 1
    assert result.stdout == ""


CLASSIC = variant(
    "judge: sequential\n  promotion", "judge: mann-whitney\n  promotion"
)  # metrics[1] (latency) re-run every 1m: valid, but not peeking-safe


def test_warning_exits_0_without_strict(tmp_path: Path) -> None:
    f = write(tmp_path, "classic.yaml", CLASSIC)
    result = validate(f)
    assert result.exit_code == 0
    assert result.stdout == (
        f"{f}:24:16: warning: demo: spec.analysis.metrics[1].judge: 'mann-whitney' is a "
        "fixed-horizon test re-run every 1m; it is not peeking-safe and its false-rollback "
        "rate grows with every look (use judge: sequential)\n"
        "1 file(s), 1 policy: 0 error(s), 1 warning(s)\n"
    )


def test_warning_exits_1_with_strict(tmp_path: Path) -> None:
    f = write(tmp_path, "classic.yaml", CLASSIC)
    result = validate("--strict", f)
    assert result.exit_code == 1
    assert "not peeking-safe" in result.stdout


def test_other_warnings(tmp_path: Path) -> None:
    text = variant("minDwell: 5m", "minDwell: 30s").replace(
        "  promotion:", "  noData:\n    timeout: 30s\n  onFailure: pause\n  promotion:"
    )
    f = write(tmp_path, "w.yaml", text)
    result = validate(f)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:-1] == [
        f"{f}:13:15: warning: demo: spec.steps (step 1): minDwell 30s is shorter than the analysis "
        "interval 1m: the step can end unanalysed",
        f"{f}:13:15: warning: demo: spec.steps (step 2): minDwell 30s is shorter than the analysis "
        "interval 1m: the step can end unanalysed",
        f"{f}:13:15: warning: demo: spec.steps (step 3): minDwell 30s is shorter than the analysis "
        "interval 1m: the step can end unanalysed",
        f"{f}:26:14: warning: demo: spec.noData.timeout: shorter than one analysis interval: a "
        "single late scrape triggers the action",
        f"{f}:27:14: warning: demo: spec.onFailure: a failing canary keeps its traffic until a "
        "human acts",
    ]


def test_duplicate_targets_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "sub/b.yml", "# same target, other name\n" + variant("name: demo", "name: b"))
    result = validate(tmp_path)
    assert result.exit_code == 1
    assert result.stderr == (
        f"{tmp_path}/sub/b.yml:2: b: spec.target: models/demo is already targeted by policy "
        f"'demo' ({tmp_path}/a.yaml:1)\n"
    )
    assert result.stdout == "2 file(s), 2 policies: 1 error(s), 0 warning(s)\n"


def test_errors_from_several_files_are_all_reported(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "")
    b = write(tmp_path, "b.yaml", "- 1\n")
    result = validate(tmp_path)
    assert result.exit_code == 1
    assert result.stderr == (
        f"{a}: no policy documents in the file\n{b}:1:1: expected a mapping, got list\n"
    )


def test_directory_without_yaml(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "# not a policy\n")
    write(tmp_path, "vs.yaml.txt", "kind: VirtualService\n")
    result = validate(tmp_path)
    assert result.exit_code == 1
    assert result.stderr == f"{tmp_path}: no policy files found\n"
    assert result.stdout == "0 file(s), 0 policies: 1 error(s), 0 warning(s)\n"


def test_missing_path(tmp_path: Path) -> None:
    result = validate(tmp_path / "nope.yaml")
    assert result.exit_code == 1
    assert result.stderr == f"{tmp_path}/nope.yaml: no such file or directory\n"


def test_no_arguments_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 3


def test_policy_names_must_be_unique_across_files(tmp_path: Path) -> None:
    doc = (
        "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: same}}\n"
        "spec:\n  target: {{namespace: ns, inferenceService: {isvc}}}\n"
    )
    (tmp_path / "a.yaml").write_text(doc.format(isvc="one"))
    (tmp_path / "b.yaml").write_text(doc.format(isvc="two"))
    out = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert out.exit_code == 1
    assert (
        f"{tmp_path / 'b.yaml'}:1: metadata.name: policy name 'same' is already used" in out.output
    )


def test_error_codes_must_be_a_regex(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: p}\n"
        "spec:\n  target: {namespace: ns, inferenceService: m}\n"
        "  analysis:\n    source: {errorCodes: '5[['}\n"
    )
    out = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert out.exit_code == 1
    assert "p.yaml:7:26: spec.analysis.source.errorCodes: expected a regular expression" in (
        out.output
    )


def test_a_kustomization_stands_for_its_configmap_generator_sources(tmp_path: Path) -> None:
    # deploy/ builds the policies ConfigMap from policies/Kustomization (a resource of it).
    result = validate(REPO / "deploy" / "kustomization.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("9 file(s), 10 policies: 0 error(s), 0 warning(s)\n")
    # key=file entries, resolved from the kustomization's directory; errors land in the file.
    write(tmp_path, "good.yaml", BASE)
    write(tmp_path, "src/bad.yaml", variant("alpha: 0.01", "alpha: 2"))
    k = write(
        tmp_path,
        "kustomization.yaml",
        "configMapGenerator:\n  - name: p\n    files: [good.yaml, bad-policy.yaml=src/bad.yaml]\n",
    )
    result = validate(k)
    assert result.exit_code == 1
    assert f"{tmp_path / 'src' / 'bad.yaml'}:16:12: spec.analysis.alpha" in result.output
    assert "2 file(s), 1 policy: 1 error(s)" in result.output
