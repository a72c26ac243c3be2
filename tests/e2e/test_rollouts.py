"""Rollout engine end to end: real API server, real Deployment controller, kwok-ready pods
(issue 4). Each scenario also checks the safety invariant from the API server's audit log:
no forward write to a Deployment while the lease was not valid."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx.domain.canary import read_snapshot, template_sha
from tests.e2e.harness import (
    OPERATOR_NS,
    assert_no_forward_write_without_valid_lease,
    assert_only_signed_templates,
    deployment,
    deployment_body,
    lease_body,
    operator_forward_writes,
    reasons,
    replicas_of,
    rollout_body,
    rollout_status,
    trust_configmap,
    wait_for,
    wait_phase,
)
from tests.e2e.plugin import apply_obj
from tests.e2e.test_leases import cli

pytestmark = [pytest.mark.e2e]
IMG1, IMG2 = "reg.example/checkout:1.0.0", "reg.example/checkout@sha256:" + "c" * 64
FAST = [{"weight": 5, "soakSeconds": 3}, {"weight": 25, "soakSeconds": 3}, {"weight": 100}]
NO_ANALYSIS = {"requireAnalysis": False}


@pytest.fixture(autouse=True)
def _safety_invariant(trust: Any, kube: Kube, kube_namespace: str) -> Any:
    """After every scenario: no forward Deployment write without a valid Lease (audit log)."""
    yield
    if trust.audit_log:
        assert_no_forward_write_without_valid_lease(trust, kube_namespace)
        assert_only_signed_templates(trust, kube, kube_namespace)


def setup(
    cluster: Any,
    kube: Kube,
    ns: str,
    replicas: int = 20,
    expires_in: float = 3600,
    tiers: list[dict[str, Any]] | None = None,
    name: str = "r1",
    lease: str = "l1",
    create_rollout: bool = True,
    **spec: Any,
) -> None:
    apply_obj(cluster, deployment_body(ns, "checkout", replicas, IMG1))
    wait_for(
        "stable ready",
        lambda: (
            (deployment(kube, ns, "checkout") or {}).get("status", {}).get("readyReplicas")
            == replicas
        ),
        timeout=60,
    )
    rollout = rollout_body(ns, name, lease, tiers=tiers or FAST, **spec)
    apply_obj(
        cluster,
        lease_body(
            ns,
            lease,
            "checkout",
            {"app": IMG2},
            expires_in=expires_in,
            constraints=NO_ANALYSIS,
            # a Rollout with postDeploy needs a Lease that binds it (docs/signing.md)
            rollout=rollout if "postDeploy" in spec else None,
        ),
    )
    if create_rollout:
        apply_obj(cluster, rollout)


def now_stamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assert_restored(
    kube: Kube, ns: str, name: str = "r1", max_revert_seconds: float | None = 1.0
) -> None:
    st = rollout_status(kube, ns, name)
    snap = kube.get_configmap(ns, f"{name}-snapshot")
    assert snap is not None, "snapshot ConfigMap lost"
    doc, sha = read_snapshot(snap)
    assert sha == st["snapshot"]["sha256"]
    stable = deployment(kube, ns, "checkout")
    assert stable is not None and template_sha(stable) == doc["templateSha256"]
    assert deployment(kube, ns, "checkout-canary") is None
    rb = st["rollback"]
    assert rb["detectedAt"] and rb["revertedAt"] and rb["verifiedAt"]
    if max_revert_seconds is not None:
        assert rb["revertSeconds"] < max_revert_seconds, rb


def test_happy_path_20_replicas(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(trust, kube, ns, replicas=20)
    wait_for("canary at 1 pod", lambda: replicas_of(kube, ns, "checkout-canary") == 1)
    st = wait_for(
        "tier 1 ready",
        lambda: (s := rollout_status(kube, ns, "r1")).get("effectivePercent") == 5 and s,
    )
    assert st["currentWeight"] == 5 and st["canaryReplicas"] == 1 and st["stableReplicas"] == 20
    assert replicas_of(kube, ns, "checkout") == 20  # stable untouched during canary tiers
    wait_for("canary at 7 pods", lambda: replicas_of(kube, ns, "checkout-canary") == 7, timeout=30)
    wait_for("26% served", lambda: rollout_status(kube, ns, "r1").get("effectivePercent") == 26)
    st = wait_phase(kube, ns, "r1", "Completed", timeout=90)
    stable = deployment(kube, ns, "checkout")
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == IMG2
    assert deployment(kube, ns, "checkout-canary") is None
    assert [t["result"] for t in st["tiers"]] == ["Passed", "Passed", "Passed"]
    rs = reasons(kube, ns, "r1")
    for r, n in (("DeployStarted", 1), ("CanaryPromoted", 2), ("DeployCompleted", 1)):
        assert rs.count(r) == n, rs
    lease = kube.get_custom("leases", ns, "l1")
    wait_for(
        "lease Consumed",
        lambda: (
            (kube.get_custom("leases", ns, "l1") or {}).get("status", {}).get("phase") == "Consumed"
        ),
    )
    assert lease is not None
    image_patches = [
        e for e in operator_forward_writes(trust, ns) if e["objectRef"]["name"] == "checkout"
    ]
    assert len(image_patches) == 1, "promoted more than once"


def test_four_replicas_reports_effective_percent(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(trust, kube, ns, replicas=4, tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    st = wait_for(
        "canary ready",
        lambda: (s := rollout_status(kube, ns, "r1")).get("effectivePercent") == 20 and s,
    )
    assert st["currentWeight"] == 5 and st["canaryReplicas"] == 1


def test_waits_for_lease_and_writes_nothing_before(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    apply_obj(trust, deployment_body(ns, "checkout", 3, IMG1))
    lease = lease_body(
        ns, "l1", "checkout", {"app": IMG2}, constraints=NO_ANALYSIS, signers=["alice"]
    )
    apply_obj(trust, lease)
    apply_obj(trust, rollout_body(ns, "r1", "l1", tiers=FAST))
    st = wait_phase(kube, ns, "r1", "WaitingForLease")
    assert "agent" in st["message"]
    time.sleep(2)
    assert operator_forward_writes(trust, ns) == []
    assert kube.get_configmap(ns, "r1-snapshot") is None
    assert "LeaseNotVerified" in reasons(kube, ns, "r1")
    from tests.e2e.harness import cosign

    lease["metadata"]["annotations"]["cosign.calyx.io/sentinel"] = cosign(lease, "sentinel")
    apply_obj(trust, lease)
    wait_phase(kube, ns, "r1", "Progressing")


def test_manual_tier_with_signed_approval(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    setup(
        trust,
        kube,
        ns,
        replicas=8,
        tiers=[
            {"weight": 5, "soakSeconds": 2},
            {"weight": 25, "soakSeconds": 2, "approval": "Manual"},
            {"weight": 100},
        ],
    )
    wait_phase(kube, ns, "r1", "WaitingForApproval", timeout=40)
    keys = {}
    from tests.e2e.harness import SEEDS

    for who in ("bob", "sentinel"):
        p = tmp_path / f"{who}.key"
        import base64

        p.write_text(base64.b64encode(SEEDS[who]).decode())
        p.chmod(0o600)
        keys[who] = p
    # An agent key may never approve: refused with a Warning, nothing moves.
    cli(
        trust,
        "approve-next-tier",
        "r1",
        "-n",
        ns,
        "--key",
        str(keys["sentinel"]),
        "--signer",
        "sentinel",
    )
    wait_for("ApprovalRejected", lambda: "ApprovalRejected" in reasons(kube, ns, "r1"))
    assert rollout_status(kube, ns, "r1")["phase"] == "WaitingForApproval"
    assert replicas_of(kube, ns, "checkout-canary") == 1
    out = cli(
        trust, "approve-next-tier", "r1", "-n", ns, "--key", str(keys["bob"]), "--signer", "bob"
    ).stdout
    assert "25%" in out
    wait_for("canary at 25%", lambda: replicas_of(kube, ns, "checkout-canary") == 3)
    st = wait_phase(kube, ns, "r1", "Completed", timeout=60)
    assert st["tiers"][1]["approvedBy"] == "bob"


def test_pause_during_soak_and_resume(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(
        trust,
        kube,
        ns,
        replicas=8,
        tiers=[{"weight": 5, "soakSeconds": 4}, {"weight": 25, "soakSeconds": 2}, {"weight": 100}],
    )
    wait_phase(kube, ns, "r1", "Progressing")
    cli(trust, "pause-rollout", "r1", "-n", ns)
    wait_phase(kube, ns, "r1", "Paused")
    time.sleep(7)
    assert replicas_of(kube, ns, "checkout-canary") == 1
    assert rollout_status(kube, ns, "r1")["phase"] == "Paused"
    status_text = cli(trust, "status", "r1", "-n", ns).stdout
    assert "Paused" in status_text and "TIER" in status_text
    cli(trust, "resume-rollout", "r1", "-n", ns)
    wait_phase(kube, ns, "r1", "Completed", timeout=60)


def test_force_rollback_at_25(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(
        trust,
        kube,
        ns,
        replicas=20,
        tiers=[
            {"weight": 5, "soakSeconds": 2},
            {"weight": 25, "soakSeconds": 600},
            {"weight": 100},
        ],
    )
    wait_for("canary at 7", lambda: replicas_of(kube, ns, "checkout-canary") == 7, timeout=40)
    out = cli(trust, "force-rollback", "r1", "-n", ns, "--reason", "INC-7 latency").stdout
    assert "rollback requested" in out
    st = wait_phase(kube, ns, "r1", "RolledBack", timeout=30)
    assert st["rollback"]["trigger"] == "Manual" and st["rollback"]["reason"] == "INC-7 latency"
    assert_restored(kube, ns)
    rs = reasons(kube, ns, "r1")
    assert rs.count("RolledBack") == 1 and rs.count("RollbackComplete") == 1


def test_lease_expiring_mid_rollout(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(
        trust,
        kube,
        ns,
        replicas=8,
        expires_in=12,
        tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}],
    )
    wait_phase(kube, ns, "r1", "Progressing")
    lease = kube.get_custom("leases", ns, "l1")
    expires = lease["spec"]["expiresAt"]
    st = wait_phase(kube, ns, "r1", "RolledBack", timeout=40)
    assert st["rollback"]["trigger"] == "LeaseExpired"
    assert_restored(kube, ns)
    assert operator_forward_writes(trust, ns, since=expires) == []


def test_trust_key_revoked_mid_rollout(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(trust, kube, ns, replicas=8, tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    wait_phase(kube, ns, "r1", "Progressing")
    revoked_at = now_stamp()
    apply_obj(trust, trust_configmap(["alice", "bob", "watcher"]))
    st = wait_phase(kube, ns, "r1", "RolledBack", timeout=20)
    assert st["rollback"]["trigger"] == "LeaseInvalid"
    assert "agent" in st["rollback"]["reason"]
    assert_restored(kube, ns)
    assert operator_forward_writes(trust, ns, since=revoked_at) == []


def test_target_deleted_mid_rollout(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(trust, kube, ns, replicas=4, tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    wait_phase(kube, ns, "r1", "Progressing")
    trust.kubectl("delete", "deployment", "checkout", "-n", ns)
    st = wait_phase(kube, ns, "r1", "Failed", timeout=20)
    assert "was deleted mid-rollout" in st["message"]
    wait_for("canary removed", lambda: deployment(kube, ns, "checkout-canary") is None)
    # The announcement goes out from the outbox on the pass after the decision (docs/audit.md):
    # on a loaded machine that can come after the canary is gone.
    wait_for("TargetDeleted Event", lambda: "TargetDeleted" in reasons(kube, ns, "r1"))


def test_two_rollouts_one_lease(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(trust, kube, ns, replicas=4, create_rollout=False)
    tiers = [{"weight": 5, "soakSeconds": 600}, {"weight": 100}]
    apply_obj(trust, rollout_body(ns, "ra", "l1", tiers=tiers))
    apply_obj(trust, rollout_body(ns, "rb", "l1", tiers=tiers))

    def settled() -> Any:
        a = rollout_status(kube, ns, "ra").get("phase")
        b = rollout_status(kube, ns, "rb").get("phase")
        return {a, b} == {"Progressing", "Failed"} and (a, b)

    wait_for("one winner, one failure", settled, timeout=30)
    loser = "ra" if rollout_status(kube, ns, "ra")["phase"] == "Failed" else "rb"
    assert "consumed" in rollout_status(kube, ns, loser)["message"].lower()
    time.sleep(2)
    canaries = [
        d
        for d in kube.apps.list_namespaced_deployment(ns).items
        if d.metadata.name.endswith("-canary")
    ]
    assert len(canaries) == 1


def test_rollout_deleted_mid_rollout(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(trust, kube, ns, replicas=8, tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    wait_for("canary", lambda: replicas_of(kube, ns, "checkout-canary") == 1, timeout=30)
    before = template_sha(deployment(kube, ns, "checkout"))
    trust.kubectl("delete", "rollouts.calyx.io", "r1", "-n", ns, "--wait=false")
    wait_for("rollout gone", lambda: kube.get_custom("rollouts", ns, "r1") is None, timeout=30)
    assert deployment(kube, ns, "checkout-canary") is None
    assert template_sha(deployment(kube, ns, "checkout")) == before
    assert "RollbackComplete" in reasons(kube, ns, "r1")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "tiers"),
    [
        ("WriteSnapshot", FAST),
        ("CreateCanary", FAST),
        ("ScaleCanary", FAST),  # mid-soak: after tier 2 scaled
        ("PatchStableImages", FAST),  # mid-promotion
        # decision stored with its announcement, killed before posting it (outbox)
        ("Announce:DeployStarted", FAST),
        ("Announce:CanaryPromoted", FAST),
        ("Announce:DeployCompleted", FAST),
    ],
)
def test_crash_safety(
    point: str,
    tiers: list[dict[str, Any]],
    kube: Kube,
    trust: Any,
    running_operator: Any,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    op = running_operator
    op.extra_env = {
        "CALYX_FAULT_EXIT_AFTER": point,
        "CALYX_FAULT_MARKER": str(tmp_path / "crashed"),
    }
    op.restart()
    try:
        setup(trust, kube, ns, replicas=8, tiers=tiers)
        wait_for(f"operator to die after {point}", lambda: not op.alive(), timeout=60)
        snap = kube.get_configmap(ns, "r1-snapshot")
        op.extra_env = {}
        op.start()
        st = wait_phase(kube, ns, "r1", "Completed", timeout=90)
        assert kube.get_configmap(ns, "r1-snapshot") == snap or snap is None
        # Events are posted right after the status write that the wait above saw.
        wait_for("DeployCompleted event", lambda: "DeployCompleted" in reasons(kube, ns, "r1"))
        time.sleep(1)
        rs = reasons(kube, ns, "r1")
        records = [
            json.loads(line)["reason"]
            for line in (kube.get_configmap(ns, "r1-report") or {})["data"]["audit.jsonl"]
            .strip()
            .splitlines()
        ]
        for r, n in (("DeployStarted", 1), ("CanaryPromoted", 2), ("DeployCompleted", 1)):
            assert rs.count(r) == n, (point, rs)
            assert records.count(r) == n, (point, records)
        patches = [
            e for e in operator_forward_writes(trust, ns) if e["objectRef"]["name"] == "checkout"
        ]
        assert len(patches) == 1, "promoted twice"
        assert st["snapshot"]["sha256"]
    finally:
        op.extra_env = {}
        if not op.alive():
            op.start()


@pytest.mark.slow
def test_crash_mid_rollback(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    op = running_operator
    setup(trust, kube, ns, replicas=8, tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    wait_for("canary", lambda: replicas_of(kube, ns, "checkout-canary") == 1, timeout=30)
    op.extra_env = {
        "CALYX_FAULT_EXIT_AFTER": "DeleteCanary",
        "CALYX_FAULT_MARKER": str(tmp_path / "crashed"),
    }
    op.restart()
    try:
        cli(trust, "force-rollback", "r1", "-n", ns)
        try:
            wait_for("operator to die mid-rollback", lambda: not op.alive(), timeout=30)
        except AssertionError:
            raise AssertionError(op.log_text()[-3000:]) from None
        assert rollout_status(kube, ns, "r1")["phase"] == "RollingBack"
        op.extra_env = {}
        op.start()
        wait_phase(kube, ns, "r1", "RolledBack", timeout=30)
        assert_restored(kube, ns, max_revert_seconds=None)  # includes the operator's downtime
        rs = reasons(kube, ns, "r1")
        assert rs.count("RollbackComplete") == 1, rs
        assert rs.count("RolledBack") == 1, rs
    finally:
        op.extra_env = {}
        if not op.alive():
            op.start()


def test_invariant_nothing_forward_before_lease(trust: Any, kube_namespace: str) -> None:
    """The audit log is there and attributes writes to the operator (guards the checker)."""
    assert trust.audit_log, "local cluster must record an audit log"
    assert OPERATOR_NS == "calyx-system"
