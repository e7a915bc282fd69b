"""Every PromQL in deploy/grafana-dashboard.json names only metrics the daemon exports.

The names come from the daemon's registry at test time (tests/dashboard.py). A real Prometheus
scraping the daemon's /metrics runs every query in tests/integration/prometheus.
"""

from __future__ import annotations

import pytest

from tests.dashboard import (
    daemon_metrics,
    dashboard,
    exported_names,
    metric_names,
    panel_queries,
    variable_queries,
)


def test_the_metric_name_reader() -> None:
    assert metric_names(
        'sum by (namespace, name) (rate(canaryd_x_total{name=~"$rollout"}[$__rate_interval]))'
    ) == {"canaryd_x_total"}
    assert metric_names("canaryd_a / on (name) group_left canaryd_b > 5") == {
        "canaryd_a",
        "canaryd_b",
    }
    assert metric_names('max by (phase) (canaryd_p{a="b"} == 1) offset 5m') == {"canaryd_p"}
    assert metric_names('label_values(canaryd_p{namespace=~"$ns"}, name)') == {"canaryd_p"}
    assert metric_names("label_values(namespace)") == set()
    assert metric_names("up") == {"up"}


def test_the_registry_names_are_read_with_their_suffixes() -> None:
    names = exported_names(daemon_metrics().registry)
    assert "canaryd_decisions_total" in names and "canaryd_decisions" not in names
    assert "canaryd_canary_weight" in names


QUERIES = panel_queries(dashboard()) + variable_queries(dashboard())


def test_the_dashboard_has_queries() -> None:
    assert len(panel_queries(dashboard())) >= 10 and len(variable_queries(dashboard())) == 2


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_query_names_a_metric_the_daemon_exports(where: str, expr: str) -> None:
    exported = exported_names(daemon_metrics().registry)
    names = metric_names(expr)
    assert names, f"{where}: {expr!r} names no metric"
    assert names <= exported, f"{where}: {sorted(names - exported)} are not exported"
