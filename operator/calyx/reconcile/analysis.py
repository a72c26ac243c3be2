"""Metric analysis for one Rollout on a timer tick (DESIGN §5): query → evaluate → outcome.

Runs in the reconciler's worker thread, never on Kopf's event loop; every evaluation's counters
go into ``status.lastAnalysis.state`` so failureLimit and the no-data clock survive a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping
from typing import Any

from calyx.adapters.metrics import METRICS, OperatorMetrics
from calyx.adapters.prometheus import PrometheusClient
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
from calyx.domain.promql import template_vars
from calyx.domain.rollout_plan import AnalysisOutcome, Event, Observed, parse_stamp

log = logging.getLogger("calyx.analysis")
ANALYZED_PHASES = ("Progressing", "Paused", "WaitingForApproval")


class AnalysisRunner:
    """Callable the reconciler invokes on timer passes; one Prometheus client per URL."""

    def __init__(
        self, default_url: str, metrics: OperatorMetrics = METRICS, timeout_seconds: float = 5.0
    ) -> None:
        self.default_url = default_url
        self.metrics = metrics
        self.timeout = timeout_seconds
        self._clients: dict[str, PrometheusClient] = {}
        self._lock = threading.Lock()

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
        last_time = parse_stamp(last.get("time"))
        if last_time is not None and (o.now - last_time).total_seconds() < (
            settings.interval_seconds - 0.05
        ):
            return None
        meta = o.rollout["metadata"]
        target = (status.get("target") or {}).get("name") or o.target["metadata"]["name"]
        client = self.client(settings.prometheus_url or self.default_url)
        variables = template_vars(meta["namespace"], target, settings.window_seconds)
        queries = queries_for(settings, variables)
        wanted: dict[tuple[str, str], str] = {}
        for q in queries:
            wanted[(q.metric.name, "canary")] = q.canary
            if q.baseline is not None:
                wanted[(q.metric.name, "baseline")] = q.baseline
        outcomes = client.query_many(wanted)
        samples = {
            q.metric.name: MetricSamples(
                canary=outcomes[(q.metric.name, "canary")],
                baseline=outcomes.get((q.metric.name, "baseline")),
            )
            for q in queries
        }
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
