"""Every class of bad policy input gives one exact, located message line.

The line and column in each expectation can be read off ``BASE`` in support.py.
"""

from __future__ import annotations

import pytest

from canaryd.errors import InputError, PolicyError
from canaryd.policy.loader import load_policies_text, load_policy_file

from .support import BASE, variant

CUSTOM_NO_QUERY = variant(
    "      - name: latency\n",
    "      - name: gpu\n        kind: custom\n        judge: mann-whitney\n      - name: latency\n",
)
THRESHOLD_NO_BOUNDS = variant(
    "      - name: latency\n",
    "      - name: gpu\n        kind: custom\n        judge: threshold\n"
    "        query: gpu_util{{revision='{revision}'}}\n      - name: latency\n",
)
ISTIO_NO_HOSTS = variant("type: kserve", "type: istio")
NONINFERIORITY_CLASSIC = variant(
    "criterion: afterSteps", "criterion: nonInferiority\n    maxDuration: 8h"
).replace("judge: sequential\n  promotion", "judge: mann-whitney\n  promotion")

CASES = {
    # syntax: the position PyYAML stops at
    "yaml-syntax": (
        variant("alpha: 0.01", "alpha: [0.01"),
        "p.yaml:17:12: invalid YAML: expected ',' or ']', but got ':'",
    ),
    "yaml-syntax-colon": (
        variant("name: demo", "name: demo: x"),
        "p.yaml:4:13: invalid YAML: mapping values are not allowed here",
    ),
    "duplicate-key": (
        variant("    alpha: 0.01\n", "    alpha: 0.01\n    alpha: 0.02\n"),
        "p.yaml:17:5: spec.analysis.alpha: duplicate key 'alpha' (first at line 16)",
    ),
    "wrong-type": (
        variant("alpha: 0.01", 'alpha: "high"'),
        "p.yaml:16:12: spec.analysis.alpha: input should be a valid number, unable to parse "
        "string as a number, got 'high'",
    ),
    "unknown-field": (
        variant("    interval: 1m", "    intervall: 1m"),
        "p.yaml:15:5: spec.analysis.intervall: unknown field (check the spelling; see "
        "policies/README.md)",
    ),
    "missing-field": (
        variant("    inferenceService: demo\n", ""),
        "p.yaml:7:5: spec.target.inferenceService: required field 'inferenceService' is missing",
    ),
    "bad-enum": (
        variant("judge: sequential\n  promotion", "judge: seqential\n  promotion"),
        "p.yaml:23:16: spec.analysis.metrics[1].judge: expected one of sequential, "
        "mann-whitney, ks, welch-t, chi-square, threshold, got 'seqential'",
    ),
    "percent-101": (
        variant("[10, 25, 50]", "[10, 25, 101]"),
        "p.yaml:12:23: spec.steps.weights[2].weight: input should be less than or equal to "
        "100, got 101",
    ),
    "percent-negative": (
        variant("[10, 25, 50]", "[-5, 25, 50]"),
        "p.yaml:12:15: spec.steps.weights[0].weight: input should be greater than or equal "
        "to 0, got -5",
    ),
    "percent-object-form": (
        variant("[10, 25, 50]", "[10, {weight: 101}]"),
        "p.yaml:12:28: spec.steps.weights[1].weight: input should be less than or equal to "
        "100, got 101",
    ),
    "steps-not-increasing": (
        variant("[10, 25, 50]", "[10, 50, 25]"),
        "p.yaml:12:23: spec.steps.weights[2]: steps must increase: 25 follows 50",
    ),
    "steps-first-zero": (
        variant("[10, 25, 50]", "[0, 50]"),
        "p.yaml:12:15: spec.steps.weights[0]: the first step must send the canary some "
        "traffic (> 0)",
    ),
    "alpha-zero": (
        variant("alpha: 0.01", "alpha: 0"),
        "p.yaml:16:12: spec.analysis.alpha: input should be greater than 0, got 0",
    ),
    "alpha-too-big": (
        variant("alpha: 0.01", "alpha: 0.7"),
        "p.yaml:16:12: spec.analysis.alpha: input should be less than 0.5, got 0.7",
    ),
    "istio-without-hosts": (
        ISTIO_NO_HOSTS,
        "p.yaml:10:5: spec.router.istio: router type 'istio' needs istio.virtualService, "
        "istio.stableHost and istio.canaryHost",
    ),
    "custom-without-query": (
        # query is absent, so the metric itself (its first key) is the place.
        CUSTOM_NO_QUERY,
        "p.yaml:21:9: spec.analysis.metrics[1].query: a custom metric needs a PromQL query "
        "template",
    ),
    "threshold-without-bounds": (
        THRESHOLD_NO_BOUNDS,
        "p.yaml:23:16: spec.analysis.metrics[1].judge: the threshold judge needs min or max",
    ),
    "mde-names-missing-metric": (
        variant(
            "criterion: afterSteps",
            "criterion: afterSteps\n    minDetectableEffect:\n      errrors: 2.0",
        ),
        "p.yaml:27:16: spec.promotion.minDetectableEffect.errrors: no metric named 'errrors' "
        "(metrics: errors, latency)",
    ),
    "mde-inside-tolerance": (
        variant(
            "criterion: afterSteps",
            "criterion: afterSteps\n    minDetectableEffect:\n      errors: 1.1",
        ),
        "p.yaml:27:15: spec.promotion.minDetectableEffect.errors: 1.1 is inside the metric's "
        "tolerance (1 + 0.2); nothing below it counts as a regression",
    ),
    "noninferiority-classic-judge": (
        NONINFERIORITY_CLASSIC,
        "p.yaml:23:16: spec.analysis.metrics[1].judge: criterion nonInferiority needs "
        "sequential judges on critical metrics; 'mann-whitney' cannot show non-inferiority",
    ),
    "duration-bare-number": (
        variant("interval: 1m", "interval: 5"),
        "p.yaml:15:15: spec.analysis.interval: expected a duration such as '30s', '5m' or "
        "'2h', got 5",
    ),
    "duration-words": (
        variant("interval: 1m", "interval: 5 minutes"),
        "p.yaml:15:15: spec.analysis.interval: expected a duration such as '30s', '5m' or "
        "'2h', got '5 minutes'",
    ),
    "interval-too-short": (
        variant("interval: 1m", "interval: 2s"),
        "p.yaml:15:15: spec.analysis.interval: an analysis interval under 5s is shorter than "
        "any scrape, got 2s",
    ),
    "bad-cron": (
        variant("  promotion:", "  window:\n    schedule: '61 * * * *'\n  promotion:"),
        "p.yaml:25:15: spec.window.schedule: invalid crontab expression '61 * * * *': Error "
        "validating expression '61': the last value (61) is higher than the maximum value (59)",
    ),
    "bad-cron-fields": (
        variant("  promotion:", "  window:\n    schedule: '* 9-16 * *'\n  promotion:"),
        "p.yaml:25:15: spec.window.schedule: invalid crontab expression '* 9-16 * *': Wrong "
        "number of fields; got 4, expected 5",
    ),
    "bad-timezone": (
        variant(
            "  promotion:",
            "  window:\n    schedule: '* 9-16 * * mon-fri'\n    timezone: Mars/Olympus\n"
            "  promotion:",
        ),
        "p.yaml:26:15: spec.window.timezone: unknown timezone 'Mars/Olympus'",
    ),
    "bad-webhook": (
        variant(
            "  promotion:",
            "  notifications:\n    webhooks:\n      - url: hooks.example.com\n  promotion:",
        ),
        "p.yaml:26:14: spec.notifications.webhooks[0].url: expected an http:// or https:// URL, "
        "got 'hooks.example.com'",
    ),
    "webhook-url-and-urlFrom": (
        variant(
            "  promotion:",
            "  notifications:\n    webhooks:\n      - url: https://h.example/x\n"
            "        urlFrom: {env: CANARYD_WEBHOOK_X}\n  promotion:",
        ),
        "p.yaml:26:14: spec.notifications.webhooks[0].url: give exactly one of url or urlFrom",
    ),
    "webhook-env-outside-the-prefix": (
        variant(
            "  promotion:",
            "  notifications:\n    webhooks:\n      - urlFrom: {env: AWS_SECRET_ACCESS_KEY}\n"
            "  promotion:",
        ),
        "p.yaml:26:24: spec.notifications.webhooks[0].urlFrom.env: string should match pattern "
        "'^CANARYD_WEBHOOK_[A-Z0-9_]+$', got 'AWS_SECRET_ACCESS_KEY'",
    ),
    "prometheus-token-outside-the-credentials-dir": (
        variant(
            "  promotion:",
            "    source:\n      auth:\n"
            "        bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n"
            "  promotion:",
        ),
        "p.yaml:26:26: spec.analysis.source.auth.bearerTokenFile: expected a file name relative "
        "to the daemon's credentials directory (letters, digits, '.', '_', '-', '/'; no leading "
        "'/', no '..'), got '/var/run/secrets/kubernetes.io/serviceaccount/token'",
    ),
    "bad-namespace": (
        variant("namespace: models", "namespace: Models_1"),
        "p.yaml:7:16: spec.target.namespace: expected a DNS-1123 label (lowercase letters, "
        "digits, '-'), got 'Models_1'",
    ),
    "empty-file": ("", "p.yaml: no policy documents in the file"),
    "only-comments": ("# nothing here\n", "p.yaml: no policy documents in the file"),
    "non-mapping-list": ("- a\n- b\n", "p.yaml:1:1: expected a mapping, got list"),
    "non-mapping-scalar": ("hello\n", "p.yaml:1:1: expected a mapping, got str"),
    "second-document-bad": (
        BASE + "---\n" + variant("name: demo", "name: other").replace("alpha: 0.01", "alpha: 2"),
        # BASE has 25 lines and the separator is line 26: the second doc's alpha is line 42.
        "p.yaml:42:12: spec.analysis.alpha: input should be less than 0.5, got 2",
    ),
    # Found by the fuzz test; these crashed the loader before.
    "non-scalar-key": ("{[a]: 1}\n", "p.yaml:1:2: expected a plain key, got a list or mapping"),
    "unsafe-tag": (
        "a: !!python/object:os.system x\n",
        "p.yaml:1:4: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object:os.system'",
    ),
    "deep-nesting": ("[" * 3000 + "]" * 3000, "p.yaml: invalid YAML: nested too deeply"),
}


@pytest.mark.parametrize(("text", "expected"), list(CASES.values()), ids=list(CASES))
def test_one_located_problem(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policies_text(text, "p.yaml")
    assert [str(p) for p in info.value.problems] == [expected]


def test_every_problem_is_reported_at_once() -> None:
    text = variant("alpha: 0.01", "alpha: 0.7").replace("interval: 1m", "interval: 5")
    with pytest.raises(PolicyError) as info:
        load_policies_text(text, "p.yaml")
    assert sorted(str(p) for p in info.value.problems) == [
        "p.yaml:15:15: spec.analysis.interval: expected a duration such as '30s', '5m' or "
        "'2h', got 5",
        "p.yaml:16:12: spec.analysis.alpha: input should be less than 0.5, got 0.7",
    ]


def test_bad_documents_do_not_hide_each_other() -> None:
    first = variant("alpha: 0.01", "alpha: 0")
    second = variant("name: demo", "name: other").replace("interval: 1m", "interval: 5")
    with pytest.raises(PolicyError) as info:
        load_policies_text(first + "---\n" + second, "p.yaml")
    assert [str(p) for p in info.value.problems] == [
        "p.yaml:16:12: spec.analysis.alpha: input should be greater than 0, got 0",
        "p.yaml:41:15: spec.analysis.interval: expected a duration such as '30s', '5m' or "
        "'2h', got 5",
    ]


def test_valid_base_loads_with_its_line() -> None:
    loaded = load_policies_text(BASE + "---\n" + variant("name: demo", "name: b"), "p.yaml")
    assert [(lp.policy.name, lp.line) for lp in loaded] == [("demo", 1), ("b", 27)]
    assert loaded[0].policy.spec.analysis.interval == 60.0


def test_not_utf8_file(tmp_path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError) as info:
        load_policy_file(f)
    assert [str(p) for p in info.value.problems] == [
        f"{f}: not UTF-8 text (invalid continuation byte)"
    ]
