"""The kserve preset's names are what the installed kserve (0.21) exports.

``tests/live/test_live_rollout.py`` shows the preset working on real scrapes; this pins the
contract itself to the package, so that a kserve upgrade that renames the histogram, changes
its labels or adds an error counter fails here with a clear message. kserve is inspected in a
child process: importing it configures logging and parses ``sys.argv``, which must not leak
into the rest of the suite.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from typing import Any

import pytest

from canaryd.metrics.presets import DEFAULT_LATENCY_UNIT, DEFAULT_VERSION_LABEL, PresetOptions
from tests.live.harness import HISTOGRAM_LE_S

_INSPECT = """
import json, sys
sys.argv = sys.argv[:1]
import kserve.metrics as m
from prometheus_client import REGISTRY
h = m.PREDICT_HIST_TIME
print(json.dumps({
    "name": h._name,
    "labels": list(h._labelnames),
    "bounds": [b for b in h._upper_bounds if b != float("inf")],
    "families": {mf.name: mf.type for mf in REGISTRY.collect()},
}))
"""


@pytest.fixture(scope="module")
def exported() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _INSPECT], capture_output=True, text=True, timeout=120, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_kserve_version_is_the_one_the_preset_was_checked_against() -> None:
    assert importlib.metadata.version("kserve") == "0.21.0"


def test_the_histogram_is_request_predict_seconds_with_only_model_name(
    exported: dict[str, Any],
) -> None:
    assert exported["name"] == PresetOptions().kserve_histogram == "request_predict_seconds"
    # The only label is the model's name: revision and namespace come from the scrape's
    # relabelling (labelmap of the pod labels), hence the preset's default version label.
    assert exported["labels"] == ["model_name"]
    assert DEFAULT_VERSION_LABEL["kserve"] == "serving_knative_dev_revision"
    # Seconds, with prometheus_client's default buckets.
    assert DEFAULT_LATENCY_UNIT["kserve"] == "s"
    assert tuple(exported["bounds"]) == HISTOGRAM_LE_S


def test_kserve_exports_no_error_counter_or_status_code(exported: dict[str, Any]) -> None:
    """Why errors need a counter of the model's own (or the data plane's metrics)."""
    families: dict[str, str] = exported["families"]
    kserve_own = {n for n in families if n.startswith("request_")}
    assert kserve_own == {
        "request_preprocess_seconds",
        "request_predict_seconds",
        "request_postprocess_seconds",
        "request_explain_seconds",
    }
    assert all(families[n] == "histogram" for n in kserve_own)
    assert not any("error" in n or "status" in n or "code" in n for n in families)
    assert PresetOptions().kserve_errors_metric is None  # not measured unless configured
