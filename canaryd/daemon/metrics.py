"""The daemon's own Prometheus metrics (``/metrics``), in one registry per daemon.

Every name here is documented in docs/kubernetes.md and used by the Grafana dashboard in
deploy/; a test checks that each PromQL there names one of them.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.weight = Gauge(
            "canaryd_canary_weight",
            "The canary's traffic percent as canaryd last set it.",
            ["namespace", "name"],
            registry=r,
        )
        self.evidence = Gauge(
            "canaryd_evidence",
            "The sequential judge's e-value per metric (rollback at 1/alpha).",
            ["namespace", "name", "metric"],
            registry=r,
        )
        self.phase = Gauge(
            "canaryd_rollout_phase",
            "1 for the rollout's current phase, 0 for the others.",
            ["namespace", "name", "phase"],
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

    def observe_state(self, key: RolloutKey, state: RolloutState) -> None:
        """Set the phase and weight gauges (only when they changed: label lookups cost)."""
        if self._observed.get(key) == (state.phase, state.weight):
            return
        self._observed[key] = (state.phase, state.weight)
        for ph in Phase:
            self.phase.labels(key.namespace, key.name, ph.value).set(
                1.0 if ph is state.phase else 0.0
            )
        weight = state.weight
        if state.phase is Phase.PROMOTED:
            weight = 100
        elif state.phase is Phase.ROLLED_BACK:
            weight = 0
        self.weight.labels(key.namespace, key.name).set(weight)

    def forget(self, key: RolloutKey) -> None:
        """Drop a rollout's labelled series (its policy is gone)."""
        self._observed.pop(key, None)
        for ph in Phase:
            _remove(self.phase, key.namespace, key.name, ph.value)
        _remove(self.weight, key.namespace, key.name)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
