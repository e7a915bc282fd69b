"""A live daemon (real apiserver) fed an alias bomb and a 10 MB file in its policy directory.

Both are refused by the loader's limits (a located problem each); the good policy keeps
being served, its rollout keeps moving, and ``/healthz`` stays 200 (issue 11: the bomb once
turned it 503 after ~40 s and stopped every rollout).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from canaryd.daemon.run import Daemon, RunConfig
from canaryd.daemon.server import HealthServer
from canaryd.policy.loader import MAX_DOCUMENT_BYTES

from ...unit.policy.support import BOMB
from .conftest import KubeEnv
from .test_daemon import CLOSED_PORT, make_isvc, percent, policy_yaml

pytestmark = pytest.mark.integration


def test_hostile_policy_files_never_stop_the_daemon(
    kube: KubeEnv, namespace: str, tmp_path: Path
) -> None:
    make_isvc(kube, namespace, "m")
    (tmp_path / "m.yaml").write_text(policy_yaml(namespace, "m"))
    daemon = Daemon(
        RunConfig(policies=[tmp_path], port=0, host="127.0.0.1", prometheus=CLOSED_PORT),
        api_client=kube.new_client(),
    )
    assert daemon.start_cache(30.0)
    server = HealthServer(
        daemon.reconciler.metrics.registry, daemon.alive, daemon.ready, "127.0.0.1", 0
    ).start()
    try:
        assert daemon.tick() is not None
        assert percent(kube, namespace, "m") == 10
        parses = daemon.policy_set.parses

        (tmp_path / "00-bomb.yaml").write_text(BOMB)
        (tmp_path / "01-big.yaml").write_text("#" + "x" * (10 * MAX_DOCUMENT_BYTES) + "\n")
        report = daemon.tick()  # reloads: the bomb is parsed once, the big file never
        assert report is not None
        assert daemon.policy_set.parses == parses + 1
        assert [p.name for p in daemon.reconciler.policies] == ["m-policy"]
        problems = daemon.policy_set.problems
        assert any(
            p.startswith(f"{tmp_path / '00-bomb.yaml'}:6:7: YAML aliases expand") for p in problems
        ), problems
        assert any("01-big.yaml: the file is" in p and "it was not read" in p for p in problems)
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
                assert r.status == 200
        assert daemon.tick() is not None  # the next tick reloads nothing
        assert daemon.policy_set.parses == parses + 1
    finally:
        server.stop()
        daemon.cache.stop()
