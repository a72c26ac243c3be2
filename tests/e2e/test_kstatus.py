"""kstatus conditions on Leases, read by the real ``kubectl wait`` against the real API server.

``kubectl wait --for=condition=X`` is what pipelines (and Flux's kstatus) rely on: these tests
prove a verified Lease becomes Ready, a rejected or expired one Stalled, and that ``Ready`` is
never True for them (the wait times out), with ``observedGeneration`` matching the object.
"""

from __future__ import annotations

from typing import Any

import pytest

from calyx.adapters.kube import Kube
from tests.e2e.harness import lease_body, lease_phase, wait_for
from tests.e2e.plugin import apply_obj

pytestmark = [pytest.mark.e2e]
IMAGE = "reg.example/checkout@sha256:" + "d" * 64


def kwait(cluster: Any, ns: str, name: str, cond: str, timeout: str = "30s") -> Any:
    return cluster.kubectl(
        "wait",
        "-n",
        ns,
        f"--for=condition={cond}",
        f"clease/{name}",
        f"--timeout={timeout}",
        check=False,
    )


def conditions(kube: Kube, ns: str, name: str) -> dict[str, dict[str, Any]]:
    obj = kube.get_custom("leases", ns, name) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def assert_observed_generation(kube: Kube, ns: str, name: str) -> None:
    obj = kube.get_custom("leases", ns, name) or {}
    gen = obj["metadata"]["generation"]
    conds = conditions(kube, ns, name)
    for t in ("Ready", "Reconciling", "Stalled"):
        assert conds[t]["observedGeneration"] == gen, conds[t]
    assert obj["status"]["observedGeneration"] == gen


def test_verified_lease_is_ready(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    apply_obj(trust, lease_body(ns, "ok", "checkout", {"app": IMAGE}))
    res = kwait(trust, ns, "ok", "Ready")
    assert res.returncode == 0, res.stderr
    assert "condition met" in res.stdout
    assert lease_phase(kube, ns, "ok") == "Verified"
    for cond in ("Stalled=False", "Reconciling=False"):
        res = kwait(trust, ns, "ok", cond, timeout="5s")
        assert res.returncode == 0, res.stderr
    assert_observed_generation(kube, ns, "ok")
    ready = conditions(kube, ns, "ok")["Ready"]
    assert ready["reason"] == "Verified"
    assert "alice (human)" in ready["message"] and "sentinel (agent)" in ready["message"]


def test_rejected_lease_is_stalled_and_never_ready(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    apply_obj(trust, lease_body(ns, "half", "checkout", {"app": IMAGE}, signers=["alice"]))
    res = kwait(trust, ns, "half", "Stalled")
    assert res.returncode == 0, res.stderr
    assert lease_phase(kube, ns, "half") == "Rejected"
    res = kwait(trust, ns, "half", "Ready", timeout="3s")
    assert res.returncode != 0, "a rejected Lease must not satisfy --for=condition=Ready"
    assert "timed out" in res.stderr
    assert_observed_generation(kube, ns, "half")
    stalled = conditions(kube, ns, "half")["Stalled"]
    assert stalled["reason"] == "Rejected"
    assert "agent" in stalled["message"], "says which key is missing"


def test_expiring_lease_goes_from_ready_to_stalled(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    apply_obj(trust, lease_body(ns, "short", "checkout", {"app": IMAGE}, expires_in=6))
    assert kwait(trust, ns, "short", "Ready").returncode == 0
    ready_since = conditions(kube, ns, "short")["Ready"]["lastTransitionTime"]
    res = kwait(trust, ns, "short", "Stalled", timeout="30s")
    assert res.returncode == 0, res.stderr
    wait_for("Expired", lambda: lease_phase(kube, ns, "short") == "Expired")
    conds = conditions(kube, ns, "short")
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "Expired"
    assert conds["Stalled"]["lastTransitionTime"] >= ready_since
    assert_observed_generation(kube, ns, "short")


def rwait(cluster: Any, ns: str, name: str, cond: str, timeout: str = "90s") -> Any:
    return cluster.kubectl(
        "wait",
        "-n",
        ns,
        f"--for=condition={cond}",
        f"crollout/{name}",
        f"--timeout={timeout}",
        check=False,
    )


def rollout_conditions(kube: Kube, ns: str, name: str) -> dict[str, dict[str, Any]]:
    obj = kube.get_custom("rollouts", ns, name) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _rollout_setup(cluster: Any, kube: Kube, ns: str, tiers: list[dict[str, Any]]) -> None:
    from tests.e2e.harness import deployment, deployment_body, rollout_body

    apply_obj(cluster, deployment_body(ns, "checkout", 4, "reg.example/checkout:1"))
    wait_for(
        "stable ready",
        lambda: (
            (deployment(kube, ns, "checkout") or {}).get("status", {}).get("readyReplicas") == 4
        ),
        timeout=60,
    )
    apply_obj(
        cluster,
        lease_body(ns, "l1", "checkout", {"app": IMAGE}, constraints={"requireAnalysis": False}),
    )
    apply_obj(cluster, rollout_body(ns, "r1", "l1", tiers=tiers))


def test_kubectl_wait_ready_for_a_completed_rollout(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    _rollout_setup(trust, kube, ns, [{"weight": 5, "soakSeconds": 2}, {"weight": 100}])
    wait_for("in progress", lambda: rollout_conditions(kube, ns, "r1").get("Reconciling"))
    assert rollout_conditions(kube, ns, "r1")["Ready"]["status"] == "False"
    res = rwait(trust, ns, "r1", "Ready")
    assert res.returncode == 0, res.stderr
    conds = rollout_conditions(kube, ns, "r1")
    gen = (kube.get_custom("rollouts", ns, "r1") or {})["metadata"]["generation"]
    assert conds["Stalled"]["status"] == "False" and conds["Reconciling"]["status"] == "False"
    assert all(conds[t]["observedGeneration"] == gen for t in ("Ready", "Reconciling", "Stalled"))


def test_kubectl_wait_stalled_for_a_rolled_back_rollout(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    _rollout_setup(trust, kube, ns, [{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    wait_for(
        "canary running",
        lambda: (
            ((kube.get_custom("rollouts", ns, "r1") or {}).get("status") or {}).get("phase")
            == "Progressing"
        ),
    )
    assert rollout_conditions(kube, ns, "r1")["Reconciling"]["status"] == "True"
    kube.patch_custom(
        "rollouts", ns, "r1", {"metadata": {"annotations": {"calyx.io/force-rollback": "drill"}}}
    )
    res = rwait(trust, ns, "r1", "Stalled")
    assert res.returncode == 0, res.stderr
    assert rwait(trust, ns, "r1", "Ready", timeout="2s").returncode != 0, "never Ready"
    assert rollout_conditions(kube, ns, "r1")["Stalled"]["reason"] == "RolledBack"
