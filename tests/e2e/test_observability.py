"""The Grafana dashboard and the alerting rules against real data: a real Prometheus scrapes the
real operator (and the traffic simulator for the analysis) while one Rollout soaks and another
breaches and rolls back on the real API server. Every panel's every query is executed, and the
alert rules are loaded into that Prometheus and evaluated by it (docs/observability.md)."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx_dev.operator_process import OperatorProcess
from calyx_dev.prometheus import PrometheusServer
from calyx_dev.trafficsim import PodInfo, TrafficSim
from tests.e2e.harness import (
    REPO,
    deployment,
    deployment_body,
    lease_body,
    rollout_body,
    rollout_status,
    wait_for,
    wait_phase,
)
from tests.e2e.plugin import apply_obj

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.slow]

DASHBOARD = REPO / "charts" / "calyx" / "dashboards" / "calyx.json"
RULES = REPO / "charts" / "calyx" / "files" / "calyx.rules.yaml"
JOB = "calyx-metrics"
REPLICAS = 20  # one canary pod is 1/21 = 5 % served
STABLE = "reg.example/checkout:1.0.0-obs"
# What Grafana substitutes; the dashboard's namespace variable is "All" (allValue .*) by default.
VARIABLES = {"$__rate_interval": "30s", "$__range": "15m", "$job": JOB, "$namespace": ".*"}


class OperatorPrometheus(PrometheusServer):
    """Prometheus scraping the simulator (for the analysis) and the operator under the job name
    the chart's ServiceMonitor gives it, with the chart's alerting rules loaded."""

    def __init__(self, sim: str, operator: str) -> None:
        self.operator_target = operator
        super().__init__([sim])

    def _write_config(self) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "traffic-sim",
                    "honor_labels": True,
                    "static_configs": [{"targets": self.targets}],
                },
                {"job_name": JOB, "static_configs": [{"targets": [self.operator_target]}]},
            ],
        }
        self.config_file.write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="module")
def sim_with_cluster_pods(traffic_sim: TrafficSim, kube: Kube) -> Iterator[TrafficSim]:
    def source() -> list[PodInfo]:
        out = []
        for p in kube.core.list_pod_for_all_namespaces(label_selector="app=checkout").items:
            if p.metadata.deletion_timestamp or p.status.phase != "Running":
                continue
            c = p.spec.containers[0]
            out.append(PodInfo(p.metadata.name, p.metadata.namespace, c.image, c.name))
        return out

    traffic_sim.set_pods_source(source)
    yield traffic_sim
    traffic_sim.set_pods_source(None)


@pytest.fixture(scope="module")
def prom(
    sim_with_cluster_pods: TrafficSim, operator: OperatorProcess
) -> Iterator[OperatorPrometheus]:
    from calyx_dev.prometheus import prometheus_binary

    if prometheus_binary() is None:
        pytest.skip("the prometheus binary is not installed")
    server = OperatorPrometheus(sim_with_cluster_pods.address, f"127.0.0.1:{operator.metrics_port}")
    try:
        server.start()
        server.wait_for('up{job="traffic-sim"} == 1', timeout=30)
        yield server
    finally:
        server.close()


def start(
    cluster: Any, kube: Kube, prom: PrometheusServer, ns: str, image: str, **lease_kw: Any
) -> None:
    apply_obj(cluster, deployment_body(ns, "checkout", REPLICAS, STABLE))
    wait_for(
        f"{ns} stable ready",
        lambda: (
            (deployment(kube, ns, "checkout") or {}).get("status", {}).get("readyReplicas")
            == REPLICAS
        ),
        timeout=120,
    )
    apply_obj(cluster, lease_body(ns, "l1", "checkout", {"app": image}, **lease_kw))
    analysis = {
        "intervalSeconds": 2,
        "windowSeconds": 10,
        "prometheusURL": prom.url,
        "failureLimit": 1,
        "errorRate": {"maxPermille": 10},
    }
    tiers = [{"weight": 5, "soakSeconds": 600}, {"weight": 100}]
    apply_obj(cluster, rollout_body(ns, "r1", "l1", tiers=tiers, analysis=analysis))


def panel_queries() -> list[tuple[str, str, str, bool]]:
    """(panel title, refId, PromQL with the variables substituted, instant?) of every panel."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in VARIABLES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"unsubstituted variable in {panel['title']}: {expr}"
            out.append((panel["title"], target["refId"], expr, bool(target.get("instant"))))
    return out


def test_every_dashboard_panel_and_alert_on_real_data(
    prom: OperatorPrometheus,
    sim_with_cluster_pods: TrafficSim,
    trust: Any,
    kube: Kube,
    running_operator: OperatorProcess,
    kube_namespace: str,
) -> None:
    tag = uuid.uuid4().hex[:8]
    healthy, bad = f"reg.example/checkout:2.0.0-{tag}", f"reg.example/checkout:2.0.1-{tag}"
    traffic = sim_with_cluster_pods
    traffic.set_profile(STABLE, error_ratio=0.001)
    traffic.set_profile(healthy, error_ratio=0.001)
    traffic.set_profile(bad, error_ratio=0.3)

    soaking = kube_namespace  # stays at 5 % for 10 minutes; its Lease expires in 10 minutes
    breaching = f"{kube_namespace}-b"
    trust.create_namespace(breaching)
    try:
        start(trust, kube, prom, soaking, healthy, expires_in=600)
        start(trust, kube, prom, breaching, bad)
        st = wait_phase(kube, breaching, "r1", "RolledBack", timeout=120)
        assert st["rollback"]["trigger"] == "Breach"
        wait_for(
            "soaking rollout at 5 %",
            lambda: rollout_status(kube, soaking, "r1").get("effectivePercent") == 5,
            timeout=60,
        )
        # the operator's series, as scraped after both facts
        prom.wait_for(f'calyx_rollbacks_total{{job="{JOB}",trigger="Breach"}} > 0', timeout=30)
        prom.wait_for(
            f'calyx_rollout_info{{job="{JOB}",namespace="{soaking}",phase="Progressing"}}',
            timeout=30,
        )
        prom.wait_for('ALERTS{alertname="CalyxRollbackHappened",alertstate="firing"}', timeout=30)
        time.sleep(3)  # a few more scrapes, so every rate() has two samples

        now = time.time()
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for title, ref, expr, instant in panel_queries():
            if instant:
                data = prom.api("/api/v1/query", query=expr)
            else:
                data = prom.api(
                    "/api/v1/query_range",
                    query=expr,
                    start=str(now - 120),
                    end=str(now),
                    step="5",
                )
            assert data["resultType"] in ("vector", "matrix"), (title, data)
            assert data["result"], f"panel {title!r} ({ref}) has no data: {expr}"
            results[(title, ref)] = data["result"]

        def last(sample: dict[str, Any]) -> float:
            value = sample["value"] if "value" in sample else sample["values"][-1]
            return float(value[1])

        assert last(results[("Operator up", "A")][0]) >= 1
        assert last(results[("Leader", "A")][0]) == 1
        assert last(results[("Rollouts in progress", "A")][0]) >= 1
        assert last(results[("Rollbacks in range", "A")][0]) >= 1
        p99 = last(results[("Breach to revert (p50 / p99)", "B")][0])
        assert math.isfinite(p99) and 0 < p99 <= 60, p99
        rows = [r["metric"] for r in results[("Rollouts in progress (detail)", "A")]]
        assert {
            "namespace": soaking,
            "rollout": "r1",
            "lease": "l1",
            "target": "checkout",
            "phase": "Progressing",
        } in rows
        assert not [r for r in rows if r["namespace"] == breaching], "finished: not in progress"
        left = [
            last(s)
            for s in results[("Lease time left", "A")]
            if s["metric"]["namespace"] == soaking
        ]
        assert left and 0 < left[0] <= 600
        served = {
            s["metric"]["namespace"]: last(s)
            for s in results[("Canary weight: requested vs served", "B")]
        }
        assert served[soaking] == 5
        firing = {r["metric"]["alertname"] for r in results[("Calyx alerts firing", "A")]}
        assert {"CalyxRollbackHappened", "CalyxLeaseExpiresDuringRollout"} <= firing
        assert "CalyxOperatorDown" not in firing
        leases = {r["metric"]["phase"]: last(r) for r in results[("Leases by phase", "A")]}
        assert leases["Consumed"] >= 2
    finally:
        trust.delete_namespace(breaching)
