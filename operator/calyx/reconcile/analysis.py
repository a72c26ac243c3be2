"""Metric analysis for one Rollout on a timer tick (docs/analysis.md): query → evaluate → outcome.

Runs in the reconciler's worker thread, never on Kopf's event loop; every evaluation's counters
go into ``status.lastAnalysis.state`` so failureLimit and the no-data clock survive a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, cast

from calyx.adapters.metrics import METRICS, OperatorMetrics
from calyx.adapters.prometheus import (
    UNANSWERED_PREFIXES,
    PrometheusClient,
    PrometheusQueryError,
)
from calyx.api.errors import InvalidSpecError
from calyx.api.rollout import parse_rollout_spec
from calyx.domain.analysis import (
    AnalysisDecision,
    AnalysisError,
    AnalysisSettings,
    AnalysisState,
    MetricSamples,
    QueryOutcome,
    estimate_breach_start,
    evaluate,
    queries_for,
    settings_from_spec,
    without_gap,
)
from calyx.domain.batch import PodVector, batch_queries, combine
from calyx.domain.promql import BUILTIN_METRICS, BuiltinMetric, TemplateError, template_vars
from calyx.domain.rollout_plan import AnalysisOutcome, Event, Observed
from calyx.domain.scrape import due_at
from calyx.domain.timefmt import format_time_ms, parse_stamp

log = logging.getLogger("calyx.analysis")
ANALYZED_PHASES = ("Progressing", "Paused", "WaitingForApproval")
# A batch serves the sweep that fetched it (a slow sweep at 100 Rollouts takes seconds); values
# older than this are re-queried per Rollout rather than hide a fresh breach.
BATCH_MAX_AGE_SECONDS = 5.0
# A server with no request outstanding for longer than this is answering: an evaluation at the
# NoData deadline then waits for its answer instead of giving up at once.
RESPONSIVE_SECONDS = 1.0
MIN_TICK_SECONDS = 0.25
SETTINGS_CACHE_MAX = 20_000


class AnalysisRunner:
    """Callable the reconciler invokes on timer passes; one Prometheus client per URL."""

    def __init__(
        self,
        default_url: str,
        metrics: OperatorMetrics = METRICS,
        timeout_seconds: float = 5.0,
        tick_seconds: float = 0.5,
    ) -> None:
        self.default_url = default_url
        self.metrics = metrics
        self.timeout = timeout_seconds
        self._clients: dict[str, PrometheusClient] = {}
        self._lock = threading.Lock()
        # (url, window, metric) -> namespace -> (fetched at, part -> that namespace's pods): a
        # Rollout's share is found without scanning every pod of the batch (that was quadratic
        # in Rollouts), and each namespace's share carries its own fetch time.
        self._batch: dict[
            tuple[str, int, BuiltinMetric], dict[str, tuple[dt.datetime, dict[str, PodVector]]]
        ] = {}
        # namespace/name -> (its lastAnalysis.time then, the due time prepare() fetched its share
        # for, fetched at)
        self._prepared: dict[str, tuple[str, dt.datetime, dt.datetime]] = {}
        self.max_tick = tick_seconds
        self._shortest_interval = math.inf  # of the Rollouts the last sweep analysed
        self._settings: dict[tuple[str, Any], AnalysisSettings | None] = {}

    def tick_seconds(self) -> float:
        """The rollout sweep's period: the configured tick, shorter while some Rollout analyses
        at a short interval — a quarter of it, not below :data:`MIN_TICK_SECONDS` — so that
        a 1 s interval is evaluated within a quarter second of its scrape landing without a
        fast tick for everybody (docs/architecture.md, "Reconciliation")."""
        return min(self.max_tick, max(MIN_TICK_SECONDS, self._shortest_interval / 4))

    @property
    def tolerance(self) -> float:
        """A due check may run up to half a timer tick early: ticks are discrete, and waiting
        for the next one would stretch every interval by a tick."""
        return self.tick_seconds() / 2

    def _due_time(
        self, status: Mapping[str, Any], settings: AnalysisSettings, url: str | None
    ) -> dt.datetime | None:
        """The scheduled evaluation, or earlier the moment a running NoData streak reaches
        ``noData.rollbackAfterSeconds``: the rollback must not wait for the next interval."""
        last = status.get("lastAnalysis") or {}
        at = parse_stamp(last.get("time"))
        targets = self.client(url).scrape_targets() if url and at is not None else []
        when = due_at(at, settings.interval_seconds, targets, self.tolerance)
        since = AnalysisState.from_status(last.get("state")).no_data_since
        after = settings.no_data_rollback_after_seconds
        if when is None or since is None or after <= 0:
            return when
        return min(when, since + dt.timedelta(seconds=after))

    def next_due(self, o: Observed) -> dt.datetime | None:
        """When ``o``'s next evaluation is due (None: now), by the rule ``__call__`` applies:
        the timer sweep skips a quiet Rollout until then (docs/architecture.md)."""
        if o.spec is None:
            return None
        settings = settings_from_spec(o.spec.analysis, o.spec.on_breach)
        url = settings.prometheus_url or self.default_url
        return self._due_time(o.rollout.get("status") or {}, settings, url)

    def _settings_of(self, body: Mapping[str, Any]) -> AnalysisSettings | None:
        """A listed Rollout's analysis settings, parsed once per spec generation (a sweep
        over 1,000 Rollouts parsed every spec every tick)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("uid") or meta.get("name")), meta.get("generation"))
        if key in self._settings:
            return self._settings[key]
        try:
            spec = parse_rollout_spec(body.get("spec"))
        except InvalidSpecError:
            settings = None
        else:
            settings = settings_from_spec(spec.analysis, spec.on_breach)
        if len(self._settings) > SETTINGS_CACHE_MAX:
            self._settings.clear()
        self._settings[key] = settings
        return settings

    def prepare(
        self,
        bodies: Sequence[Mapping[str, Any]],
        now: dt.datetime,
        only: Collection[str] | None = None,
    ) -> None:
        """Before a timer sweep: fetch every due Rollout's default metrics with one grouped
        query per (Prometheus, window, metric part) — not 8 per Rollout (docs/analysis.md, issue 5
        scale goal). Rollouts then read their share in ``__call__``; anything missing from the
        batch (overrides, custom metrics, a failed group) is queried per Rollout as before.
        ``only`` (``namespace/name``) limits the batch to the Rollouts this sweep will run; the
        shortest analysed interval (the timer's tick) is taken over all of ``bodies``."""
        groups: dict[tuple[str, int, BuiltinMetric], set[str]] = {}
        # Two minima, on purpose: over every analysed Rollout (the timer's tick follows it) and
        # over those due in this batch (how long the batch may wait for Prometheus).
        analysed = math.inf
        shortest_due = float(self.timeout) * 2
        due_now: dict[str, tuple[str, dt.datetime]] = {}
        for body in bodies:
            status = body.get("status") or {}
            target = (status.get("target") or {}).get("name")
            if status.get("phase") not in ANALYZED_PHASES or not target:
                continue
            settings = self._settings_of(body)
            if settings is None or not settings.metrics:
                continue
            analysed = min(analysed, float(settings.interval_seconds))
            meta = body["metadata"]
            rollout = f"{meta['namespace']}/{meta['name']}"
            if only is not None and rollout not in only:
                continue
            # Only the namespaces of Rollouts due now go into the groups: a batch fetched
            # before a Rollout's landing cannot serve it (its data would be older than the
            # landing it is due at), and at 1,000 Rollouts the grouped answers for all of
            # them, every tick, were a fifth of the operator's CPU (JSON).
            url = settings.prometheus_url or self.default_url
            when = self._due_time(status, settings, url)
            if when is not None and when > now:
                continue
            shortest_due = min(shortest_due, float(settings.interval_seconds))
            last_time = str((status.get("lastAnalysis") or {}).get("time") or "")
            due_now[rollout] = (last_time, when or now)
            for m in settings.metrics:
                if m.query is None and m.kind in BUILTIN_METRICS:
                    key = (url, settings.window_seconds, m.kind)
                    groups.setdefault(key, set()).add(meta["namespace"])
        self._shortest_interval = analysed
        if not groups:
            return
        batch: dict[tuple[str, int, BuiltinMetric], dict[str, dict[str, PodVector]]] = {}
        parts_wanted: dict[tuple[str, int, BuiltinMetric], set[str]] = {}
        futures = {}
        # The batch is an accelerator: a hung Prometheus must not hold up the sweep for a full
        # timeout before every Rollout's own (deadline-bounded) queries even start.
        wait = min(self.timeout, shortest_due / 2)
        for (url, window, metric), namespaces in groups.items():
            client = self.client(url)
            if client.unanswered_since(older_than_seconds=wait) is not None:
                # Hung: waiting for it again would only delay every Rollout's own queries,
                # which are what notices the server answering again.
                continue
            queries = batch_queries(metric, namespaces, window)
            parts_wanted[(url, window, metric)] = set(queries)
            for part, query in queries.items():
                futures[(url, window, metric, part)] = client.submit_vector(query)
        deadline = time.monotonic() + wait
        for (url, window, metric, part), fut in futures.items():
            try:
                vector = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                continue  # the client remembers when it was sent (a NoData streak's start)
            except PrometheusQueryError:
                continue  # that group falls back to per-Rollout queries (and their outcomes)
            by_namespace: dict[str, dict[tuple[str, str], float]] = {}
            for labels, value in vector.items():
                ns, pod = dict(labels).get("namespace", ""), dict(labels).get("pod", "")
                by_namespace.setdefault(ns, {})[(ns, pod)] = value
            batch.setdefault((url, window, metric), {})[part] = dict(by_namespace)
        complete = {k: v for k, v in batch.items() if set(v) == parts_wanted[k]}
        oldest = now - dt.timedelta(seconds=BATCH_MAX_AGE_SECONDS)
        with self._lock:
            # Merged per namespace, not replaced: a pass queued by this sweep may run after
            # the next sweep's fetch, which covers other Rollouts (with a new batch replacing
            # the old, 1,000 Rollouts fell back to their own queries: 719 per interval).
            for key, parts in complete.items():
                held = self._batch.setdefault(key, {})
                for ns in groups[key]:
                    held[ns] = (now, {part: pods.get(ns, {}) for part, pods in parts.items()})
            fetched_for = {ns for key in complete for ns in groups[key]}
            for rollout, (last_time, when) in due_now.items():
                if rollout.partition("/")[0] in fetched_for:
                    self._prepared[rollout] = (last_time, when, now)
            for held in self._batch.values():
                for ns in [ns for ns, (at, _) in held.items() if at < oldest]:
                    del held[ns]
            for rollout in [r for r, (_, _, at) in self._prepared.items() if at < oldest]:
                del self._prepared[rollout]

    def _batch_not_before(
        self, key: str, due: dt.datetime | None, last_time: str
    ) -> dt.datetime | None:
        """How new a batch share must be for this evaluation: fetched at or after the landing
        it is due at — as the sweep that fetched it for this very evaluation (the Rollout's
        ``lastAnalysis`` unchanged since) computed that landing, when one did. The estimate
        moves with each scrape's duration (read again at most once a second): at 1,000
        Rollouts on a saturated machine the pass's estimate was often later than the sweep's,
        and 304 of 1,000 evaluations per interval refused the share fetched for them and
        queried on their own (docs/performance.md)."""
        with self._lock:
            prepared = self._prepared.get(key)
        if due is None or prepared is None or prepared[0] != last_time:
            return due
        return min(due, prepared[1])

    def _batched(
        self,
        url: str,
        window: int,
        metric: Any,
        namespace: str,
        target: str,
        now: dt.datetime,
        not_before: dt.datetime | None,
    ) -> tuple[MetricSamples | None, str | None]:
        """The batched samples for one metric, or ``(None, why)`` to query it on its own
        (``why`` is one of ``BATCH_MISS_REASONS``; None for a metric no batch covers): only
        from a fetch made at or after the landing this evaluation is due at (``not_before``)
        and younger than :data:`BATCH_MAX_AGE_SECONDS`."""
        if metric.query is not None or metric.kind not in BUILTIN_METRICS:
            return None, None
        with self._lock:
            entry = self._batch.get((url, window, metric.kind), {}).get(namespace)
        if entry is None:
            return None, "not-fetched"
        fetched, mine = entry
        if abs((now - fetched).total_seconds()) >= BATCH_MAX_AGE_SECONDS:
            return None, "too-old"
        if not_before is not None and fetched < not_before:
            return None, "before-due"
        kind = cast(BuiltinMetric, metric.kind)
        return MetricSamples(
            canary=combine(kind, mine, namespace, target, "canary"),
            baseline=combine(kind, mine, namespace, target, "baseline"),
        ), None

    def client(self, url: str) -> PrometheusClient:
        with self._lock:
            if url not in self._clients:
                self._clients[url] = PrometheusClient(
                    url, timeout_seconds=self.timeout, metrics=self.metrics
                )
            return self._clients[url]

    def check(self, o: Observed) -> tuple[str, str] | None:
        """Before the first mutation: render every query and send each once (docs/analysis.md,
        "Checked before the first mutation"). ``("InvalidQuery", message naming the metric)``
        for a template the operator refuses or a query Prometheus rejects (HTTP 400);
        ``("PrometheusUnavailable", why)`` when it cannot be asked at all; None when fine."""
        if o.spec is None or not o.spec.analysis.has_metrics() or o.target is None:
            return None
        meta = o.rollout["metadata"]
        try:
            settings = settings_from_spec(o.spec.analysis, o.spec.on_breach)
            variables = template_vars(
                meta["namespace"], o.target["metadata"]["name"], settings.window_seconds
            )
            queries = queries_for(settings, variables)
        except (AnalysisError, TemplateError) as exc:
            return "InvalidQuery", f"analysis: {exc}"
        wanted: dict[tuple[str, str], str] = {}
        for q in queries:
            wanted[(q.metric.name, "canary")] = q.canary
            if q.baseline is not None:
                wanted[(q.metric.name, "baseline")] = q.baseline
        url = settings.prometheus_url or self.default_url
        outcomes = self.client(url).query_many(
            wanted, wait_seconds=min(self.timeout, settings.interval_seconds)
        )
        for (metric, side), outcome in sorted(outcomes.items()):
            if outcome.kind == "error" and outcome.detail.startswith("HTTP 400"):
                return "InvalidQuery", (
                    f"analysis metric {metric} ({side} query) rejected by Prometheus: "
                    f"{outcome.detail}"
                )
        failed = [o for o in outcomes.values() if o.kind == "error"]
        if failed and len(failed) == len(outcomes):
            return "PrometheusUnavailable", (
                f"cannot check the analysis queries against {url}: {failed[0].detail}"
            )
        return None

    def __call__(self, o: Observed) -> AnalysisOutcome | None:
        status: Mapping[str, Any] = o.rollout.get("status") or {}
        if o.spec is None or status.get("phase") not in ANALYZED_PHASES:
            return None
        if not o.spec.analysis.has_metrics() or o.target is None:
            return None
        settings = settings_from_spec(o.spec.analysis, o.spec.on_breach)
        last = status.get("lastAnalysis") or {}
        url = settings.prometheus_url or self.default_url
        due = self._due_time(status, settings, url)
        if due is not None and o.now < due:
            return None
        meta = o.rollout["metadata"]
        target = (status.get("target") or {}).get("name") or o.target["metadata"]["name"]
        client = self.client(url)
        variables = template_vars(meta["namespace"], target, settings.window_seconds)
        previous_at = parse_stamp(last.get("time"))
        state = without_gap(
            AnalysisState.from_status(last.get("state")),
            previous_at,
            o.now,
            settings.interval_seconds,
        )
        try:
            queries = queries_for(settings, variables)
        except AnalysisError as exc:
            # A query that cannot be rendered is a configuration error the user must see
            # (condition + one Event), and it is no evidence of health: NoData rules apply.
            decision = evaluate(settings, {}, state, o.now)
            reason = f"InvalidQuery: {exc}"
            events = []
            if not str(last.get("reason") or "").startswith("InvalidQuery:"):
                events.append(Event("Warning", "InvalidQuery", str(exc)))
            return AnalysisOutcome(
                status={**decision.to_status(), "reason": reason},
                action=decision.action,
                message=reason,
                events=events,
            )
        samples: dict[str, MetricSamples] = {}
        wanted: dict[tuple[str, str], str] = {}
        key = f"{meta['namespace']}/{meta['name']}"
        not_before = self._batch_not_before(key, due, str(last.get("time") or ""))
        for q in queries:
            batched, miss = self._batched(
                url, settings.window_seconds, q.metric, meta["namespace"], target, o.now, not_before
            )
            # Only a batch that has data for every side is used: "no series" from a grouped
            # query is not trusted as NoData — the Rollout's own query decides that.
            if batched is not None:
                if batched.canary.has_value and (
                    q.baseline is None or (batched.baseline and batched.baseline.has_value)
                ):
                    samples[q.metric.name] = MetricSamples(
                        canary=batched.canary,
                        baseline=batched.baseline if q.baseline is not None else None,
                    )
                    continue
                miss = "no-series"
            if miss is not None:
                self.metrics.record_batch_miss(miss)
            wanted[(q.metric.name, "canary")] = q.canary
            if q.baseline is not None:
                wanted[(q.metric.name, "baseline")] = q.baseline
        started = time.monotonic()
        responsive = client.answering(within_seconds=RESPONSIVE_SECONDS)
        outcomes = client.query_many(
            wanted, wait_seconds=self._wait(settings, state, o.now, responsive)
        )
        now = o.now + dt.timedelta(seconds=time.monotonic() - started)
        for q in queries:
            if q.metric.name not in samples:
                samples[q.metric.name] = MetricSamples(
                    canary=outcomes[(q.metric.name, "canary")],
                    baseline=outcomes.get((q.metric.name, "baseline")),
                )
        sent_at = o.now
        if any(_unanswered(out) for out in outcomes.values()):
            # The first request the server left unanswered may be older than this Rollout's
            # own (a batch, another Rollout's query, the targets read); not older than the
            # previous evaluation, which was answered or already started the streak.
            first = client.unanswered_since() or o.now
            sent_at = max(min(o.now, first), previous_at or first)
        decision = evaluate(settings, samples, state, now, sent_at=sent_at)
        breach_at = None
        if decision.action in ("rollback", "pause") and decision.cause == "breach":
            breach_at = self._breach_start(client, settings, queries, decision, state, now)
        return AnalysisOutcome(
            # The schedule runs from when the queries were sent, not from when a hung server
            # let go: otherwise every wait would stretch the interval (docs/analysis.md).
            status={**decision.to_status(), "time": format_time_ms(o.now)},
            action=decision.action,
            message=decision.reason,
            breach_at=format_time_ms(breach_at) if breach_at else None,
            tier_metrics={r.name: r.to_status() for r in decision.results},
            events=_events(last.get("verdict"), decision),
        )

    def _wait(
        self,
        settings: AnalysisSettings,
        state: AnalysisState,
        now: dt.datetime,
        responsive: bool = False,
    ) -> float:
        """How long this evaluation waits for Prometheus: never longer than the interval
        (the next evaluation is due then) nor, while the server leaves requests unanswered,
        past the moment a NoData streak already running reaches
        ``noData.rollbackAfterSeconds`` — the revert must not wait for a hung server
        (docs/analysis.md, "A hung Prometheus"). A ``responsive`` server gets the whole wait:
        data coming back at the deadline must be seen, not cut off."""
        wait = min(self.timeout, float(settings.interval_seconds))
        after = settings.no_data_rollback_after_seconds
        if state.no_data_since is not None and after > 0 and not responsive:
            due = state.no_data_since + dt.timedelta(seconds=after)
            wait = min(wait, max(0.0, (due - now).total_seconds()))
        return wait

    def _breach_start(
        self,
        client: PrometheusClient,
        settings: AnalysisSettings,
        queries: Any,
        decision: AnalysisDecision,
        state: AnalysisState,
        now: dt.datetime,
    ) -> dt.datetime:
        """When the breaching sample became queryable, from a 1 s range query (docs/analysis.md)."""
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


def _unanswered(outcome: QueryOutcome) -> bool:
    return outcome.kind == "error" and outcome.detail.startswith(UNANSWERED_PREFIXES)


def _events(previous: str | None, d: AnalysisDecision) -> list[Event]:
    """One Warning when a breach or no-data streak begins, not one per evaluation."""
    if d.verdict == "Breach" and previous != "Breach":
        return [Event("Warning", "ThresholdBreached", d.reason)]
    if d.verdict == "NoData" and previous != "NoData":
        return [Event("Warning", "NoData", d.reason)]
    return []


__all__ = ["AnalysisRunner"]
