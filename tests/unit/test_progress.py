"""The progress bar's ETA: the recent rate, and none before a few updates."""

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
    assert "ETA ..." in text and "ETA 0s" in text
    assert text.endswith("simulating [" + "#" * 30 + "] 100%  done in 10s\n")
    assert p.pos == 100
