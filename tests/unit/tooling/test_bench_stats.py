"""The statistics helpers of the benchmarks (bench/common.py): percentiles, summaries, and the
Prometheus text-format sum used by bench/scale.py."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.common import metric_sum, percentile, summary

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def test_percentile_known_values() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 100) == 5.0
    assert percentile(xs, 95) == pytest.approx(4.8)  # numpy.percentile(xs, 95)
    assert percentile([10.0, 0.0], 50) == 5.0  # unsorted input, interpolated
    assert percentile([7.0], 95) == 7.0


def test_percentile_of_nothing_is_nan_and_range_is_checked() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@given(st.lists(finite, min_size=2, max_size=50))
def test_percentile_matches_statistics_inclusive_quantiles(xs: list[float]) -> None:
    # statistics.quantiles(method="inclusive") is the same type-7 definition as numpy's default.
    cuts = statistics.quantiles(xs, n=20, method="inclusive")
    assert percentile(xs, 50) == pytest.approx(cuts[9], abs=1e-6)
    assert percentile(xs, 95) == pytest.approx(cuts[18], abs=1e-6)
    assert min(xs) <= percentile(xs, 95) <= max(xs)


def test_summary_skips_missing_values() -> None:
    s = summary([0.2, None, 0.4, math.nan, 0.3])
    assert s["n"] == 3
    assert s["p50"] == pytest.approx(0.3)
    assert s["max"] == pytest.approx(0.4)
    assert s["mean"] == pytest.approx(0.3)
    empty = summary([None])
    assert empty["n"] == 0 and math.isnan(empty["p95"])


def test_metric_sum_filters_by_name_and_labels() -> None:
    text = (
        "# HELP calyx_promql_query_duration_seconds x\n"
        'calyx_promql_query_duration_seconds_count{outcome="value"} 40.0\n'
        'calyx_promql_query_duration_seconds_count{outcome="empty"} 2.0\n'
        'calyx_promql_query_duration_seconds_sum{outcome="value"} 1.5\n'
        'prometheus_http_requests_total{code="200",handler="/api/v1/query"} 7\n'
        'prometheus_http_requests_total{code="200",handler="/api/v1/query_range"} 3\n'
        'prometheus_http_requests_total{code="200",handler="/metrics"} 100\n'
        "process_cpu_seconds_total 12.5\n"
    )
    assert metric_sum(text, "calyx_promql_query_duration_seconds_count") == 42.0
    assert metric_sum(text, "process_cpu_seconds_total") == 12.5
    handler = r'handler="/api/v1/query(_range)?"'
    assert metric_sum(text, "prometheus_http_requests_total", handler) == 10.0
    assert metric_sum(text, "missing") == 0.0
