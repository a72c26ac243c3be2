"""The operator as a confused deputy, tried the way someone with the ordinary ``edit`` role
would (docs/security.md): each test is one probe from the safety issue, on the real API server.

Every scenario ends with two invariants read from the API server's audit log: no forward write
without a valid Lease, and no pod template written by the operator with an image that neither a
snapshot the operator took nor a signed Lease contains.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from calyx.adapters.kube import Kube
from calyx.domain.canary import CLAIM_ANNOTATION, SNAPSHOT_KEY, sha256_of
from calyx.domain.ledger import encode_entry, ledger_key
from calyx.domain.signatures import lease_digest
from calyx_dev.operator_process import OPERATOR_NS
from tests.e2e.harness import (
    assert_no_forward_write_without_valid_lease,
    assert_only_signed_templates,
    deployment,
    deployment_body,
    events_for,
    lease_body,
    reasons,
    rollout_body,
    rollout_status,
    wait_for,
    wait_phase,
)
from tests.e2e.plugin import apply_obj

pytestmark = [pytest.mark.e2e]
IMG1 = "reg.example/checkout:1.0.0"
IMG2 = "reg.example/checkout@sha256:" + "c" * 64
IMG3 = "reg.example/checkout@sha256:" + "d" * 64
EVIL = "evil.example/backdoor:1"
NO_ANALYSIS = {"requireAnalysis": False}
LONG = [{"weight": 5, "soakSeconds": 600}, {"weight": 100}]
FAST = [{"weight": 5, "soakSeconds": 2}, {"weight": 100}]


@pytest.fixture(autouse=True)
def _invariants(trust: Any, kube: Kube, kube_namespace: str) -> Any:
    yield
    if trust.audit_log:
        assert_no_forward_write_without_valid_lease(trust, kube_namespace)
        assert_only_signed_templates(trust, kube, kube_namespace)


def stable(cluster: Any, kube: Kube, ns: str, replicas: int = 4) -> None:
    apply_obj(cluster, deployment_body(ns, "checkout", replicas, IMG1))
    wait_for(
        "stable ready",
        lambda: (
            (deployment(kube, ns, "checkout") or {}).get("status", {}).get("readyReplicas")
            == replicas
        ),
        timeout=60,
    )


def lease(cluster: Any, ns: str, name: str, image: str, **kw: Any) -> dict[str, Any]:
    body = lease_body(ns, name, "checkout", {"app": image}, constraints=NO_ANALYSIS, **kw)
    apply_obj(cluster, body)
    return body


def image_of(kube: Kube, ns: str, name: str = "checkout") -> str:
    d = deployment(kube, ns, name) or {}
    return str(d["spec"]["template"]["spec"]["containers"][0]["image"])


def at_first_tier(cluster: Any, kube: Kube, ns: str, name: str = "r1") -> None:
    wait_for(
        f"{name} canary ready",
        lambda: (
            rollout_status(kube, ns, name).get("phase") == "Progressing"
            and (deployment(kube, ns, "checkout-canary") or {})
            .get("status", {})
            .get("readyReplicas")
        ),
        timeout=60,
    )


def force_rollback(kube: Kube, ns: str, name: str, reason: str = "drill") -> None:
    kube.patch_custom(
        "rollouts", ns, name, {"metadata": {"annotations": {"calyx.io/force-rollback": reason}}}
    )


def operator_writes(cluster: Any, ns: str, name: str, verb: str = "patch") -> list[Any]:
    return [
        e
        for e in cluster.read_audit_events(verbs=[verb], resource="deployments", namespace=ns)
        if str(e.get("userAgent", "")).startswith("calyx-operator")
        and e["objectRef"].get("name") == name
        and e["objectRef"].get("subresource") is None
    ]


# --- snapshot -------------------------------------------------------------------------------


def test_rewritten_snapshot_is_never_restored(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    """Probe: set an image in ``<rollout>-snapshot``, recompute templateSha256 inside the
    payload, force a rollback → the operator used to patch the stable to that image."""
    ns = kube_namespace
    stable(trust, kube, ns)
    lease(trust, ns, "l1", IMG2)
    apply_obj(trust, rollout_body(ns, "r1", "l1", tiers=LONG))
    at_first_tier(trust, kube, ns)
    cm = kube.get_configmap(ns, "r1-snapshot")
    assert cm is not None
    doc = json.loads(cm["data"][SNAPSHOT_KEY])
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = EVIL
    doc["templateSha256"] = sha256_of(doc["spec"]["template"])
    try:
        kube.core.patch_namespaced_config_map(
            "r1-snapshot", ns, {"data": {SNAPSHOT_KEY: json.dumps(doc)}}
        )
        edited = True
    except ApiException as exc:
        assert "immutable" in str(exc.body), exc.body
        edited = False
    # Immutable only stops edits; whoever may delete ConfigMaps can replace it.
    kube.delete_configmap(ns, "r1-snapshot")
    fake = {k: v for k, v in cm.items() if k not in ("metadata", "data")}
    fake["metadata"] = {"name": "r1-snapshot", "namespace": ns, "labels": cm["metadata"]["labels"]}
    fake["data"] = {SNAPSHOT_KEY: json.dumps(doc)}
    kube.create_configmap(ns, fake)
    force_rollback(kube, ns, "r1")
    st = wait_phase(kube, ns, "r1", "Failed", timeout=30)
    assert "cannot be trusted" in st["message"], st["message"]
    wait_for("SnapshotTampered", lambda: "SnapshotTampered" in reasons(kube, ns, "r1"))
    time.sleep(3)
    assert reasons(kube, ns, "r1").count("SnapshotTampered") == 1
    assert image_of(kube, ns) == IMG1, "stable left as it was"
    assert deployment(kube, ns, "checkout-canary") is None, "canary still removed"
    assert not [
        e for e in operator_writes(trust, ns, "checkout") if isinstance(e["requestObject"], list)
    ], "no restore patch"
    assert cm.get("immutable") is True and not edited, "the snapshot is immutable"
    assert cm["metadata"]["labels"]["calyx.io/managed-by"] == "calyx"


def test_restore_that_cannot_converge_is_bounded_and_the_rollout_deletable(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    """Probe: a restore that never converges was re-issued 2,000 times in two minutes, and the
    Rollout could not be deleted. Here an admission policy (what a platform team's policy
    engine might do) denies every template change to the stable, after a hand edit."""
    ns = kube_namespace
    stable(trust, kube, ns)
    lease(trust, ns, "l1", IMG2)
    apply_obj(trust, rollout_body(ns, "r1", "l1", tiers=LONG))
    at_first_tier(trust, kube, ns)
    kube.patch_deployment(
        ns,
        "checkout",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "hand/9"}]}}}},
        "application/strategic-merge-patch+json",
    )
    policy = f"freeze-{ns}"
    freeze_templates(trust, policy, ns)
    try:
        t0 = time.monotonic()
        force_rollback(kube, ns, "r1")
        wait_for("RollbackStuck", lambda: "RollbackStuck" in reasons(kube, ns, "r1"), timeout=30)
        time.sleep(max(0.0, 20 - (time.monotonic() - t0)))
        elapsed = time.monotonic() - t0
        attempts = [
            e
            for e in trust.read_audit_events(verbs=["patch"], resource="deployments", namespace=ns)
            if str(e.get("userAgent", "")).startswith("calyx-operator")
            and isinstance(e.get("requestObject"), list)
        ]
        assert 3 <= len(attempts) <= 3 + elapsed / 5 + 1, (len(attempts), elapsed)
        assert reasons(kube, ns, "r1").count("RollbackStuck") == 1
        msg = next(
            e["message"] for e in events_for(kube, ns, "r1") if e["reason"] == "RollbackStuck"
        )
        assert "hand/9" in msg, msg
        assert rollout_status(kube, ns, "r1")["phase"] == "RollingBack"
        kube.custom.delete_namespaced_custom_object("calyx.io", "v1alpha1", ns, "rollouts", "r1")
        wait_for("deleted", lambda: kube.get_custom("rollouts", ns, "r1") is None, timeout=30)
        assert deployment(kube, ns, "checkout-canary") is None
        assert image_of(kube, ns) == "hand/9", "left as it is"
        assert CLAIM_ANNOTATION not in (deployment(kube, ns, "checkout") or {})["metadata"].get(
            "annotations", {}
        ), "claim released"
    finally:
        trust.kubectl("delete", "validatingadmissionpolicybinding", policy, "--ignore-not-found")
        trust.kubectl("delete", "validatingadmissionpolicy", policy, "--ignore-not-found")


def freeze_templates(cluster: Any, name: str, ns: str) -> None:
    """A ValidatingAdmissionPolicy that refuses any pod-template change to ``checkout``."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["UPDATE"],
                        "resources": ["deployments"],
                    }
                ]
            },
            "matchConditions": [
                {"name": "stable", "expression": "object.metadata.name == 'checkout'"}
            ],
            "validations": [
                {
                    "expression": "object.spec.template == oldObject.spec.template",
                    "message": "pod templates are frozen by the platform team",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
            },
        },
    }
    apply_obj(cluster, policy)
    apply_obj(cluster, binding)
    # Policies take effect asynchronously: wait until a no-op-free probe is denied.
    probe = {"spec": {"template": {"metadata": {"annotations": {"probe": str(time.time())}}}}}

    def denied() -> bool:
        res = cluster.kubectl(
            "patch",
            "deployment",
            "checkout",
            "-n",
            ns,
            "--dry-run=server",
            "-p",
            json.dumps(probe),
            check=False,
        )
        return res.returncode != 0 and "frozen" in (res.stderr or "")

    wait_for("policy in force", denied, timeout=30)


# --- target claim ---------------------------------------------------------------------------


def test_two_rollouts_on_one_target_take_turns(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    """Probe: two valid Leases for one Deployment, applied together, shared one canary,
    alternated 41 image patches on the stable and both ended Completed."""
    ns = kube_namespace
    stable(trust, kube, ns)
    lease(trust, ns, "l1", IMG2)
    lease(trust, ns, "l2", IMG3)
    apply_obj(trust, rollout_body(ns, "r1", "l1", tiers=FAST))
    apply_obj(trust, rollout_body(ns, "r2", "l2", tiers=FAST))

    def one_waits() -> str | None:
        phases = {n: rollout_status(kube, ns, n).get("phase") for n in ("r1", "r2")}
        busy = [n for n, p in phases.items() if p == "Pending"]
        return busy[0] if busy else None

    second = wait_for("one Rollout waits (TargetBusy)", one_waits, timeout=30)
    first = "r1" if second == "r2" else "r2"
    st = rollout_status(kube, ns, second)
    assert "claimed by Rollout " + first in st["message"], st["message"]
    wait_phase(kube, ns, first, "Completed", timeout=90)
    wait_phase(kube, ns, second, "Completed", timeout=90)
    assert reasons(kube, ns, second).count("TargetBusy") == 1
    final = IMG3 if second == "r2" else IMG2
    assert image_of(kube, ns) == final
    patches = [
        e for e in operator_writes(trust, ns, "checkout") if _images_in(e.get("requestObject"))
    ]
    assert len(patches) == 2, "each signed change promoted exactly once, in turn"
    canaries = [
        _images_in(e.get("requestObject"))
        for e in operator_writes(trust, ns, "checkout-canary", "create")
    ]
    for p in patches:  # every image promoted to the stable ran as a canary first
        promoted = _images_in(p["requestObject"])
        assert any(promoted <= c for c in canaries), (promoted, canaries)
    assert CLAIM_ANNOTATION not in (deployment(kube, ns, "checkout") or {})["metadata"].get(
        "annotations", {}
    )


def _images_in(body: Any) -> set[str]:
    spec = (((body or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return {str(c["image"]) for c in spec.get("containers") or [] if c.get("image")}


def test_foreign_canary_is_not_adopted(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    """A 409 on creating ``<target>-canary`` is never taken as success: a Deployment of that
    name made by someone else (even one claiming the Rollout as owner) is left alone."""
    ns = kube_namespace
    stable(trust, kube, ns)
    fake = deployment_body(ns, "checkout-canary", 1, EVIL)
    fake["spec"]["selector"]["matchLabels"]["calyx.io/track"] = "canary"
    fake["spec"]["template"]["metadata"]["labels"]["calyx.io/track"] = "canary"
    apply_obj(trust, fake)
    lease(trust, ns, "l1", IMG2)
    apply_obj(trust, rollout_body(ns, "r1", "l1", tiers=FAST))
    wait_for("CanaryConflict", lambda: rollout_status(kube, ns, "r1").get("phase") == "Pending")
    time.sleep(3)
    assert reasons(kube, ns, "r1").count("CanaryConflict") == 1
    assert int((deployment(kube, ns, "checkout-canary") or {})["spec"]["replicas"]) == 1
    assert not operator_writes(trust, ns, "checkout-canary", "patch")
    kube.apps.delete_namespaced_deployment("checkout-canary", ns)
    wait_phase(kube, ns, "r1", "Completed", timeout=90)


# --- ledger ---------------------------------------------------------------------------------


def test_deleting_the_ledger_does_not_reopen_a_consumed_lease(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    """Probe: deleting ``calyx-ledger`` (or one entry) let a consumed Lease promote again."""
    ns = kube_namespace
    stable(trust, kube, ns)
    body = lease(trust, ns, "l1", IMG2)
    digest = lease_digest(ns, "l1", body["spec"])
    apply_obj(trust, rollout_body(ns, "r1", "l1", tiers=FAST))
    wait_phase(kube, ns, "r1", "Completed", timeout=90)
    kube.delete_configmap(OPERATOR_NS, "calyx-ledger")
    rebuilt = wait_for(
        "ledger rebuilt",
        lambda: (kube.get_configmap(OPERATOR_NS, "calyx-ledger") or {}).get("data"),
        timeout=30,
    )
    assert ledger_key(digest) in rebuilt
    wait_for(
        "LedgerRebuilt event",
        lambda: "LedgerRebuilt" in reasons(kube, OPERATOR_NS, "calyx-ledger"),
    )
    # One entry removed (no rebuild this time: the ConfigMap exists).
    cm = kube.get_configmap(OPERATOR_NS, "calyx-ledger")
    assert cm is not None
    cm["data"].pop(ledger_key(digest))
    kube.replace_configmap(OPERATOR_NS, "calyx-ledger", cm)
    apply_obj(trust, rollout_body(ns, "r2", "l1", tiers=FAST))
    st = wait_phase(kube, ns, "r2", "Failed", timeout=30)
    assert "consumed by Rollout" in st["message"] and "r1" in st["message"], st["message"]
    assert deployment(kube, ns, "checkout-canary") is None
    lease_st = (kube.get_custom("leases", ns, "l1") or {}).get("status") or {}
    assert lease_st.get("phase") == "Consumed", "the Lease stays Consumed"


def test_one_unreadable_ledger_entry_blocks_only_its_digest(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    """Probe: one unparseable entry blocked every rollback in the cluster."""
    ns = kube_namespace
    stable(trust, kube, ns)
    lease(trust, ns, "l1", IMG2)
    apply_obj(trust, rollout_body(ns, "r1", "l1", tiers=LONG))
    at_first_tier(trust, kube, ns)
    l2 = lease_body(ns, "l2", "checkout", {"app": IMG3}, constraints=NO_ANALYSIS)
    bad = ledger_key(lease_digest(ns, "l2", l2["spec"]))
    cm = kube.get_configmap(OPERATOR_NS, "calyx-ledger")
    assert cm is not None
    cm["data"][bad] = "{not json"
    cm["data"]["not-a-digest"] = "x"
    kube.replace_configmap(OPERATOR_NS, "calyx-ledger", cm)
    t0 = time.monotonic()
    force_rollback(kube, ns, "r1")
    wait_phase(kube, ns, "r1", "RolledBack", timeout=30)
    assert time.monotonic() - t0 < 10, "rollback not blocked by the ledger"
    # another digest still starts...
    lease(trust, ns, "l3", IMG3, expires_in=3000)
    apply_obj(trust, rollout_body(ns, "r3", "l3", tiers=LONG))
    at_first_tier(trust, kube, ns, "r3")
    force_rollback(kube, ns, "r3")
    wait_phase(kube, ns, "r3", "RolledBack", timeout=30)
    # ...while the one whose entry is unreadable is refused, with a message saying so
    apply_obj(trust, l2)
    apply_obj(trust, rollout_body(ns, "r2", "l2", tiers=LONG))
    wait_for(
        "r2 refused",
        lambda: "unreadable" in str(rollout_status(kube, ns, "r2").get("message")),
        timeout=30,
    )
    assert deployment(kube, ns, "checkout-canary") is None
    cm = kube.get_configmap(OPERATOR_NS, "calyx-ledger")
    assert cm is not None and cm["data"][bad] == "{not json", "kept as is: never silently dropped"
    del cm["data"][bad], cm["data"]["not-a-digest"]
    kube.replace_configmap(OPERATOR_NS, "calyx-ledger", cm)
    _ = encode_entry  # the repair a human would make is a valid entry or none


# --- the keys sign how ----------------------------------------------------------------------


def test_post_deploy_needs_a_lease_that_binds_the_rollout(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    """Probe: whoever can write a Rollout attached ``postDeploy.jobTemplate`` and the operator
    ran that pod with its own rights once a signed change completed."""
    ns = kube_namespace
    stable(trust, kube, ns)
    lease(trust, ns, "l1", IMG2)
    job = {
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "x", "image": EVIL}],
                }
            },
        }
    }
    apply_obj(trust, rollout_body(ns, "r1", "l1", tiers=FAST, postDeploy={"jobTemplate": job}))
    wait_for(
        "ConstraintViolated",
        lambda: "rolloutRef" in str(rollout_status(kube, ns, "r1").get("message")),
        timeout=30,
    )
    time.sleep(3)
    assert reasons(kube, ns, "r1").count("ConstraintViolated") == 1
    assert deployment(kube, ns, "checkout-canary") is None
    assert kube.get_job(ns, "r1-validate") is None
