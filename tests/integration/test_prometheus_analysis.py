"""The default queries, the adapter and the evaluation against a real Prometheus.

One module-scoped scenario puts several simulated workloads into distinct namespaces and waits
once until Prometheus has a full window of samples; the tests then only query. A 5 s window keeps
the wait short (1 s scrapes give 5 samples per window, plenty for ``rate()``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from calyx.adapters.metrics import OperatorMetrics
from calyx.adapters.prometheus import PrometheusClient
from calyx.domain.analysis import (
    AnalysisState,
    MetricSamples,
    estimate_breach_start,
    evaluate,
    parse_analysis,
    queries_for,
)
from calyx.domain.promql import DEFAULT_TEMPLATES, classify_pod, render, template_vars
from calyx_dev.prometheus import PrometheusServer
from calyx_dev.trafficsim import PodInfo, Profile, TrafficSim, pod_name

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

WINDOW = 5
MIB = 2**20
ALL_METRICS = {"tes": {}, "errorRate": {}, "cpu": {}, "memory": {}}


@dataclass(frozen=True)
class Scenario:
    bad: str  # canary error 5 %, TES 92, CPU 95 %, memory 93.75 %; neighbour checkout-api awful
    good: str  # canary error 2 per mille, TES 97
    quiet: str  # canary without traffic and without TES
    canary_pods: tuple[str, ...]
    stable_pods: tuple[str, ...]
    images: dict[str, str]


def _deploy(sim: TrafficSim, ns: str, name: str, image: str, replicas: int) -> list[str]:
    rs_hash = pod_name("x").split("-")[1]
    pods = [PodInfo(pod_name(name, rs_hash), ns, image) for _ in range(replicas)]
    sim.add_pods(pods)
    return [p.name for p in pods]


@pytest.fixture(scope="module")
def scenario(traffic_sim: TrafficSim, prometheus: PrometheusServer) -> Scenario:
    tag = uuid.uuid4().hex[:6]
    img = {k: f"registry.example/{k}:{tag}" for k in ("stable", "bad", "good", "quiet", "api")}
    traffic_sim.set_profile(img["stable"], Profile(error_ratio=0.0, tes=100.0, cpu_cores=0.1))
    traffic_sim.set_profile(
        img["bad"],
        Profile(error_ratio=0.05, tes=92.0, cpu_cores=0.19, memory_bytes=240 * MIB),
    )
    traffic_sim.set_profile(img["good"], Profile(error_ratio=0.002, tes=97.0))
    traffic_sim.set_profile(img["quiet"], Profile(rps=0.0, tes_exposed=False))
    traffic_sim.set_profile(
        img["api"], Profile(error_ratio=0.9, tes=1.0, cpu_cores=5.0, memory_bytes=255 * MIB)
    )
    ns = {k: f"it-{k}-{tag}" for k in ("bad", "good", "quiet")}
    canary: list[str] = []
    stable: list[str] = []
    for key in ns:
        stable += _deploy(traffic_sim, ns[key], "checkout", img["stable"], 3)
        canary += _deploy(traffic_sim, ns[key], "checkout-canary", img[key], 1)
    # A neighbouring Deployment whose name starts with the target's: must never be counted.
    _deploy(traffic_sim, ns["bad"], "checkout-api", img["api"], 2)
    _deploy(traffic_sim, ns["bad"], "checkout-api-canary", img["api"], 1)
    prometheus.wait_for(f'http_requests_total{{namespace="{ns["quiet"]}"}}', timeout=30)
    time.sleep(WINDOW + 2)  # a full window of samples: rate() without start-up extrapolation
    return Scenario(ns["bad"], ns["good"], ns["quiet"], tuple(canary), tuple(stable), img)


@pytest.fixture
def client(prometheus: PrometheusServer) -> PrometheusClient:
    return PrometheusClient(prometheus.url, timeout_seconds=5, metrics=OperatorMetrics())


def _value(client: PrometheusClient, metric: str, ns: str, side: str) -> float | None:
    variables = template_vars(ns, "checkout", WINDOW).for_side(side)  # type: ignore[arg-type]
    outcome = client.query(render(DEFAULT_TEMPLATES[metric], variables))  # type: ignore[index]
    assert outcome.kind in ("value", "empty"), outcome
    return outcome.value


@pytest.mark.parametrize(
    ("metric", "ns_key", "canary", "baseline"),
    [
        ("errorRate", "bad", 50.0, 0.0),  # 5 % errors = 50 per mille; stable has none at all
        ("errorRate", "good", 2.0, 0.0),
        ("tes", "bad", 92.0, 100.0),
        ("tes", "good", 97.0, 100.0),
        ("cpu", "bad", 95.0, 50.0),  # 0.19 / 0.2 cores; the pod-level cgroup is not counted
        ("memory", "bad", 93.75, 25.0),  # 240 / 256 MiB
    ],
)
def test_default_queries_measure_canary_and_baseline(
    scenario: Scenario,
    client: PrometheusClient,
    metric: str,
    ns_key: str,
    canary: float,
    baseline: float,
) -> None:
    ns = getattr(scenario, ns_key)
    assert _value(client, metric, ns, "canary") == pytest.approx(canary, rel=0.03, abs=0.05)
    assert _value(client, metric, ns, "baseline") == pytest.approx(baseline, rel=0.03, abs=0.05)


def _evaluate(client: PrometheusClient, ns: str) -> tuple[str, dict[str, str]]:
    settings = parse_analysis(ALL_METRICS | {"windowSeconds": WINDOW})
    queries = queries_for(settings, template_vars(ns, "checkout", WINDOW))
    flat = {(q.metric.name, "canary"): q.canary for q in queries}
    flat |= {(q.metric.name, "baseline"): q.baseline for q in queries if q.baseline}
    outcomes = client.query_many(flat)
    samples = {
        q.metric.name: MetricSamples(
            outcomes[(q.metric.name, "canary")], outcomes.get((q.metric.name, "baseline"))
        )
        for q in queries
    }
    decision = evaluate(settings, samples, AnalysisState(), datetime.now(UTC))
    return decision.verdict, {r.name: r.verdict for r in decision.results}


def test_bad_canary_breaches_every_metric(scenario: Scenario, client: PrometheusClient) -> None:
    verdict, per_metric = _evaluate(client, scenario.bad)
    assert verdict == "Breach"
    assert per_metric == dict.fromkeys(ALL_METRICS, "Breach")


def test_good_canary_passes(scenario: Scenario, client: PrometheusClient) -> None:
    assert _evaluate(client, scenario.good) == ("Pass", dict.fromkeys(ALL_METRICS, "Pass"))


def test_missing_series_and_no_traffic_are_no_data(
    scenario: Scenario, client: PrometheusClient
) -> None:
    # No TES series, and 0/0 (NaN) error rate: both NoData, never a pass.
    verdict, per_metric = _evaluate(client, scenario.quiet)
    assert verdict == "NoData"
    assert per_metric["tes"] == "NoData"
    assert per_metric["errorRate"] == "NoData"
    assert per_metric["memory"] == "Pass"
    variables = template_vars("no-such-namespace", "checkout", WINDOW).for_side("canary")
    for template in DEFAULT_TEMPLATES.values():
        assert client.query(render(template, variables)).kind == "empty"


def test_batched_query_serves_many_rollouts(scenario: Scenario, client: PrometheusClient) -> None:
    """One ``by (namespace, pod)`` query, split per Rollout with the same regexes."""
    namespaces = "|".join((scenario.bad, scenario.good, scenario.quiet))
    per_pod = client.query_vector(
        f'sum by (namespace, pod) (rate(http_requests_total{{namespace=~"{namespaces}"}}[5s]))'
    )
    sides: dict[str, list[str]] = {"canary": [], "baseline": []}
    for labels, rate in per_pod.items():
        pod = dict(labels)["pod"]
        side = classify_pod(pod, "checkout")
        if side is None:
            assert pod.startswith("checkout-api")
            continue
        sides[side].append(pod)
        expected = 0.0 if dict(labels)["namespace"] == scenario.quiet and side == "canary" else 20
        assert rate == pytest.approx(expected, rel=0.05)
    assert sorted(sides["canary"]) == sorted(scenario.canary_pods)
    assert sorted(sides["baseline"]) == sorted(scenario.stable_pods)


def test_breach_start_is_found_with_a_range_query(
    scenario: Scenario, traffic_sim: TrafficSim, prometheus: PrometheusServer
) -> None:
    """breachAt: a step in TES is located to within a scrape interval or so."""
    client = PrometheusClient(prometheus.url, metrics=None)
    settings = parse_analysis({"tes": {}})
    (tes,) = queries_for(settings, template_vars(scenario.good, "checkout", WINDOW))
    assert tes.baseline is not None
    before = datetime.now(UTC)
    time.sleep(2)
    changed_at = datetime.now(UTC)
    traffic_sim.set_profile(scenario.images["good"], tes=80.0)
    try:
        prometheus.wait_for(
            tes.canary, lambda r: bool(r) and float(r[0]["value"][1]) < 90, timeout=15
        )
        detected = datetime.now(UTC)
        canary = client.query_range(tes.canary, before, detected, 0.25)
        baseline = client.query_range(tes.baseline, before, detected, 0.25)
        assert canary.kind == baseline.kind == "value"
        start = estimate_breach_start(
            settings.metrics[0],
            canary.points,
            baseline.points,
            not_before=before,
            fallback=detected,
        )
        assert changed_at - timedelta(seconds=0.5) <= start <= changed_at + timedelta(seconds=2.5)
    finally:
        traffic_sim.set_profile(scenario.images["good"], tes=97.0)


def test_prometheus_down_is_an_error_then_recovers(
    scenario: Scenario, prometheus: PrometheusServer
) -> None:
    """Stopping Prometheus mid-analysis: error outcome (NoData), same data after a restart."""
    metrics = OperatorMetrics()
    client = PrometheusClient(prometheus.url, timeout_seconds=2, metrics=metrics)
    query = render(
        DEFAULT_TEMPLATES["tes"], template_vars(scenario.bad, "checkout", WINDOW).for_side("canary")
    )
    assert client.query(query).kind == "value"
    prometheus.stop()
    try:
        started = time.monotonic()
        down = client.query(query)
        assert down.kind == "error"
        assert "cannot reach Prometheus" in down.detail
        assert time.monotonic() - started < 2
        assert (
            metrics.registry.get_sample_value(
                "calyx_promql_query_errors_total", {"reason": "connection"}
            )
            == 1
        )
        settings = parse_analysis({"tes": {}})
        decision = evaluate(
            settings, {"tes": MetricSamples(down, down)}, AnalysisState(), datetime.now(UTC)
        )
        assert (decision.verdict, decision.action) == ("NoData", "hold")
    finally:
        prometheus.start()
    prometheus.wait_for(query, timeout=30)
    back = client.query(query)
    assert back.kind == "value" and back.value == pytest.approx(92.0)
