"""The notification schema is the documented one; the policy fields are the notifiable reasons;
risky endpoints get a lint warning."""

from __future__ import annotations

import json
import typing
from pathlib import Path

from click.testing import CliRunner

from canaryd.cli import main
from canaryd.controller import Action, Decision, Phase, RolloutState
from canaryd.notify import SCHEMA, decision_notice, render
from canaryd.policy.model import NOTIFIABLE, Webhook
from canaryd.reasons import Reason
from canaryd.stats.verdict import Status, Verdict

REPO = Path(__file__).resolve().parents[3]


def _notice() -> object:
    v = Verdict("latency", "sequential", Status.CONTINUE, "ok", estimate=1.02, e_value=float("nan"))
    d = Decision(Action.SET_WEIGHT, "step 2: 25%", 1_767_600_000.0, 25, Reason.WEIGHT_CHANGED, (v,))
    return decision_notice("ns", "m", "p", d, RolloutState("c", "s", Phase.PROGRESSING, 1, 25))


def _leaves(doc: object, prefix: str = "") -> list[str]:
    if isinstance(doc, dict):
        return [x for k, v in doc.items() for x in _leaves(v, f"{prefix}{k}.")]
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        return _leaves(doc[0], prefix[:-1] + "[].")
    return [prefix[:-1]]


def test_every_field_of_the_document_is_documented() -> None:
    doc = _notice().document()  # type: ignore[attr-defined]
    assert doc["schema"] == SCHEMA
    text = (REPO / "docs" / "notifications.md").read_text()
    missing = []
    for path in _leaves(doc):
        parent, _, leaf = path.rpartition(".")
        forms = [f"`{path}`", f"`{parent}.{leaf}`", f"`.{leaf}`", f"`{parent}.{leaf}`,"]
        if not parent:
            forms.append(f"`{leaf}`")
        if not any(f in text for f in forms):
            missing.append(path)
    assert not missing, f"not in docs/notifications.md: {missing}"


def test_non_finite_numbers_are_strings_and_the_body_is_strict_json() -> None:
    body = json.loads(render(_notice(), "json"))  # type: ignore[arg-type]
    assert body["verdicts"][0]["eValue"] == "NaN"
    assert (
        body["decision"]["reason"] == "WeightChanged" and body["decision"]["severity"] == "Normal"
    )


def test_notifiable_reasons_are_reasons() -> None:
    values = {r.value for r in Reason}
    assert set(NOTIFIABLE) <= values
    events = Webhook.model_fields["events"].annotation
    (listed,) = [a for a in typing.get_args(events) if a is not type(None)]
    assert set(typing.get_args(typing.get_args(listed)[0])) == set(NOTIFIABLE)
    assert Reason.AWAITING_CONFIRMATION.verb == "AwaitConfirmation"


POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: w}
spec:
  target: {namespace: models, inferenceService: w}
  analysis:
    source:
      preset: knative
      prometheus: http://thanos:9090
      auth: {bearerTokenFile: thanos/token}
      tls: {insecureSkipVerify: true}
  notifications:
    webhooks:
      - url: https://hooks.slack.com/services/T0/B0/xyz
      - url: https://alerts.example/hook?api_key=1
      - url: https://alerts.example/hook
"""


def test_risky_endpoints_and_transport_get_warnings(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text(POLICY)
    result = CliRunner().invoke(main, ["validate", str(f)])
    assert result.exit_code == 0, result.output
    warnings = [line.split(": warning: w: ", 1)[1] for line in result.output.splitlines()[:-1]]
    assert [w.split(":")[0] for w in warnings] == [
        "spec.analysis.source.tls.insecureSkipVerify",
        "spec.notifications.webhooks[0].url",
        "spec.notifications.webhooks[1].url",
        "spec.analysis.source.prometheus",
    ]
