"""Metric analysis for one Rollout on a timer tick (DESIGN §5): query → evaluate → outcome.

Runs in the reconciler's worker thread, never on Kopf's event loop; every evaluation's counters
go into ``status.lastAnalysis.state`` so failureLimit and the no-data clock survive a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast

from calyx.adapters.metrics import METRICS, OperatorMetrics
from calyx.adapters.prometheus import PrometheusClient, PrometheusQueryError
from calyx.api.errors import InvalidSpecError
from calyx.api.rollout import parse_rollout_spec
from calyx.domain.analysis import (
    AnalysisDecision,
    AnalysisSettings,
    AnalysisState,
    MetricSamples,
    estimate_breach_start,
    evaluate,
    parse_analysis,
    queries_for,
)
from calyx.domain.batch import PodVector, batch_queries, combine
from calyx.domain.promql import BUILTIN_METRICS, BuiltinMetric, template_vars
from calyx.domain.rollout_plan import AnalysisOutcome, Event, Observed, parse_stamp

log = logging.getLogger("calyx.analysis")
ANALYZED_PHASES = ("Progressing", "Paused", "WaitingForApproval")
# A batch serves the sweep that fetched it (a slow sweep at 100 Rollouts takes seconds); values
# older than this are re-queried per Rollout rather than hide a fresh breach.
BATCH_MAX_AGE_SECONDS = 5.0


class AnalysisRunner:
    """Callable the reconciler invokes on timer passes; one Prometheus client per URL."""

    def __init__(
        self,
        default_url: str,
        metrics: OperatorMetrics = METRICS,
        timeout_seconds: float = 5.0,
        tolerance_seconds: float = 0.25,
    ) -> None:
        self.default_url = default_url
        self.metrics = metrics
        self.timeout = timeout_seconds
        self._clients: dict[str, PrometheusClient] = {}
        self._lock = threading.Lock()
        self._batch: dict[tuple[str, int, BuiltinMetric], dict[str, PodVector]] = {}
        self._batch_namespaces: dict[tuple[str, int, BuiltinMetric], set[str]] = {}
        self._batch_at: dt.datetime | None = None
        # A due check may run up to half a timer tick early: ticks are discrete, and waiting for
        # the next one would stretch every interval by a tick.
        self.tolerance = tolerance_seconds

    def _due(self, status: Mapping[str, Any], interval: int, now: dt.datetime) -> bool:
        last = parse_stamp((status.get("lastAnalysis") or {}).get("time"))
        return last is None or (now - last).total_seconds() >= interval - self.tolerance

    def prepare(self, bodies: Sequence[Mapping[str, Any]], now: dt.datetime) -> None:
        """Before a timer sweep: fetch every due Rollout's default metrics with one grouped
        query per (Prometheus, window, metric part) — not 8 per Rollout (DESIGN §5, issue 5
        scale goal). Rollouts then read their share in ``__call__``; anything missing from the
        batch (overrides, custom metrics, a failed group) is queried per Rollout as before."""
        groups: dict[tuple[str, int, BuiltinMetric], set[str]] = {}
        any_due = False
        for body in bodies:
            status = body.get("status") or {}
            target = (status.get("target") or {}).get("name")
            if status.get("phase") not in ANALYZED_PHASES or not target:
                continue
            try:
                spec = parse_rollout_spec(body.get("spec"))
                settings = parse_analysis(spec.analysis, spec.on_breach)
            except (InvalidSpecError, ValueError):
                continue
            if not settings.metrics:
                continue
            # Every analysed Rollout's namespace goes into the groups (a Rollout coming due
            # while a slow sweep runs finds its share too); one due Rollout is enough to query.
            any_due = any_due or self._due(status, settings.interval_seconds, now)
            url = settings.prometheus_url or self.default_url
            for m in settings.metrics:
                if m.query is None and m.kind in BUILTIN_METRICS:
                    key = (url, settings.window_seconds, m.kind)
                    groups.setdefault(key, set()).add(body["metadata"]["namespace"])
        if not any_due:
            return
        batch: dict[tuple[str, int, BuiltinMetric], dict[str, PodVector]] = {}
        parts_wanted: dict[tuple[str, int, BuiltinMetric], set[str]] = {}
        futures = {}
        for (url, window, metric), namespaces in groups.items():
            client = self.client(url)
            queries = batch_queries(metric, namespaces, window)
            parts_wanted[(url, window, metric)] = set(queries)
            for part, query in queries.items():
                futures[(url, window, metric, part)] = client.submit_vector(query)
        for (url, window, metric, part), fut in futures.items():
            try:
                vector = fut.result()
            except PrometheusQueryError:
                continue  # that group falls back to per-Rollout queries (and their outcomes)
            pods = {
                (dict(labels).get("namespace", ""), dict(labels).get("pod", "")): value
                for labels, value in vector.items()
            }
            batch.setdefault((url, window, metric), {})[part] = pods
        complete = {k: v for k, v in batch.items() if set(v) == parts_wanted[k]}
        with self._lock:
            self._batch = complete
            self._batch_namespaces = {k: groups[k] for k in complete}
            self._batch_at = now

    def _batched(
        self, url: str, window: int, metric: Any, namespace: str, target: str, now: dt.datetime
    ) -> MetricSamples | None:
        """This tick's batched samples for one metric, or None to query it on its own."""
        if metric.query is not None or metric.kind not in BUILTIN_METRICS:
            return None
        key = (url, window, metric.kind)
        with self._lock:
            parts = self._batch.get(key)
            covered = namespace in self._batch_namespaces.get(key, ())
            fresh = (
                self._batch_at is not None
                and abs((now - self._batch_at).total_seconds()) < BATCH_MAX_AGE_SECONDS
            )
        if parts is None or not covered or not fresh:
            return None
        kind = cast(BuiltinMetric, metric.kind)
        return MetricSamples(
            canary=combine(kind, parts, namespace, target, "canary"),
            baseline=combine(kind, parts, namespace, target, "baseline"),
        )

    def client(self, url: str) -> PrometheusClient:
        with self._lock:
            if url not in self._clients:
                self._clients[url] = PrometheusClient(
                    url, timeout_seconds=self.timeout, metrics=self.metrics
                )
            return self._clients[url]

    def __call__(self, o: Observed) -> AnalysisOutcome | None:
        status: Mapping[str, Any] = o.rollout.get("status") or {}
        if o.spec is None or status.get("phase") not in ANALYZED_PHASES:
            return None
        if not o.spec.analysis.has_metrics() or o.target is None:
            return None
        settings = parse_analysis(o.spec.analysis, o.spec.on_breach)
        last = status.get("lastAnalysis") or {}
        if not self._due(status, settings.interval_seconds, o.now):
            return None
        meta = o.rollout["metadata"]
        target = (status.get("target") or {}).get("name") or o.target["metadata"]["name"]
        url = settings.prometheus_url or self.default_url
        client = self.client(url)
        variables = template_vars(meta["namespace"], target, settings.window_seconds)
        queries = queries_for(settings, variables)
        samples: dict[str, MetricSamples] = {}
        wanted: dict[tuple[str, str], str] = {}
        for q in queries:
            batched = self._batched(
                url, settings.window_seconds, q.metric, meta["namespace"], target, o.now
            )
            # Only a batch that has data for every side is used: "no series" from a grouped
            # query is not trusted as NoData — the Rollout's own query decides that.
            if (
                batched is not None
                and batched.canary.has_value
                and (q.baseline is None or (batched.baseline and batched.baseline.has_value))
            ):
                samples[q.metric.name] = MetricSamples(
                    canary=batched.canary,
                    baseline=batched.baseline if q.baseline is not None else None,
                )
                continue
            wanted[(q.metric.name, "canary")] = q.canary
            if q.baseline is not None:
                wanted[(q.metric.name, "baseline")] = q.baseline
        outcomes = client.query_many(wanted)
        for q in queries:
            if q.metric.name not in samples:
                samples[q.metric.name] = MetricSamples(
                    canary=outcomes[(q.metric.name, "canary")],
                    baseline=outcomes.get((q.metric.name, "baseline")),
                )
        state = AnalysisState.from_status(last.get("state"))
        decision = evaluate(settings, samples, state, o.now)
        breach_at = None
        if decision.action in ("rollback", "pause") and decision.cause == "breach":
            breach_at = self._breach_start(client, settings, queries, decision, state, o.now)
        return AnalysisOutcome(
            status=decision.to_status(),
            action=decision.action,
            message=decision.reason,
            breach_at=_ms(breach_at) if breach_at else None,
            tier_metrics={r.name: r.to_status() for r in decision.results},
            events=_events(last.get("verdict"), decision),
        )

    def _breach_start(
        self,
        client: PrometheusClient,
        settings: AnalysisSettings,
        queries: Any,
        decision: AnalysisDecision,
        state: AnalysisState,
        now: dt.datetime,
    ) -> dt.datetime:
        """When the breaching sample became queryable, from a 1 s range query (DESIGN §1.3)."""
        fallback = decision.first_breach_at or now
        not_before = state.last_pass_at or (now - dt.timedelta(seconds=120))
        for q in queries:
            if q.metric.name not in decision.breaching:
                continue
            canary = client.query_range(q.canary, not_before, now, 1.0)
            base = client.query_range(q.baseline, not_before, now, 1.0) if q.baseline else None
            if canary.kind != "value":
                continue
            return estimate_breach_start(
                q.metric,
                canary.points,
                base.points if base else None,
                not_before=state.last_pass_at,
                fallback=fallback,
            )
        return fallback


def _events(previous: str | None, d: AnalysisDecision) -> list[Event]:
    """One Warning when a breach or no-data streak begins, not one per evaluation."""
    if d.verdict == "Breach" and previous != "Breach":
        return [Event("Warning", "ThresholdBreached", d.reason)]
    if d.verdict == "NoData" and previous != "NoData":
        return [Event("Warning", "NoData", d.reason)]
    return []


def _ms(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["AnalysisRunner"]
