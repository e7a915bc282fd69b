"""The progress bar's ETA: the recent rate of worked units, and none before a few updates."""

from __future__ import annotations

import io

from canaryd.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def bar(total: int, clock: Clock, **kw: float) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    return Progress(total, "simulating", file=out, clock=clock, **kw), out


def test_no_eta_before_a_few_updates_over_a_second() -> None:
    clock = Clock()
    p, _ = bar(1000, clock)
    with p:
        for _ in range(4):
            clock.t += 1.0
            p.update(10)
            assert p.eta_s() is None
        clock.t += 1.0
        p.update(10)
        assert p.eta_s() is not None
    fast, _ = bar(1000, clock)
    with fast:
        for _ in range(10):
            clock.t += 0.01  # ten updates within a tenth of a second: still too little to tell
            fast.update(10)
        assert fast.eta_s() is None


def test_the_eta_follows_the_recent_rate_not_the_average_since_the_start() -> None:
    """The simulator's case: slow first intervals (every run active), then fast ones."""
    clock = Clock()
    p, _ = bar(720, clock, window_s=10.0)
    with p:
        clock.t = 30.0  # set-up before the first update is not progress
        for _ in range(12):  # 12 slow updates: 2 s for 6 units each
            clock.t += 2.0
            p.update(6)
        for _ in range(40):  # then 0.25 s per 6 units
            clock.t += 0.25
            p.update(6)
        left = 720 - p.pos
        eta = p.eta_s()
        assert eta is not None
        # The recent rate is 24 units/s; the average since the start would be about 4.4.
        assert abs(eta - left / 24.0) < 1e-9
        average = p.pos / clock.t
        assert eta < left / average / 4


def test_the_bar_draws_on_its_file_and_ends_with_the_elapsed_time() -> None:
    clock = Clock()
    p, out = bar(100, clock, redraw_s=0.0)
    with p:
        for _ in range(10):
            clock.t += 1.0
            p.update(10)
    text = out.getvalue()
    assert "ETA ..." in text and "at most 0s left" in text
    assert text.endswith("simulating [" + "#" * 30 + "] 100%  done in 10s\n")
    assert p.pos == 100


def test_skipped_work_moves_the_bar_but_not_the_rate() -> None:
    """Runs that reach a decision skip the rest: progress, but no evidence of speed."""
    clock = Clock()
    p, _ = bar(10_000, clock)
    with p:
        for _ in range(10):
            clock.t += 1.0
            p.update(100)  # 100 run-intervals a second
        assert p.rate() == 100.0
        clock.t += 1.0
        p.update(100, skipped=5000)  # half the runs decided: their remaining intervals are done
        assert p.pos == 6100 and p.worked == 1100
        assert p.rate() == 100.0
        assert p.eta_s() == (10_000 - 6100) / 100.0


def test_the_simulator_reports_every_run_interval_once() -> None:
    from pathlib import Path

    from canaryd.simulation.defaults import default_policy
    from canaryd.simulation.engine import simulate
    from canaryd.simulation.scenario import load_scenario

    sc, base = load_scenario(
        Path(__file__).resolve().parents[2] / "simulations/error-regression.yaml"
    )
    calls: list[tuple[int, int]] = []
    simulate(
        sc, default_policy(), base, runs=20, seed=1, progress=lambda w, s: calls.append((w, s))
    )
    intervals = int(sc.duration // sc.tick) // 6  # 1m intervals of 10 s ticks
    assert sum(w + s for w, s in calls) == 20 * intervals
    assert calls[0] == (20, 0)  # every run is stepped in the first interval
    assert sum(s for _, s in calls) > 0  # and they all roll back well before the end
