"""``canaryd validate`` reports every problem in one pass, at the field's own line:column.

The fixture ``tests/fixtures/policies/sixteen-errors.yaml`` holds 16 independent mistakes of
every layer: a duplicate key (syntax), field errors (schema), cross-field checks of objects
whose other fields are wrong too (the spec's, beside a wrong required field), and a PromQL
template the runtime would refuse. Before, fixing what each run showed took five runs
(1 -> 9 -> 1 -> 1 -> 0 errors), and four of the mistakes were never reported at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from canaryd.cli import main
from canaryd.durations import parse_duration
from canaryd.errors import PolicyError
from canaryd.policy.loader import load_policies_text

from .support import BASE, REPO, variant

SIXTEEN = REPO / "tests" / "fixtures" / "policies" / "sixteen-errors.yaml"
KNATIVE = variant("    alpha: 0.01\n", "    alpha: 0.01\n    source: {preset: knative}\n")


def validate(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["validate", *map(str, args)], catch_exceptions=False)


def test_sixteen_independent_errors_in_one_run() -> None:
    result = validate(SIXTEEN)
    assert result.exit_code == 1
    f = str(SIXTEEN)
    assert sorted(result.stderr.splitlines()) == sorted(
        [
            f"{f}:38:5: spec.promotion.maxDuration: duplicate key 'maxDuration' (first at line 37)",
            f"{f}:7:16: spec.target.namespace: expected a DNS-1123 label (lowercase letters, "
            "digits, '-'), got 'Models'",
            f"{f}:13:15: spec.steps.minDwell: expected each unit at most once, largest first "
            "(such as '1h30m'), got '5m5m'",
            f"{f}:12:23: spec.steps.weights[2]: steps must increase: 25 follows 50",
            f"{f}:16:12: spec.analysis.alpha: input should be less than 0.5, got 0.7",
            f"{f}:17:5: spec.analysis.intervall: unknown field (check the spelling; see "
            "policies/README.md)",
            f"{f}:21:17: spec.analysis.metrics[0].weight: input should be a finite number, got inf",
            f"{f}:24:16: spec.analysis.metrics[1].judge: expected one of sequential, "
            "mann-whitney, ks, welch-t, chi-square, threshold, got 'seqential'",
            f"{f}:25:20: spec.analysis.metrics[1].quantiles: quantiles repeat",
            f"{f}:28:16: spec.analysis.metrics[2].query: custom query uses {{revisions}} with "
            "'='; it is a regex alternation, use =~",
            f"{f}:31:19: spec.analysis.source.errorCodes: expected a regular expression of "
            "response codes: missing ), unterminated subpattern at position 2",
            f"{f}:33:14: spec.noData.timeout: expected each unit at most once, largest first "
            "(such as '1h30m'), got '1s1h'",
            f"{f}:34:13: spec.noData.action: expected one of pause, rollback, got 'retry'",
            f"{f}:42:15: spec.window.timezone: unknown timezone 'Mars/Olympus'",
            f"{f}:39:48: spec.promotion.minDetectableEffect.nosuch: no metric named 'nosuch' "
            "(metrics: errors, gpu, latency)",
            f"{f}:39:35: spec.promotion.minDetectableEffect.errors: 1.1 is inside the metric's "
            "tolerance (1 + 0.2); nothing below it counts as a regression",
        ]
    )
    assert result.stdout == "1 file(s), 0 policies: 16 error(s), 0 warning(s)\n"


def test_a_removed_field_is_not_blamed_twice() -> None:
    """Removing a bad field must not surface checks that only fail because it is gone."""
    text = variant(
        "  promotion:\n",
        "  notifications:\n    webhooks:\n      - urlFrom: {env: AWS_KEY}\n  promotion:\n",
    )
    with pytest.raises(PolicyError) as info:
        load_policies_text(text, "p.yaml")
    assert [p.path for p in info.value.problems] == ["spec.notifications.webhooks[0].urlFrom.env"]


def test_a_cross_field_check_of_the_spec_runs_beside_a_field_error() -> None:
    text = variant("alpha: 0.01", "alpha: 0.7").replace(
        "    criterion: afterSteps\n", "    minDetectableEffect: {nosuch: 2.0}\n"
    )
    with pytest.raises(PolicyError) as info:
        load_policies_text(text, "p.yaml")
    assert [str(p) for p in info.value.problems] == [
        "p.yaml:16:12: spec.analysis.alpha: input should be less than 0.5, got 0.7",
        "p.yaml:25:35: spec.promotion.minDetectableEffect.nosuch: no metric named 'nosuch' "
        "(metrics: errors, latency)",
    ]


# -- durations: each unit once, largest first -------------------------------------------------


@pytest.mark.parametrize("bad", ["5m5m", "1s1h", "30s1m", "1m1m30s", "500ms1s", "1h1h"])
def test_a_unit_twice_or_out_of_order_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="each unit at most once, largest first"):
        parse_duration(bad)


@pytest.mark.parametrize(("ok", "seconds"), [("1d2h3m4s", 93784.0), ("1s500ms", 1.5)])
def test_units_in_decreasing_order_are_read(ok: str, seconds: float) -> None:
    assert parse_duration(ok) == seconds


# -- warnings at the field's own line and column -------------------------------------------


def test_a_threshold_judge_is_not_called_a_fixed_horizon_test(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(
        variant(
            "      - name: latency\n",
            "      - name: gpu\n        kind: custom\n        judge: threshold\n        max: 0.9\n"
            '        query: sum by (revision) (gpu{revision=~"{revisions}"})\n'
            "      - name: latency\n",
            KNATIVE,
        )
    )
    result = validate(f)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"{f}:24:16: warning: demo: spec.analysis.metrics[1].judge: 'threshold' checks a fixed "
        "min/max on the canary's value, re-checked every 1m: it compares nothing with stable "
        "and has no false-rollback guarantee (use judge: sequential where the kind allows)"
    )
    assert "fixed-horizon" not in result.stdout


def test_a_warning_about_a_default_points_at_the_nearest_written_field(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(variant("minDwell: 5m", "minDwell: 30s", KNATIVE))
    result = validate(f)
    assert result.stdout.splitlines()[0].startswith(
        f"{f}:13:15: warning: demo: spec.steps (step 1): minDwell 30s"
    )


# -- a policy that passes --strict gets data -----------------------------------------------


def test_router_kserve_with_the_istio_preset_fails_strict(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(BASE)  # router kserve, no source: the istio preset (warned at spec.analysis)
    result = validate("--strict", f)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        f"{f}:15:5: warning: demo: spec.analysis.source.preset: router 'kserve' with preset "
        "'istio' (the default preset): Istio's destination_workload names each revision's "
        "Deployment only where the mesh labels requests that way, otherwise both revisions "
        "look alike and the rollout gets no data (use preset: knative, which reads the "
        "queue-proxy's revision_name, or set source.versionLabel to a label that names the "
        "revision)"
    )
    for fixed in (
        KNATIVE,
        variant(
            "    alpha: 0.01\n",
            "    alpha: 0.01\n    source: {versionLabel: destination_workload}\n",
        ),
    ):
        f.write_text(fixed)
        assert validate("--strict", f).exit_code == 0


def test_a_custom_metric_defaults_to_a_judge_that_works_for_it() -> None:
    text = variant(
        "      - name: latency\n",
        "      - name: gpu\n        kind: custom\n"
        '        query: sum by (revision) (gpu{revision=~"{revisions}"})\n'
        "      - name: latency\n",
    )
    [lp] = load_policies_text(text, "p.yaml")
    assert lp.policy.spec.analysis.metrics[1].judge == "mann-whitney"
    assert lp.policy.spec.analysis.metrics[0].judge == "sequential"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            'sum by (revision) (gpu{revision="{revisions}"})',
            "custom query uses {revisions} with '='; it is a regex alternation, use =~",
        ),
        (
            "sum by (revision) (gpu{revision=~{revisions}})",
            "custom query: put {revisions} and {namespace} inside double quotes, e.g. "
            '=~"{revisions}"',
        ),
    ],
)
def test_validate_refuses_templates_the_runtime_refuses(
    tmp_path: Path, query: str, message: str
) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(
        variant(
            "      - name: latency\n",
            f"      - name: gpu\n        kind: custom\n        query: '{query}'\n"
            "      - name: latency\n",
            KNATIVE,
        )
    )
    result = validate(f)
    assert result.exit_code == 1
    assert result.stderr == f"{f}:24:16: spec.analysis.metrics[1].query: {message}\n"


# -- a ConfigMap whose data values are policy files -----------------------------------------


def configmap(*policies: str) -> str:
    out = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: canaryd-policies\ndata:\n"
    for i, text in enumerate(policies):
        out += f"  p{i}.yaml: |\n" + "".join(f"    {line}\n" for line in text.splitlines())
    return out


def test_a_configmap_is_validated_with_lines_mapped_into_it(tmp_path: Path) -> None:
    f = tmp_path / "configmap-policies.yaml"
    bad = variant("alpha: 0.01", "alpha: 0.7", KNATIVE).replace("name: demo", "name: other")
    f.write_text(configmap(KNATIVE, bad))
    result = validate(f)
    assert result.exit_code == 1
    # the second value's text starts on line 34 (its own line 1), indented by 4: its 16:12
    # is the ConfigMap's 49:16
    assert result.stderr == (
        f"{f}:49:16: data[p1.yaml]: spec.analysis.alpha: input should be less than 0.5, got 0.7\n"
    )
    assert result.stdout == "1 file(s), 0 policies: 1 error(s), 0 warning(s)\n"  # as any file
    f.write_text(configmap(KNATIVE, variant("minDwell: 5m", "minDwell: 30s", KNATIVE)))
    warned = validate(f).stdout.splitlines()[0]
    assert warned.startswith(f"{f}:46:19: warning: demo: spec.steps (step 1)"), warned
