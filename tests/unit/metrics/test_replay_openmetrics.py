"""Trace CSV reader/writer (located errors) and the OpenMetrics writer."""

from __future__ import annotations

import io
import itertools
import math
import re
from pathlib import Path

import pytest

from canaryd.errors import TraceError
from canaryd.metrics.openmetrics import (
    TickSample,
    counts_between,
    tick_samples_from_observations,
    write_openmetrics,
)
from canaryd.metrics.replay import TraceSource, read_trace, write_trace
from canaryd.metrics.source import FetchRequest
from canaryd.observation import Observation, VersionCounts

B = (10.0, 100.0, math.inf)


def vc(n: float, e: float, c: tuple[float, ...] = (3, 8)) -> VersionCounts:
    return VersionCounts(n, e, B, (*c, n))


OBS = [
    Observation(0, 60, vc(10, 1), vc(4, 0, (1, 4))),
    Observation(60, 120, vc(12, 0, (5, 11)), vc(3, 1, (0, 2))),
    Observation(120, 180, vc(9, 2), vc(5, 5, (5, 5))),
]

GOOD = """t_seconds,version,requests,errors,le_10,le_100,le_inf
0,stable,10,1,3,8,10
0,canary,4,0,1,4,4
60,stable,12,0,5,11,12
60,canary,3,1,0,2,3
"""


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    assert write_trace(p, OBS) == 6
    assert read_trace(p) == OBS


def test_reads_a_hand_written_trace(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text(GOOD)
    got = read_trace(p)
    assert got == OBS[:2]


def problems(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    return [re.sub(r"^.*bad\.csv", "F", str(pr)) for pr in exc.value.problems]


def test_errors_name_file_line_and_column(tmp_path: Path) -> None:
    text = GOOD.replace("60,canary,3,1,0,2,3", "60,canary,3,x,0,2,3").replace(
        "0,stable,10,1,3,8,10", "0,blue,10,1,3,8,10"
    )
    assert problems(tmp_path, text) == [
        "F:2:2: version: expected 'stable' or 'canary', got 'blue'",
        "F:5:4: errors: expected a number, got 'x'",
    ]


def test_semantic_errors(tmp_path: Path) -> None:
    text = (
        "t_seconds,version,requests,errors,le_10,le_100,le_inf\n"
        "0,stable,10,11,3,8,10\n"
        "0,canary,4,0,3,1,4\n"
        "0,canary,4,0,1,2,4\n"
        "60,stable,-1,0,0,0,0\n"
        "60,canary,4,0,1,2,nan\n"
        "120,stable,1,0,0,0,1\n"
    )
    got = problems(tmp_path, text)
    assert "F:2:4: errors: more errors (11) than requests (10)" in got
    assert "F:3:6: le_100: buckets must be cumulative: 1 < 3 in le_10" in got
    assert "F:5:3: requests: increments cannot be negative, got -1" in got
    assert "F:6:7: le_inf: expected a finite number, got 'nan'" in got
    assert "F:7:1: t_seconds: t_seconds=120 has no canary row" in got


def test_header_errors(tmp_path: Path) -> None:
    assert problems(tmp_path, "t,version,requests,errors\n") == [
        "F:1: header: expected the columns to start with t_seconds,version,requests,errors "
        "(optionally t_seconds,version,pod,...), got t,version,requests,errors"
    ]
    assert problems(
        tmp_path, "t_seconds,version,requests,errors,le_100,le_10,p99\n0,stable,1,0,1,1,1\n"
    ) == [
        "F:1:6: header: bucket 'le_10' does not increase after 'le_100'",
        "F:1:7: header: unexpected column 'p99': expected le_<ms> or le_inf",
    ]
    assert problems(tmp_path, "t_seconds,version,requests,errors,le_10\n") == [
        "F:1:5: header: the last bucket column must be le_inf"
    ]
    assert problems(tmp_path, "") == ["F:1: empty file: expected a header line"]


def test_duplicate_rows_and_missing_values(tmp_path: Path) -> None:
    text = GOOD + "60,canary,3,1,0,2,3\n" + "120,stable,1,0,,1,1\n120,canary,1,0,1,1,1\n"
    assert problems(tmp_path, text) == [
        "F:6:2: version: second canary row for t_seconds=60 (first on line 5)",
        "F:7:5: le_10: missing value",
    ]


def test_trace_source_sums_intervals_in_the_window() -> None:
    src = TraceSource(OBS)
    r = FetchRequest("k", "ns", "s", "c")
    two = src.fetch([r], 0, 120)["k"]
    assert (
        two.stable is not None
        and two.stable.requests == 22
        and two.stable.bucket_counts == (8, 19, 22)
    )
    assert (
        src.fetch([r], 600, 660)["k"].no_data_reason == "the trace has no interval in this window"
    )


def test_openmetrics_format() -> None:
    samples = [
        TickSample(100.0, "r1", 0, 0, B, (0, 0, 0)),
        TickSample(115.0, "r1", 10, 1, B, (3, 8, 10)),
    ]
    buf = io.StringIO()
    n = write_openmetrics(
        buf, samples, preset="istio", namespace="ns", workload_suffix="-deployment"
    )
    text = buf.getvalue()
    assert text.endswith("# EOF\n")
    lines = text.splitlines()
    assert lines[0] == "# TYPE istio_requests counter"
    assert lines[1] == (
        'istio_requests_total{destination_workload_namespace="ns",destination_workload="r1-deployment",'
        'reporter="destination",response_code="200"} 0 100'
    )
    assert lines[2].endswith(" 9 115")  # successes = requests - errors
    assert lines[4].endswith(" 1 115") and 'response_code="500"' in lines[4]
    assert "# TYPE istio_request_duration_milliseconds histogram" in lines
    assert any('le="+Inf"} 10 115' in ln for ln in lines)
    assert any(
        ln.startswith("istio_request_duration_milliseconds_count{") and ln.endswith(" 10 115")
        for ln in lines
    )
    assert n == 4 + 2 * 4


def test_openmetrics_knative_and_kserve_naming() -> None:
    s = [TickSample(1.5, 'we"ird', 2, 1, B, (1, 2, 2))]
    buf = io.StringIO()
    write_openmetrics(buf, s, preset="knative", namespace="ns")
    text = buf.getvalue()
    assert "# TYPE revision_app_request_count unknown" in text
    assert 'revision_name="we\\"ird"' in text
    assert 'response_code_class="5xx"} 1 1.5' in text
    buf = io.StringIO()
    write_openmetrics(buf, s, preset="kserve", namespace="ns")
    text = buf.getvalue()
    assert (
        'request_predict_seconds_bucket{namespace="ns",serving_knative_dev_revision="we\\"ird",le="0.01"} 1 1.5'
        in text
    )
    assert 'le="0.1"} 2 1.5' in text
    assert "request_predict_seconds_errors_total{" in text


def test_tick_samples_reproduce_the_interval_counts() -> None:
    samples = tick_samples_from_observations(OBS, 15, "s", "c")
    assert len(samples) == 2 * (1 + 3 * 4)
    for o in OBS:
        assert counts_between(samples, "s", o.start_s, o.end_s) == o.stable
        assert counts_between(samples, "c", o.start_s, o.end_s) == o.canary
    # Cumulative, integral, errors <= requests and cumulative buckets at every tick.
    for rev in ("s", "c"):
        seq = [s for s in samples if s.revision == rev]
        for a, b in itertools.pairwise(seq):
            assert b.requests_cum >= a.requests_cum and b.errors_cum >= a.errors_cum
        for s in seq:
            assert float(s.requests_cum).is_integer() and s.errors_cum <= s.requests_cum
            assert list(s.buckets_cum) == sorted(s.buckets_cum)


def test_tick_samples_skip_no_data_intervals_and_check_ticks() -> None:
    gap = [OBS[0], Observation(60, 120, no_data_reason="outage"), OBS[2]]
    samples = tick_samples_from_observations(gap, 30, "s", "c")
    times = sorted({s.t_seconds for s in samples})
    assert times == [0, 30, 60, 150, 180]
    with pytest.raises(ValueError, match="whole number"):
        tick_samples_from_observations(OBS, 25, "s", "c")
