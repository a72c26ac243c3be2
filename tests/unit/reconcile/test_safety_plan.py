"""The planner under attack (docs/security.md): a rewritten snapshot, a busy target, a foreign
canary, a restore that never converges, a spec edited under a bound Lease."""

from __future__ import annotations

import copy
import json

from calyx.domain.canary import CLAIM_ANNOTATION, SNAPSHOT_KEY, sha256_of, template_sha
from calyx.domain.rollout_plan import FORCE_ROLLBACK
from tests.support.rollout_world import World

EVIL = "evil.example/backdoor:1"


def _at_first_tier() -> World:
    w = World(tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    w.run()
    assert w.phase == "Progressing" and w.canary is not None
    return w


def _rewrite_snapshot(w: World) -> None:
    """What someone with ConfigMap write does: delete and re-create it with another image
    and a recomputed templateSha256 inside the payload."""
    assert w.snapshot is not None
    doc = json.loads(w.snapshot["data"][SNAPSHOT_KEY])
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = EVIL
    doc["templateSha256"] = sha256_of(doc["spec"]["template"])
    forged = copy.deepcopy(w.snapshot)
    forged["data"][SNAPSHOT_KEY] = json.dumps(doc)
    w.snapshot = forged  # deleted and created again: the ConfigMap is immutable


def test_rewritten_snapshot_is_never_restored_and_fails_the_rollout() -> None:
    w = _at_first_tier()
    _rewrite_snapshot(w)
    w.rollout["metadata"]["annotations"][FORCE_ROLLBACK] = "drill"
    w.run()
    assert w.phase == "Failed"
    assert "RestoreStable" not in w.actions
    assert w.canary is None, "the canary is still removed"
    assert w.target["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/checkout:1"
    assert w.reasons().count("SnapshotTampered") == 1
    assert "cannot be trusted" in w.rollout["status"]["message"]


def test_tampering_is_noticed_without_waiting_for_a_rollback() -> None:
    w = _at_first_tier()
    _rewrite_snapshot(w)
    w.advance(1)
    w.run()
    assert w.phase == "Failed" and w.canary is None
    assert w.reasons().count("SnapshotTampered") == 1


def test_deleted_snapshot_is_tampering_too() -> None:
    w = _at_first_tier()
    w.snapshot = None
    w.run()
    assert w.phase == "Failed" and "missing" in w.rollout["status"]["message"]


def test_target_claimed_by_another_live_rollout_waits_and_announces_once() -> None:
    w = World()
    w.busy_by = "r0"
    for _ in range(5):
        w.run()
        w.advance(1)
    assert w.phase == "Pending"
    assert w.actions == [], "no finalizer, no claim, no snapshot while busy"
    assert w.reasons() == ["TargetBusy"]
    w.busy_by = None
    w.run()
    assert w.phase == "Progressing"
    assert w.target["metadata"]["annotations"][CLAIM_ANNOTATION] == "r1/uid-r1"


def test_claim_is_released_at_the_end() -> None:
    w = World(tiers=[{"weight": 5, "soakSeconds": 1}, {"weight": 100}])
    w.run()
    for _ in range(5):
        w.advance(1)
        w.run()
    assert w.phase == "Completed"
    assert CLAIM_ANNOTATION not in w.target["metadata"].get("annotations", {})
    assert w.actions[-2:] == ["ReleaseTarget", "RemoveFinalizer"]


def test_foreign_canary_is_neither_adopted_nor_deleted() -> None:
    w = World()
    w.foreign_canary = {"metadata": {"name": "checkout-canary"}}
    w.run()
    assert w.phase == "Pending" and w.reasons() == ["CanaryConflict"]
    assert "CreateCanary" not in w.actions and "DeleteCanary" not in w.actions


def test_restore_that_never_converges_is_bounded_and_announced_once() -> None:
    w = _at_first_tier()
    w.target["spec"]["template"]["spec"]["containers"][0]["image"] = "hand/edited:9"
    w.failing.add("RestoreStable")  # e.g. an admission policy denies the operator's patch
    w.rollout["metadata"]["annotations"][FORCE_ROLLBACK] = "drill"
    for _ in range(60):  # one minute of one-second passes
        w.run()
        w.advance(1)
    restores = w.actions.count("RestoreStable")
    assert 3 <= restores <= 3 + 60 // 5 + 1, restores
    assert w.reasons().count("RollbackStuck") == 1
    assert w.phase == "RollingBack"
    assert "hand/edited:9" in next(m for _, r, m in w.events if r == "RollbackStuck")


def test_deleting_a_stuck_rollback_lets_go() -> None:
    w = _at_first_tier()
    w.target["spec"]["template"]["spec"]["containers"][0]["image"] = "hand/edited:9"
    w.failing.add("RestoreStable")
    w.rollout["metadata"]["annotations"][FORCE_ROLLBACK] = "drill"
    for _ in range(5):
        w.run()
        w.advance(1)
    w.delete_rollout()  # kubectl delete: held by the finalizer
    w.run()
    assert "calyx.io/rollback" not in w.rollout["metadata"]["finalizers"]
    assert w.reasons().count("RollbackAbandoned") == 1
    assert w.canary is None


def test_restore_that_converges_verifies_against_the_recorded_payload() -> None:
    w = _at_first_tier()
    before = template_sha(w.target)
    w.target["spec"]["template"]["spec"]["containers"][0]["image"] = "hand/edited:9"
    w.rollout["metadata"]["annotations"][FORCE_ROLLBACK] = "drill"
    w.run()
    assert w.phase == "RolledBack" and template_sha(w.target) == before
    assert w.actions.count("RestoreStable") == 1


def test_post_deploy_added_under_a_running_rollout_rolls_back() -> None:
    w = _at_first_tier()
    job = {"spec": {"template": {"spec": {"containers": [{"name": "x", "image": EVIL}]}}}}
    w.rollout["spec"]["postDeploy"] = {"jobTemplate": job}
    w.run()
    assert w.phase == "RolledBack"
    assert "ConstraintViolated" in w.rollout["status"]["rollback"]["reason"]
    assert "CreateJob" not in w.actions


def test_post_deploy_without_a_bound_lease_never_starts() -> None:
    job = {"spec": {"template": {"spec": {"containers": [{"name": "x", "image": EVIL}]}}}}
    w = World(spec={"postDeploy": {"jobTemplate": job}})
    w.run()
    assert w.phase == "WaitingForLease" and w.actions == []
    assert w.reasons() == ["ConstraintViolated"]


def test_force_rollback_of_a_canary_whose_start_was_never_recorded() -> None:
    """Found by the failover tests: the operator died after creating the canary and before the
    status write that records the start; a force-rollback then said "nothing to undo" and
    left the canary (new image) running."""
    w = World(tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    for _ in range(10):
        plan = w.step(crash_before_status=True)
        if w.canary is not None:
            break
        assert plan.actions, "stuck before creating the canary"
    assert w.canary is not None
    assert not (w.rollout["status"].get("snapshot") or {}).get("configMap")
    w.rollout["metadata"]["annotations"][FORCE_ROLLBACK] = "INC-1"
    w.run()
    assert w.phase == "RolledBack" and w.canary is None
    assert (
        "never changed" in w.rollout["status"]["message"]
        or "snapshot" in w.rollout["status"]["message"]
    )
    assert w.reasons().count("RollbackComplete") == 1
