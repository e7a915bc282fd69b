"""The end-to-end tests run on the kube integration suite's apiserver (``kube``, ``namespace``).

Re-exporting a fixture function from another conftest registers a second fixture definition
with its own session cache, so ``pytest tests`` would start two apiservers (checked: a
``from ...conftest import kube`` re-export runs the fixture once per directory). ``kube`` here
instead executes the kube suite's own fixture definition when that suite's tests are collected in
the same session: one apiserver, cached where the suite finds it, stopped once at session end.
Run alone (``pytest tests/e2e``), it runs the same fixture function directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kube import conftest as kube_suite
from tests.integration.kube.conftest import KubeEnv, namespace

__all__ = ["kube", "namespace"]

_SUITE_DIR = Path(kube_suite.__file__).parent
_SUITE_KUBE = kube_suite.kube.__wrapped__  # type: ignore[attr-defined]  # under @fixture


def _suite_kube_fixturedef(request: pytest.FixtureRequest) -> Any:
    """The kube suite's ``kube`` definition, if any of its tests are in this session."""
    for item in request.session.items:
        if _SUITE_DIR in Path(item.path).parents:
            for fixturedef in request._fixturemanager.getfixturedefs("kube", item) or ():
                if fixturedef.func is _SUITE_KUBE:
                    return fixturedef
    return None


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[KubeEnv]:
    shared = _suite_kube_fixturedef(request)
    if shared is not None:
        yield shared.execute(request)
    else:
        yield from _SUITE_KUBE(request)
