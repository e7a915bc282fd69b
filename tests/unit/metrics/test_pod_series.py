"""Per-pod series in the OpenMetrics writer and per-pod rows in replay traces."""

from __future__ import annotations

import io
import math
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
from canaryd.observation import Histogram, Observation, PodCounts, VersionCounts
from canaryd.policy.model import Source

B = (10.0, 100.0, math.inf)


def podded(*pods: PodCounts) -> VersionCounts:
    """A version whose totals are its pods' sums."""
    return VersionCounts(
        sum(p.requests for p in pods),
        sum(p.errors for p in pods),
        B,
        tuple(sum(p.bucket_counts[k] for p in pods) for k in range(len(B))),
        pods=pods,
    )


OBS = [
    Observation(
        0,
        60,
        podded(PodCounts("s-a", 30, 1, (10, 25, 30)), PodCounts("s-b", 12, 0, (2, 9, 12))),
        podded(PodCounts("c-a", 8, 2, (1, 6, 8))),
    ),
    Observation(
        60,
        120,
        # s-b served nothing here: absent from the pods, it is written at 0 all the same.
        podded(PodCounts("s-a", 25, 0, (5, 20, 25))),
        podded(PodCounts("c-a", 9, 1, (3, 8, 9))),
    ),
    Observation(
        120,
        180,
        podded(PodCounts("s-a", 7, 3, (7, 7, 7)), PodCounts("s-b", 40, 4, (20, 30, 40))),
        podded(PodCounts("c-a", 11, 0, (0, 10, 11))),
    ),
]


def test_tick_samples_are_per_pod_and_reproduce_every_pods_counts() -> None:
    samples = tick_samples_from_observations(OBS, 15, "s", "c")
    assert {(s.revision, s.pod) for s in samples} == {("s", "s-a"), ("s", "s-b"), ("c", "c-a")}
    # Every pod from the revision's first sample on: 1 + 3 intervals x 4 ticks each.
    assert len(samples) == 3 * (1 + 3 * 4)
    for o in OBS:
        assert counts_between(samples, "s", o.start_s, o.end_s) == o.stable
        assert counts_between(samples, "c", o.start_s, o.end_s) == o.canary


def test_openmetrics_writes_the_presets_pod_label_on_every_series() -> None:
    samples = tick_samples_from_observations(OBS[:1], 60, "s", "c")
    buf = io.StringIO()
    write_openmetrics(buf, samples, preset="istio", namespace="ns", source_reports=True)
    text = buf.getvalue()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines and all(',pod="' in ln for ln in lines)
    assert (
        'istio_requests_total{destination_workload_namespace="ns",destination_workload="s",'
        'pod="s-a",reporter="destination",response_code="500"} 1 60'
    ) in lines
    assert (
        'istio_request_duration_milliseconds_bucket{destination_workload_namespace="ns",'
        'destination_workload="s",pod="s-b",reporter="destination",le="+Inf"} 12 60'
    ) in lines
    buf = io.StringIO()
    write_openmetrics(buf, samples, preset="knative", namespace="ns")
    assert 'revision_name="c",pod_name="c-a",response_code="200"' in buf.getvalue()
    buf = io.StringIO()
    write_openmetrics(
        buf, samples, preset="kserve", namespace="ns", pod_label="kubernetes_pod_name"
    )
    assert 'serving_knative_dev_revision="s",kubernetes_pod_name="s-a",le="0.01"} 10 60' in (
        buf.getvalue()
    )


def test_openmetrics_refuses_a_revision_with_and_without_pods() -> None:
    mixed = [
        TickSample(0, "s", 1, 0, B, (1, 1, 1), pod="s-a"),
        TickSample(0, "s", 1, 0, B, (1, 1, 1)),
    ]
    with pytest.raises(ValueError, match="with and without a pod"):
        write_openmetrics(io.StringIO(), mixed, preset="istio", namespace="ns")
    twice = [TickSample(0, "s", 1, 0, pod="a"), TickSample(0, "s", 2, 0, pod="a")]
    with pytest.raises(ValueError, match="revision 's' pod 'a' has two samples at one time"):
        write_openmetrics(io.StringIO(), twice, preset="istio", namespace="ns")


def test_tick_samples_refuse_pods_that_cannot_be_written_exactly() -> None:
    good = OBS[0]
    assert good.stable is not None and good.canary is not None
    bad_sum = Observation(
        0, 60, VersionCounts(99, 1, B, (12, 34, 99), pods=good.stable.pods), good.canary
    )
    with pytest.raises(ValueError, match="do not add up"):
        tick_samples_from_observations([bad_sum], 15, "s", "c")
    some = [good, Observation(60, 120, VersionCounts(5, 0, B, (5, 5, 5)), good.canary)]
    with pytest.raises(ValueError, match="in some intervals only"):
        tick_samples_from_observations(some, 15, "s", "c")
    hist = Histogram((1.0, math.inf), (1, 2))
    with_ml = Observation(
        0, 60, VersionCounts(**{**_fields(good.stable), "histograms": {"ttft": hist}}), good.canary
    )
    with pytest.raises(ValueError, match="not counted per pod"):
        tick_samples_from_observations([with_ml], 15, "s", "c")


def _fields(vc: VersionCounts) -> dict[str, object]:
    return {
        "requests": vc.requests,
        "errors": vc.errors,
        "bounds_ms": vc.bounds_ms,
        "bucket_counts": vc.bucket_counts,
        "pods": vc.pods,
    }


def test_trace_with_pods_round_trips_and_sums_by_pod(tmp_path: Path) -> None:
    path = tmp_path / "pods.csv"
    assert write_trace(path, OBS) == 2 + 1 + 1 + 1 + 2 + 1
    text = path.read_text()
    assert text.splitlines()[0] == "t_seconds,version,pod,requests,errors,le_10,le_100,le_inf"
    assert "0,stable,s-b,12,0,2,9,12" in text
    assert read_trace(path) == OBS
    whole = TraceSource.from_file(path).fetch([FetchRequest("k", "n", "a", "b", Source())], 0, 180)
    o = whole["k"]
    assert o.usable and o.stable is not None
    assert o.stable.pods == (
        PodCounts("s-a", 62, 4, (22, 52, 62)),
        PodCounts("s-b", 52, 4, (22, 39, 52)),
    )
    assert o.stable.requests == 114


def test_trace_rows_without_a_pod_give_a_version_no_pods(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(
        "t_seconds,version,pod,requests,errors,le_10,le_100,le_inf\n"
        "0,stable,s-a,3,0,1,2,3\n"
        "0,stable,s-b,4,1,1,4,4\n"
        "0,canary,,5,0,5,5,5\n"
        "60,stable,s-a,1,0,1,1,1\n"
        "60,canary,,2,0,2,2,2\n"
    )
    obs = read_trace(path)
    assert obs[0].stable is not None and obs[0].canary is not None
    assert obs[0].stable.requests == 7 and obs[0].stable.errors == 1
    assert obs[0].stable.bucket_counts == (2, 6, 7)
    assert [p.pod for p in obs[0].stable.pods] == ["s-a", "s-b"]
    assert obs[0].canary.pods == () and obs[0].canary.requests == 5


def test_trace_pod_rows_are_checked_with_their_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "t_seconds,version,pod,requests,errors,le_10,le_100,le_inf\n"
        "0,stable,s-a,3,0,1,2,3\n"
        "0,stable,s-a,4,1,1,4,4\n"
        "0,stable,,7,1,2,6,7\n"
        "0,canary,c-a,5,6,5,5,5\n"
        "0,canary,c-b,5,0,5,4,5\n"
    )
    with pytest.raises(TraceError) as err:
        read_trace(path, interval_s=60)
    text = str(err.value)
    assert f"{path}:3:3" in text and "second row of stable pod 's-a'" in text
    assert f"{path}:4:3" in text and "a row without a pod and per-pod rows" in text
    assert f"{path}:5:5" in text and "more errors (6) than requests (5)" in text
    assert f"{path}:6:7" in text and "buckets must be cumulative: 4 < 5 in le_10" in text
