"""The operator's own Prometheus metrics (``/metrics``), via ``prometheus_client``.

Metrics live in an :class:`OperatorMetrics` object with its own ``CollectorRegistry`` instead of
the library's global default: tests create a fresh one and assert exact values without seeing
another test's increments, and nothing third-party pollutes the operator's endpoint. The
process-wide instance is :data:`METRICS`.

Label values are bounded sets (phases, triggers, outcome kinds, verification results), never
Rollout names: the operator's own series must not grow with the number of Rollouts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from calyx.api.lease import LeasePhase
from calyx.api.rollout import RollbackTrigger, RolloutPhase
from calyx.domain.analysis import QueryOutcome
from calyx.domain.kstatus import RECONCILING, summary_for
from calyx.domain.ratelimit import LIMITED_REASONS
from calyx.domain.timefmt import parse_time

#: Why an evaluation queried a built-in metric on its own (``calyx_analysis_batch_misses``):
#: no share of a batch for its namespace (not in one, or the group failed or timed out), a share
#: fetched before the landing the evaluation is due at, one too old, or one without a series
#: for a side (a grouped "no series" is not trusted as NoData).
BATCH_MISS_REASONS: Final = ("not-fetched", "before-due", "too-old", "no-series")

__all__ = [
    "BATCH_MISS_REASONS",
    "BREACH_TO_REVERT_BUCKETS",
    "LEASE_PHASES",
    "METRICS",
    "QUERY_BUCKETS",
    "ROLLOUT_PHASES",
    "ObjectStateCollector",
    "OperatorMetrics",
    "object_state_families",
    "start_metrics_server",
]

ROLLOUT_PHASES: Final = get_args(RolloutPhase)
LEASE_PHASES: Final = get_args(LeasePhase)

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
        self.events_suppressed = Counter(
            "calyx_events_suppressed",
            "Events not posted by the rate limit (their audit records were written), by reason.",
            ["reason"],
            registry=r,
        )
        self.batch_misses = Counter(
            "calyx_analysis_batch_misses",
            "Built-in metrics an evaluation queried on its own instead of reading the sweep's "
            'batch, by reason (docs/analysis.md, "Batched queries").',
            ["reason"],
            registry=r,
        )
        self.leader = Gauge(
            "calyx_leader",
            "1 on the replica that holds the leader Lease and may write, 0 on a standby.",
            registry=r,
        )
        for phase in ROLLOUT_PHASES:
            self.rollouts.labels(phase=phase).set(0)
        # Every trigger starts at 0, so the first rollback after a start is an *increase* that
        # PromQL's increase() sees (a series born at 1 has no earlier sample to compare with).
        for trigger in get_args(RollbackTrigger):
            self.rollbacks.labels(trigger=trigger)
        for reason in sorted(LIMITED_REASONS):
            self.events_suppressed.labels(reason=reason)
        for reason in BATCH_MISS_REASONS:
            self.batch_misses.labels(reason=reason)

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

    def record_batch_miss(self, reason: str) -> None:
        """Count one built-in metric queried on its own (reasons: :data:`BATCH_MISS_REASONS`)."""
        self.batch_misses.labels(reason=reason).inc()

    def record_event_suppressed(self, reason: str) -> None:
        """Count one Event the rate limit did not post (docs/audit.md, "Rate limits")."""
        self.events_suppressed.labels(reason=reason).inc()

    def export_objects(self, source: ObjectSource) -> ObjectStateCollector:
        """Also serve the kube-state-style series of :class:`ObjectStateCollector`, read from
        ``source`` at each scrape. Registered once: a second call returns the first collector."""
        if self._objects is None:
            self._objects = ObjectStateCollector(source)
            self.registry.register(self._objects)
        return self._objects

    _objects: ObjectStateCollector | None = None


# --------------------------------------------------------------------------------------------
# kube-state-style series (docs/observability.md)
# --------------------------------------------------------------------------------------------

#: Returns ``(rollouts, leases)``: every ``rollouts.calyx.io`` and ``leases.calyx.io`` object.
ObjectSource = Callable[[], tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]]

_log = logging.getLogger("calyx.metrics")


def _stamp(value: object) -> float | None:
    try:
        return parse_time(value).timestamp()
    except ValueError:
        return None


def _last_progress(status: Mapping[str, Any]) -> float | None:
    """The latest time anything moved: a condition flipped, a tier started, soaked or ended, a
    rollback step. An analysis pass is not progress (it runs every interval while stuck too)."""
    times: list[object] = [c.get("lastTransitionTime") for c in status.get("conditions") or []]
    for tier in status.get("tiers") or []:
        times += [tier.get("startedAt"), tier.get("soakStartedAt"), tier.get("completedAt")]
    rollback = status.get("rollback") or {}
    times += [rollback.get(k) for k in ("detectedAt", "revertedAt", "verifiedAt")]
    stamps = [t for t in (_stamp(x) for x in times if x) if t is not None]
    return max(stamps) if stamps else None


def object_state_families(
    rollouts: Sequence[Mapping[str, Any]], leases: Sequence[Mapping[str, Any]]
) -> list[GaugeMetricFamily]:
    """The kube-state-style gauges for one listing of Rollouts and Leases.

    Like kube-state-metrics, these carry object names, which the operator's own counters avoid;
    the series count stays bounded because only Rollouts *in progress* are exported one by one
    (at most one per target Deployment at a time), and Leases only as counts per phase. A
    finished Rollout's series disappear, and Prometheus marks them stale.
    """
    lease_phase = GaugeMetricFamily(
        "calyx_leases", "Lease objects in each phase.", labels=["phase"]
    )
    counts = dict.fromkeys(LEASE_PHASES, 0)
    expiry: dict[tuple[str, str], float] = {}
    for lease in leases:
        meta = lease.get("metadata") or {}
        lphase = str((lease.get("status") or {}).get("phase") or "Pending")
        counts[lphase] = counts.get(lphase, 0) + 1
        when = _stamp((lease.get("spec") or {}).get("expiresAt"))
        if when is not None:
            expiry[(str(meta.get("namespace")), str(meta.get("name")))] = when
    for lphase, n in sorted(counts.items()):
        lease_phase.add_metric([lphase], n)

    keys = ["namespace", "rollout"]
    info = GaugeMetricFamily(
        "calyx_rollout_info",
        "A Rollout in progress (value 1), with its Lease, target and phase.",
        labels=[*keys, "lease", "target", "phase"],
    )
    weight = GaugeMetricFamily(
        "calyx_rollout_current_weight", "Requested canary weight (%).", labels=keys
    )
    served = GaugeMetricFamily(
        "calyx_rollout_effective_percent",
        "Canary ready pods / all ready pods (%), as served.",
        labels=keys,
    )
    canary = GaugeMetricFamily(
        "calyx_rollout_canary_replicas", "Replicas of the canary Deployment.", labels=keys
    )
    stable = GaugeMetricFamily(
        "calyx_rollout_stable_replicas", "Replicas of the stable Deployment.", labels=keys
    )
    progress = GaugeMetricFamily(
        "calyx_rollout_last_progress_timestamp_seconds",
        "When the Rollout last moved (a condition flip, a tier start/soak/end, a rollback step).",
        labels=keys,
    )
    lease_expiry = GaugeMetricFamily(
        "calyx_rollout_lease_expiry_timestamp_seconds",
        "spec.expiresAt of the Lease a Rollout in progress depends on.",
        labels=[*keys, "lease"],
    )
    nodata = GaugeMetricFamily(
        "calyx_rollout_nodata_since_timestamp_seconds",
        "Start of the current no-data streak of a Rollout's analysis (absent when there is data).",
        labels=keys,
    )
    for ro in rollouts:
        meta = ro.get("metadata") or {}
        status = ro.get("status") or {}
        phase = status.get("phase")
        if summary_for("Rollout", phase) != RECONCILING:
            continue
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        lease_name = str(((ro.get("spec") or {}).get("leaseRef") or {}).get("name") or "")
        target = str((status.get("target") or {}).get("name") or "")
        info.add_metric([ns, name, lease_name, target, str(phase or "Pending")], 1)
        for family, key in (
            (weight, "currentWeight"),
            (served, "effectivePercent"),
            (canary, "canaryReplicas"),
            (stable, "stableReplicas"),
        ):
            if isinstance(status.get(key), int | float):
                family.add_metric([ns, name], float(status[key]))
        last = _last_progress(status)
        if last is None:
            last = _stamp(meta.get("creationTimestamp"))
        if last is not None:
            progress.add_metric([ns, name], last)
        if (ns, lease_name) in expiry:
            lease_expiry.add_metric([ns, name, lease_name], expiry[(ns, lease_name)])
        since = _stamp(((status.get("lastAnalysis") or {}).get("state") or {}).get("noDataSince"))
        if since is not None:
            nodata.add_metric([ns, name], since)
    return [lease_phase, info, weight, served, canary, stable, progress, lease_expiry, nodata]


class ObjectStateCollector(Collector):
    """Collects :func:`object_state_families` from ``source`` at scrape time.

    Reading at scrape time (one list call per kind, every scrape interval) rather than from the
    reconcile loops keeps the series true even while a loop is wedged, which is exactly when an
    alert such as "rollout stuck" must fire. ``calyx_object_metrics_up`` is 0 when the listing
    failed, so a dashboard can tell "no Rollout in progress" from "could not look".
    """

    def __init__(self, source: ObjectSource) -> None:
        self.source = source
        self._failing = False

    def describe(self) -> list[Metric]:
        return []  # names are not known before a listing; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "calyx_object_metrics_up",
            "1 when the last listing of Rollouts and Leases for these metrics succeeded.",
        )
        try:
            rollouts, leases = self.source()
            families = object_state_families(rollouts, leases)
        except Exception as exc:  # a scrape must not fail because the API server is away
            if not self._failing:
                _log.warning("listing Rollouts/Leases for /metrics failed: %s", exc)
            self._failing = True
            up.add_metric([], 0)
            yield up
            return
        if self._failing:
            _log.info("listing Rollouts/Leases for /metrics works again")
        self._failing = False
        up.add_metric([], 1)
        yield up
        yield from families


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
