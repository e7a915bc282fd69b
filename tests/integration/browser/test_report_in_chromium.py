"""The report is one file: it renders in a real Chromium and requests nothing but itself."""

from __future__ import annotations

import http.server
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.metrics.replay import write_trace
from canaryd.observation import Observation, VersionCounts
from tests.integration.browser.conftest import Chromium

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

PROBE = """(() => {
  const figs = [...document.querySelectorAll('figure.plot')];
  const svgs = figs.map(f => f.querySelector('svg')).filter(s => s);
  return {
    title: document.title,
    figures: figs.map(f => f.id),
    laid_out: svgs.filter(s => {
      const r = s.getBoundingClientRect();
      return r.width > 400 && r.height > 60;
    }).length,
    drawn: svgs.filter(s => s.querySelectorAll('path').length >= 5).length,
    resources: performance.getEntriesByType('resource').map(e => e.name),
    images: document.images.length,
    policy_chars: (document.getElementById('policy') || {textContent: ''}).textContent.length,
  };
})()"""


def _simulated(tmp: Path) -> Path:
    out = tmp / "sim.html"
    res = CliRunner().invoke(
        main,
        [
            "simulate",
            str(ROOT / "simulations" / "error-regression.yaml"),
            "--runs",
            "12",
            "--report",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    return out


def _replayed(tmp: Path) -> Path:
    bounds = (50.0, 100.0, math.inf)
    obs = [
        Observation(
            t - 60,
            t,
            VersionCounts(900, 4, bounds, (400.0, 800.0, 900.0)),
            VersionCounts(100, 30, bounds, (40.0, 80.0, 100.0)),
        )
        for t in range(60, 1800, 60)
    ]
    trace = tmp / "trace.csv"
    write_trace(trace, obs)
    out = tmp / "replay.html"
    res = CliRunner().invoke(
        main,
        [
            "replay",
            str(trace),
            "--policy",
            str(ROOT / "policies" / "llm-kserve.yaml"),
            "--report",
            str(out),
        ],
    )
    assert res.exit_code == 1, res.output  # rolled back
    return out


@pytest.mark.parametrize("make", [_simulated, _replayed], ids=["simulate", "replay"])
def test_report_renders_and_requests_nothing_but_itself(
    chromium: Chromium, tmp_path: Path, make: object
) -> None:
    assert callable(make)
    report: Path = make(tmp_path)
    # Alone in its directory: nothing is written beside it that it could depend on.
    others = {p.name for p in report.parent.iterdir()} - {report.name, "trace.csv"}
    assert others == set()
    url = report.resolve().as_uri()
    got = chromium.load(url, PROBE)
    assert got.requests == [url]
    assert got.failed == []
    p = got.probe
    assert p["resources"] == [] and p["images"] == 0
    assert p["title"].startswith("canaryd ")
    n = len(p["figures"])
    assert n >= 5, p["figures"]
    assert p["laid_out"] == n and p["drawn"] == n
    assert p["policy_chars"] > 200


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = b"body { color: #222; }"
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_check_sees_a_file_beside_the_page_and_a_network_request(
    chromium: Chromium, tmp_path: Path, http_server: tuple[str, list[str]]
) -> None:
    """The control: a page that is not self-contained is caught by the same check."""
    base, seen = http_server
    (tmp_path / "beside.svg").write_text(
        "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>"
    )
    page = tmp_path / "leaky.html"
    page.write_text(
        f"<!doctype html><html><head><link rel='stylesheet' href='{base}/style.css'></head>"
        "<body><img src='beside.svg'></body></html>"
    )
    url = page.resolve().as_uri()
    got = chromium.load(url, PROBE)
    assert got.requests[0] == url
    assert f"{base}/style.css" in got.requests
    assert (tmp_path / "beside.svg").resolve().as_uri() in got.requests
    assert seen == ["/style.css"]
    assert got.probe["images"] == 1
