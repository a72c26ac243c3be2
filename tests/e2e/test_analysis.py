"""Analysis and auto-halt end to end (issue 5): real API server with kwok pods, real Prometheus
scraping the traffic simulator every second, and the operator as a process. The simulator
serves metrics for exactly the pods that exist in the cluster, by image, so the canary's
behaviour is set by the image the Lease rolls out."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx_dev.trafficsim import PodInfo, TrafficSim
from tests.e2e.harness import (
    deployment,
    deployment_body,
    lease_body,
    reasons,
    replicas_of,
    rollout_body,
    rollout_status,
    wait_for,
    wait_phase,
)
from tests.e2e.plugin import apply_obj
from tests.e2e.test_rollouts import assert_restored

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.slow]


@pytest.fixture(scope="session")
def cluster_pods_in_sim(traffic_sim: TrafficSim, kube: Kube) -> Iterator[TrafficSim]:
    """Feed the simulator the live cluster's pods (Running and Ready, as kwok reports them)."""

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


class Rig:
    def __init__(self, cluster: Any, kube: Kube, sim: TrafficSim, prom: Any, ns: str) -> None:
        self.cluster, self.kube, self.sim, self.prom, self.ns = cluster, kube, sim, prom, ns
        tag = uuid.uuid4().hex[:8]
        self.stable = f"reg.example/checkout:1.0.0-{tag}"
        self.canary = f"reg.example/checkout:1.1.0-{tag}"
        sim.set_profile(self.stable, tes=100.0, error_ratio=0.001, cpu_cores=0.05)
        sim.set_profile(self.canary, tes=100.0, error_ratio=0.001, cpu_cores=0.05)

    def start(
        self,
        replicas: int = 8,
        tiers: list[dict[str, Any]] | None = None,
        analysis: dict[str, Any] | None = None,
        **spec: Any,
    ) -> None:
        ns = self.ns
        apply_obj(self.cluster, deployment_body(ns, "checkout", replicas, self.stable))
        wait_for(
            "stable ready",
            lambda: (
                (deployment(self.kube, ns, "checkout") or {}).get("status", {}).get("readyReplicas")
                == replicas
            ),
            timeout=60,
        )
        apply_obj(self.cluster, lease_body(ns, "l1", "checkout", {"app": self.canary}))
        a = {
            "intervalSeconds": 2,
            "windowSeconds": 10,
            "prometheusURL": self.prom.url,
            "failureLimit": 1,
            "tes": {"maxDropPercent": 5},
            "errorRate": {"maxPermille": 10},
            "cpu": {"maxPercent": 90},
            "memory": {"maxPercent": 90},
        }
        a.update(analysis or {})
        apply_obj(
            self.cluster,
            rollout_body(
                ns,
                "r1",
                "l1",
                tiers=tiers
                or [
                    {"weight": 5, "soakSeconds": 6},
                    {"weight": 25, "soakSeconds": 6},
                    {"weight": 100},
                ],
                analysis=a,
                **spec,
            ),
        )

    def status(self) -> dict[str, Any]:
        return rollout_status(self.kube, self.ns, "r1")

    def wait_verdict(self, verdict: str, timeout: float = 60, interval: float = 0.2) -> None:
        try:
            wait_for(
                f"analysis verdict {verdict}",
                lambda: (self.status().get("lastAnalysis") or {}).get("verdict") == verdict,
                timeout=timeout,
                interval=interval,
            )
        except AssertionError as exc:
            st = self.status()
            raise AssertionError(
                f"{exc}; phase={st.get('phase')} lastAnalysis={st.get('lastAnalysis')}"
            ) from None


@pytest.fixture
def rig(
    trust: Any,
    kube: Kube,
    cluster_pods_in_sim: TrafficSim,
    prometheus: Any,
    running_operator: Any,
    kube_namespace: str,
) -> Rig:
    return Rig(trust, kube, cluster_pods_in_sim, prometheus, kube_namespace)


def test_healthy_canary_promotes_with_metrics_recorded(rig: Rig) -> None:
    rig.start()
    st = wait_phase(rig.kube, rig.ns, "r1", "Completed", timeout=120)
    assert st["lastAnalysis"]["verdict"] == "Pass"
    m = st["tiers"][0]["metrics"]
    assert set(m) >= {"tes", "errorRate", "cpu", "memory"}
    assert m["errorRate"]["verdict"] == "Pass" and m["errorRate"]["canary"] < 10
    # 0.05 of a 0.2-core request = 25 %; young pods read lower while rate() fills its window.
    assert m["cpu"]["verdict"] == "Pass" and 5 <= m["cpu"]["canary"] <= 30


def test_error_spike_at_25_rolls_back(rig: Rig) -> None:
    rig.start(
        tiers=[{"weight": 5, "soakSeconds": 4}, {"weight": 25, "soakSeconds": 600}, {"weight": 100}]
    )
    wait_for("tier 25%", lambda: replicas_of(rig.kube, rig.ns, "checkout-canary") == 3, timeout=90)
    rig.sim.set_profile(rig.canary, error_ratio=0.2)
    st = wait_phase(rig.kube, rig.ns, "r1", "RolledBack", timeout=60)
    rb = st["rollback"]
    assert rb["trigger"] == "Breach" and "errorRate" in rb["reason"]
    assert rb["breachAt"] <= rb["detectedAt"] <= rb["revertedAt"]
    assert rb["detectSeconds"] < 2 + 10 / 2 + 2 + 2  # interval + window/2 + 2 s (+1 interval)
    assert_restored(rig.kube, rig.ns)
    assert "ThresholdBreached" in reasons(rig.kube, rig.ns, "r1")


@pytest.mark.parametrize(("tes", "expected"), [(92.0, "RolledBack"), (97.0, "Completed")])
def test_tes_against_baseline(rig: Rig, tes: float, expected: str) -> None:
    rig.sim.set_profile(rig.canary, tes=tes)
    rig.start()
    st = wait_phase(rig.kube, rig.ns, "r1", expected, timeout=120)
    if expected == "RolledBack":
        assert "tes" in st["rollback"]["reason"]
    else:
        assert st["tiers"][0]["metrics"]["tes"]["canary"] == pytest.approx(97.0)


def test_cpu_breach_rolls_back(rig: Rig) -> None:
    rig.sim.set_profile(rig.canary, cpu_cores=0.19)  # 95 % of its 0.2-core request
    rig.start()
    st = wait_phase(rig.kube, rig.ns, "r1", "RolledBack", timeout=60)
    assert "cpu" in st["rollback"]["reason"]


def test_single_breaching_sample_is_tolerated(rig: Rig) -> None:
    rig.start(
        analysis={"intervalSeconds": 4}, tiers=[{"weight": 5, "soakSeconds": 20}, {"weight": 100}]
    )
    wait_for(
        "first Pass",
        lambda: (rig.status().get("lastAnalysis") or {}).get("verdict") == "Pass",
        timeout=60,
    )
    rig.sim.set_profile(rig.canary, tes=70.0)
    wait_for(
        "one breaching evaluation",
        lambda: (rig.status().get("lastAnalysis") or {}).get("verdict") == "Breach",
        timeout=20,
        interval=0.1,
    )
    rig.sim.set_profile(rig.canary, tes=100.0)
    st = wait_phase(rig.kube, rig.ns, "r1", "Completed", timeout=90)
    assert "rollback" not in st
    assert "ThresholdBreached" in reasons(rig.kube, rig.ns, "r1")


def test_prometheus_outage_holds_then_rolls_back(rig: Rig) -> None:
    """Prometheus dies as the tier starts: the soak runs out with no data, the tier must not
    advance, and the rollout rolls back once no data has lasted rollbackAfterSeconds."""
    rig.start(
        analysis={"noData": {"rollbackAfterSeconds": 10}},
        tiers=[{"weight": 5, "soakSeconds": 3}, {"weight": 100}],
    )
    wait_phase(rig.kube, rig.ns, "r1", "Progressing", timeout=60)
    rig.prom.stop()
    try:
        rig.wait_verdict("NoData", timeout=20)
        time.sleep(5)  # past the 3 s soak
        st = rig.status()
        assert st["phase"] == "Progressing" and st["currentWeight"] == 5, st.get("message")
        st = wait_phase(rig.kube, rig.ns, "r1", "RolledBack", timeout=30)
        assert "no data" in st["rollback"]["reason"].lower()
        assert st["tiers"][1].get("startedAt") is None  # never advanced without data
        assert "NoData" in reasons(rig.kube, rig.ns, "r1")
    finally:
        rig.prom.start()


def test_prometheus_back_before_deadline_no_rollback(rig: Rig) -> None:
    rig.start(
        analysis={"noData": {"rollbackAfterSeconds": 40}},
        tiers=[{"weight": 5, "soakSeconds": 3}, {"weight": 100}],
    )
    wait_phase(rig.kube, rig.ns, "r1", "Progressing", timeout=60)
    rig.prom.stop()
    try:
        rig.wait_verdict("NoData", timeout=20)
        time.sleep(8)  # past the soak: without data the tier must not advance
        st = rig.status()
        assert st["phase"] == "Progressing" and st["currentWeight"] == 5
    finally:
        rig.prom.start()
    st = wait_phase(rig.kube, rig.ns, "r1", "Completed", timeout=90)
    assert "rollback" not in st


def test_on_breach_pause_pauses_without_reverting(rig: Rig) -> None:
    rig.sim.set_profile(rig.canary, error_ratio=0.3)
    rig.start(onBreach="Pause")
    wait_phase(rig.kube, rig.ns, "r1", "Paused", timeout=60)
    time.sleep(3)
    st = rig.status()
    assert st["phase"] == "Paused" and "rollback" not in st
    obj = rig.kube.get_custom("rollouts", rig.ns, "r1")
    assert obj["spec"]["paused"] is True
    assert replicas_of(rig.kube, rig.ns, "checkout-canary") == 1


@pytest.mark.parametrize(
    ("analysis", "names"),
    [
        # Probe: a syntactically broken custom query passed CRD validation, the canary
        # started anyway and was rolled back later for an error knowable before any write.
        ({"custom": [{"name": "p99", "query": "sum(((", "max": 300}]}, "p99"),
        # Probe: a TES override with {{ canary_pod_regex }} was refused with a traceback per
        # pass while the Rollout sat Progressing with lastAnalysis null, no Event, no condition.
        ({"tes": {"maxDropPercent": 5, "query": 'avg(x{pod=~"{{ canary_pod_regex }}"})'}}, "tes"),
    ],
)
def test_invalid_query_fails_before_any_write(
    rig: Rig, analysis: dict[str, Any], names: str
) -> None:
    rig.start(analysis=analysis)
    st = wait_phase(rig.kube, rig.ns, "r1", "Failed", timeout=30)
    assert names in st["message"], st["message"]
    cond = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert cond["reason"] == "InvalidQuery"
    # Posted from the outbox just after the status write (docs/audit.md): wait for it, then
    # check it is there once.
    wait_for("InvalidQuery Event", lambda: "InvalidQuery" in reasons(rig.kube, rig.ns, "r1"))
    time.sleep(1)
    assert reasons(rig.kube, rig.ns, "r1").count("InvalidQuery") == 1
    assert deployment(rig.kube, rig.ns, "checkout-canary") is None
    assert rig.kube.get_configmap(rig.ns, "r1-snapshot") is None, "nothing written"
