"""``canaryd analyze`` as a CI gate against a real Prometheus: its exit codes and messages.

0 no worse, 1 worse, 2 inconclusive or no data (1 with ``--fail-on inconclusive``), 3 usage or
configuration error; a closed port is one line and exit 2 at once (the old behaviour: 40 s of
retries, 60 no-data lines and exit 0).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result

from canaryd.cli import main
from canaryd.metrics.openmetrics import tick_samples_from_observations, write_openmetrics
from canaryd.observation import Observation, VersionCounts

from .conftest import PrometheusServer, data_origin, free_port

pytestmark = pytest.mark.integration

T0 = data_origin()
INTERVAL = 60.0
N = 30
BOUNDS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, math.inf)


def traffic(seed: int, error_rate: tuple[float, float], n: int = N) -> list[Observation]:
    """Seeded per-interval counts: 20 rps stable, 10 rps canary, the same latency."""
    rng = np.random.default_rng(seed)
    finite = np.array(BOUNDS_MS[:-1])

    def version(rps: float, p_err: float) -> VersionCounts:
        reqs = int(rng.poisson(rps * INTERVAL))
        errs = int(rng.binomial(reqs, p_err))
        lat = rng.lognormal(3.5, 0.7, reqs)
        cum = [float(np.count_nonzero(lat <= b)) for b in finite] + [float(reqs)]
        return VersionCounts(float(reqs), float(errs), BOUNDS_MS, tuple(cum))

    return [
        Observation(
            T0 + k * INTERVAL,
            T0 + (k + 1) * INTERVAL,
            version(20, error_rate[0]),
            version(10, error_rate[1]),
        )
        for k in range(n)
    ]


def policy_doc(name: str, **promotion: object) -> dict[str, object]:
    return {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "CanaryPolicy",
        "metadata": {"name": name},
        "spec": {
            "target": {"namespace": "models", "inferenceService": "iris"},
            "analysis": {"interval": "1m", "source": {"preset": "istio"}},
            **({"promotion": promotion} if promotion else {}),
        },
    }


@pytest.fixture(scope="module")
def prom(
    prometheus_factory: Callable[[Sequence[Path]], PrometheusServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> PrometheusServer:
    d = tmp_path_factory.mktemp("gate")
    samples = [
        *tick_samples_from_observations(traffic(1, (0.01, 0.01)), 15.0, "same-s", "same-c"),
        *tick_samples_from_observations(traffic(2, (0.01, 0.08)), 15.0, "worse-s", "worse-c"),
    ]
    samples.sort(key=lambda s: s.t_seconds)
    path = d / "gate.om"
    with path.open("w") as f:
        write_openmetrics(f, samples, preset="istio", namespace="models")
    return prometheus_factory([path])


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gate-policies")
    out = {}
    for key, doc in {
        "plain": policy_doc("plain"),
        "noninferiority": policy_doc("strict", criterion="nonInferiority"),
        "mde": policy_doc("mde", minDetectableEffect={"errors": 1.3}),
    }.items():
        out[key] = d / f"{key}.yaml"
        out[key].write_text(yaml.safe_dump(doc))
    return out


def gate(url: str, policy: Path, stable: str, canary: str, *extra: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            "analyze",
            "--prometheus",
            url,
            "--policy",
            str(policy),
            "--stable",
            stable,
            "--canary",
            canary,
            "--start",
            str(T0),
            "--end",
            str(T0 + N * INTERVAL),
            *extra,
        ],
    )


def last_line(res: Result) -> str:
    return res.stdout.strip().splitlines()[-1]


def test_no_worse_is_0(prom: PrometheusServer, policies: dict[str, Path]) -> None:
    res = gate(prom.url, policies["plain"], "same-s", "same-c")
    assert res.exit_code == 0, res.output
    assert last_line(res) == "result: no worse: no critical metric is worse (exit 0)"
    assert "30 of 30 interval(s) had data." in res.stdout


def test_worse_is_1(prom: PrometheusServer, policies: dict[str, Path]) -> None:
    res = gate(prom.url, policies["plain"], "worse-s", "worse-c", "--json")
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["outcome"] == "worse" and doc["exit_code"] == 1
    assert doc["reason"].startswith("canary is worse: errors: fail")


def test_no_data_is_2_and_fail_on_inconclusive_makes_it_1(
    prom: PrometheusServer, policies: dict[str, Path]
) -> None:
    res = gate(prom.url, policies["plain"], "absent-s", "absent-c")
    assert res.exit_code == 2, res.output
    assert "0 of 30 interval(s) had data." in res.stdout
    # Thirty identical no-data intervals are one line, with real times.
    nd = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("no data")]
    assert len(nd) == 1 and "(30 intervals)" in nd[0] and "T" in nd[0]
    assert last_line(res).startswith("result: no data: no interval had usable data")
    strict = gate(prom.url, policies["plain"], "absent-s", "absent-c", "--fail-on", "inconclusive")
    assert strict.exit_code == 1
    assert last_line(strict).endswith("(exit 1, --fail-on inconclusive)")


def test_evidence_the_policy_asks_for_decides_between_0_and_2(
    prom: PrometheusServer, policies: dict[str, Path]
) -> None:
    strict = gate(prom.url, policies["noninferiority"], "same-s", "same-c", "--json")
    assert strict.exit_code == 2, strict.output
    assert "nonInferiority" in json.loads(strict.stdout)["reason"]
    mde = gate(prom.url, policies["mde"], "same-s", "same-c", "--json")
    assert mde.exit_code == 2, mde.output
    assert json.loads(mde.stdout)["reason"].startswith("not enough evidence: detecting errors")


def test_a_closed_port_is_one_line_and_2_at_once(policies: dict[str, Path]) -> None:
    started = time.monotonic()
    res = gate(f"http://127.0.0.1:{free_port()}", policies["plain"], "a", "b")
    took = time.monotonic() - started
    assert res.exit_code == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1
    assert "cannot reach Prometheus" in res.stderr and "connection refused (3 attempts)" in (
        res.stderr
    )
    # Bounded retries: one probe (3 attempts, 0.2 + 0.4 s backoff), not 3 attempts per interval
    # (which took 40 s). The bound is loose on purpose: it only has to tell the two apart.
    assert took < 15


def test_a_server_that_is_not_prometheus_is_a_configuration_error(
    prom: PrometheusServer, policies: dict[str, Path]
) -> None:
    res = gate(prom.url + "/not-here", policies["plain"], "same-s", "same-c")
    assert res.exit_code == 3
    assert "refused a trivial query: HTTP 404" in res.stderr and "check --prometheus" in res.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--prometheus", "localhost:9090"], "expected an http(s) URL"),
        (["--start", "yesterday"], "neither unix seconds nor an RFC 3339"),
        (["--end", str(T0 - 60)], "--end must be after --start"),
        (["--end", str(T0 + 30)], "shorter than the policy's analysis interval"),
        (["--fail-on", "maybe"], "'maybe' is not one of"),
    ],
)
def test_usage_errors_are_3_without_a_traceback(
    policies: dict[str, Path], args: list[str], needle: str
) -> None:
    base = {
        "--prometheus": "http://127.0.0.1:9",
        "--policy": str(policies["plain"]),
        "--stable": "a",
        "--canary": "b",
        "--start": str(T0),
        "--end": str(T0 + 600),
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    res = CliRunner().invoke(main, ["analyze", *(x for kv in base.items() for x in kv)])
    assert res.exit_code == 3, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_a_broken_policy_is_3_with_its_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(policy_doc("bad")).replace("interval: 1m", "interval: 1x"))
    res = gate("http://127.0.0.1:9", bad, "a", "b")
    assert res.exit_code == 3
    assert f"{bad}:" in res.stderr and "interval" in res.stderr
