"""Mirrored traffic in the metrics layer: which presets can tell it apart, and its checks."""

from __future__ import annotations

import io
import math

import pytest

from canaryd.metrics.openmetrics import TickSample, write_openmetrics
from canaryd.metrics.presets import PresetOptions, build_queries
from canaryd.observation import Observation, VersionCounts
from canaryd.policy.model import Queries, Source


def test_only_istio_with_destination_reports_has_live_queries() -> None:
    qs = build_queries(Source(preset="istio"), ["ns"], ["a", "b"], 60)
    assert qs.live_requests is not None and qs.live_errors is not None
    assert (
        'reporter="source"' in qs.live_requests and 'reporter="destination"' not in qs.live_requests
    )
    assert 'response_code=~"5.."' in qs.live_errors
    assert qs.live_requests.startswith(
        "sum by (destination_workload_namespace, destination_workload)"
    )
    assert "live_requests" in qs.kinds()  # sized with the others when batches are cut
    opts = PresetOptions(istio_reporter="source")
    assert build_queries(Source(preset="istio"), ["ns"], ["a", "b"], 60, opts).live_requests is None
    for preset in ("knative", "kserve"):
        qs = build_queries(Source(preset=preset), ["ns"], ["a", "b"], 60)  # type: ignore[arg-type]
        assert qs.live_requests is None and qs.live_errors is None
    custom = Source(
        preset="custom",
        queries=Queries(
            requests='sum by (revision) (increase(r{revision=~"{revisions}"}[{interval}]))',
            errors='sum by (revision) (increase(e{revision=~"{revisions}"}[{interval}]))',
        ),
    )
    assert build_queries(custom, ["ns"], ["a", "b"], 60).live_requests is None


@pytest.mark.parametrize(
    ("mirrored", "errors", "problem"),
    [
        (5.0, 1.0, None),
        (11.0, 1.0, "mirrored requests (11) outside 0..10"),
        (-1.0, 0.0, "mirrored requests (-1) outside 0..10"),
        (5.0, 3.0, "mirrored errors (3) outside 0..2"),
    ],
)
def test_mirrored_counts_are_checked(mirrored: float, errors: float, problem: str | None) -> None:
    vc = VersionCounts(10, 2, mirrored_requests=mirrored, mirrored_errors=errors)
    assert vc.problem() == problem
    obs = Observation(0, 60, VersionCounts(100, 1), vc).validated()
    assert obs.usable is (problem is None)


def test_mirrored_counts_round_trip_and_old_documents_have_none() -> None:
    vc = VersionCounts(10, 2, (math.inf,), (10.0,), mirrored_requests=4.0, mirrored_errors=1.0)
    assert VersionCounts.from_dict(vc.to_dict()) == vc
    plain = VersionCounts(10, 2)
    assert "mirrored_requests" not in plain.to_dict()
    assert VersionCounts.from_dict(plain.to_dict()).mirrored_requests is None


def test_source_reports_leave_the_copies_out() -> None:
    samples = [
        TickSample(0, "c", 0, 0),
        TickSample(60, "c", 100, 10, mirrored_requests_cum=80, mirrored_errors_cum=6),
    ]
    buf = io.StringIO()
    write_openmetrics(buf, samples, preset="istio", namespace="ns", source_reports=True)
    lines = [ln for ln in buf.getvalue().splitlines() if 'reporter="source"' in ln]
    assert lines == [
        'istio_requests_total{destination_workload_namespace="ns",destination_workload="c",'
        'reporter="source",response_code="200"} 0 0',
        'istio_requests_total{destination_workload_namespace="ns",destination_workload="c",'
        'reporter="source",response_code="200"} 16 60',
        'istio_requests_total{destination_workload_namespace="ns",destination_workload="c",'
        'reporter="source",response_code="500"} 0 0',
        'istio_requests_total{destination_workload_namespace="ns",destination_workload="c",'
        'reporter="source",response_code="500"} 4 60',
    ]
    with pytest.raises(ValueError, match="istio"):
        write_openmetrics(
            io.StringIO(), samples, preset="knative", namespace="ns", source_reports=True
        )
