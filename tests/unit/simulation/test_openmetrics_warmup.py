"""``canaryd simulate --openmetrics`` writes run 0's warm-up as stable's counter history.

Stable's counters are 0 at ``start - warmup``, hold the warm-up's totals at ``start`` and carry
them in every later sample; the canary's start at 0 at ``start``. Read between edge samples
(``canaryd.metrics.presets``), the history window ``[start - warmup, start)`` is then exactly
the warm-up and every interval exactly the simulator's (tests/e2e/test_full_loop.py checks
that through a real Prometheus). A warm-up that cannot be written that way is refused.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.metrics.openmetrics import format_value
from canaryd.policy.loader import load_policies_text
from canaryd.simulation.engine import simulate, warmup_seconds
from canaryd.simulation.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[3]
SCENARIO = ROOT / "simulations" / "error-regression.yaml"
SEED = 1
REQUESTS = "istio_requests_total"
BUCKETS = "istio_request_duration_milliseconds_bucket"

POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: p}}
spec:
  target: {{namespace: ns, inferenceService: m}}
  steps: {{weights: [10, 50], minDwell: 10m}}
  analysis:
    interval: 1m
    history: {history}
    source: {{preset: istio}}
    metrics:
      - {{name: errors, kind: errors, judge: sequential, maxRelativeIncrease: 0.2}}
      - {{name: latency, kind: latency, judge: sequential, maxRelativeIncrease: 0.1}}
"""

_LINE = re.compile(r"^(?P<name>[^{ ]+)(?P<labels>\{[^}]*\}) (?P<value>\S+) (?P<t>\S+)$")

Series = dict[tuple[str, str], list[tuple[float, float]]]
"""(metric name, labels text) -> [(timestamp, value)], in file order."""


def parse(text: str) -> Series:
    out: Series = defaultdict(list)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m is not None, line
        out[(m["name"], m["labels"])].append((float(m["t"]), float(m["value"])))
    return out


def pick(series: Series, name: str, **labels: str) -> list[tuple[float, float]]:
    """The one series of ``name`` whose labels include ``labels``."""
    hits = [
        samples
        for (n, text), samples in series.items()
        if n == name and all(f'{k}="{v}"' in text for k, v in labels.items())
    ]
    assert len(hits) == 1, (name, labels, len(hits))
    return hits[0]


def export(tmp_path: Path, history: str, scenario: Path = SCENARIO) -> tuple[Any, str, str]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY.format(history=history), encoding="utf-8")
    om = tmp_path / "run0.om"
    om.unlink(missing_ok=True)  # each export is read on its own
    res = CliRunner().invoke(
        main,
        [
            *("simulate", str(scenario), "--policy", str(policy_file), "--seed", str(SEED)),
            *("--openmetrics", str(om)),
        ],
    )
    text = om.read_text(encoding="utf-8") if om.exists() else ""
    return res, text, policy_file.read_text(encoding="utf-8")


def test_the_warm_up_is_stables_counter_history(tmp_path: Path) -> None:
    res, text, policy_text = export(tmp_path, "30m")
    assert res.exit_code == 1, res.output  # rolled back
    sc, base = load_scenario(SCENARIO)
    policy = load_policies_text(policy_text, "policy.yaml")[0].policy
    assert warmup_seconds(sc, policy) == 1800.0
    cum: dict[float, tuple[Any, ...]] = {}
    run0 = simulate(
        sc, policy, base, seed=SEED, tick_sink=lambda t, *a: cum.__setitem__(t, a)
    ).runs[0]
    warm = run0.warmup
    assert warm is not None and warm.requests > 0 and warm.errors > 0
    assert run0.history_requests == warm.requests  # the counts that primed the judges
    epoch = sc.start.timestamp()
    series = parse(text)

    ok = pick(series, REQUESTS, destination_workload="stable", response_code="200")
    bad = pick(series, REQUESTS, destination_workload="stable", response_code="500")
    # 0 at start - warmup, the warm-up's totals at start, then the run's ticks on top of them.
    assert ok[:2] == [(epoch - 1800.0, 0.0), (epoch, warm.requests - warm.errors)]
    assert bad[:2] == [(epoch - 1800.0, 0.0), (epoch, warm.errors)]
    assert [t - epoch for t, _ in ok[2:]] == sorted(cum)
    for (t, v_ok), (_, v_bad) in zip(ok[2:], bad[2:], strict=True):
        req, err, _, _ = cum[t - epoch]
        assert v_bad == warm.errors + err[0]
        assert v_ok == warm.requests + req[0] - (warm.errors + err[0])
    # Every bucket, cumulative in le and in time.
    for k, bound in enumerate(sc.bounds_ms()):
        le = "+Inf" if bound == float("inf") else format_value(bound)
        got = pick(series, BUCKETS, destination_workload="stable", le=le)
        assert got[:2] == [(epoch - 1800.0, 0.0), (epoch, warm.bucket_counts[k])]
        assert [v for _, v in got[2:]] == [
            warm.bucket_counts[k] + cum[t][2][k] for t in sorted(cum)
        ]

    # The canary has no history: its counters start at 0 at start, without the warm-up.
    c_ok = pick(series, REQUESTS, destination_workload="canary", response_code="200")
    assert c_ok[0] == (epoch, 0.0)
    assert [v for _, v in c_ok[1:]] == [cum[t][0][1] - cum[t][1][1] for t in sorted(cum)]
    canary = [s for (_, text), s in series.items() if 'destination_workload="canary"' in text]
    assert canary and min(t for samples in canary for t, _ in samples) == epoch


def test_without_history_no_sample_before_the_start(tmp_path: Path) -> None:
    res, text, _ = export(tmp_path, "0s")
    assert res.exit_code == 1, res.output
    epoch = load_scenario(SCENARIO)[0].start.timestamp()
    series = parse(text)
    assert min(t for samples in series.values() for t, _ in samples) == epoch
    assert pick(series, REQUESTS, destination_workload="stable", response_code="200")[0] == (
        epoch,
        0.0,
    )


def test_a_warm_up_other_than_the_history_is_refused(tmp_path: Path) -> None:
    scenario = tmp_path / "sc.yaml"
    scenario.write_text(SCENARIO.read_text(encoding="utf-8") + "warmup: 10m\n", encoding="utf-8")
    res, text, _ = export(tmp_path, "30m", scenario)
    assert res.exit_code == 3
    assert "--openmetrics: the scenario's warmup (10m) is not the policy's analysis.history" in (
        res.output
    )
    assert text == ""  # nothing written
    # warmup: 0s with history: 0s is no warm-up at all: exported as before.
    scenario.write_text(SCENARIO.read_text(encoding="utf-8") + "warmup: 0s\n", encoding="utf-8")
    res, text, _ = export(tmp_path, "0s", scenario)
    assert res.exit_code == 1, res.output
    assert text.endswith("# EOF\n")
    # ... but none while the policy reads 30m would prime the daemon with an empty history.
    res, text, _ = export(tmp_path, "30m", scenario)
    assert res.exit_code == 3
    assert "the scenario's warmup (0s) is not the policy's analysis.history (30m)" in res.output
    assert text == ""


@pytest.mark.parametrize("history", ["30m", "0s"])
def test_per_pod_scenarios_are_refused(tmp_path: Path, history: str) -> None:
    scenario = tmp_path / "sc.yaml"
    scenario.write_text(
        SCENARIO.read_text(encoding="utf-8") + "pods: {stable: 3, canary: 1}\n", encoding="utf-8"
    )
    res, text, _ = export(tmp_path, history, scenario)
    assert res.exit_code == 3
    assert "--openmetrics: cannot export per-pod counts (scenario pods)" in (res.output)
    assert text == ""
