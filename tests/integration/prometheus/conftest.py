"""A real Prometheus on 127.0.0.1, loaded with backfilled OpenMetrics data.

``prometheus_factory(files)`` backfills each OpenMetrics file with
``promtool tsdb create-blocks-from openmetrics`` into a fresh data directory and starts
``prometheus`` on a free port with no scrape targets; ``web_config`` (the text of a
``--web.config.file``) turns on Prometheus' own basic auth and TLS, and ``make_pki`` makes the
CA, server and client certificates for it with openssl. Servers are terminated and waited for,
and their directories removed, when the fixture's scope ends: no process is left behind.

Skips (never fails) when prometheus/promtool are missing and cannot be installed
(``scripts/install-prometheus`` installs them on a fresh machine, as root).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[3]
CONFIG = "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\nscrape_configs: []\n"


def data_origin() -> float:
    """A whole hour about two days ago: old enough to be a backfill, young enough for any window."""
    return float(math.floor(time.time() / 3600) * 3600 - 2 * 86400)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrometheusServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def _need_binaries() -> None:
    if shutil.which("promtool") and shutil.which("prometheus"):
        return
    script = ROOT / "scripts" / "install-prometheus"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([str(script)], check=False, timeout=600, capture_output=True)
    if not (shutil.which("promtool") and shutil.which("prometheus")):
        # A real Prometheus is part of the suite: a missing one is a failure, never a skip.
        pytest.fail("prometheus/promtool not installed (run scripts/install-prometheus as root)")


@dataclass(frozen=True)
class Pki:
    """PEM files made by ``make_pki``: a CA, a server certificate for 127.0.0.1 signed by it,
    a client certificate signed by it, and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_pki(directory: Path) -> Pki:
    """Generate the certificates with openssl (RSA 2048, valid 2 days)."""
    directory.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN=canaryd-test-{ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.crt")  # fmt: skip
    exts = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in exts.items():
        (directory / f"{name}.ext").write_text(ext)
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=canaryd-test-{name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")  # fmt: skip
    return Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.crt",
    )


def start_prometheus(
    openmetrics_files: Sequence[Path],
    workdir: Path,
    *,
    web_config: str | None = None,
    ready_kwargs: dict[str, object] | None = None,
) -> PrometheusServer:
    """``web_config``: the YAML of ``--web.config.file``; ``ready_kwargs``: what the readiness
    probe (``requests.get``) needs to pass it (``auth``, ``verify``, ``cert``)."""
    _need_binaries()
    data = workdir / "data"
    data.mkdir()
    for f in openmetrics_files:
        r = subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(f), str(data)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"promtool failed on {f}: {r.stderr[-2000:]}")
    config = workdir / "prometheus.yml"
    config.write_text(CONFIG)
    port = free_port()
    args = [
        "prometheus",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--config.file={config}",
        "--storage.tsdb.retention.time=100y",
        "--log.level=warn",
    ]
    scheme = "http"
    if web_config is not None:
        (workdir / "web.yml").write_text(web_config)
        args.append(f"--web.config.file={workdir / 'web.yml'}")
        if "tls_server_config" in web_config:
            scheme = "https"
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    server = PrometheusServer(f"{scheme}://127.0.0.1:{port}", port, proc, workdir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"prometheus exited with {proc.returncode}: "
                f"{(workdir / 'prometheus.log').read_text()[-2000:]}"
            )
        try:
            ready = requests.get(f"{server.url}/-/ready", timeout=1, **(ready_kwargs or {}))  # type: ignore[arg-type]
            if ready.status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError("prometheus did not become ready within 60s")


@pytest.fixture(scope="module")
def prometheus_factory() -> Iterator[Callable[..., PrometheusServer]]:
    """Start Prometheus servers over backfilled files; all are stopped and cleaned at module end."""
    servers: list[PrometheusServer] = []
    dirs: list[Path] = []

    def make(
        files: Sequence[Path],
        web_config: str | None = None,
        ready_kwargs: dict[str, object] | None = None,
    ) -> PrometheusServer:
        d = Path(tempfile.mkdtemp(prefix="canaryd-prom-"))
        dirs.append(d)
        server = start_prometheus(files, d, web_config=web_config, ready_kwargs=ready_kwargs)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for s in servers:
            s.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
