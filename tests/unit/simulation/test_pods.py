"""The simulator's pods: per-replica effects, per-pod counts, and scenarios that cannot have them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canaryd.controller import RolloutController
from canaryd.errors import ScenarioError
from canaryd.observation import Observation
from canaryd.simulation import engine
from canaryd.simulation.defaults import default_policy
from canaryd.simulation.engine import simulate
from canaryd.simulation.pods import PodDraws
from canaryd.simulation.scenario import Pods, load_scenario
from canaryd.stats.pods import PodSpread

SCENARIO = """
duration: 30m
tick: 10s
traffic: {rps: 20}
buckets: istio
stable:
  errorRate: 0.01
  latency: {lognormal: {medianMs: 80, sigma: 0.5}}
pods: {stable: 4, canary: 1, latencyCv: 0.2, errorRateSpread: 2}
"""


def _scenario(tmp_path: Path, text: str = SCENARIO) -> Any:
    p = tmp_path / "pods.yaml"
    p.write_text(text, encoding="utf-8")
    return load_scenario(p)


def test_pod_effects_follow_the_spec() -> None:
    draws = PodDraws(
        Pods(stable=4, canary=2, latency_cv=0.3, error_rate_spread=2.0),
        5000,
        1,
        (10.0, float("inf")),
    )
    m = np.concatenate([draws.error_multiplier[0].ravel(), draws.error_multiplier[1].ravel()])
    assert m.min() >= 0.5 and m.max() <= 2.0
    assert np.std(np.log(m)) == pytest.approx(np.log(2) / np.sqrt(3), rel=0.03)
    scale = draws.latency_scale[0].ravel()
    assert scale.mean() == pytest.approx(1.0, abs=0.01)
    assert scale.std() / scale.mean() == pytest.approx(0.3, rel=0.05)
    assert draws.names == (
        ("stable-pod-0", "stable-pod-1", "stable-pod-2", "stable-pod-3"),
        ("canary-pod-0", "canary-pod-1"),
    )


def test_observations_carry_pods_that_add_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Observation] = []

    class Recording(RolloutController):
        def step(self, state: Any, t: float, obs: Observation | None = None) -> Any:
            if obs is not None and obs.usable:
                seen.append(obs)
            return super().step(state, t, obs)

    monkeypatch.setattr(engine, "RolloutController", Recording)
    sc, base = _scenario(tmp_path)
    simulate(sc, default_policy(), base, runs=3, seed=2)
    assert seen
    for obs in seen:
        for vc, k in ((obs.stable, 4), (obs.canary, 1)):
            assert vc is not None and len(vc.pods) == k
            assert sum(p.requests for p in vc.pods) == vc.requests
            assert sum(p.errors for p in vc.pods) == vc.errors
            summed = np.sum([p.bucket_counts for p in vc.pods], axis=0)
            assert summed.tolist() == list(vc.bucket_counts)
        assert obs.validated().usable


def test_pods_reach_the_verdicts_and_are_seeded(tmp_path: Path) -> None:
    sc, base = _scenario(tmp_path)
    a = simulate(sc, default_policy(), base, runs=4, seed=5).to_dict()
    assert a == simulate(sc, default_policy(), base, runs=4, seed=5).to_dict()
    errors = next(v for v in a["last_verdicts"] if v["metric"] == "errors")
    assert errors["details"]["stable_pods"] == 4
    assert errors["details"]["canary_pods"] == 1


def test_without_pods_no_pod_counts(tmp_path: Path) -> None:
    sc, base = _scenario(
        tmp_path,
        SCENARIO.replace("pods: {stable: 4, canary: 1, latencyCv: 0.2, errorRateSpread: 2}\n", ""),
    )
    a = simulate(sc, default_policy(), base, runs=2, seed=5).to_dict()
    errors = next(v for v in a["last_verdicts"] if v["metric"] == "errors")
    assert "cannot tell pods apart" in errors["details"]["pods"]
    # Nor does any reason speak of pods it never saw (it once claimed an assumed x4).
    for v in a["last_verdicts"]:
        assert "cannot tell pods apart" in v["details"]["pods"]
        assert "pods differ" not in v["reason"] and "stable pods" not in v["reason"], v


def test_pods_are_refused_for_llm_scenarios(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[3] / "simulations" / "llm-vllm.yaml").read_text()
    p = tmp_path / "llm.yaml"
    p.write_text(text + "\npods: {stable: 2}\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    assert "pods" in str(exc.value) and "llm" in str(exc.value)


def test_closed_loop_aa_on_differing_pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemon's controller and judges, default policy, 1 canary pod vs 4 stable pods,
    # latency CV 30 %, error rates x1/2..x2 across pods, 200 healthy two-hour runs.
    text = SCENARIO.replace("duration: 30m", "duration: 2h").replace(
        "pods: {stable: 4, canary: 1, latencyCv: 0.2, errorRateSpread: 2}",
        "pods: {stable: 4, canary: 1, latencyCv: 0.3, errorRateSpread: 2}",
    )
    sc, base = _scenario(tmp_path, text)
    after = simulate(sc, default_policy(), base, runs=200, seed=1).outcomes["rolled_back"]
    monkeypatch.setattr(PodSpread, "add", lambda self, stable, canary: None)  # pods unseen
    before = simulate(sc, default_policy(), base, runs=200, seed=1).outcomes["rolled_back"]
    # Seeded: 0 of 200 after (with the policy's 2h of stable history, the warm-up, and with
    # `warmup: 0s`), 79 of 200 when the judges ignore the pods.
    assert after <= 8
    assert before >= 60
