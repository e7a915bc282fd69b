"""Every query of deploy/grafana-dashboard.json against a real Prometheus scraping the daemon.

The daemon's own HTTP server (``HealthServer``) serves its ``DaemonMetrics`` registry on
127.0.0.1; a real Prometheus scrapes it every second. Each panel query (Grafana's variables
replaced as Grafana would with "All" selected) must be accepted and return series, and each
``label_values`` variable must list values.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from canaryd.controller.state import Phase, RolloutState
from canaryd.daemon.server import HealthServer
from canaryd.state.base import RolloutKey
from tests.dashboard import daemon_metrics, dashboard, panel_queries, variable_queries

from .conftest import _need_binaries, free_port

pytestmark = pytest.mark.integration

GRAFANA = {"$namespace": ".*", "$rollout": ".*", "$__rate_interval": "20s", "$__range": "1m"}


def grafana(expr: str) -> str:
    for var, value in GRAFANA.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


@pytest.fixture(scope="module")
def scraped() -> Iterator[str]:
    metrics = daemon_metrics()
    for name, phase, weight in (
        ("iris", Phase.PROGRESSING, 25),
        ("llm", Phase.ROLLED_BACK, 10),
        ("bert", Phase.PROMOTED, 50),
        ("gpt", Phase.PAUSED, 5),
    ):
        key = RolloutKey("models", name)
        metrics.observe_state(key, RolloutState(phase=phase, weight=weight))
        metrics.evidence.labels("models", name, "errors").set(0.5)
        metrics.decisions.labels("models", name, "set_weight").inc()
    metrics.decisions.labels("models", "llm", "rollback").inc()
    metrics.decisions.labels("models", "bert", "promote").inc()
    metrics.errors.labels("models", "iris").inc()
    metrics.conflicts.labels("models", "iris").inc()
    metrics.tick_seconds.set(0.12)
    metrics.tick_duration.observe(0.12)
    metrics.state_writes.labels("decision").inc()
    metrics.refused.labels("models", "gpt", "state").set(1)
    for usable in ("true", "false"):
        metrics.windows.labels(usable).inc()
    server = HealthServer(
        metrics.registry, alive=lambda: True, ready=lambda: None, host="127.0.0.1", port=0
    ).start()
    _need_binaries()
    work = Path(tempfile.mkdtemp(prefix="canaryd-grafana-"))
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: canaryd\n    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--config.file={config}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            # Tick between scrapes, as the daemon does, until Prometheus has a few samples.
            metrics.ticks.inc()
            metrics.tick_duration.observe(0.1)
            metrics.state_writes.labels("checkpoint").inc()
            metrics.windows.labels("true").inc()
            metrics.windows.labels("false").inc()
            try:
                got = requests.get(
                    f"{url}/api/v1/query",
                    params={"query": "count_over_time(canaryd_ticks_total[1m])"},
                    timeout=2,
                ).json()
                res = got.get("data", {}).get("result", [])
                if res and float(res[0]["value"][1]) >= 5:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Prometheus did not scrape the daemon within 90s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


PANELS = panel_queries(dashboard())
VARIABLES = variable_queries(dashboard())


@pytest.mark.parametrize(("title", "expr"), PANELS, ids=[t for t, _ in PANELS])
def test_every_panel_query_returns_series(scraped: str, title: str, expr: str) -> None:
    got = requests.get(f"{scraped}/api/v1/query", params={"query": grafana(expr)}, timeout=10)
    body = got.json()
    assert got.status_code == 200 and body["status"] == "success", body
    assert body["data"]["result"], f"{title}: {grafana(expr)} returned nothing"


@pytest.mark.parametrize(("name", "query"), VARIABLES, ids=[n for n, _ in VARIABLES])
def test_every_variable_lists_values(scraped: str, name: str, query: str) -> None:
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", grafana(query))
    assert m, f"${name}: expected label_values(selector, label), got {query!r}"
    got = requests.get(
        f"{scraped}/api/v1/label/{m.group(2)}/values", params={"match[]": m.group(1)}, timeout=10
    ).json()
    assert got["status"] == "success" and got["data"], got
