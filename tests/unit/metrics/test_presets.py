"""Query building and escaping: a revision or namespace name can never change a query's shape."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryd.errors import MetricsError
from canaryd.metrics.presets import (
    PresetOptions,
    build_queries,
    promql_duration,
    promql_string,
    regex_alternation,
    render_template,
    revision_for,
)
from canaryd.policy.model import Queries, Source

HOSTILE = [
    '"}) or vector(1)',
    'a"b',
    "back\\slash",
    "\\",
    '\\"',
    "x|y",
    ".*",
    "new\nline",
    "tab\tand\x00nul",
    '"} or on() vector(1) or {"',
    "ünïcødé-名前",
]


def unquote(literal: str) -> str:
    """Decode one double-quoted PromQL string literal (the escapes promql_string writes)."""
    assert literal[0] == literal[-1] == '"'
    out, i, body = [], 0, literal[1:-1]
    simple = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
    while i < len(body):
        ch = body[i]
        assert ch != '"', "unescaped quote inside a literal"
        if ch == "\\":
            nxt = body[i + 1]
            if nxt == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(simple[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def skeleton(query: str) -> str:
    """The query with every string literal replaced by S: its PromQL structure."""
    return _LITERAL.sub("S", query)


@given(st.text(max_size=30))
def test_promql_string_round_trips_any_text(value: str) -> None:
    lit = promql_string(value)
    assert _LITERAL.fullmatch(lit)
    assert unquote(lit) == value


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("preset", ["istio", "knative", "kserve"])
def test_hostile_names_do_not_change_the_query_structure(name: str, preset: str) -> None:
    src = Source(preset=preset)  # type: ignore[arg-type]
    benign = build_queries(src, ["ns"], ["rev-a", "rev-b"], 60)
    hostile = build_queries(src, [name], [name, "rev-b"], 60)
    for kind, q in benign.kinds().items():
        assert skeleton(hostile.kinds()[kind]) == skeleton(q), kind
    assert "vector(1)" not in skeleton(hostile.requests)


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5))
def test_regex_alternation_matches_exactly_the_names(names: list[str]) -> None:
    pattern = re.compile(regex_alternation(names), re.S)
    for n in names:
        assert pattern.fullmatch(n)
    assert not pattern.fullmatch("".join(names) + "\x01zz")


def test_hostile_regex_matches_only_itself() -> None:
    pattern = re.compile(regex_alternation(['we"ird\\rev|x.*']))
    assert pattern.fullmatch('we"ird\\rev|x.*')
    assert not pattern.fullmatch("xyz")
    assert not pattern.fullmatch('we"ird\\rev')


def test_istio_queries() -> None:
    q = build_queries(
        Source(preset="istio", error_codes="5..|429"), ["ns1", "ns2"], ["r-2", "r-1"], 60
    )
    sel = (
        'reporter="destination", destination_workload_namespace=~"ns1|ns2", '
        'destination_workload=~"(?:r-1|r-2)(?:-deployment|-private)?"'
    )
    by = "destination_workload_namespace, destination_workload"

    def delta(fn: str, series: str, by: str) -> str:
        end = f'label_replace({fn}({series}[360s]), "canaryd_edge", "end", "", "")'
        start = (
            f'label_replace(-1 * {fn}({series}[300s] offset 60s), "canaryd_edge", "start", "", "")'
        )
        return f"sum by ({by}) ({end} or {start})"

    # Requests, errors and buckets answer per pod too; resets are judged per version.
    by_pod = f"{by}, pod"
    assert q.requests == delta("last_over_time", f"istio_requests_total{{{sel}}}", by_pod)
    assert q.errors == delta(
        "last_over_time", f'istio_requests_total{{{sel}, response_code=~"5..|429"}}', by_pod
    )
    assert q.buckets == delta(
        "last_over_time", f"istio_request_duration_milliseconds_bucket{{{sel}}}", f"{by_pod}, le"
    )
    assert q.pod_label == "pod"
    # Every counter's drops in one query, over the same two ranges.
    names = "istio_request_duration_milliseconds_bucket|istio_requests_total"
    assert q.resets == delta("resets", f'{{__name__=~"{names}", {sel}}}', by)
    assert q.latency_scale_ms == 1.0


def test_istio_version_label_is_configurable() -> None:
    q = build_queries(
        Source(preset="istio", version_label="destination_version"), ["n"], ["v2"], 30
    )
    assert 'destination_version=~"(?:v2)(?:-deployment|-private)?"' in q.requests
    assert "[330s]" in q.requests and "offset 30s" in q.requests


def test_knative_queries_use_the_response_code_class_by_default() -> None:
    q = build_queries(Source(preset="knative"), ["n"], ["a", "b"], 60)
    assert 'revision_app_request_count{namespace_name=~"n", revision_name=~"a|b"}' in q.requests
    assert q.errors is not None and 'response_code_class="5xx"' in q.errors
    assert q.buckets is not None and "revision_app_request_latencies_bucket" in q.buckets
    custom = build_queries(Source(preset="knative", error_codes="50[23]"), ["n"], ["a"], 60)
    assert custom.errors is not None and 'response_code=~"50[23]"' in custom.errors


def test_kserve_queries_convert_seconds_and_may_not_measure_errors() -> None:
    q = build_queries(Source(preset="kserve"), ["n"], ["a"], 90)
    assert "request_predict_seconds_count{" in q.requests
    assert q.errors is None
    assert q.latency_scale_ms == 1000.0
    q2 = build_queries(
        Source(preset="kserve", version_label="serving_knative_dev_revision"),
        ["n"],
        ["a"],
        90,
        PresetOptions(kserve_errors_metric="predict_errors_total", kserve_histogram="req_s"),
    )
    assert q2.errors is not None and "predict_errors_total{" in q2.errors
    assert "req_s_bucket{" in (q2.buckets or "")
    assert "serving_knative_dev_revision=~" in q2.requests
    with pytest.raises(MetricsError):
        build_queries(
            Source(preset="kserve"), ["n"], ["a"], 60, PresetOptions(kserve_histogram="x{}")
        )


def test_invalid_version_label_is_rejected() -> None:
    with pytest.raises(MetricsError, match="label name"):
        build_queries(Source(preset="istio", version_label='x"} or vector(1) #'), ["n"], ["a"], 60)


def test_revision_mapping_for_istio_workloads() -> None:
    wanted = {"iris-predictor-00001", "iris-predictor-00002"}
    sfx = ("-deployment", "-private")
    assert revision_for("iris-predictor-00001-deployment", wanted, sfx) == "iris-predictor-00001"
    assert revision_for("iris-predictor-00002-private", wanted, sfx) == "iris-predictor-00002"
    assert revision_for("iris-predictor-00002", wanted, sfx) == "iris-predictor-00002"
    assert revision_for("iris-predictor-00003-deployment", wanted, sfx) is None
    assert revision_for("iris-predictor-00001-deployment", wanted, ()) is None


def test_durations() -> None:
    assert promql_duration(60) == "60s"
    assert promql_duration(1.5) == "1500ms"
    with pytest.raises(MetricsError):
        promql_duration(0)


def test_custom_templates_fill_named_placeholders_only() -> None:
    tmpl = (
        (
            'sum by ({version_label}) (increase(my_requests_total{{job="x"}}'
            '{{namespace="{namespace}", {version_label}=~"{revisions}"}}[{interval}]))'
        )
        .replace("{{", "{")
        .replace("}}", "}")
    )
    out = render_template(
        tmpl, revisions=["a.1", 'b"'], namespace="n\\s", window_s=60, version_label="rev"
    )
    assert out == (
        'sum by (rev) (increase(my_requests_total{job="x"}'
        '{namespace="n\\\\s", rev=~"a\\\\.1|b\\""}[60s]))'
    )


def test_custom_templates_refuse_unsafe_placeholders() -> None:
    with pytest.raises(MetricsError, match="=~"):
        render_template(
            'x{rev="{revisions}"}', revisions=["a"], namespace="n", window_s=60, version_label="rev"
        )
    with pytest.raises(MetricsError, match="double quotes"):
        render_template(
            "x{rev=~{revisions}}", revisions=["a"], namespace="n", window_s=60, version_label="rev"
        )


def test_custom_preset_renders_one_namespace() -> None:
    src = Source(
        preset="custom",
        queries=Queries(
            requests='sum by ({version_label}) (increase(r{ns="{namespace}", {version_label}=~"{revisions}"}[{interval}]))',
            errors='sum by ({version_label}) (increase(e{ns="{namespace}", {version_label}=~"{revisions}"}[{interval}]))',
        ),
    )
    q = build_queries(src, ["n"], ["a", "b"], 60)
    assert q.requests == 'sum by (revision) (increase(r{ns="n", revision=~"a|b"}[60s]))'
    assert q.buckets is None and q.resets is None and q.namespace_label is None
    with pytest.raises(MetricsError):
        build_queries(src, ["n", "m"], ["a"], 60)
