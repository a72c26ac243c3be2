"""Canary analysis rules (calyx.domain.analysis), table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calyx.domain.analysis import (
    AnalysisDecision,
    AnalysisError,
    AnalysisSettings,
    AnalysisState,
    MetricSamples,
    MetricSpec,
    QueryOutcome,
    estimate_breach_start,
    evaluate,
    parse_analysis,
    queries_for,
)
from calyx.domain.promql import template_vars

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
ALL = {"tes": {}, "errorRate": {}, "cpu": {}, "memory": {}}


def v(x: float) -> QueryOutcome:
    return QueryOutcome.of(x)


EMPTY = QueryOutcome("empty", None, "no series")
ERROR = QueryOutcome("error", None, "cannot reach Prometheus")
MULTI = QueryOutcome("non_scalar", None, "2 series")

HEALTHY = {
    "tes": MetricSamples(v(100), v(100)),
    "errorRate": MetricSamples(v(1), v(1)),
    "cpu": MetricSamples(v(40), v(38)),
    "memory": MetricSamples(v(50), v(50)),
}


def settings(**analysis: Any) -> AnalysisSettings:
    on_breach = analysis.pop("onBreach", "Rollback")
    return parse_analysis({**ALL, **analysis}, on_breach)


def run(
    samples: dict[str, MetricSamples],
    *,
    cfg: AnalysisSettings | None = None,
    state: AnalysisState | None = None,
    now: datetime = T0,
) -> AnalysisDecision:
    return evaluate(cfg or settings(), {**HEALTHY, **samples}, state or AnalysisState(), now)


# ---- parsing and defaults -------------------------------------------------------------------


def test_defaults() -> None:
    cfg = parse_analysis(ALL)
    assert (cfg.interval_seconds, cfg.window_seconds, cfg.failure_limit) == (10, 30, 1)
    assert cfg.no_data_rollback_after_seconds == 120
    assert cfg.on_breach == "Rollback"
    assert cfg.prometheus_url is None
    assert [(m.name, m.limit, m.query) for m in cfg.metrics] == [
        ("tes", 5, None),
        ("errorRate", 10, None),
        ("cpu", 90, None),
        ("memory", 90, None),
    ]


def test_only_configured_metrics_are_checked() -> None:
    assert parse_analysis({}).metrics == ()
    assert parse_analysis(None).metrics == ()
    assert [m.name for m in parse_analysis({"errorRate": {"maxPermille": 3}}).metrics] == [
        "errorRate"
    ]


def test_full_spec() -> None:
    cfg = parse_analysis(
        {
            "intervalSeconds": 5,
            "windowSeconds": 60,
            "prometheusURL": "http://prom:9090",
            "failureLimit": 3,
            "noData": {"rollbackAfterSeconds": 0},
            "tes": {"maxDropPercent": 2, "query": 'avg(q{pod=~"{{ pod_regex }}"})'},
            "custom": [{"name": "p99-latency", "query": "q", "max": 300}],
        },
        "Pause",
    )
    assert cfg == AnalysisSettings(
        interval_seconds=5,
        window_seconds=60,
        failure_limit=3,
        no_data_rollback_after_seconds=0,
        on_breach="Pause",
        prometheus_url="http://prom:9090",
        metrics=(
            MetricSpec("tes", "tes", 2, 'avg(q{pod=~"{{ pod_regex }}"})'),
            MetricSpec("p99-latency", "custom", 300, "q"),
        ),
    )


def test_accepts_the_pydantic_model() -> None:
    rollout = pytest.importorskip("calyx.api.rollout")
    model = rollout.Analysis.model_validate(
        {"errorRate": {"maxPermille": 7}, "failureLimit": 2}, strict=False
    )
    cfg = parse_analysis(model)
    assert cfg.failure_limit == 2
    assert [(m.name, m.limit) for m in cfg.metrics] == [("errorRate", 7)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"intervalSeconds": 0}, "analysis.intervalSeconds: must be greater than or equal to 1"),
        ({"windowSeconds": "30s"}, "analysis.windowSeconds: must be an integer"),
        ({"failureLimit": 1.5}, "analysis.failureLimit: must be an integer"),
        ({"failureLimit": True}, "analysis.failureLimit: must be an integer"),
        ({"errorRate": {"maxPermille": 0.5}}, "analysis.errorRate.maxPermille: must be an integer"),
        ({"tes": {"maxDropPercent": -1}}, "analysis.tes.maxDropPercent: must be greater than or"),
        ({"cpu": 90}, "analysis.cpu: must be an object"),
        ({"memory": {"query": ""}}, "analysis.memory.query: must have at least 1 character"),
        ({"custom": [{"query": "q", "max": 1}]}, "custom[0].name: required field is missing"),
        ({"custom": [{"name": "x", "max": 1}]}, "custom[0].query: required field is missing"),
        ({"custom": [{"name": "x", "query": "q"}]}, "custom[0].max: required field is missing"),
        (
            {"custom": [{"name": "x", "query": "q", "max": 1}] * 2},
            "analysis.custom: duplicate custom metric name 'x'",
        ),
        ({"custom": "x"}, "analysis.custom: must be a list"),
    ],
)
def test_parse_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(AnalysisError) as info:
        parse_analysis(spec)
    assert message in str(info.value)


def test_bad_on_breach() -> None:
    with pytest.raises(AnalysisError, match="onBreach"):
        parse_analysis({}, "Explode")


# ---- query rendering ------------------------------------------------------------------------


def test_queries_for_defaults_and_overrides() -> None:
    cfg = parse_analysis(
        {
            "tes": {},
            "cpu": {"query": 'max(cpu{pod=~"{{ canary_pod_regex }}"})'},
            "custom": [{"name": "lat", "query": 'q{pod=~"{{ pod_regex }}"}', "max": 1}],
        }
    )
    variables = template_vars("shop", "checkout", 30)
    tes, cpu, lat = queries_for(cfg, variables)
    assert variables.canary_pod_regex in tes.canary
    assert tes.baseline is not None and variables.stable_pod_regex in tes.baseline
    assert cpu.baseline is None  # names the canary explicitly: no baseline
    assert lat.baseline == f'q{{pod=~"{variables.stable_pod_regex}"}}'


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"tes": {"query": "avg(x)"}}, "tes.query must use {{ pod_regex }}"),
        ({"cpu": {"query": "x{a='{{ nope }}'}"}}, "cpu query: unknown template variable"),
    ],
)
def test_queries_for_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(AnalysisError, match=message.replace("{", r"\{").replace("}", r"\}")):
        queries_for(parse_analysis(spec), template_vars("shop", "checkout", 30))


# ---- per-metric verdicts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "canary", "baseline", "verdict", "detail"),
    [
        # TES: breach when canary < baseline * (1 - maxDrop/100), default maxDrop 5.
        ("tes", v(92), v(100), "Breach", "tes canary 92 is 8.0% below baseline 100 (< floor 95"),
        ("tes", v(97), v(100), "Pass", "tes canary 97 is 3.0% below baseline 100 (>= floor 95"),
        ("tes", v(95), v(100), "Pass", "floor 95"),  # exactly at the threshold passes
        ("tes", v(94.99), v(100), "Breach", "5.0% below"),
        ("tes", v(105), v(100), "Pass", "5.0% above"),
        ("tes", v(0.92), v(1.0), "Breach", "8.0% below"),  # scale-free
        ("tes", v(90), EMPTY, "NoData", "no data for baseline (no series)"),
        ("tes", EMPTY, v(100), "NoData", "no data for canary (no series)"),
        ("tes", v(100), None, "NoData", "baseline (not queried)"),
        # Error rate: canary permille > maxPermille (10).
        ("errorRate", v(23), v(1), "Breach", "errorRate canary 23‰ > max 10‰ (baseline 1‰)"),
        ("errorRate", v(10), v(1), "Pass", "errorRate canary 10‰ <= max 10‰ (baseline 1‰)"),
        ("errorRate", v(10.001), v(1), "Breach", "> max 10‰"),
        ("errorRate", v(0), None, "Pass", "errorRate canary 0‰ <= max 10‰"),
        ("errorRate", v(50), EMPTY, "Breach", "> max 10‰"),  # baseline is context only
        ("errorRate", ERROR, v(1), "NoData", "cannot reach Prometheus"),
        ("errorRate", MULTI, v(1), "NoData", "2 series"),
        # CPU and memory: canary percent > maxPercent (90).
        ("cpu", v(95), v(40), "Breach", "cpu canary 95% > max 90% (baseline 40%)"),
        ("cpu", v(89.5), v(40), "Pass", "cpu canary 89.5% <= max 90%"),
        ("memory", v(91), v(60), "Breach", "memory canary 91% > max 90% (baseline 60%)"),
        ("memory", v(90), v(60), "Pass", "<= max 90%"),
        ("memory", EMPTY, v(60), "NoData", "memory: no data for canary"),
    ],
)
def test_metric_verdicts(
    metric: str,
    canary: QueryOutcome,
    baseline: QueryOutcome | None,
    verdict: str,
    detail: str,
) -> None:
    decision = run({metric: MetricSamples(canary, baseline)})
    (result,) = [r for r in decision.results if r.name == metric]
    assert result.verdict == verdict
    assert detail in result.detail
    assert decision.verdict == verdict


@pytest.mark.parametrize(
    ("max_", "value", "verdict"),
    [(300, 299, "Pass"), (300, 300, "Pass"), (300, 301, "Breach"), (0, -1, "Pass")],
)
def test_custom_metric(max_: int, value: float, verdict: str) -> None:
    cfg = parse_analysis({"custom": [{"name": "p99-latency", "query": "q", "max": max_}]})
    decision = evaluate(cfg, {"p99-latency": MetricSamples(v(value))}, AnalysisState(), T0)
    assert decision.verdict == verdict
    assert decision.results[0].threshold == f"max {max_}"


def test_custom_threshold_from_spec() -> None:
    cfg = settings(errorRate={"maxPermille": 30}, tes={"maxDropPercent": 10})
    decision = run(
        {"errorRate": MetricSamples(v(23), v(1)), "tes": MetricSamples(v(92), v(100))}, cfg=cfg
    )
    assert decision.verdict == "Pass"


# ---- aggregation, streaks and actions -------------------------------------------------------


def test_all_healthy_passes() -> None:
    decision = run({})
    assert (decision.verdict, decision.action, decision.cause) == ("Pass", "none", None)
    assert decision.state == AnalysisState(last_pass_at=T0)


def test_breach_wins_over_no_data() -> None:
    decision = run({"errorRate": MetricSamples(v(50), v(1)), "cpu": MetricSamples(EMPTY)})
    assert decision.verdict == "Breach"
    assert decision.breaching == ("errorRate",)
    assert decision.state.no_data_since == T0


def test_missing_samples_count_as_no_data() -> None:
    decision = evaluate(settings(), {}, AnalysisState(), T0)
    assert decision.verdict == "NoData"
    assert all(r.detail.endswith("not queried") for r in decision.results)


def test_no_metrics_passes() -> None:
    decision = evaluate(parse_analysis({}), {}, AnalysisState(), T0)
    assert (decision.verdict, decision.action, decision.reason) == (
        "Pass",
        "none",
        "no metrics configured",
    )


BREACH = {"errorRate": MetricSamples(v(50), v(1))}
NODATA = {"tes": MetricSamples(EMPTY, v(100))}
PASS: dict[str, MetricSamples] = {}


@pytest.mark.parametrize(
    ("failure_limit", "on_breach", "sequence", "actions"),
    [
        # failureLimit 1 (default): one breaching evaluation is tolerated, the second acts.
        (1, "Rollback", [BREACH], ["hold"]),
        (1, "Rollback", [BREACH, BREACH], ["hold", "rollback"]),
        (1, "Rollback", [BREACH, PASS, BREACH], ["hold", "none", "hold"]),
        # NoData between breaches neither ends nor extends the streak.
        (1, "Rollback", [BREACH, NODATA, BREACH], ["hold", "hold", "rollback"]),
        (1, "Pause", [BREACH, BREACH], ["hold", "pause"]),
        (0, "Rollback", [BREACH], ["rollback"]),
        (3, "Rollback", [BREACH] * 4, ["hold", "hold", "hold", "rollback"]),
        (2, "Rollback", [BREACH, BREACH, PASS, BREACH, BREACH],
         ["hold", "hold", "none", "hold", "hold"]),
        # Once triggered, further breaches keep asking (the reconciler acts once).
        (1, "Rollback", [BREACH] * 3, ["hold", "rollback", "rollback"]),
    ],
)  # fmt: skip
def test_failure_limit_sequences(
    failure_limit: int,
    on_breach: str,
    sequence: list[dict[str, MetricSamples]],
    actions: list[str],
) -> None:
    cfg = settings(failureLimit=failure_limit, onBreach=on_breach)
    state = AnalysisState()
    got = []
    for i, samples in enumerate(sequence):
        decision = run(samples, cfg=cfg, state=state, now=T0 + timedelta(seconds=10 * i))
        got.append(decision.action)
        state = decision.state
    assert got == actions


def test_breach_streak_state_and_reason() -> None:
    first = run(BREACH)
    assert first.state.consecutive_breaches == 1
    assert first.state.first_breach_at == T0
    assert "breach 1 of 1 tolerated, holding" in first.reason
    second = run(BREACH, state=first.state, now=T0 + timedelta(seconds=10))
    assert (second.action, second.cause) == ("rollback", "breach")
    assert second.state.consecutive_breaches == 2
    assert second.state.first_breach_at == T0  # the streak's start is kept
    assert second.reason.startswith("errorRate canary 50‰ > max 10‰ (baseline 1‰)")
    assert "2 consecutive breaching evaluations (failureLimit 1)" in second.reason
    after = run(PASS, state=second.state, now=T0 + timedelta(seconds=20))
    assert after.state == AnalysisState(last_pass_at=T0 + timedelta(seconds=20))


@pytest.mark.parametrize(
    ("rollback_after", "elapsed", "action"),
    [
        (120, 0, "hold"),
        (120, 110, "hold"),
        (120, 120, "rollback"),
        (120, 500, "rollback"),
        (0, 10_000, "hold"),  # 0 = never roll back for missing data
        (10, 10, "rollback"),
    ],
)
def test_no_data_holds_then_rolls_back(rollback_after: int, elapsed: int, action: str) -> None:
    cfg = settings(noData={"rollbackAfterSeconds": rollback_after}, onBreach="Pause")
    first = run(NODATA, cfg=cfg)
    assert first.state.no_data_since == T0
    decision = run(NODATA, cfg=cfg, state=first.state, now=T0 + timedelta(seconds=elapsed))
    assert decision.verdict == "NoData"
    assert decision.action == action
    if action == "rollback":
        # noData rolls back even with onBreach: Pause, as its field name promises.
        assert decision.cause == "no_data"
        assert f"no data for {elapsed}s (noData.rollbackAfterSeconds {rollback_after})" in (
            decision.reason
        )
    else:
        assert "holding" in decision.reason


def test_no_data_clock_restarts_after_data_returns() -> None:
    s1 = run(NODATA).state
    s2 = run(PASS, state=s1, now=T0 + timedelta(seconds=100)).state
    s3 = run(NODATA, state=s2, now=T0 + timedelta(seconds=110)).state
    assert s3.no_data_since == T0 + timedelta(seconds=110)
    decision = run(NODATA, state=s3, now=T0 + timedelta(seconds=200))
    assert decision.action == "hold"


def test_breach_beyond_limit_beats_no_data_rollback() -> None:
    state = AnalysisState(consecutive_breaches=1, no_data_since=T0 - timedelta(hours=1))
    decision = run({**BREACH, **NODATA}, state=state)
    assert (decision.action, decision.cause) == ("rollback", "breach")


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        evaluate(settings(), HEALTHY, AnalysisState(), datetime(2026, 1, 1))


# ---- status round trip ----------------------------------------------------------------------


def test_state_round_trip() -> None:
    state = AnalysisState(
        consecutive_breaches=2,
        first_breach_at=T0 + timedelta(milliseconds=250),
        no_data_since=T0,
        last_pass_at=T0 - timedelta(seconds=10),
    )
    status = state.to_status()
    assert status == {
        "consecutiveBreaches": 2,
        "firstBreachAt": "2026-11-25T12:00:00.250Z",
        "noDataSince": "2026-11-25T12:00:00.000Z",
        "lastPassAt": "2026-11-25T11:59:50.000Z",
    }
    assert AnalysisState.from_status(status) == state
    assert AnalysisState.from_status(None) == AnalysisState()
    assert AnalysisState.from_status({"consecutiveBreaches": -3}) == AnalysisState()


def test_decision_status() -> None:
    decision = run({"errorRate": MetricSamples(v(23.4567), v(1)), "cpu": MetricSamples(EMPTY)})
    status = decision.to_status()
    assert status["time"] == "2026-11-25T12:00:00.000Z"
    assert status["verdict"] == "Breach"
    assert status["values"]["errorRate"] == {
        "verdict": "Breach",
        "threshold": "max 10‰",
        "canary": 23.457,
        "baseline": 1,
    }
    assert status["values"]["cpu"] == {"verdict": "NoData", "threshold": "max 90%"}
    assert status["state"]["consecutiveBreaches"] == 1


# ---- breachAt estimation --------------------------------------------------------------------

ERR = MetricSpec("errorRate", "errorRate", 10)
TES = MetricSpec("tes", "tes", 5)
DETECTED = datetime.fromtimestamp(1000, tz=UTC)


@pytest.mark.parametrize(
    ("metric", "canary", "baseline", "not_before", "expected"),
    [
        # The first point of the final breaching run.
        (ERR, [(990, 1), (991, 2), (992, 15), (993, 30)], None, None, 992),
        # A blip that recovered does not count; the run that led to detection does.
        (ERR, [(990, 20), (991, 2), (992, 1), (993, 30), (994, 40)], None, None, 993),
        # Points at or before the last passing evaluation are ignored.
        (ERR, [(990, 20), (991, 20), (992, 20)], None, 991, 992),
        # TES compares with the baseline at the same timestamp.
        (TES, [(990, 100), (991, 90), (992, 90)], [(990, 100), (991, 100), (992, 100)], None, 991),
        (TES, [(990, 90), (991, 90)], [(990, 90), (991, 100)], None, 991),
        # No breaching point (or no points): the first breaching evaluation itself.
        (ERR, [(990, 1), (991, 2)], None, None, 1000),
        (ERR, [], None, None, 1000),
        # Never later than the detection fallback.
        (ERR, [(1005, 50)], None, None, 1000),
    ],
)  # fmt: skip
def test_estimate_breach_start(
    metric: MetricSpec,
    canary: list[tuple[float, float]],
    baseline: list[tuple[float, float]] | None,
    not_before: float | None,
    expected: float,
) -> None:
    got = estimate_breach_start(
        metric,
        canary,
        baseline,
        not_before=datetime.fromtimestamp(not_before, tz=UTC) if not_before else None,
        fallback=DETECTED,
    )
    assert got == datetime.fromtimestamp(expected, tz=UTC)
