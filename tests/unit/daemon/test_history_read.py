"""The daemon reads stable's history once, before judging a rollout's first window."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation

from .test_tick import KEY, Source, World, loaded, policy_yaml


class RecordingSource(Source):
    """``Source``, also keeping every request, and answering no data before ``down_until``."""

    def __init__(self, down_until: float = -1e18) -> None:
        super().__init__()
        self.requests: list[tuple[float, float, FetchRequest]] = []
        self.down_until = down_until

    def fetch(
        self, requests: Sequence[FetchRequest], start_s: float, end_s: float
    ) -> dict[Hashable, Observation]:
        self.requests.extend((start_s, end_s, r) for r in requests)
        if end_s <= self.down_until:
            self.windows.append((start_s, end_s))
            return {r.key: Observation(start_s, end_s, no_data_reason="down") for r in requests}
        return super().fetch(requests, start_s, end_s)


LATENCY_FREE = policy_yaml(weights="[10, 25]").replace("minDwell: 60s", "minDwell: 1h")


def test_history_is_read_once_for_stable_only_and_ends_at_the_first_window() -> None:
    w = World(loaded(LATENCY_FREE))
    w.source = RecordingSource()
    w.restart()
    for t in (0.0, 60.0, 120.0, 180.0):
        w.rec.tick(t)
    history = [(a, b, r) for a, b, r in w.source.requests if r.stable_only]
    assert [(a, b) for a, b, _ in history] == [(-7200.0, 0.0)]  # the default 2h, once
    (_, _, req), *_ = history
    assert req.canary_revision == req.stable_revision == "m-00001"
    live = w.rec._rollouts[KEY].doc
    assert live is not None and live.state.pre_canary_requests == 1800 * 120
    assert w.doc()["state"]["pre_canary_requests"] == 1800 * 120  # written with the evidence


def test_no_history_when_the_policy_says_0s() -> None:
    text = LATENCY_FREE.replace("    interval: 60s\n", "    interval: 60s\n    history: 0s\n")
    w = World(loaded(text))
    w.source = RecordingSource()
    w.restart()
    for t in (0.0, 60.0, 120.0):
        w.rec.tick(t)
    assert not any(r.stable_only for _, _, r in w.source.requests)
    live = w.rec._rollouts[KEY].doc
    assert live is not None and live.state.pre_canary_requests is None


def test_history_unavailable_is_noted_and_not_retried() -> None:
    w = World(loaded(LATENCY_FREE))
    w.source = RecordingSource(down_until=0.0)  # Prometheus had nothing before the start
    w.restart()
    for t in (0.0, 60.0, 120.0):
        w.rec.tick(t)
    assert sum(r.stable_only for _, _, r in w.source.requests) == 1
    live = w.rec._rollouts[KEY].doc
    assert live is not None and live.state.pre_canary_requests == 0.0
    assert live.state.pre_canary_note == "no stable history before the canary (down)"
    assert live.state.intervals == 2  # the windows were judged all the same
