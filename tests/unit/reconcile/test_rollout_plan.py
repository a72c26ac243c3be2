"""The Rollout state machine, driven through whole rollouts in memory (pure planner)."""

from __future__ import annotations

import copy

import pytest

from calyx.domain.canary import read_snapshot, template_sha
from calyx.domain.rollout_plan import FORCE_ROLLBACK, AnalysisOutcome
from tests.support.rollout_world import World


def soak(w: World, seconds: float) -> None:
    """Let time pass in one-second timer ticks, as the operator's sweeper does."""
    for _ in range(int(seconds)):
        w.advance(1)
        w.run()


def test_happy_path_20_replicas_1_then_7_then_promotion() -> None:
    w = World(replicas=20)
    w.run()
    assert w.phase == "Progressing"
    assert w.canary_replicas() == 1
    st = w.rollout["status"]
    assert st["currentWeight"] == 5 and st["effectivePercent"] == 5
    assert st["snapshot"]["configMap"] == "r1-snapshot"
    assert w.actions[:5] == [
        "AddFinalizer",
        "ClaimTarget",
        "Claim",
        "WriteSnapshot",
        "CreateCanary",
    ]
    soak(w, 61)
    assert w.canary_replicas() == 7 and w.rollout["status"]["effectivePercent"] == 26
    soak(w, 61)
    assert w.phase == "Completed"
    assert w.canary is None
    assert w.target["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/checkout:2"
    assert w.actions.count("PatchStableImages") == 1
    assert w.reasons() == ["DeployStarted", "CanaryPromoted", "CanaryPromoted", "DeployCompleted"]
    assert [t.get("result") for t in w.rollout["status"]["tiers"]] == ["Passed"] * 3
    assert "calyx.io/rollback" not in w.rollout["metadata"]["finalizers"]
    assert w.writes_while_invalid == []


def test_four_replicas_reports_effective_percent_honestly() -> None:
    w = World(replicas=4)
    w.run()
    st = w.rollout["status"]
    assert w.canary_replicas() == 1
    assert st["currentWeight"] == 5 and st["effectivePercent"] == 20


def test_snapshot_is_written_before_the_first_mutation_and_restorable() -> None:
    w = World()
    original = template_sha(w.target)
    w.run()
    i_snap, i_canary = w.actions.index("WriteSnapshot"), w.actions.index("CreateCanary")
    assert i_snap < i_canary
    doc, sha = read_snapshot(w.snapshot)
    assert doc["templateSha256"] == original
    assert w.rollout["status"]["snapshot"]["sha256"] == sha


def test_nothing_happens_until_the_lease_verifies() -> None:
    w = World()
    del w.lease["metadata"]["annotations"]["cosign.calyx.io/sentinel"]
    w.run()
    assert w.phase == "WaitingForLease"
    assert "agent" in w.rollout["status"]["message"]
    assert w.actions == [] and w.canary is None and w.snapshot is None
    assert w.reasons() == ["LeaseNotVerified"]
    w.run()
    assert w.reasons() == ["LeaseNotVerified"]  # announced once
    w.sign_lease("sentinel")
    w.run()
    assert w.phase == "Progressing"


@pytest.mark.parametrize(
    ("mutate", "reason", "text"),
    [
        (lambda w: setattr(w, "target", None), "TargetNotFound", 'Deployment "checkout" not found'),
        (
            lambda w: w.rollout["spec"]["tiers"].__setitem__(0, {"weight": 10}),
            "ConstraintViolated",
            "exceeds the lease's maxInitialWeight 5%",
        ),
        (
            lambda w: w.target["spec"]["template"]["spec"]["containers"][0].__setitem__(
                "name", "web"
            ),
            "ContainerNotFound",
            "container(s) app",
        ),
    ],
)
def test_start_problems_touch_nothing(mutate: object, reason: str, text: str) -> None:
    w = World()
    mutate(w)  # type: ignore[operator]
    w.run()
    assert w.phase == "WaitingForLease"
    assert text in w.rollout["status"]["message"]
    assert reason in w.reasons()
    assert w.actions == []


def test_require_analysis_constraint() -> None:
    w = World(constraints={})
    w.run()
    assert "requires metric analysis" in w.rollout["status"]["message"]
    assert w.actions == []


def test_manual_tier_waits_for_a_valid_human_approval() -> None:
    w = World(
        tiers=[
            {"weight": 5, "soakSeconds": 10},
            {"weight": 25, "soakSeconds": 10, "approval": "Manual"},
            {"weight": 100},
        ]
    )
    w.run()
    soak(w, 11)
    assert w.phase == "WaitingForApproval"
    assert w.canary_replicas() == 1
    # Wrong tier, agent key, forged: refused with a Warning each, nothing changes.
    w.approve("alice", 100)
    w.approve("sentinel", 25, role="agent")
    soak(w, 2)
    assert w.phase == "WaitingForApproval" and w.canary_replicas() == 1
    rejected = [m for t, r, m in w.events if r == "ApprovalRejected"]
    assert len(rejected) == 2
    assert any("toWeight" in m or "100" in m for m in rejected)
    assert any("human" in m for m in rejected)
    soak(w, 2)
    assert len([r for r in w.reasons() if r == "ApprovalRejected"]) == 2  # not repeated
    w.approve("bob", 25)
    w.run()
    assert w.phase == "Progressing" and w.canary_replicas() == 7
    assert w.rollout["status"]["tiers"][1]["approvedBy"] == "bob"


def test_pause_holds_and_resume_restarts_the_soak() -> None:
    w = World()
    w.run()
    soak(w, 30)
    w.rollout["spec"]["paused"] = True
    soak(w, 100)
    assert w.phase == "Paused" and w.canary_replicas() == 1
    w.rollout["spec"]["paused"] = False
    soak(w, 30)
    assert w.phase == "Progressing" and w.canary_replicas() == 1  # soak restarted
    soak(w, 32)
    assert w.canary_replicas() == 7
    assert w.reasons().count("Paused") == 1 and w.reasons().count("Resumed") == 1


def test_force_rollback_at_25_restores_and_verifies() -> None:
    w = World()
    w.run()
    soak(w, 61)
    assert w.canary_replicas() == 7
    w.rollout["metadata"]["annotations"][FORCE_ROLLBACK] = "bad vibes"
    w.run()
    assert w.phase == "RolledBack"
    assert w.canary is None
    rb = w.rollout["status"]["rollback"]
    assert rb["trigger"] == "Manual" and rb["reason"] == "bad vibes"
    assert rb["detectedAt"] and rb["revertedAt"] and rb["verifiedAt"]
    assert w.reasons()[-2:] == ["RolledBack", "RollbackComplete"]


def test_lease_expiry_mid_rollout_rolls_back_without_forward_writes() -> None:
    w = World(expires_in=90)
    w.run()
    soak(w, 61)
    assert w.canary_replicas() == 7
    soak(w, 40)
    assert w.phase == "RolledBack"
    assert w.rollout["status"]["rollback"]["trigger"] == "LeaseExpired"
    assert w.writes_while_invalid == []


def test_rollback_after_promotion_started_restores_the_stable_template() -> None:
    w = World()
    w.run()
    before = template_sha(w.target)
    soak(w, 61)
    w.auto_ready = False  # stable rollout never completes: stuck mid-promotion
    soak(w, 61)
    assert w.phase == "Promoting" and template_sha(w.target) != before
    w.rollout["metadata"]["annotations"][FORCE_ROLLBACK] = "stuck"
    w.run()
    assert w.phase == "RolledBack" and template_sha(w.target) == before


def test_revoked_key_mid_rollout_rolls_back() -> None:
    w = World()
    w.run()
    from calyx.domain.trust import parse_trust_store
    from tests.support.rollout_world import signers_yaml

    w.trust = parse_trust_store(signers_yaml(["alice", "bob"]), None)
    w.advance(1)
    w.run()
    assert w.phase == "RolledBack"
    assert w.rollout["status"]["rollback"]["trigger"] == "LeaseInvalid"
    assert "agent" in w.rollout["status"]["rollback"]["reason"]


def test_target_deleted_mid_rollout_fails_clearly() -> None:
    w = World()
    w.run()
    w.target = None
    w.run()
    assert w.phase == "Failed"
    assert "was deleted mid-rollout" in w.rollout["status"]["message"]
    assert w.canary is None


def test_a_second_rollout_citing_a_consumed_lease_fails() -> None:
    w = World()
    w.run()
    other = World()
    other.ledger = w.ledger  # same cluster ledger
    other.rollout["metadata"]["uid"] = "uid-other"
    other.lease = w.lease
    # (the World computes claims for uid-r1; emulate the other rollout's view)
    o = other.observe()
    from calyx.domain.verification import verify_lease

    v = verify_lease(
        namespace="shop",
        name="l1",
        spec=w.lease["spec"],
        annotations=w.lease["metadata"]["annotations"],
        trust=w.trust,
        now=w.now,
        ledger=w.ledger,
        claimant_uid="uid-other",
    )
    assert v.phase == "Consumed"
    from calyx.domain.rollout_plan import Observed, plan_rollout

    plan = plan_rollout(Observed(**{**o.__dict__, "verdict": v, "claimed": False}))
    assert plan.status["phase"] == "Failed"
    assert "consumed" in plan.status["message"].lower()
    assert plan.actions == []


def test_deletion_rolls_back_first_then_releases_the_finalizer() -> None:
    w = World()
    w.run()
    w.delete_rollout()  # kubectl delete: held by the finalizer
    w.run()
    assert w.canary is None
    assert w.rollout["status"]["rollback"]["trigger"] == "Deleted"
    assert "calyx.io/rollback" not in w.rollout["metadata"]["finalizers"]


def test_breach_rolls_back_and_pause_policy_pauses() -> None:
    w = World()
    w.run()
    w.analysis = AnalysisOutcome(
        status={"time": "2026-11-25T10:00:05.000Z", "verdict": "Breach"},
        action="rollback",
        message="errorRate 23‰ > 10‰",
        breach_at="2026-11-25T10:00:03.000Z",
    )
    w.run()
    assert w.phase == "RolledBack"
    assert w.rollout["status"]["rollback"]["breachAt"] == "2026-11-25T10:00:03.000Z"
    w2 = World(spec={"onBreach": "Pause"})
    w2.run()
    w2.analysis = AnalysisOutcome(
        status={"time": "x", "verdict": "Breach"}, action="pause", message="cpu 95% > 90%"
    )
    w2.run()
    assert w2.phase == "Paused" and w2.rollout["spec"]["paused"] is True
    assert w2.canary is not None


@pytest.mark.parametrize("crash_at", range(0, 12))
def test_crash_at_any_step_finishes_once(crash_at: int) -> None:
    """Drop the status write of step ``crash_at`` (operator killed after acting, before
    recording): the rollout still completes, promotes once, and announces each transition
    once."""
    w = World(
        tiers=[{"weight": 5, "soakSeconds": 2}, {"weight": 25, "soakSeconds": 2}, {"weight": 100}]
    )
    for step in range(200):
        before = copy.deepcopy(w.rollout["status"])
        plan = w.step(crash_before_status=step == crash_at)
        if not plan.actions and w.rollout["status"] == before:
            w.advance(1)
        if w.phase == "Completed":
            break
    assert w.phase == "Completed"
    assert w.actions.count("PatchStableImages") == 1
    assert w.reasons().count("DeployCompleted") == 1
    assert w.reasons().count("DeployStarted") == 1
    assert w.reasons().count("CanaryPromoted") == 2
    assert w.snapshot is not None


def _unknown_keys(raw: object, dumped: object, path: str = "status") -> list[str]:
    if isinstance(raw, dict) and isinstance(dumped, dict):
        out = [f"{path}.{k}" for k in raw if k not in dumped and raw[k] is not None]
        for k in raw:
            if k in dumped:
                out += _unknown_keys(raw[k], dumped[k], f"{path}.{k}")
        return out
    if isinstance(raw, list) and isinstance(dumped, list):
        return [x for a, b in zip(raw, dumped, strict=False) for x in _unknown_keys(a, b, path)]
    return []


def _pruned(status: dict[str, object]) -> list[str]:
    from calyx.api.rollout import RolloutStatus

    dumped = RolloutStatus.model_validate(status).model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )
    return _unknown_keys(status, dumped)


def test_every_status_field_the_planner_writes_is_in_the_schema() -> None:
    """A field missing from the CRD schema is silently pruned by the API server."""
    w = World(
        tiers=[
            {"weight": 5, "soakSeconds": 2},
            {"weight": 25, "soakSeconds": 2, "approval": "Manual"},
            {"weight": 100},
        ]
    )
    w.run()
    soak(w, 3)
    assert w.phase == "WaitingForApproval"
    w.approve("sentinel", 25, role="agent")
    soak(w, 1)
    assert _pruned(w.rollout["status"]) == []
    w.rollout["metadata"]["annotations"][FORCE_ROLLBACK] = "x"
    w.run()
    assert w.phase == "RolledBack"
    assert _pruned(w.rollout["status"]) == []


def test_every_lease_status_field_is_in_the_schema() -> None:
    from calyx.api.lease import LeaseStatus
    from calyx.domain.lease_plan import plan_lease_status
    from calyx.domain.verification import verify_lease

    w = World()
    v = verify_lease(
        namespace="shop",
        name="l1",
        spec=w.lease["spec"],
        annotations=w.lease["metadata"]["annotations"],
        trust=w.trust,
        now=w.now,
    )
    plan = plan_lease_status(
        verdict=v,
        previous=None,
        generation=1,
        now="2026-11-25T10:00:00Z",
        consumed_by={"name": "r1", "uid": "u"},
    )
    dumped = LeaseStatus.model_validate(plan.status).model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )
    assert _unknown_keys(plan.status, dumped) == []


JOB = {
    "spec": {
        "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "smoke", "image": "curl"}]}
        }
    }
}
QUICK = [{"weight": 5, "soakSeconds": 1}, {"weight": 100}]


def _to_validating() -> World:
    w = World(
        tiers=QUICK, spec={"postDeploy": {"jobTemplate": JOB, "timeoutSeconds": 30}}, bind=True
    )
    w.run()
    soak(w, 3)
    assert w.phase == "Validating", w.rollout["status"].get("message")
    assert w.job is not None and w.job["metadata"]["name"] == "r1-validate"
    assert w.job["metadata"]["ownerReferences"][0]["uid"] == "uid-r1"
    return w


@pytest.mark.parametrize("condition", ["Complete", "SuccessCriteriaMet"])
def test_post_deploy_job_success_completes(condition: str) -> None:
    w = _to_validating()
    w.job["status"] = {"conditions": [{"type": condition, "status": "True"}]}
    w.run()
    assert w.phase == "Completed"
    assert w.rollout["status"]["validation"]["result"] == "Succeeded"
    assert "ValidationPassed" in w.reasons() and w.reasons().count("DeployCompleted") == 1


def test_post_deploy_job_failure_rolls_back_to_the_snapshot() -> None:
    w = _to_validating()
    before = read_snapshot(w.snapshot)[0]["templateSha256"]
    assert template_sha(w.target) != before
    w.job["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    w.run()
    assert w.phase == "RolledBack"
    assert w.rollout["status"]["rollback"]["trigger"] == "PostDeployFailed"
    assert template_sha(w.target) == before
    assert "DeployCompleted" not in w.reasons()


def test_post_deploy_job_timeout_rolls_back_and_deletes_the_job() -> None:
    w = _to_validating()
    soak(w, 25)
    assert w.phase == "Validating"
    soak(w, 8)
    assert w.phase == "RolledBack"
    assert w.rollout["status"]["validation"]["result"] == "TimedOut"
    assert w.job is None
    assert "did not finish within 30s" in w.rollout["status"]["rollback"]["reason"]


def test_high_risk_without_spec_tiers_needs_approval_for_every_tier() -> None:
    # latest-tag 30 + two rollbacks of this target this week 30 + analysis-optional 15 = 75
    w = World(tiers=[], image="reg/checkout:latest")
    del w.rollout["spec"]["tiers"]
    w.recent_rollbacks(2)
    w.run()
    st = w.rollout["status"]
    assert st["risk"]["level"] == "High"
    assert w.phase == "WaitingForApproval" and w.canary is None  # even the first tier
    assert [t["weight"] for t in st["tiers"]] == [5, 25, 100]
    w.approve("alice", 5)
    w.run()
    assert w.phase == "Progressing" and w.canary_replicas() == 1
    w.forget_rollbacks()  # risk is fixed once stored: a fresh assessment would now be Medium
    from calyx.reconcile.rollout import assess_risk

    assert assess_risk(w.fake, w.rollout, w.lease, w.target, 5, w.now)["level"] == "Medium"
    w.run()
    assert w.rollout["status"]["risk"]["level"] == "High"


def test_crash_between_rollback_decision_and_revert_stamp_still_records_timings() -> None:
    w = World()
    w.run()
    w.rollout["metadata"]["annotations"][FORCE_ROLLBACK] = "now"
    w.step(crash_before_status=True)  # decision stored first, revert issued, then death
    assert w.phase == "RollingBack" and "revertedAt" not in w.rollout["status"]["rollback"]
    w.advance(3)
    w.run()
    rb = w.rollout["status"]["rollback"]
    assert w.phase == "RolledBack" and rb["revertedAt"] and rb["verifiedAt"]
    assert rb["revertSeconds"] >= 3  # honest: includes the downtime
    assert w.reasons().count("RollbackComplete") == 1
    assert w.reasons().count("RolledBack") == 1  # the dead pass never announced it
