"""A one-line terminal progress bar whose ETA is honest.

Work comes in two kinds: units *worked* (they took time) and units *skipped* (done without
work: a simulated run that reached a decision skips the rest of the scenario). The bar shows
both; the ETA divides what is left by the *recent* rate of worked units only, over the last
``window_s`` seconds. So the ETA is what the rest costs if nothing more is skipped: an upper
bound that shrinks as runs finish early, shown as "at most ... left". An average from the start
(click's bar) counts set-up time and the slow first intervals, and a skip would look like a
burst of speed; ``simulate --runs 2000`` once said 14 minutes for a 69 s run that way. No ETA
is shown before ``min_updates`` updates spanning at least ``min_span_s``: a rate from one or two
samples is a guess.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable
from typing import TextIO

from canaryd.durations import format_duration


class Progress:
    """``with Progress(total, label) as bar: bar.update(n)``; draws on ``file`` (a terminal).

    ``clock`` is injectable for tests. Redraws at most every ``redraw_s`` seconds, and once
    more when the bar closes (with the elapsed time instead of an ETA).
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        file: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = 15.0,
        min_updates: int = 5,
        min_span_s: float = 1.0,
        redraw_s: float = 0.2,
        width: int = 30,
    ) -> None:
        self.total = max(0, total)
        self.label = label
        self.pos = 0
        self.worked = 0
        self.updates = 0
        self._file = file if file is not None else sys.stderr
        self._clock = clock
        self._window_s = window_s
        self._min_updates = min_updates
        self._min_span_s = min_span_s
        self._redraw_s = redraw_s
        self._width = width
        self._started = clock()
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._drawn_at: float | None = None

    def __enter__(self) -> Progress:
        self._started = self._clock()
        self._draw(self._started)
        return self

    def __exit__(self, *exc: object) -> None:
        now = self._clock()
        self._file.write("\r" + self.line(now, final=True) + "\n")
        self._file.flush()

    def update(self, n: int, skipped: int = 0) -> None:
        """``n`` more units were worked, and ``skipped`` more are done without work."""
        now = self._clock()
        self.pos = min(self.total, self.pos + max(0, n) + max(0, skipped))
        self.worked += max(0, n)
        self.updates += 1
        self._samples.append((now, self.worked))
        # Keep the samples inside the window, but always two to measure a rate from.
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window_s:
            self._samples.popleft()
        if self._drawn_at is None or now - self._drawn_at >= self._redraw_s:
            self._draw(now)

    def rate(self) -> float | None:
        """Worked units per second over the sliding window, or None while too little is known."""
        if self.updates < self._min_updates or len(self._samples) < 2:
            return None
        (t0, p0), (t1, p1) = self._samples[0], self._samples[-1]
        if t1 - t0 < self._min_span_s or p1 <= p0:
            return None
        return (p1 - p0) / (t1 - t0)

    def eta_s(self) -> float | None:
        """Seconds left at the recent rate if nothing more is skipped, or None (too early)."""
        if self.pos >= self.total:
            return 0.0
        r = self.rate()
        return None if r is None else (self.total - self.pos) / r

    def line(self, now: float, final: bool = False) -> str:
        frac = self.pos / self.total if self.total else 1.0
        filled = round(frac * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        elapsed = format_duration(now - self._started)
        if final:
            tail = f"done in {elapsed}"
        else:
            eta = self.eta_s()
            tail = f"{elapsed} elapsed, " + (
                "ETA ..." if eta is None else f"at most {format_duration(eta)} left"
            )
        return f"{self.label} [{bar}] {frac:4.0%}  {tail}"

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        # Pad so a shorter line fully covers the previous one.
        self._file.write("\r" + self.line(now).ljust(self._width + 50))
        self._file.flush()
