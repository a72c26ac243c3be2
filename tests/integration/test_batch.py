"""Batched queries give the same numbers as the per-Rollout default queries (real Prometheus).

One grouped query per metric part serves every Rollout; this is only acceptable if each
Rollout's share equals what its own default query returns — checked here for every metric,
both sides, three namespaces, and a neighbour Deployment whose name starts with the target's.
"""

from __future__ import annotations

from typing import get_args

import pytest

from calyx.adapters.prometheus import PrometheusClient
from calyx.domain.batch import batch_queries, combine
from calyx.domain.promql import DEFAULT_TEMPLATES, BuiltinMetric, render, template_vars
from tests.integration.test_prometheus_analysis import (  # the fixture is reused by name
    WINDOW,
    Scenario,
)
from tests.integration.test_prometheus_analysis import (
    scenario as scenario,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


@pytest.mark.parametrize("metric", get_args(BuiltinMetric))
def test_batched_equals_per_rollout(
    request: pytest.FixtureRequest, prometheus: object, metric: str
) -> None:
    scenario: Scenario = request.getfixturevalue("scenario")
    client = PrometheusClient(prometheus.url)  # type: ignore[attr-defined]
    namespaces = [scenario.bad, scenario.good, scenario.quiet]
    parts = {}
    for part, query in batch_queries(metric, namespaces, WINDOW).items():  # type: ignore[arg-type]
        vector = client.query_vector(query)
        parts[part] = {(dict(k)["namespace"], dict(k)["pod"]): v for k, v in vector.items()}
    compared = 0
    for ns in namespaces:
        for side in ("canary", "baseline"):
            variables = template_vars(ns, "checkout", WINDOW).for_side(side)  # type: ignore[arg-type]
            single = client.query(render(DEFAULT_TEMPLATES[metric], variables))  # type: ignore[index]
            batched = combine(metric, parts, ns, "checkout", side)  # type: ignore[arg-type]
            assert batched.has_value == single.has_value, (ns, side, batched, single)
            if single.has_value:
                assert batched.value == pytest.approx(single.value, rel=0.02, abs=0.05), (
                    ns,
                    side,
                    metric,
                )
                compared += 1
    assert compared >= 2
