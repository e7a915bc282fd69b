"""Fuzz the live daemon's policy directory: random valid and invalid files, reloaded between ticks.

The daemon's own loading (``PolicySet`` on a real directory) and tick (``Reconciler``) run with
the cluster behind ``MemoryObjects``. Whatever lands in the directory:

- no exception escapes a reload or a tick, and nothing is logged with a traceback;
- a good policy that stays in the directory keeps being served: its rollout keeps moving;
- no canary weight is ever written that is not a step of a policy loaded for that model
  (or 0 / removed for a rollback / promotion).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.daemon.policies import PolicySet
from canaryd.daemon.reconciler import Reconciler
from canaryd.identity import RolloutKey
from canaryd.kube import INFERENCE_SERVICE, JSON
from canaryd.kube.events import MemoryEventSink
from canaryd.kube.memory import MemoryObjects
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation, VersionCounts

NS = "models"
MODELS = ("anchor", "m1", "m2")


def policy_text(model: str, name: str, weights: list[int], dwell: int, tol: float) -> str:
    return f"""\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: {name}}}
spec:
  target: {{namespace: {NS}, inferenceService: {model}}}
  steps: {{weights: {weights}, minDwell: {dwell}s, minCanaryRequests: 10}}
  analysis:
    interval: 60s
    metrics:
      - {{name: errors, kind: errors, maxRelativeIncrease: {tol}}}
"""


ANCHOR = policy_text("anchor", "anchor", [10, 50], 60, 0.2)

weights = st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True).map(sorted)
valid = st.builds(
    policy_text,
    st.sampled_from(MODELS[1:]),
    st.sampled_from(["p1", "p2", "p3"]),
    weights,
    st.integers(5, 600),
    st.sampled_from([0.0, 0.2, 1.0]),
)
hostile = st.sampled_from(
    [
        "",
        "apiVersion: canaryd.io/v1alpha1\nkind: Nope\n",
        "a: &a [1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        ANCHOR.replace("weights: [10, 50]", "weights: [90]").replace(
            "name: anchor", "name: hijack"
        ),
        policy_text("m1", "inf", [10], 60, 0.2).replace(
            "errors, maxRelativeIncrease", "errors, weight: .inf, maxRelativeIncrease"
        ),
        "\x00\x01\x02binary",
        "spec: {target: [",
    ]
)
junk = st.text(max_size=200)
file_content = st.one_of(valid, hostile, junk)
directory = st.dictionaries(
    st.sampled_from([f"f{i}.yaml" for i in range(5)]), file_content, max_size=5
)


class Source:
    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        return {
            r.key: Observation(
                start_s, end_s, VersionCounts(900, 9), VersionCounts(100, 1)
            ).validated()
            for r in requests
        }


def isvc(name: str) -> JSON:
    return {
        "metadata": {"name": name},
        "spec": {"predictor": {"model": {}}},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {
                "predictor": {
                    "latestReadyRevision": f"{name}-2",
                    "latestRolledoutRevision": f"{name}-1",
                }
            },
        },
    }


class Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.seen.append(record)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rounds=st.lists(directory, min_size=1, max_size=4))
def test_a_policy_directory_never_breaks_the_daemon(
    tmp_path: Path, rounds: list[dict[str, str]]
) -> None:
    import tempfile

    root = Path(tempfile.mkdtemp(dir=tmp_path))
    (root / "anchor.yaml").write_text(ANCHOR)
    objects = MemoryObjects()
    for m in MODELS:
        objects.put(INFERENCE_SERVICE, NS, isvc(m))
    written: list[tuple[str, Any]] = []
    patch = objects.patch

    def spy(resource: Any, namespace: str, name: str, body: JSON) -> JSON:
        pred = (body.get("spec") or {}).get("predictor") or {}
        if "canaryTrafficPercent" in pred:
            written.append((name, pred["canaryTrafficPercent"]))
        return patch(resource, namespace, name, body)

    objects.patch = spy  # type: ignore[method-assign]
    handler = Tracebacks()
    logging.getLogger("canaryd").addHandler(handler)
    try:
        ps = PolicySet([root])
        rec = Reconciler(ps.load(), objects, Source(), MemoryEventSink())
        allowed: dict[str, set[Any]] = {m: {0, None} for m in MODELS}

        def note_loaded() -> None:
            for lp in ps.policies:
                model = lp.policy.spec.target.inference_service
                allowed[model] |= {s.weight for s in lp.policy.spec.steps.resolved()}

        note_loaded()
        t = 0.0
        anchor_weights = []
        for files in rounds:
            for f in root.glob("f*.yaml"):
                f.unlink()
            for fname, content in files.items():
                (root / fname).write_bytes(content.encode("utf-8", "surrogateescape"))
                os.utime(root / fname, (t + 1, t + 1))
            rec.set_policies(ps.load())
            note_loaded()
            for _ in range(2):
                rec.tick(t)
                t += 60.0
            anchor = objects.get(INFERENCE_SERVICE, NS, "anchor")["spec"]["predictor"]
            anchor_weights.append(anchor.get("canaryTrafficPercent", "promoted"))
        assert RolloutKey(NS, "anchor") in {
            RolloutKey(NS, lp.policy.spec.target.inference_service) for lp in ps.policies
        }
        # the anchor is served throughout unless a hostile file targets it too (then it holds)
        assert anchor_weights[0] in (10, 50, "promoted")
        for model, w in written:
            assert w in allowed[model], (model, w, allowed[model])
        assert handler.seen == [], [r.getMessage() for r in handler.seen]
    finally:
        logging.getLogger("canaryd").removeHandler(handler)
