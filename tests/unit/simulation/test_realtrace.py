"""Real traffic in the tests: NAB's taxi demand and EC2 latency replayed through a shipped policy.

Traces come from ``canaryd.simulation.realtrace`` (its docstring is the per-request model:
Poisson arrivals at the taxi count scaled to a mean of 20 rps, lognormal latency whose mean is
the EC2 mean latency with sigma 0.5, errors at 1 %, x5 in the EC2 series' labelled windows in
the incident tests) over the unmodified fixtures in ``tests/fixtures/traces/nab/``, and go
through ``canaryd replay --json`` with ``policies/llm-kserve.yaml`` (alpha 0.01). Every trace is
seeded. The bounds hold with room: a false-rollback bound breaks with probability under 0.1 %
if the true rate were the policy's alpha (or, for the pod split, the upper 95 % bound that
``analysis/realtraces.py`` measures), a detection bound if the true rate were the lower 95 %
bound of the study's (``analysis/results/realtraces.md``, hundreds of rollouts per cell).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.errors import TraceError
from canaryd.exitcodes import for_outcome
from canaryd.metrics.replay import read_trace
from canaryd.policy.loader import load_policy
from canaryd.simulation import realtrace as rt
from canaryd.simulation.scenario import Pods

ROOT = Path(__file__).resolve().parents[3]
NAB_DIR = ROOT / "tests" / "fixtures" / "traces" / "nab"
POLICY = ROOT / "policies" / "llm-kserve.yaml"


@pytest.fixture(scope="module")
def nab() -> rt.Nab:
    return rt.load_nab(NAB_DIR)


@pytest.fixture(scope="module")
def model() -> rt.TraceModel:
    return rt.TraceModel(schedule=rt.nominal_schedule(load_policy(POLICY, None)))


def _outcomes(
    nab: rt.Nab,
    model: rt.TraceModel,
    count: int,
    seed: int,
    tmp: Path,
    *,
    incidents: bool = False,
) -> list[tuple[str, float | None]]:
    """(outcome, minutes to the decision) of ``count`` seeded replays."""
    out = []
    for i, p in enumerate(
        rt.placements(
            nab, count, seed, model.duration_s, incidents=incidents, history_s=model.history_s
        )
    ):
        trace = rt.write(tmp / f"{i}.csv", nab, model, p, seed * 1000 + i)
        res = CliRunner().invoke(main, ["replay", str(trace), "--policy", str(POLICY), "--json"])
        doc = json.loads(res.output)
        assert res.exit_code == for_outcome(doc["outcome"]), res.output
        at = doc["decided_at_s"]
        out.append((doc["outcome"], None if at is None else (at - p.start_s) / 60.0))
    return out


def _rollbacks(outcomes: list[tuple[str, float | None]]) -> int:
    return sum(o == "rolled_back" for o, _ in outcomes)


def test_the_fixtures_are_nabs_files_byte_for_byte() -> None:
    readme = (NAB_DIR / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", readme, re.M))
    assert sorted(listed) == sorted(p.name for p in NAB_DIR.iterdir() if p.name != "README.md")
    for name, digest in listed.items():
        assert hashlib.sha256((NAB_DIR / name).read_bytes()).hexdigest() == digest, name


def test_load_nab_reads_both_series_and_their_windows(nab: rt.Nab) -> None:
    assert len(nab.taxi.times_s) == 10_320 and len(nab.taxi.windows) == 5
    # 4,032 rows, 11 of them at a timestamp already seen: read as their mean.
    assert len(nab.ec2.times_s) == 4_021 and len(nab.ec2.windows) == 3
    assert np.all(np.diff(nab.ec2.times_s) > 0)
    assert nab.ec2.span_s == (1394163660.0, 1395373260.0)  # 2014-03-07 03:41 .. 03-21 03:41 UTC
    assert nab.taxi.values.min() == 8 and nab.taxi.values.max() == 39_197


def test_a_bad_row_is_named_by_file_line_and_column(tmp_path: Path) -> None:
    for f in (rt.TAXI, rt.EC2, rt.WINDOWS):
        (tmp_path / f).write_bytes((NAB_DIR / f).read_bytes())
    taxi = tmp_path / rt.TAXI
    lines = taxi.read_text(encoding="utf-8").splitlines()
    lines[2] = "2014-07-01 00:30:00,many"
    taxi.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TraceError) as err:
        rt.load_nab(tmp_path)
    assert str(err.value) == f"{taxi}:3:2: value: expected a number >= 0, got 'many'"


def test_a_windows_file_without_a_series_is_named(tmp_path: Path) -> None:
    for f in (rt.TAXI, rt.EC2):
        (tmp_path / f).write_bytes((NAB_DIR / f).read_bytes())
    windows = tmp_path / rt.WINDOWS
    windows.write_text('{"realKnownCause/nyc_taxi.csv": []}', encoding="utf-8")
    with pytest.raises(TraceError) as err:
        rt.load_nab(tmp_path)
    assert str(err.value) == (f"{windows}: realKnownCause/{rt.EC2}: expected a list of windows")


def test_incident_placements_start_inside_both_series_windows(nab: rt.Nab) -> None:
    for p in rt.placements(nab, 50, 1, 7200.0, incidents=True):
        assert nab.ec2.in_window(p.start_s) and nab.taxi.in_window(p.taxi_start_s)
        assert p.start_s + 7200.0 <= nab.ec2.span_s[1]


def test_a_built_trace_follows_the_per_request_model(
    nab: rt.Nab, model: rt.TraceModel, tmp_path: Path
) -> None:
    long = replace(model, duration_s=7 * 86400.0, schedule=((0.0, 0.2),))
    where = rt.Placement(start_s=nab.ec2.span_s[0], taxi_start_s=nab.taxi.span_s[0])
    obs = rt.build(nab, long, where, seed=5)
    assert len(obs) == 7 * 1440
    n = np.array([o.stable.requests + o.canary.requests for o in obs if o.stable and o.canary])
    mids = where.taxi_start_s + 30.0 + 60.0 * np.arange(len(obs))
    expected = 20.0 * 60.0 * nab.taxi.at(mids) / nab.taxi.values.mean()
    assert abs(n.sum() / expected.sum() - 1.0) < 0.01
    # The daily cycle comes through: the busiest hour has several times the quietest's requests.
    hourly = n[: 24 * 60].reshape(24, 60).sum(axis=1)
    assert hourly.max() > 3 * hourly.min()
    canary = sum(o.canary.requests for o in obs if o.canary)
    assert abs(canary / n.sum() - 0.2) < 0.005
    # Latency: the share at or below 40 ms against the lognormal whose mean is the EC2 mean.
    k = obs[0].stable.bounds_ms.index(40.0) if obs[0].stable else -1
    below = sum(o.stable.bucket_counts[k] for o in obs if o.stable)
    m = nab.ec2.at(where.start_s + 30.0 + 60.0 * np.arange(len(obs)))
    median = m * math.exp(-0.125)
    s_n = np.array([o.stable.requests for o in obs if o.stable])
    share = (s_n * 0.5 * (1 + np.vectorize(math.erf)(np.log(40.0 / median) / (0.5 * 2**0.5)))).sum()
    assert abs(below / share - 1.0) < 0.01
    # Through the trace format and back, unchanged.
    path = rt.write(tmp_path / "t.csv", nab, replace(long, duration_s=3600.0), where, 5)
    assert read_trace(path) == rt.build(nab, replace(long, duration_s=3600.0), where, 5)


def test_a_pod_split_writes_one_row_per_pod_of_the_same_version(
    nab: rt.Nab, model: rt.TraceModel, tmp_path: Path
) -> None:
    pods = Pods(stable=3, canary=2, latency_cv=0.2, error_rate_spread=1.5)
    where = rt.placements(nab, 1, 3, model.duration_s)[0]
    path = rt.write(tmp_path / "t.csv", nab, replace(model, pods=pods), where, 9)
    obs = read_trace(path)
    assert path.read_text(encoding="utf-8").startswith("t_seconds,version,pod,requests,errors,")
    first = obs[0]
    assert first.stable is not None and first.canary is not None
    assert [p.pod for p in first.stable.pods] == [f"stable-pod-{i}" for i in range(3)]
    assert [p.pod for p in first.canary.pods] == [f"canary-pod-{i}" for i in range(2)]


def test_a_a_with_a_random_split_rarely_rolls_back(
    nab: rt.Nab, model: rt.TraceModel, tmp_path: Path
) -> None:
    # The study measures 0 in 1,500; at alpha 1 %, 60 rollouts give 5 or more with p < 0.1 %.
    out = _outcomes(nab, model, 60, 11, tmp_path)
    assert _rollbacks(out) <= 4, out
    assert sum(o == "promoted" for o, _ in out) >= 55, out


def test_a_shared_incident_does_not_roll_a_healthy_canary_back(
    nab: rt.Nab, model: rt.TraceModel, tmp_path: Path
) -> None:
    # Every rollout starts inside a labelled window of both series: EC2's latency failure as
    # recorded and errors x5, holiday or storm demand, on stable and canary alike.
    # The study measures 0 in 800; at alpha 1 %, 40 rollouts give 4 or more with p < 0.1 %.
    incident = replace(model, incident_error_ratio=5.0)
    out = _outcomes(nab, incident, 40, 12, tmp_path, incidents=True)
    assert _rollbacks(out) <= 3, out


def test_a_a_with_a_pod_split_holds_alpha_without_history(
    nab: rt.Nab, model: rt.TraceModel, tmp_path: Path
) -> None:
    # The trace starts with the canary, so stable's pod spread is learned during the rollout.
    # The test that took requests as exchangeable rolled back 16-47 % of such canaries
    # (analysis/results/pods.md); the pod-aware null, 2 of 1,200 in this cell of the study
    # (upper 95 % bound 0.52 %). At alpha 1 %, 40 rollouts give 4 or more with p < 0.1 %.
    pods = Pods(stable=3, canary=1, latency_cv=0.3, error_rate_spread=2.0)
    out = _outcomes(nab, replace(model, pods=pods), 40, 13, tmp_path)
    assert _rollbacks(out) <= 3, out


def test_a_a_with_a_pod_split_and_stables_history_holds_alpha(
    nab: rt.Nab, model: rt.TraceModel, tmp_path: Path
) -> None:
    # The same cell with 2 h of stable-only rows before the canary, which replay gives the
    # judges as the daemon gives them spec.analysis.history: boundaries and stable's pod spread
    # come from there. Measured 0 of 100 (the study: 1 of 1,200); at alpha 1 %, 40 rollouts give
    # 4 or more with p < 0.1 %.
    pods = Pods(stable=3, canary=1, latency_cv=0.3, error_rate_spread=2.0)
    out = _outcomes(nab, replace(model, pods=pods, history_s=7200.0), 40, 13, tmp_path)
    assert _rollbacks(out) <= 3, out


def test_history_rows_come_first_and_are_read_back_as_stables_history(
    nab: rt.Nab, model: rt.TraceModel, tmp_path: Path
) -> None:
    from canaryd.metrics.replay import BEFORE_CANARY, split_history

    pods = Pods(stable=3, canary=1)
    m = replace(model, pods=pods, history_s=600.0)
    where = rt.placements(nab, 1, 3, m.duration_s, history_s=m.history_s)[0]
    built = rt.build(nab, m, where, 9)
    obs = read_trace(rt.write(tmp_path / "t.csv", nab, m, where, 9))
    assert [o.no_data_reason == BEFORE_CANARY for o in obs[:11]] == [True] * 10 + [False]
    assert obs[10].start_s == where.start_s  # the canary starts at the placement
    history, rest = split_history(obs, 600.0)
    assert history is not None and len(history.pods) == 3
    assert history.requests == sum(o.stable.requests for o in built[:10] if o.stable)
    assert all(o.canary is None for o in built[:10])
    assert len(rest) == len(obs) - 10


@pytest.mark.parametrize(
    ("regression", "at_least", "median_within_min"),
    [
        (rt.Regression(error_ratio=3.0), 26, 15.0),
        (rt.Regression(median_factor=1.25), 25, 20.0),
        (rt.Regression(sigma=0.8), 26, 10.0),
        (rt.Regression(error_ratio=2.0), 16, None),
    ],
    ids=["errors x3", "latency median +25 %", "tail only", "errors x2"],
)
def test_a_regressed_canary_is_rolled_back(
    nab: rt.Nab,
    model: rt.TraceModel,
    tmp_path: Path,
    regression: rt.Regression,
    at_least: int,
    median_within_min: float | None,
) -> None:
    # Each bound fails with probability < 0.1 % at the lower 95 % bound of the study's measured
    # detection (300 rollouts each: 97.4 / 96.1 / 97.9 / 77.2 %); the median delays measured
    # there are 6 / 10 / 3 / 17.5 min. A canary the rollout promotes before the evidence is in
    # (quiet night traffic) is a miss: errors x2 often is, the policy allows 1.2x.
    out = _outcomes(nab, replace(model, regression=regression), 30, 14, tmp_path)
    assert _rollbacks(out) >= at_least, out
    if median_within_min is not None:
        delays = [d for o, d in out if o == "rolled_back" and d is not None]
        assert statistics.median(delays) <= median_within_min, out
