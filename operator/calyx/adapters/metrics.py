"""The operator's own Prometheus metrics (``/metrics``), via ``prometheus_client``.

Metrics live in an :class:`OperatorMetrics` object with its own ``CollectorRegistry`` instead of
the library's global default: tests create a fresh one and assert exact values without seeing
another test's increments, and nothing third-party pollutes the operator's endpoint. The
process-wide instance is :data:`METRICS`.

Label values are bounded sets (phases, triggers, outcome kinds, verification results), never
Rollout names: the operator's own series must not grow with the number of Rollouts.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Final, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from calyx.api.rollout import RolloutPhase
from calyx.domain.analysis import QueryOutcome

__all__ = [
    "BREACH_TO_REVERT_BUCKETS",
    "METRICS",
    "QUERY_BUCKETS",
    "ROLLOUT_PHASES",
    "OperatorMetrics",
    "start_metrics_server",
]

ROLLOUT_PHASES: Final = get_args(RolloutPhase)

#: Promise 3 wants revert far below 60 s; the buckets resolve the sub-second range we aim for.
BREACH_TO_REVERT_BUCKETS: Final = (0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300)
QUERY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class OperatorMetrics:
    """Every operator metric, registered in one registry (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rollouts = Gauge(
            "calyx_rollouts", "Rollouts currently in each phase.", ["phase"], registry=r
        )
        self.rollbacks = Counter(
            "calyx_rollbacks", "Rollbacks issued, by trigger.", ["trigger"], registry=r
        )
        self.breach_to_revert = Histogram(
            "calyx_breach_to_revert_seconds",
            "Seconds from the first breaching sample (breachAt) to the revert being issued.",
            buckets=BREACH_TO_REVERT_BUCKETS,
            registry=r,
        )
        self.query_duration = Histogram(
            "calyx_promql_query_duration_seconds",
            "Latency of PromQL queries to Prometheus, by outcome kind.",
            ["outcome"],
            buckets=QUERY_BUCKETS,
            registry=r,
        )
        self.query_errors = Counter(
            "calyx_promql_query_errors",
            "PromQL queries that failed (transport, HTTP or PromQL error, timeout).",
            ["reason"],
            registry=r,
        )
        self.signature_verifications = Counter(
            "calyx_signature_verifications",
            "Lease and approval signature verifications, by result.",
            ["result"],
            registry=r,
        )
        for phase in ROLLOUT_PHASES:
            self.rollouts.labels(phase=phase).set(0)

    def set_rollouts_by_phase(self, counts: Mapping[str, int]) -> None:
        """Publish a full count per phase; phases not in ``counts`` are set to 0.

        A full snapshot (from the cache of Rollouts) rather than inc/dec on transitions, so a
        missed transition or an operator restart cannot leave the gauge drifting.
        """
        for phase in {*ROLLOUT_PHASES, *counts}:
            self.rollouts.labels(phase=phase).set(counts.get(phase, 0))

    def record_rollback(self, trigger: str, breach_to_revert_seconds: float | None = None) -> None:
        """Count a rollback; ``breach_to_revert_seconds`` when its breachAt is known."""
        self.rollbacks.labels(trigger=trigger).inc()
        if breach_to_revert_seconds is not None and breach_to_revert_seconds >= 0:
            self.breach_to_revert.observe(breach_to_revert_seconds)

    def record_query(self, outcome: QueryOutcome, error_reason: str | None = None) -> None:
        """Observe one query's latency; count it as an error when its kind is ``error``."""
        self.query_duration.labels(outcome=outcome.kind).observe(max(outcome.seconds, 0.0))
        if outcome.kind == "error":
            self.query_errors.labels(reason=error_reason or "error").inc()

    def record_signature(self, result: str) -> None:
        """Count one signature verification, e.g. ``valid``, ``invalid``, ``unknown-signer``."""
        self.signature_verifications.labels(result=result).inc()


METRICS: Final = OperatorMetrics()
"""The operator process's metrics."""


def start_metrics_server(
    port: int, addr: str = "0.0.0.0", metrics: OperatorMetrics = METRICS
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``metrics`` on ``http://addr:port/metrics`` from a daemon thread.

    Returns the server and thread so that tests (and a clean shutdown) can ``server.shutdown()``.
    ``port=0`` picks a free port: read it from ``server.server_port``.
    """
    return start_http_server(port, addr=addr, registry=metrics.registry)
