"""Analysis under faults (docs/analysis.md): a soak counts only analysed time, a query problem
known before any write fails the Rollout, and a hung Prometheus is NoData on time."""

from __future__ import annotations

import copy
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from calyx.adapters.metrics import BATCH_MISS_REASONS, OperatorMetrics
from calyx.adapters.prometheus import PrometheusClient
from calyx.api.rollout import parse_rollout_spec
from calyx.domain.analysis import (
    AnalysisState,
    MetricSamples,
    QueryOutcome,
    evaluate,
    parse_analysis,
    without_gap,
)
from calyx.domain.rollout_plan import AnalysisOutcome, Observed, stamp
from calyx.domain.scrape import ScrapeTarget
from calyx.domain.timefmt import parse_stamp
from calyx.reconcile.analysis import AnalysisRunner
from tests.support.fake_prometheus import FakePrometheus, vec
from tests.support.rollout_world import T0, World

ANALYSED = {"analysis": {"intervalSeconds": 2, "errorRate": {"maxPermille": 10}}}
TIERS = [{"weight": 5, "soakSeconds": 20}, {"weight": 100}]


def tick(w: World, verdict: str = "Pass") -> None:
    w.advance(1)
    w.analysis = AnalysisOutcome(
        status={"time": stamp(w.now), "verdict": verdict}, action="none", message=""
    )
    w.run()


def test_soak_passes_after_soak_seconds_of_passing_evaluations() -> None:
    w = World(tiers=TIERS, spec=ANALYSED)
    w.run()
    for _ in range(19):
        tick(w)
    assert w.rollout["status"]["currentTier"] == 0
    for _ in range(3):
        tick(w)
    assert w.rollout["status"]["currentTier"] == 1


def test_an_outage_in_the_soak_is_a_gap_not_soak_time() -> None:
    """Probe: the soak clock ran through a 42 s API-server outage and one Pass promoted."""
    w = World(tiers=TIERS, spec=ANALYSED)
    w.run()
    tick(w)
    tick(w)
    w.advance(42)  # nothing evaluated: the API server (or the operator) was away
    tick(w)
    st = w.rollout["status"]
    assert st["currentTier"] == 0, "one Pass after the outage does not promote"
    gap = st["tiers"][0]["analysisGaps"][0]
    assert gap["seconds"] == 43.0
    assert st["tiers"][0]["soakedSeconds"] == 2.0
    for _ in range(18):
        tick(w)
    assert w.rollout["status"]["currentTier"] == 1


def test_breaching_and_no_data_evaluations_do_not_count() -> None:
    w = World(tiers=TIERS, spec=ANALYSED)
    w.run()
    for _ in range(30):
        tick(w, "NoData")
    assert w.rollout["status"]["currentTier"] == 0
    assert not w.rollout["status"]["tiers"][0].get("soakedSeconds")


def test_invalid_query_before_any_write_fails_the_rollout() -> None:
    w = World(tiers=TIERS, spec=ANALYSED)
    w.query_problem = ("InvalidQuery", "analysis metric errorRate rejected: HTTP 400: bad_data")
    w.run()
    assert w.phase == "Failed" and w.actions == []
    assert w.reasons() == ["InvalidQuery"]


def test_prometheus_unreachable_before_start_holds() -> None:
    w = World(tiers=TIERS, spec=ANALYSED)
    w.query_problem = ("PrometheusUnavailable", "cannot check: connection refused")
    w.run()
    w.run()
    assert w.phase == "Pending" and w.actions == []
    assert w.reasons() == ["PrometheusUnavailable"]
    w.query_problem = None
    w.run()
    assert w.phase == "Progressing"


def test_no_data_streak_starts_when_the_unanswered_query_was_sent() -> None:
    spec = parse_rollout_spec({"leaseRef": {"name": "l"}, **ANALYSED})
    settings = parse_analysis(spec.analysis, spec.on_breach)
    sent = T0
    answered = T0 + dt.timedelta(seconds=5)
    missing = {"errorRate": MetricSamples(canary=QueryOutcome("error", None, "no answer"))}
    d = evaluate(settings, missing, AnalysisState(), answered, sent_at=sent)
    assert d.state.no_data_since == sent


@pytest.fixture
def hung_prometheus() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a SIGSTOPped Prometheus
    looks exactly like this from the client's side)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def test_query_many_stops_waiting_at_the_deadline(hung_prometheus: str) -> None:
    client = PrometheusClient(hung_prometheus, timeout_seconds=5, metrics=None)
    t0 = time.monotonic()
    out = client.query_many({"a": "up", "b": "up"}, wait_seconds=0.5)
    took = time.monotonic() - t0
    assert took < 1.5, took
    assert all(o.kind == "error" and "no answer" in o.detail for o in out.values())


def test_wait_is_bounded_by_the_interval_and_the_no_data_deadline() -> None:
    runner = AnalysisRunner("http://unused", timeout_seconds=5)
    spec = parse_rollout_spec(
        {
            "leaseRef": {"name": "l"},
            **ANALYSED,
            "analysis": {**ANALYSED["analysis"], "noData": {"rollbackAfterSeconds": 10}},
        }
    )
    settings = parse_analysis(spec.analysis, spec.on_breach)
    assert runner._wait(settings, AnalysisState(), T0) == 2.0  # the interval, not 5 s
    streak = AnalysisState(no_data_since=T0)
    assert runner._wait(settings, streak, T0 + dt.timedelta(seconds=9)) == pytest.approx(1.0)
    assert runner._wait(settings, streak, T0 + dt.timedelta(seconds=12)) == 0.0


def _overdue_rollout(
    prom_url: str, since_seconds: float, last_seconds: float, timeout: float = 5
) -> tuple[AnalysisRunner, Observed]:
    """A Rollout whose NoData streak began ``since_seconds`` ago and whose last evaluation was
    ``last_seconds`` ago (noData.rollbackAfterSeconds 120, interval 10)."""
    now = dt.datetime.now(dt.UTC)
    ago = lambda x: stamp(now - dt.timedelta(seconds=x))  # noqa: E731
    body = {
        "leaseRef": {"name": "l"},
        "analysis": {"intervalSeconds": 10, "errorRate": {"maxPermille": 10}},
    }
    rollout = {
        "metadata": {"name": "r", "namespace": "ns"},
        "status": {
            "phase": "Progressing",
            "target": {"name": "web"},
            "lastAnalysis": {
                "time": ago(last_seconds),
                "verdict": "NoData",
                "state": {"consecutiveBreaches": 0, "noDataSince": ago(since_seconds)},
            },
        },
    }
    observed = Observed(
        rollout=rollout,
        now=now,
        spec=parse_rollout_spec(body),
        target={"metadata": {"name": "web"}},
    )
    return AnalysisRunner(prom_url, timeout_seconds=timeout), observed


def _evaluated_by_a_healthy_prometheus(
    since_seconds: float, last_seconds: float
) -> AnalysisOutcome | None:
    prom = FakePrometheus()
    prom.default = vec(({}, "0"))  # every query answers with a value, after 50 ms
    prom.delay = 0.05
    try:
        runner, observed = _overdue_rollout(prom.url, since_seconds, last_seconds)
        return runner(observed)
    finally:
        prom.close()


def test_a_gap_the_operator_caused_is_not_time_without_data() -> None:
    """Probe (1,000-Rollout ramp-up): a canary's first evaluation came before its pods had
    series, the next one 130 s later from an overloaded operator. The streak then looked older
    than rollbackAfterSeconds, the evaluation gave a healthy Prometheus 0 s to answer and
    rolled the canary back for NoData."""
    out = _evaluated_by_a_healthy_prometheus(since_seconds=130, last_seconds=130)
    assert out is not None
    assert out.action != "rollback", out.message
    assert out.status["verdict"] == "Pass", out.message


def test_a_hung_prometheus_on_schedule_still_rolls_back_at_the_deadline(
    hung_prometheus: str,
) -> None:
    """Evaluations every interval, none answered for 130 s: no gap, the deadline stands, and the
    evaluation does not wait for the hung server."""
    runner, observed = _overdue_rollout(
        hung_prometheus, since_seconds=130, last_seconds=10, timeout=0.3
    )
    assert runner.client(hung_prometheus).query("up").kind == "error", "an earlier timeout"
    t0 = time.monotonic()
    out = runner(observed)
    assert out is not None and out.action == "rollback", out
    assert time.monotonic() - t0 < 1.0


def test_data_back_at_the_deadline_is_seen_from_a_responsive_server() -> None:
    """No gap, the NoData deadline passed, but the server answers: the evaluation waits for it
    (a 0 s wait would turn data that just came back into a NoData rollback)."""
    out = _evaluated_by_a_healthy_prometheus(since_seconds=130, last_seconds=10)
    assert out is not None and out.status["verdict"] == "Pass", out


def test_without_gap_keeps_analysed_time_and_drops_the_gap() -> None:
    interval = 10
    since = AnalysisState(no_data_since=T0)
    at = lambda x: T0 + dt.timedelta(seconds=x)  # noqa: E731
    assert without_gap(since, at(20), at(40), interval) == since, "two intervals: no gap"
    shifted = without_gap(since, at(20), at(80), interval)
    assert shifted.no_data_since == at(60), "20 s analysed before the gap, the 60 s gap dropped"
    assert without_gap(AnalysisState(), at(0), at(500), interval) == AnalysisState()
    assert without_gap(since, None, at(500), interval) == since


def test_the_no_data_deadline_is_an_evaluation_of_its_own() -> None:
    """The rollback comes when the streak reaches rollbackAfterSeconds, not at the next
    interval after it (hang-to-revert was rollbackAfterSeconds + up to two intervals)."""
    runner, observed = _overdue_rollout("http://127.0.0.1:9", since_seconds=115, last_seconds=0)
    last = parse_stamp(observed.rollout["status"]["lastAnalysis"]["time"])
    assert last is not None
    assert runner.next_due(observed) == last + dt.timedelta(seconds=5)
    observed.rollout["status"]["lastAnalysis"]["state"] = {"consecutiveBreaches": 0}
    assert runner.next_due(observed) == last + dt.timedelta(seconds=10 - runner.tolerance)


def _analysed(interval: int) -> dict[str, object]:
    return {
        "metadata": {"name": f"r{interval}", "namespace": "ns"},
        "spec": {
            "leaseRef": {"name": "l"},
            "analysis": {"intervalSeconds": interval, "errorRate": {}},
        },
        "status": {"phase": "Progressing", "target": {"name": "web"}},
    }


def test_the_timer_ticks_faster_only_while_a_short_interval_is_analysed() -> None:
    """A 1 s interval needs a quarter-second tick to be evaluated right after its scrape lands
    (breach to revert p95 1.41 s at 0.25 s, 1.9 s at 1 s); Rollouts at 10 s do not."""
    runner = AnalysisRunner("http://127.0.0.1:9", timeout_seconds=0.2, tick_seconds=1.0)
    assert runner.tick_seconds() == 1.0, "nothing analysed: the configured tick"
    runner.prepare([_analysed(10)], dt.datetime.now(dt.UTC))
    assert runner.tick_seconds() == 1.0
    runner.prepare([_analysed(10), _analysed(2)], dt.datetime.now(dt.UTC))
    assert runner.tick_seconds() == 0.5
    runner.prepare([_analysed(1)], dt.datetime.now(dt.UTC))
    assert runner.tick_seconds() == 0.25 and runner.tolerance == 0.125
    runner.prepare([], dt.datetime.now(dt.UTC))
    assert runner.tick_seconds() == 1.0, "back to the configured tick"


def _due_rollout(ns: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "metadata": {"name": "r", "namespace": ns, "uid": f"uid-{ns}", "generation": 1},
        "spec": {
            "leaseRef": {"name": "l"},
            "analysis": {"intervalSeconds": 10, "errorRate": {}},
        },
        "status": {
            "phase": "Progressing",
            "target": {"name": "web"},
            "lastAnalysis": {"time": stamp(now - dt.timedelta(seconds=11)), "verdict": "Pass"},
        },
    }


def _misses(metrics: OperatorMetrics) -> dict[str, float]:
    """``calyx_analysis_batch_misses_total`` by reason, the ones seen."""
    out = {}
    for reason in BATCH_MISS_REASONS:
        value = metrics.registry.get_sample_value(
            "calyx_analysis_batch_misses_total", {"reason": reason}
        )
        if value:
            out[reason] = value
    return out


def _per_rollout_queries(prom: FakePrometheus) -> list[str]:
    queries = [params.get("query", "") for params in prom.seen]
    return [q for q in queries if q and "by (namespace, pod)" not in q]


def test_a_pass_queued_by_one_sweep_still_finds_its_batch_after_the_next() -> None:
    """1,000 Rollouts: each sweep batches only the Rollouts it queues; the next sweep's fetch
    replaced the whole batch, so passes still queued from the previous sweep found nothing and
    queried on their own (719 queries per interval instead of ~30)."""
    series = [
        ({"namespace": ns, "pod": pod}, "1")
        for ns in ("a", "b")
        for pod in ("web-canary-6d4f8-bcdfg", "web-7c9d5-hjklm")
    ]
    prom = FakePrometheus()
    prom.default = vec(*series)
    metrics = OperatorMetrics()
    try:
        runner = AnalysisRunner(prom.url, timeout_seconds=2, metrics=metrics)
        now = dt.datetime.now(dt.UTC)
        a, b = _due_rollout("a", now), _due_rollout("b", now)
        runner.prepare([a, b], now, only={"a/r"})
        runner.prepare([a, b], now + dt.timedelta(seconds=0.5), only={"b/r"})
        out = _evaluate(runner, a, now + dt.timedelta(seconds=0.6))
    finally:
        prom.close()
    assert out is not None and out.status["verdict"] != "NoData", out  # 1000 ‰: a value
    assert _per_rollout_queries(prom) == [], "served from the first sweep's batch"
    assert _misses(metrics) == {}


def _evaluate(
    runner: AnalysisRunner, rollout: dict[str, Any], at: dt.datetime
) -> AnalysisOutcome | None:
    """The runner's evaluation of ``rollout`` (target ``web``) by a pass at ``at``."""
    observed = Observed(
        rollout=rollout,
        now=at,
        spec=parse_rollout_spec(rollout["spec"]),
        target={"metadata": {"name": "web"}},
    )
    return runner(observed)


def _one_namespace_runner() -> tuple[FakePrometheus, OperatorMetrics, AnalysisRunner]:
    """A Prometheus with a canary and a stable pod in namespace ``a`` (each query answers
    both, so a per-Rollout query sees two series where it wants one), and a runner on it."""
    prom = FakePrometheus()
    prom.default = vec(
        ({"namespace": "a", "pod": "web-canary-6d4f8-bcdfg"}, "1"),
        ({"namespace": "a", "pod": "web-7c9d5-hjklm"}, "1"),
    )
    metrics = OperatorMetrics()
    return prom, metrics, AnalysisRunner(prom.url, timeout_seconds=2, metrics=metrics)


def test_a_batch_fetched_before_the_landing_is_not_used() -> None:
    """A Rollout is evaluated on data at least as new as the landing it is due at."""
    prom, metrics, runner = _one_namespace_runner()
    try:
        now = dt.datetime.now(dt.UTC)
        a = _due_rollout("a", now)
        runner.prepare([a], now, only={"a/r"})
        later = copy.deepcopy(a)  # evaluated since; due again 10 s after that
        later["status"]["lastAnalysis"]["time"] = stamp(now - dt.timedelta(seconds=9.5))
        _evaluate(runner, later, now + dt.timedelta(seconds=1))
    finally:
        prom.close()
    assert _per_rollout_queries(prom), "the batch predates the due time: own queries"
    assert _misses(metrics) == {"before-due": 1}, "counted, with its reason (one metric)"


def test_the_share_fetched_for_an_evaluation_serves_it_when_the_landing_estimate_moves() -> None:
    """Probe at 1,000 Rollouts: the sweep fetched a share for a Rollout due by its estimate of
    the scrape landings; by the time the pass ran, a slower scrape had moved the estimate past
    the fetch, and the pass refused the share (``before-due``) and queried on its own: 304
    misses per interval. The share fetched for this very evaluation is used."""
    prom, metrics, runner = _one_namespace_runner()
    try:
        now = dt.datetime.now(dt.UTC)
        client = runner.client(prom.url)

        def targets(*found: ScrapeTarget) -> None:
            client._targets, client._targets_at = list(found), time.monotonic() + 3600

        # Scrapes every second, landing 0.35 s past each second before ``now``: due at -1.35 s.
        targets(ScrapeTarget(now - dt.timedelta(seconds=0.5), 1.0, 0.1))
        a = _due_rollout("a", now)
        runner.prepare([a], now, only={"a/r"})
        # Then the estimate moves: the next landing is now +1.25 s, after the fetch.
        targets(ScrapeTarget(now + dt.timedelta(seconds=1), 10.0, 0.2))
        out = _evaluate(runner, a, now + dt.timedelta(seconds=2))
    finally:
        prom.close()
    assert out is not None and out.status["verdict"] != "NoData", out
    assert _per_rollout_queries(prom) == [], "served from the share fetched for it"
    assert _misses(metrics) == {}
