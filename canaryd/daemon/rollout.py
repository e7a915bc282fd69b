"""One rollout as the daemon holds it between ticks: live judges, the stored document, the grid.

The daemon keeps every rollout's state **in memory** between ticks (the controller keeps its
judges live, so nothing is rebuilt from JSON per interval) and writes the document only when it
must (see ``canaryd.daemon.reconciler`` for the durability rules). ``version`` is the
resourceVersion of the document as this daemon last wrote or read it: when the stored version
differs (another daemon, a human, a deleted ConfigMap), the in-memory state is dropped and the
stored one adopted again.

**The analysis grid.** Windows are ``[k*I, (k+1)*I)`` in epoch seconds for the policy's interval
``I``: every daemon, restarted or not, cuts the same windows, and all rollouts with one interval
share them (one batched fetch). A window is judged once its end is ``settle_s`` in the past (so
the scrapes of its last seconds have landed), and every decision is dated at the end of the
window it follows. ``window_end`` (stored) is the end of the last window whose evidence the
state holds; a restarted daemon judges the windows after it, in order, so no window is counted
twice or skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from canaryd.controller import RolloutController
from canaryd.identity import RolloutKey
from canaryd.policy.loader import LoadedPolicy
from canaryd.policy.model import CanaryPolicy
from canaryd.reasons import Reason
from canaryd.routing import TrafficRouter
from canaryd.state.document import Fingerprint, StateDoc


def grid_floor(t: float, interval: float) -> float:
    """The grid point at or before ``t``."""
    return math.floor(t / interval + 1e-9) * interval


@dataclass(frozen=True)
class Window:
    start: float
    end: float


@dataclass
class Rollout:
    """The daemon's live copy of one rollout."""

    key: RolloutKey
    loaded: LoadedPolicy
    controller: RolloutController
    router: TrafficRouter
    fingerprint: Fingerprint
    doc: StateDoc | None = None
    version: str | None = None
    """resourceVersion of the stored document as last written/read (None: none stored)."""
    uid: str = ""
    """uid of the InferenceService the in-memory state belongs to."""
    trusted: bool = True
    """False while the stored document is unusable: nothing is acted on until it is fixed."""
    dirty: int = 0
    """Windows judged since the document was last written (checkpoint every K)."""
    pending_done: bool = False
    """The stored pending action has been applied (and its Event recorded) by this daemon."""
    series: Reason | None = None
    """The reason of the Event series this daemon is counting for the rollout (repeated holds
    such as AnalysisInconclusive are one Event with a count, not one per interval)."""
    series_inherited: bool = False
    """The series was started by an earlier daemon: its Event stands and is not repeated."""
    aborted: bool = False
    quiet: tuple[str, str | None, str | None] | None = None
    """(InferenceService resourceVersion, stored document version, own version) when a tick
    last found nothing to do: until one of them changes, a window falls due or an annotation
    appears, the tick skips the rollout without parsing anything."""

    @property
    def policy(self) -> CanaryPolicy:
        return self.loaded.policy

    @property
    def interval(self) -> float:
        return self.policy.spec.analysis.interval

    def due(self, now: float, settle_s: float) -> bool:
        """Whether a window is due (a PENDING rollout is always due: it starts)."""
        assert self.doc is not None
        if self.doc.window_end is None:
            return True
        return self.doc.window_end + self.interval <= now - settle_s + 1e-9

    def due_windows(self, now: float, settle_s: float, max_windows: int) -> list[Window]:
        """The windows after ``window_end`` whose end is at least ``settle_s`` ago (oldest first).

        A rollout more than ``max_windows`` behind catches up over several ticks.
        """
        assert self.doc is not None
        start = self.doc.window_end
        if start is None:
            return []
        i = self.interval
        out: list[Window] = []
        while start + i <= now - settle_s + 1e-9 and len(out) < max_windows:
            out.append(Window(start, start + i))
            start += i
        return out

    def with_doc(self, **changes: object) -> StateDoc:
        assert self.doc is not None
        return replace(self.doc, **changes)  # type: ignore[arg-type]
