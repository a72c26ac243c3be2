"""Batched analysis queries: Prometheus load that grows with signals, not with Rollouts.

Evaluated one Rollout at a time, the default metrics cost 8 queries per Rollout per interval.
Here every due Rollout that uses a metric's *default* query shares one grouped query per part
(``... by (namespace, pod)`` over all their namespaces); the per-pod vectors are split back to
each Rollout and side with the same pod classification the per-Rollout templates use, and
combined exactly as those templates aggregate (mean for TES, sum-ratio for the error rate, max
for CPU and memory). Overridden and custom queries stay per Rollout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from calyx.domain.analysis import QueryOutcome
from calyx.domain.promql import BuiltinMetric, classify_pod, window_text

Side = Literal["canary", "baseline"]
# (namespace, pod) -> value
PodVector = Mapping[tuple[str, str], float]

_CONTAINERS: Final = 'container!="", container!="POD"'


@dataclass(frozen=True)
class BatchKey:
    """What one grouped query serves: Rollouts sharing a Prometheus and a window."""

    url: str
    window_seconds: int


def namespace_selector(namespaces: Iterable[str]) -> str:
    """``namespace=~"a|b"``: Kubernetes namespace names are DNS labels, so no escaping needed."""
    names = sorted(set(namespaces))
    for n in names:
        if not n or not all(c.isalnum() or c == "-" for c in n):
            raise ValueError(f"not a namespace name: {n!r}")
    return f'namespace=~"{"|".join(names)}"'


def batch_queries(
    metric: BuiltinMetric, namespaces: Iterable[str], window_seconds: int
) -> dict[str, str]:
    """The grouped queries (by part name) that together replace ``metric``'s default template
    for every Rollout in ``namespaces``."""
    ns = namespace_selector(namespaces)
    w = window_text(window_seconds)
    if metric == "tes":
        return {"value": f"avg by (namespace, pod) (calyx_tes_score{{{ns}}})"}
    if metric == "errorRate":
        return {
            "errors": (
                f'sum by (namespace, pod) (rate(http_requests_total{{{ns}, code=~"5.."}}[{w}]))'
            ),
            "requests": f"sum by (namespace, pod) (rate(http_requests_total{{{ns}}}[{w}]))",
        }
    if metric == "cpu":
        return {
            "value": (
                "100 * max by (namespace, pod) ("
                "sum by (namespace, pod, container) "
                f"(rate(container_cpu_usage_seconds_total{{{ns}, {_CONTAINERS}}}[{w}]))"
                " / on (namespace, pod, container) sum by (namespace, pod, container) "
                f'(kube_pod_container_resource_requests{{{ns}, resource="cpu"}}))'
            )
        }
    if metric == "memory":
        return {
            "value": (
                "100 * max by (namespace, pod) ("
                "max by (namespace, pod, container) "
                f"(container_memory_working_set_bytes{{{ns}, {_CONTAINERS}}})"
                " / on (namespace, pod, container) max by (namespace, pod, container) "
                f'(kube_pod_container_resource_limits{{{ns}, resource="memory"}}))'
            )
        }
    raise ValueError(f"no batched form for metric {metric!r}")


def _side_values(vector: PodVector, namespace: str, target: str, side: Side) -> list[float]:
    return [
        v
        for (ns, pod), v in vector.items()
        if ns == namespace and classify_pod(pod, target) == side and math.isfinite(v)
    ]


def combine(
    metric: BuiltinMetric,
    parts: Mapping[str, PodVector],
    namespace: str,
    target: str,
    side: Side,
) -> QueryOutcome:
    """One Rollout's value for one side, aggregated as its default template would."""
    if metric == "errorRate":
        requests = _side_values(parts["requests"], namespace, target, side)
        if not requests:
            return QueryOutcome("empty", None, f"no request series for {side} pods", 0.0)
        total = sum(requests)
        if total <= 0:
            return QueryOutcome("empty", None, f"no requests to {side} pods in the window", 0.0)
        errors = sum(_side_values(parts["errors"], namespace, target, side))
        return QueryOutcome.of(1000.0 * errors / total)
    values = _side_values(parts["value"], namespace, target, side)
    if not values:
        return QueryOutcome("empty", None, f"no {metric} series for {side} pods", 0.0)
    if metric == "tes":
        return QueryOutcome.of(sum(values) / len(values))
    return QueryOutcome.of(max(values))
