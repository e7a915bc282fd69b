"""Gateway API router settings and the shadow phase: defaults, and located refusals."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.errors import PolicyError
from canaryd.policy.loader import load_policies_text

from .support import BASE, variant

GATEWAY = variant(
    "    type: kserve\n",
    "    type: gateway-api\n"
    "    gatewayApi:\n"
    "      httpRoute: demo\n"
    "      ruleName: main\n"
    "      stableBackend: {name: demo-v1-predictor, port: 80}\n"
    "      canaryBackend: {name: demo-v2-predictor, port: 80}\n",
)
SHADOW = "    weights: [10, 25, 50]\n    shadow: {duration: 15m, minCanaryRequests: 400}\n"


def _error(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        load_policies_text(text, "p.yaml")
    return str(info.value)


def test_gateway_api_settings() -> None:
    (lp,) = load_policies_text(GATEWAY, "p.yaml")
    g = lp.policy.spec.router.gateway_api
    assert g is not None and lp.policy.spec.router.can_mirror
    assert (g.http_route, g.rule_name, g.rule_index, g.namespace) == ("demo", "main", None, None)
    assert (g.stable_backend.name, g.stable_backend.port) == ("demo-v1-predictor", 80)


def test_shadow_defaults_to_the_first_steps_load() -> None:
    (lp,) = load_policies_text(variant("    weights: [10, 25, 50]\n", SHADOW, GATEWAY), "p.yaml")
    steps = lp.policy.spec.steps
    assert steps.shadow is not None
    assert (steps.shadow.duration, steps.shadow.min_canary_requests) == (900.0, 400)
    assert steps.shadow.mirror_percent is None and steps.mirror_percent() == 10.0
    (lp,) = load_policies_text(
        variant("    weights: [10, 25, 50]\n", "    weights: [5]\n    shadow: {}\n", GATEWAY),
        "p.yaml",
    )
    s = lp.policy.spec.steps
    assert s.shadow is not None and (s.shadow.duration, s.shadow.min_canary_requests) == (600, 100)
    assert s.mirror_percent() == 5.0
    assert load_policies_text(BASE, "p.yaml")[0].policy.spec.steps.mirror_percent() == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            variant("    weights: [10, 25, 50]\n", SHADOW),
            "p.yaml:13:13: spec.steps.shadow: router type 'kserve' cannot run a shadow phase: "
            "KServe Serverless cannot mirror traffic",
        ),
        (
            variant("    weights: [10, 25, 50]\n", SHADOW).replace(
                "type: kserve", "type: kserve-raw"
            ),
            "p.yaml:13:13: spec.steps.shadow: router type 'kserve-raw' cannot run a shadow phase",
        ),
        (
            variant("type: kserve", "type: gateway-api"),
            "p.yaml:10:5: spec.router.gatewayApi: router type 'gateway-api' needs "
            "gatewayApi.httpRoute",
        ),
        (
            variant("      ruleName: main\n", "", GATEWAY),
            "spec.router.gatewayApi.ruleName: give exactly one of ruleName and ruleIndex",
        ),
        (
            variant(
                "      ruleName: main\n", "      ruleName: main\n      ruleIndex: 1\n", GATEWAY
            ),
            "give exactly one of ruleName and ruleIndex",
        ),
        (
            variant("demo-v2-predictor", "demo-v1-predictor", GATEWAY),
            "spec.router.gatewayApi.canaryBackend: stable and canary backends are the same",
        ),
        (
            variant("port: 80}\n      canary", "port: 70000}\n      canary", GATEWAY),
            "spec.router.gatewayApi.stableBackend.port",
        ),
        (
            variant(
                "    weights: [10, 25, 50]\n",
                "    weights: [10]\n    shadow: {mirrorPercent: 0}\n",
                GATEWAY,
            ),
            "spec.steps.shadow.mirrorPercent",
        ),
        (
            variant(
                "    weights: [10, 25, 50]\n",
                "    weights: [10]\n    shadow: {mirrorPercent: 2.555}\n",
                GATEWAY,
            ),
            "at most two decimals",
        ),
    ],
)
def test_refusals_are_located(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_validate_refuses_shadow_with_kserve_without_a_traceback(tmp_path: object) -> None:
    from pathlib import Path

    f = Path(str(tmp_path)) / "p.yaml"
    f.write_text(variant("    weights: [10, 25, 50]\n", SHADOW))
    result = CliRunner().invoke(main, ["validate", str(f)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{f}:13:13: spec.steps.shadow: router type 'kserve' cannot run a shadow phase" in (
        result.stderr
    )
    assert "Knative's Route only splits traffic" in result.stderr


def test_lint_warns_about_a_short_shadow_and_a_preset_blind_to_mirrors() -> None:
    from canaryd.policy.lint import lint

    def warnings(text: str) -> list[str]:
        (lp,) = load_policies_text(text, "p.yaml")
        return [w.message for w in lint(lp)]

    shadowed = variant("    weights: [10, 25, 50]\n", SHADOW, GATEWAY)
    assert warnings(shadowed) == []  # istio preset (the default), 15m of shadow
    short = variant("duration: 15m", "duration: 30s", shadowed)
    assert warnings(short) == [
        "30s is shorter than the analysis interval 1m: the shadow phase can end unanalysed"
    ]
    knative = variant(
        "    alpha: 0.01\n", "    alpha: 0.01\n    source: {preset: knative}\n", shadowed
    )
    (w,) = warnings(knative)
    assert w.startswith("the 'knative' metric preset cannot tell mirrored requests apart")
