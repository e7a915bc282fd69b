"""The daemon's own Prometheus metrics (``/metrics``), in one registry per daemon.

Every name here is documented in docs/kubernetes.md and used by the Grafana dashboard in
deploy/; a test checks that each PromQL there names one of them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from canaryd.controller import Phase, RolloutState
from canaryd.identity import RolloutKey


class DaemonMetrics:
    """The daemon's metrics, in their own registry (tests stay isolated)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "canaryd_decisions_total",
            "Controller decisions taken, by action.",
            ["namespace", "name", "action"],
            registry=r,
        )
        self.evidence = Gauge(
            "canaryd_evidence",
            "The sequential judge's e-value per metric (rollback at 1/alpha).",
            ["namespace", "name", "metric"],
            registry=r,
        )
        self.errors = Counter(
            "canaryd_reconcile_errors_total",
            "Rollouts whose reconciliation failed in a tick (the others were unaffected).",
            ["namespace", "name"],
            registry=r,
        )
        self.conflicts = Counter(
            "canaryd_state_conflicts_total",
            "State writes that lost to a concurrent writer (re-read at the next tick).",
            ["namespace", "name"],
            registry=r,
        )
        self.state_writes = Counter(
            "canaryd_state_writes_total",
            "State documents written, by why: decision, checkpoint, applied, adopt.",
            ["why"],
            registry=r,
        )
        self.refused = Gauge(
            "canaryd_rollouts_refused",
            "Rollouts canaryd will not act on now (conflicting policies, untrusted state).",
            ["namespace", "name", "why"],
            registry=r,
        )
        self.ticks = Counter("canaryd_ticks_total", "Reconcile ticks run.", registry=r)
        self.tick_seconds = Gauge(
            "canaryd_last_tick_duration_seconds", "Duration of the last tick.", registry=r
        )
        self.tick_duration = Histogram(
            "canaryd_tick_duration_seconds",
            "Wall time of reconcile ticks.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.windows = Counter(
            "canaryd_analysis_windows_total",
            "Analysis windows judged, by whether they had usable data.",
            ["usable"],
            registry=r,
        )
        self.rollouts = Gauge(
            "canaryd_rollouts", "Rollouts with a policy, by phase.", ["phase"], registry=r
        )
        self._observed: dict[RolloutKey, tuple[Phase, int]] = {}
        self._observed_lock = threading.Lock()
        r.register(_RolloutStates(self))

    def observe_state(self, key: RolloutKey, state: RolloutState) -> None:
        """Record the rollout's phase and weight for ``canaryd_rollout_phase`` and
        ``canaryd_canary_weight`` (read at each scrape)."""
        with self._observed_lock:
            self._observed[key] = (state.phase, state.weight)

    def forget(self, key: RolloutKey) -> None:
        """Drop a rollout's phase and weight series (its policy is gone)."""
        with self._observed_lock:
            self._observed.pop(key, None)

    def observed(self) -> list[tuple[RolloutKey, Phase, int]]:
        """(rollout, phase, weight as exposed) for every rollout observed, in the order first
        seen. The weight of a promoted rollout is 100, of a rolled-back one 0."""
        with self._observed_lock:
            items = list(self._observed.items())
        out = []
        for key, (phase, weight) in items:
            if phase is Phase.PROMOTED:
                weight = 100
            elif phase is Phase.ROLLED_BACK:
                weight = 0
            out.append((key, phase, weight))
        return out


class _RolloutStates:
    """``canaryd_rollout_phase`` and ``canaryd_canary_weight``, built at each scrape from the
    states ``DaemonMetrics`` observed.

    The same series as two labelled Gauges would give (one per rollout and phase, 1 for the
    current phase and 0 for the others; one weight per rollout), without keeping a child
    object, lock and value per series: eight per rollout cost about 6 KB, 6 MB at 1,000
    rollouts (DESIGN-NOTES.md, "Memory per rollout").
    """

    PHASE = ("canaryd_rollout_phase", "1 for the rollout's current phase, 0 for the others.")
    WEIGHT = ("canaryd_canary_weight", "The canary's traffic percent as canaryd last set it.")

    def __init__(self, metrics: DaemonMetrics) -> None:
        self._metrics = metrics

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(*self.PHASE, labels=["namespace", "name", "phase"]),
            GaugeMetricFamily(*self.WEIGHT, labels=["namespace", "name"]),
        )

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        phase_f, weight_f = self._families()
        phases = list(Phase)
        for key, phase, weight in self._metrics.observed():
            for ph in phases:
                phase_f.add_metric([key.namespace, key.name, ph.value], 1.0 if ph is phase else 0.0)
            weight_f.add_metric([key.namespace, key.name], float(weight))
        yield phase_f
        yield weight_f
