"""A real headless Chromium on 127.0.0.1, driven over the DevTools protocol (CDP).

``chromium`` starts one browser for the module with a fresh ``--user-data-dir``, every
background service off, and ``--remote-debugging-port=0`` bound to 127.0.0.1; the port is read
from the profile's ``DevToolsActivePort``. ``Chromium.load(url)`` opens a new tab, records
every request the page makes (``Network.requestWillBeSent``, which includes ``file://`` and
``data:`` loads) and every failed load, waits for the load event and a quiet moment, and
evaluates a probe expression in the page. The client is websocket-client, which is installed
already (the kubernetes client depends on it).

Chromium is installed by ``scripts/install-chromium`` (as root, like Prometheus); a missing
browser fails these tests, it never skips them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

ROOT = Path(__file__).resolve().parents[3]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_binary() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [str(ROOT / "scripts" / "install-chromium")],
            check=False,
            timeout=900,
            capture_output=True,
        )
    found = shutil.which("chromium")
    if not found:
        pytest.fail("chromium is not installed (run scripts/install-chromium as root)")
    return found


@dataclass
class PageLoad:
    """What one page load did: every request URL, the failed ones, and the probe's value."""

    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    probe: Any = None


class Chromium:
    def __init__(self, binary: str) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="canaryd-chromium-"))
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port within 60s")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def load(self, url: str, probe: str, quiet_s: float = 0.5, timeout_s: float = 60) -> PageLoad:
        """Open ``url`` in a new tab; return its requests and ``probe`` evaluated in the page."""
        base = f"http://127.0.0.1:{self.port}"
        target = requests.put(f"{base}/json/new?about:blank", timeout=10).json()
        ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=timeout_s)
        out = PageLoad()
        ids = iter(range(1, 10_000))
        try:

            def call(method: str, **params: Any) -> Any:
                mid = next(ids)
                ws.send(json.dumps({"id": mid, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv())
                    if msg.get("id") == mid:
                        if "error" in msg:
                            raise RuntimeError(f"{method}: {msg['error']}")
                        return msg.get("result")
                    handle(msg)

            loaded = False

            def handle(msg: dict[str, Any]) -> None:
                nonlocal loaded
                method, params = msg.get("method"), msg.get("params", {})
                if method == "Network.requestWillBeSent":
                    out.requests.append(params["request"]["url"])
                elif method == "Network.loadingFailed":
                    out.failed.append(f"{params.get('errorText')} ({params.get('requestId')})")
                elif method == "Page.loadEventFired":
                    loaded = True

            call("Network.enable")
            call("Page.enable")
            call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout_s
            while not loaded:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not finish loading within {timeout_s}s")
                handle(json.loads(ws.recv()))
            # Anything requested late (lazy images, fonts) arrives in the quiet period.
            ws.settimeout(quiet_s)
            with contextlib.suppress(websocket.WebSocketTimeoutException):
                while True:
                    handle(json.loads(ws.recv()))
            ws.settimeout(timeout_s)
            result = call("Runtime.evaluate", expression=probe, returnByValue=True)
            if "exceptionDetails" in result:
                raise RuntimeError(f"probe failed: {result['exceptionDetails']}")
            out.probe = result["result"].get("value")
        finally:
            ws.close()
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{base}/json/close/{target['id']}", timeout=10)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    browser = Chromium(chromium_binary())
    try:
        yield browser
    finally:
        browser.close()
