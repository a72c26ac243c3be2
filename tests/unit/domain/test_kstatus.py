"""kstatus conditions (Ready / Reconciling / Stalled) from a phase: the table, transitions,
observedGeneration, and the Lease planner wiring."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from calyx.api.common import Condition
from calyx.api.lease import LeasePhase, LeaseStatus
from calyx.api.rollout import RolloutPhase
from calyx.domain.kstatus import (
    LEASE_SUMMARY,
    ROLLOUT_SUMMARY,
    kstatus_conditions,
    summary_for,
)
from calyx.domain.lease_plan import plan_lease_status, plan_unverifiable
from calyx.domain.verification import CosignerVerdict, LeaseVerdict

T0 = "2026-11-25T10:00:00Z"
T1 = "2026-11-25T10:05:00Z"

# (kind, phase, Ready, Reconciling, Stalled)
TABLE = [
    ("Lease", "Pending", "False", "True", "False"),
    ("Lease", "Verified", "True", "False", "False"),
    ("Lease", "Consumed", "True", "False", "False"),
    ("Lease", "Rejected", "False", "False", "True"),
    ("Lease", "Expired", "False", "False", "True"),
    ("Rollout", "Pending", "False", "True", "False"),
    ("Rollout", "WaitingForLease", "False", "True", "False"),
    ("Rollout", "Progressing", "False", "True", "False"),
    ("Rollout", "Paused", "False", "True", "False"),
    ("Rollout", "WaitingForApproval", "False", "True", "False"),
    ("Rollout", "Promoting", "False", "True", "False"),
    ("Rollout", "Validating", "False", "True", "False"),
    ("Rollout", "RollingBack", "False", "True", "False"),
    ("Rollout", "Completed", "True", "False", "False"),
    ("Rollout", "RolledBack", "False", "False", "True"),
    ("Rollout", "Failed", "False", "False", "True"),
    # not computed yet / from a newer operator: in progress, never a claim of done or failed
    ("Rollout", None, "False", "True", "False"),
    ("Lease", "SomethingNew", "False", "True", "False"),
]


def by_type(conds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conds}


@pytest.mark.parametrize(("kind", "phase", "ready", "reconciling", "stalled"), TABLE)
def test_phase_table(
    kind: Any, phase: str | None, ready: str, reconciling: str, stalled: str
) -> None:
    conds = by_type(kstatus_conditions(kind, phase, 3, T0, [], "doing things"))
    assert (
        conds["Ready"]["status"],
        conds["Reconciling"]["status"],
        conds["Stalled"]["status"],
    ) == (
        ready,
        reconciling,
        stalled,
    )
    for c in conds.values():
        assert c["observedGeneration"] == 3
        assert c["lastTransitionTime"] == T0
        assert c["reason"] == (phase or "Unknown")
        Condition.model_validate(c)  # the shape the CRD schema accepts
    true = [t for t, c in conds.items() if c["status"] == "True"]
    assert len(true) == 1, "exactly one of the three is True"
    assert conds[true[0]]["message"] == "doing things"
    assert conds["Ready"]["message"] == "doing things", "Ready always says what is going on"


def test_every_api_phase_is_in_the_tables() -> None:
    """A phase added to the API without a kstatus mapping would silently read as in progress."""
    assert set(LEASE_SUMMARY) == set(get_args(LeasePhase))
    assert set(ROLLOUT_SUMMARY) == set(get_args(RolloutPhase))
    covered = {(k, p) for k, p, *_ in TABLE}
    assert {("Lease", p) for p in LEASE_SUMMARY} <= covered
    assert {("Rollout", p) for p in ROLLOUT_SUMMARY} <= covered


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        summary_for("Deployment", "Progressing")  # type: ignore[arg-type]


def test_transition_time_moves_only_when_status_flips() -> None:
    first = kstatus_conditions("Rollout", "Progressing", 1, T0, [])
    # same summary, another in-progress phase, later: no flip, times kept, reason updated
    second = by_type(kstatus_conditions("Rollout", "Promoting", 1, T1, first, "patching"))
    assert all(c["lastTransitionTime"] == T0 for c in second.values())
    assert second["Reconciling"]["reason"] == "Promoting"
    assert second["Reconciling"]["message"] == "patching"
    # Completed: Ready and Reconciling flip at T1, Stalled stays False since T0
    third = by_type(kstatus_conditions("Rollout", "Completed", 2, T1, list(second.values())))
    assert third["Ready"]["lastTransitionTime"] == T1
    assert third["Reconciling"]["lastTransitionTime"] == T1
    assert third["Stalled"]["lastTransitionTime"] == T0
    assert all(c["observedGeneration"] == 2 for c in third.values())
    assert third["Ready"]["message"] == "Rollout is Completed"  # default when none given
    assert third["Stalled"]["message"] == ""


def test_other_conditions_are_kept_in_order() -> None:
    existing = [
        {"type": "Verified", "status": "True", "reason": "Verified2Key", "message": "x"},
        {"type": "Ready", "status": "False", "reason": "Pending", "lastTransitionTime": T0},
    ]
    out = kstatus_conditions("Lease", "Verified", None, T1, existing)
    assert [c["type"] for c in out] == ["Verified", "Ready", "Reconciling", "Stalled"]
    assert out[0] == existing[0]
    assert "observedGeneration" not in out[1], "no generation known: none claimed"
    assert existing[1]["status"] == "False", "the input is not mutated"


def _verdict(phase: Any, reason: str = "") -> LeaseVerdict:
    cos = (CosignerVerdict("alice", "human", "2026-11-25T09:00:00Z", True, "", "ab"),)
    return LeaseVerdict(
        valid=phase == "Verified",
        phase=phase,
        digest="sha256:" + "0" * 64,
        rule=None if phase == "Verified" else 2,
        reason=reason,
        cosigners=cos,
        expires_at=None,
        humans=1,
        agents=0,
    )


@pytest.mark.parametrize(
    ("phase", "true_type"),
    [
        ("Verified", "Ready"),
        ("Rejected", "Stalled"),
        ("Expired", "Stalled"),
        ("Pending", "Reconciling"),
    ],
)
def test_lease_plan_carries_kstatus(phase: str, true_type: str) -> None:
    plan = plan_lease_status(
        verdict=_verdict(phase, "no agent signature"),
        previous=None,
        generation=1,
        now=T0,
        consumed_by=None,
    )
    conds = by_type(plan.status["conditions"])
    assert set(conds) == {"Verified", "Ready", "Reconciling", "Stalled"}
    assert [t for t in ("Ready", "Reconciling", "Stalled") if conds[t]["status"] == "True"] == [
        true_type
    ]
    assert conds[true_type]["observedGeneration"] == 1
    LeaseStatus.model_validate(plan.status)


def test_unverifiable_lease_carries_kstatus() -> None:
    bad = plan_unverifiable(
        previous=None, generation=2, now=T0, reason="InvalidSpec", message="spec.intent: empty"
    )
    conds = by_type(bad.status["conditions"])
    assert conds["Stalled"]["status"] == "True"
    assert conds["Stalled"]["message"] == "spec.intent: empty"
    waiting = plan_unverifiable(
        previous=None, generation=2, now=T0, reason="TrustStoreInvalid", message="no signers"
    )
    assert by_type(waiting.status["conditions"])["Reconciling"]["status"] == "True"


def test_consumed_lease_stays_ready_after_it_expires() -> None:
    """A finished deploy must not turn the GitOps app red when its Lease expires later."""
    plan = plan_lease_status(
        verdict=_verdict("Expired", "expired at 2026-11-25T18:00:00Z"),
        previous=None,
        generation=1,
        now=T0,
        consumed_by={"name": "r1", "uid": "u1"},
    )
    assert plan.status["phase"] == "Expired"
    assert by_type(plan.status["conditions"])["Ready"]["status"] == "True"
