"""The Rollout state machine as a pure function: observed world → next status, actions, Events.

Level-based: the planner never remembers anything itself. Everything it needs to continue
(phase, tier, soak start, rollback timings, which Events were announced) is in the observed
Rollout status or derivable from the cluster, so a restarted operator plans exactly what the
old one would have. Each call plans ONE step; the reconciler applies it, observes again and
calls again until nothing is left to do. Every action is idempotent, so repeating a step after
a crash is harmless, and promotion (a patch to the same images) cannot happen twice.

Safety rule (docs/design.md promise 1): a *forward* action (create/scale canary, patch stable)
is planned only on a pass where the Lease verified at that moment. Reverts (delete canary,
restore from the snapshot) need no lease: taking a change away is always allowed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ValidationError

from calyx.api.lease import LeaseSpec
from calyx.api.rollout import (
    AnalysisGap,
    AnalysisStatus,
    ApprovalRecord,
    ChangeStatus,
    ContainerImageStatus,
    MetricSample,
    Risk,
    RollbackStatus,
    RollbackTrigger,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    SnapshotRef,
    Tier,
    TierStatus,
    ValidationStatus,
    WorkloadRef,
)
from calyx.domain.analysis import is_gap
from calyx.domain.canary import (
    canary_deployment,
    canary_name,
    claim_of,
    deployment_settled,
    images_applied,
    job_name,
    job_outcome,
    missing_containers,
    read_snapshot,
    snapshot_configmap,
    snapshot_matches,
    snapshot_name,
    snapshot_template_sha,
    template_sha,
    validation_job,
)
from calyx.domain.conditions import condition_field, set_condition
from calyx.domain.kstatus import kstatus_conditions
from calyx.domain.ledger import LedgerEntry
from calyx.domain.merge_patch import merge_apply, merge_diff
from calyx.domain.outbox import enqueue
from calyx.domain.rollout_binding import binding_problem
from calyx.domain.signatures import APPROVE_PREFIX, sig_fingerprint, verify_approval
from calyx.domain.tiers import canary_replicas, effective_percent
from calyx.domain.timefmt import format_time_ms as stamp  # rollback timings are sub-second
from calyx.domain.timefmt import parse_stamp
from calyx.domain.trust import TrustStore
from calyx.domain.verification import LeaseVerdict

FINALIZER = "calyx.io/rollback"
FORCE_ROLLBACK = "calyx.io/force-rollback"
TERMINAL = ("Completed", "RolledBack", "Failed")
DEFAULT_TIERS = (
    {"weight": 5, "soakSeconds": 60},
    {"weight": 25, "soakSeconds": 60},
    {"weight": 100},
)

ActionKind = Literal[
    "AddFinalizer",
    "RemoveFinalizer",
    "Claim",
    "WriteSnapshot",
    "CreateCanary",
    "ScaleCanary",
    "PatchStableImages",
    "DeleteCanary",
    "RestoreStable",
    "SetPaused",
    "CreateJob",
    "DeleteJob",
    "ClaimTarget",
    "ReleaseTarget",
    "DeleteSnapshot",
]
"""An action's name: its log line, and the fault point reached right after it succeeds."""


# --- actions: one class per kind, each with the fields its executor needs --------------------
# reconcile/rollout.py executes them with one ``match`` over these classes (mypy checks that
# every kind is handled and that each executor reads only fields its action has).


@dataclass(frozen=True)
class AddFinalizer:
    """Add ``calyx.io/rollback`` to the Rollout (before its first mutation)."""

    kind: ClassVar[ActionKind] = "AddFinalizer"


@dataclass(frozen=True)
class RemoveFinalizer:
    """Remove ``calyx.io/rollback`` from the Rollout (the rollout has ended)."""

    kind: ClassVar[ActionKind] = "RemoveFinalizer"


@dataclass(frozen=True)
class Claim:
    """Record the Lease as consumed by this Rollout in the ledger (compare-and-swap)."""

    entry: LedgerEntry
    kind: ClassVar[ActionKind] = "Claim"


@dataclass(frozen=True)
class ClaimTarget:
    """Annotate the target Deployment as claimed by this Rollout, on its resourceVersion."""

    name: str
    resource_version: str
    kind: ClassVar[ActionKind] = "ClaimTarget"


@dataclass(frozen=True)
class ReleaseTarget:
    """Remove this Rollout's claim annotation from the target, on its resourceVersion."""

    name: str
    resource_version: str
    kind: ClassVar[ActionKind] = "ReleaseTarget"


@dataclass(frozen=True)
class WriteSnapshot:
    """Create the snapshot ConfigMap (a no-op when it exists)."""

    name: str
    body: Mapping[str, Any]
    kind: ClassVar[ActionKind] = "WriteSnapshot"


@dataclass(frozen=True)
class DeleteSnapshot:
    """Delete a snapshot ConfigMap that is not a faithful copy of the target."""

    name: str
    kind: ClassVar[ActionKind] = "DeleteSnapshot"


@dataclass(frozen=True)
class CreateCanary:
    """Create the canary Deployment."""

    name: str
    body: Mapping[str, Any]
    kind: ClassVar[ActionKind] = "CreateCanary"


@dataclass(frozen=True)
class ScaleCanary:
    """Set the canary Deployment's replica count (an absolute value)."""

    name: str
    replicas: int
    kind: ClassVar[ActionKind] = "ScaleCanary"


@dataclass(frozen=True)
class PatchStableImages:
    """Set the stable Deployment's container images to the Lease's (promotion)."""

    name: str
    containers: Sequence[Mapping[str, Any]]
    """``status.change.containers``: ``name`` and ``image`` of each changed container."""

    kind: ClassVar[ActionKind] = "PatchStableImages"


@dataclass(frozen=True)
class DeleteCanary:
    """Delete the canary Deployment and its pods at once."""

    name: str
    kind: ClassVar[ActionKind] = "DeleteCanary"


@dataclass(frozen=True)
class RestoreStable:
    """Replace the stable Deployment's pod template with the snapshot's."""

    name: str
    template: Mapping[str, Any]
    kind: ClassVar[ActionKind] = "RestoreStable"


@dataclass(frozen=True)
class SetPaused:
    """Set the Rollout's ``spec.paused`` (``onBreach: Pause``)."""

    paused: bool
    kind: ClassVar[ActionKind] = "SetPaused"


@dataclass(frozen=True)
class CreateJob:
    """Create the post-deploy validation Job."""

    name: str
    body: Mapping[str, Any]
    kind: ClassVar[ActionKind] = "CreateJob"


@dataclass(frozen=True)
class DeleteJob:
    """Delete the post-deploy validation Job (it timed out)."""

    name: str
    kind: ClassVar[ActionKind] = "DeleteJob"


Action = (
    AddFinalizer
    | RemoveFinalizer
    | Claim
    | ClaimTarget
    | ReleaseTarget
    | WriteSnapshot
    | DeleteSnapshot
    | CreateCanary
    | ScaleCanary
    | PatchStableImages
    | DeleteCanary
    | RestoreStable
    | SetPaused
    | CreateJob
    | DeleteJob
)
REVERTS: tuple[type[Action], ...] = (DeleteCanary, RestoreStable, DeleteJob, ReleaseTarget)
"""Actions that only take a change away: a failure of one never blocks the others."""
RESTORE_FREE_ATTEMPTS = 3
RESTORE_RETRY_SECONDS = 5
"""A restore that does not converge is re-issued at most once per this many seconds after
the first :data:`RESTORE_FREE_ATTEMPTS` (docs/security.md, "restore that does not converge")."""
DELETE_GRACE_SECONDS = 60
"""A Rollout deleted mid-rollback lets go after this long even if the restore never verified:
a finalizer must never wait forever (docs/security.md)."""


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str
    audit: str = ""


@dataclass
class Plan:
    status: dict[str, Any]
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # A rollback's decision is stored before its actions: if the operator dies mid-revert,
    # the next one must see RollingBack, not a Progressing rollout whose canary vanished.
    status_first: bool = False
    # After the actions run, stamp ``status.rollback.revertedAt`` with the real time.
    stamp_reverted: bool = False


@dataclass(frozen=True)
class AnalysisOutcome:
    """What the analysis step (run by the reconciler on a timer) concluded this pass."""

    status: Mapping[str, Any]  # -> status.lastAnalysis
    action: Literal["none", "hold", "rollback", "pause"]
    message: str = ""
    breach_at: str | None = None
    tier_metrics: Mapping[str, Any] | None = None
    events: Sequence[Event] = ()


@dataclass(frozen=True)
class Observed:
    rollout: Mapping[str, Any]
    now: dt.datetime
    spec: RolloutSpec | None = None
    spec_error: str | None = None
    lease: Mapping[str, Any] | None = None
    lease_spec: LeaseSpec | None = None
    verdict: LeaseVerdict | None = None
    claimed: bool = False  # the ledger records this Rollout's uid as the Lease's consumer
    trust: TrustStore | None = None
    trust_error: str | None = None
    target: Mapping[str, Any] | None = None
    canary: Mapping[str, Any] | None = None  # only ever this Rollout's own canary
    foreign_canary: Mapping[str, Any] | None = None  # a `<target>-canary` that is not ours
    busy_by: str | None = None  # another live Rollout that claimed the target
    snapshot: Mapping[str, Any] | None = None
    snapshot_doc: Mapping[str, Any] | None = None  # checked against status.snapshot.sha256
    snapshot_problem: str = ""  # why the recorded snapshot cannot be trusted, when started
    query_problem: tuple[str, str] | None = None  # (reason, message) from the pre-start check
    job: Mapping[str, Any] | None = None  # the post-deploy validation Job
    analysis: AnalysisOutcome | None = None
    default_tiers: Sequence[Mapping[str, Any]] = DEFAULT_TIERS
    risk: Mapping[str, Any] | None = None


WIRE_KEYS = ("conditions", "outbox")
"""Status fields kept in their stored (wire) form rather than in :class:`RolloutStatus`: the
conditions, maintained by ``domain/conditions.py`` and ``domain/kstatus.py`` for both kinds, and
the outbox, by ``domain/outbox.py``."""


def load_status(raw: Mapping[str, Any] | None) -> RolloutStatus:
    """A stored Rollout status read once into :class:`RolloutStatus`, leaving out
    :data:`WIRE_KEYS`. Tolerant: unknown fields (a newer operator's) are ignored, missing ones are
    None, and a top-level field that does not validate (written by an older version, or by hand)
    is read as absent rather than failing the pass."""
    data = {k: v for k, v in (raw or {}).items() if k not in WIRE_KEYS}
    while True:
        try:
            return RolloutStatus.model_validate(data)
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e["loc"]} & data.keys()
            if not bad:
                raise
            data = {k: v for k, v in data.items() if k not in bad}


def status_dump(model: BaseModel) -> dict[str, Any]:
    """``model`` on the wire: ``model_dump(by_alias=True, exclude_unset=True,
    exclude_none=True)``, except that times are written with milliseconds
    (:func:`~calyx.domain.timefmt.format_time_ms`), the spelling the operator records in status
    (the models' own serializer writes ``metav1.Time``'s microseconds). Only fields that were set
    are written, so a default (``reason: ""``) appears only where the planner put it."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name, None)
        if name in model.model_fields_set and value is not None:
            out[info.alias or name] = _dump_value(value)
    return out


def _dump_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return status_dump(value)
    if isinstance(value, dt.datetime):
        return stamp(value)
    if isinstance(value, list):
        return [_dump_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump_value(v) for k, v in value.items() if v is not None}
    return value


def is_started(status: RolloutStatus, stored: Mapping[str, Any] | None = None) -> bool:
    """Whether the snapshot is recorded: from then on a change may be out there. ``stored``,
    the status as written, is consulted too, so that a snapshot reference which does not
    validate still counts (fail safe: a started rollout is rolled back or finished, never
    started again)."""
    if status.snapshot is not None and status.snapshot.config_map:
        return True
    snapshot = (stored or {}).get("snapshot")
    return isinstance(snapshot, Mapping) and bool(snapshot.get("configMap"))


def apply_typed(
    stored: Mapping[str, Any], before: RolloutStatus, after: RolloutStatus
) -> dict[str, Any]:
    """``stored`` (a status as written) with the changes from ``before`` (it, as loaded) to
    ``after`` applied as a merge patch: fields this version does not know, and the spelling of
    fields it did not change, are kept."""
    return merge_apply(stored, merge_diff(status_dump(before), status_dump(after)))


def stamp_reverted(status: dict[str, Any], when: dt.datetime) -> RollbackStatus:
    """Record in a plan's ``status`` when its revert actions were issued
    (``Plan.stamp_reverted``: the reconciler calls this after running them); returns the
    rollback record."""
    before = load_status(status)
    after = before.model_copy(deep=True)
    rb = after.rollback or _unknown_rollback()
    rb.reverted_at = when
    after.rollback = rb
    new = apply_typed(status, before, after)
    status.clear()
    status.update(new)
    return rb


def _unknown_rollback() -> RollbackStatus:
    # Only a status damaged by hand lacks its rollback record; its messages say "None" as they
    # always have.
    unknown: dict[str, Any] = {"trigger": None, "reason": None}
    return RollbackStatus.model_construct(**unknown)


class _Step:
    """Builder for one plan: the stored status read into :class:`RolloutStatus` (``st``), changed
    by what this pass decides; :meth:`finish` writes the changes back onto the stored status."""

    def __init__(self, o: Observed) -> None:
        self.o = o
        self.meta = o.rollout["metadata"]
        self.prev: dict[str, Any] = dict(o.rollout.get("status") or {})
        self.before = load_status(self.prev)
        self.st = self.before.model_copy(deep=True)
        self.st.observed_generation = self.meta.get("generation")
        self.conditions: list[dict[str, Any]] = list(self.prev.get("conditions") or [])
        # lastAnalysis is written exactly as the analysis runner produced it (read typed).
        self.last_analysis: Mapping[str, Any] | None = None
        self.plan = Plan(status={})
        self.now = stamp(o.now)
        now_t = parse_stamp(self.now)
        assert now_t is not None
        self.now_t = now_t
        """``now`` as recorded in status (milliseconds), for the typed time fields."""

    def finish(self) -> dict[str, Any]:
        """The new status: the stored one with what this pass changed in ``st`` applied as a
        merge patch (so fields this version does not know, and the spelling of untouched ones,
        are kept), plus the conditions."""
        status = apply_typed(self.prev, self.before, self.st)
        if self.st.observed_generation is None:
            status["observedGeneration"] = None
        if self.last_analysis is not None:
            status["lastAnalysis"] = dict(self.last_analysis)
        status["conditions"] = self.conditions
        return status

    def cond(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions,
            type_=type_,
            status=status,
            reason=reason,
            message=message,
            now=self.now,
            generation=self.meta.get("generation"),
        )

    def act(self, action: Action) -> Plan:
        self.plan.actions.append(action)
        return self.plan

    def event(self, type_: str, reason: str, message: str, audit: str = "") -> None:
        self.plan.events.append(Event(type_, reason, message, audit))

    def phase(self, phase: RolloutPhase, message: str | None = None) -> None:
        self.st.phase = phase
        if message is not None:
            self.st.message = message

    @property
    def message(self) -> str:
        return str(self.st.message)

    @property
    def started(self) -> bool:
        return is_started(self.st, self.prev)

    def target_name(self, default: str = "?") -> str:
        return self.st.target.name if self.st.target is not None else default

    def images(self) -> list[dict[str, Any]]:
        """``status.change.containers`` as the canary builders take them."""
        change = self.st.change
        return [c.model_dump() for c in change.containers] if change is not None else []

    def done(self) -> Plan:
        return self.plan


def tiers_in_force(o: Observed) -> list[Tier]:
    """Spec tiers, else the risk recommendation (or the built-in 5/25/100)."""
    if o.spec is not None and o.spec.tiers:
        return list(o.spec.tiers)
    return [Tier.model_validate(t) for t in o.default_tiers]


def plan_rollout(o: Observed) -> Plan:
    """One step, with the kstatus trio (Ready / Reconciling / Stalled) derived from the phase it
    leaves, so ``kubectl wait`` and GitOps health checks read the truth (docs/gitops.md)."""
    s = _Step(o)
    plan = _plan(s)
    plan.status = st = s.finish()
    st["conditions"] = kstatus_conditions(
        "Rollout",
        st.get("phase"),
        o.rollout["metadata"].get("generation"),
        stamp(o.now),
        st.get("conditions") or [],
        str(st.get("message") or ""),
    )
    # Announcements travel in the decision's own status write (docs/audit.md, "Outbox").
    enqueue(st, str(o.rollout["metadata"].get("uid") or ""), plan.events, stamp(o.now))
    return plan


def _plan(s: _Step) -> Plan:
    o = s.o
    phase = s.st.phase or ""
    started = s.started
    finalizers = list(s.meta.get("finalizers") or [])

    # Deletion: roll back first (if a change is out there), then let go of the object.
    if s.meta.get("deletionTimestamp"):
        if started and phase not in TERMINAL and phase != "RollingBack":
            return _begin_rollback(s, "Deleted", "the Rollout was deleted mid-rollout")
        if phase == "RollingBack":
            plan = _continue_rollback(s)
            if s.st.phase == "RollingBack" and _rollback_hopeless(s):
                return _abandon_rollback(s)
            return plan
        return _let_go(s, finalizers)

    if phase in TERMINAL:
        return _let_go(s, finalizers)
    if phase == "RollingBack":
        return _continue_rollback(s)

    reason = (s.meta.get("annotations") or {}).get(FORCE_ROLLBACK)
    if o.spec is None:
        if started and reason is not None:
            return _begin_rollback(s, "Manual", reason or "force-rollback requested")
        s.cond("Progressing", "False", "InvalidSpec", o.spec_error or "invalid spec")
        s.phase(phase or "WaitingForLease", o.spec_error)
        return s.done()

    if o.risk and not s.st.risk and not started:
        s.st.risk = Risk.model_validate(o.risk)
    tiers = tiers_in_force(o)
    _record_tiers(s, tiers)

    # Manual order beats everything but deletion.
    if reason is not None and started:
        return _begin_rollback(s, "Manual", reason or "force-rollback requested")

    lease_ok, lease_reason, lease_trigger = _lease_state(s)
    if not started:
        return _plan_start(s, tiers, lease_ok, lease_reason, force=reason)

    # From here on a change is out there (snapshot taken, canary maybe running).
    if o.snapshot_problem:  # the rollback pack is gone or altered: stop before anything else
        return _snapshot_tampered(s)
    if not lease_ok:
        return _begin_rollback(s, lease_trigger, lease_reason)
    unbound = _binding_problem(s)
    if unbound:  # the spec changed under a running rollout: the keys did not sign this "how"
        return _begin_rollback(s, "LeaseInvalid", f"ConstraintViolated: {unbound}")
    s.cond("LeaseVerified", "True", "Verified", f"lease {o.verdict.digest if o.verdict else ''}")
    if o.target is None:
        return _target_gone(s)

    outcome = o.analysis
    if outcome is not None:
        _record_analysis(s, outcome)
        if outcome.action == "rollback" and phase in (
            "Progressing",
            "Paused",
            "WaitingForApproval",
        ):
            return _begin_rollback(s, "Breach", outcome.message, breach_at=outcome.breach_at)
        if outcome.action == "pause" and not o.spec.paused:
            s.phase("Paused", f"paused on breach: {outcome.message}")
            s.cond("Healthy", "False", "ThresholdBreached", outcome.message)
            return s.act(SetPaused(paused=True))

    if o.foreign_canary is not None:
        return _hold(s, "CanaryConflict", _foreign_canary_message(s))
    if phase == "Promoting":
        return _promote(s, tiers)
    if phase == "Validating":
        return _validate(s)
    return _progress(s, tiers)


def _let_go(s: _Step, finalizers: list[str]) -> Plan:
    """After a terminal phase (or deletion of a Rollout that never started): release the
    target claim, then the finalizer."""
    target = s.o.target
    if target is not None and _claimed_target(s):
        meta = target["metadata"]
        return s.act(ReleaseTarget(meta["name"], meta.get("resourceVersion")))
    return s.act(RemoveFinalizer()) if FINALIZER in finalizers else s.done()


def _claimed_target(s: _Step) -> bool:
    claim = claim_of(s.o.target)
    return claim is not None and claim[1] == s.meta.get("uid")


def _hold(s: _Step, reason: str, message: str) -> Plan:
    """Make no forward step, say why once (Event on a new message only)."""
    s.cond("Progressing", "False", reason, message)
    if condition_field(s.prev, "Progressing", "message") != message:
        s.event("Warning", reason, message)
    return s.done()


def _foreign_canary_message(s: _Step) -> str:
    c = s.o.foreign_canary or {}
    name = (c.get("metadata") or {}).get("name", "?")
    return (
        f"Deployment {name} exists but was not created by this Rollout (owner or pod template "
        "differs); Calyx will not scale or adopt it. Delete it to continue."
    )


# --- lease ----------------------------------------------------------------------------------


def _lease_state(s: _Step) -> tuple[bool, str, RollbackTrigger]:
    o = s.o
    name = o.spec.lease_ref.name if o.spec else "?"
    if o.lease is None:
        return False, f'lease "{name}" not found', "LeaseInvalid"
    if o.trust_error:
        return False, o.trust_error, "LeaseInvalid"
    v = o.verdict
    if v is None:
        return False, "lease not verified", "LeaseInvalid"
    if not v.valid:
        return False, v.reason, "LeaseExpired" if v.phase == "Expired" else "LeaseInvalid"
    return True, "", "LeaseInvalid"  # the trigger is read only when the lease is not ok


def _plan_start(
    s: _Step, tiers: list[Tier], lease_ok: bool, lease_reason: str, force: str | None
) -> Plan:
    o = s.o
    assert o.spec is not None
    prev_reason = condition_field(s.prev, "LeaseVerified", "reason")
    if force is not None and o.canary is not None:
        # A pass died after creating the canary but before recording the start: there *is* a
        # change out there (the canary runs the new image). Record the snapshot if it is a
        # faithful copy, and roll back like any started rollout.
        cname = str(o.canary["metadata"]["name"])
        if s.st.target is None:
            s.st.target = WorkloadRef(kind="Deployment", name=cname.removesuffix("-canary"))
        _record_snapshot(s)
        return _begin_rollback(s, "Manual", force or "force-rollback requested")
    if force is not None:
        s.phase("Failed", "force-rollback requested before any change was made; nothing to undo")
        s.cond("Progressing", "False", "Cancelled", s.message)
        s.event("Normal", "Cancelled", s.message)
        return s.done()
    if not lease_ok:
        v = o.verdict
        if v is not None and v.phase in ("Expired", "Consumed"):
            s.phase("Failed", f"lease {o.spec.lease_ref.name}: {lease_reason}")
            s.cond("LeaseVerified", "False", "Lease" + v.phase, lease_reason)
            s.event("Warning", "LeaseRejected", s.message)
            return s.done()
        s.phase("WaitingForLease", f"waiting for lease {o.spec.lease_ref.name}: {lease_reason}")
        s.cond("LeaseVerified", "False", "LeaseNotVerified", lease_reason)
        prev_message = condition_field(s.prev, "LeaseVerified", "message")
        if prev_reason != "LeaseNotVerified" or prev_message != lease_reason:
            s.event("Warning", "LeaseNotVerified", s.message)
        return s.done()
    assert o.lease_spec is not None and o.verdict is not None
    s.cond("LeaseVerified", "True", "Verified", f"lease verified, digest {o.verdict.digest}")
    s.st.lease_digest = o.verdict.digest
    target = o.lease_spec.target_ref.name
    images = [c.model_dump() for c in o.lease_spec.change.containers]
    s.st.target = WorkloadRef(kind="Deployment", name=target)
    s.st.change = ChangeStatus(containers=[ContainerImageStatus.model_validate(c) for c in images])

    problem = _start_problem(s, tiers, target, images)
    if problem:
        reason, message = problem
        s.phase("WaitingForLease", message)
        return _hold(s, reason, message)
    if o.busy_by:
        message = (
            f"target Deployment {target} is claimed by Rollout {o.busy_by}; this Rollout "
            "starts when that one finishes or is deleted"
        )
        s.phase("Pending", message)
        return _hold(s, "TargetBusy", message)
    if o.foreign_canary is not None:
        s.phase("Pending", _foreign_canary_message(s))
        return _hold(s, "CanaryConflict", _foreign_canary_message(s))

    if o.query_problem is not None:
        reason, message = o.query_problem
        if reason == "InvalidQuery":  # knowable before any write: fail now, not at 5 %
            s.phase("Failed", message)
            s.cond("Progressing", "False", reason, message)
            s.event("Warning", reason, message)
            return s.done()
        s.phase("Pending", message)
        return _hold(s, reason, message)
    if FINALIZER not in (s.meta.get("finalizers") or []):
        return s.act(AddFinalizer())
    assert o.target is not None
    if not _claimed_target(s):
        meta = o.target["metadata"]
        return s.act(ClaimTarget(target, meta.get("resourceVersion")))
    if not _claimed(s):
        entry = LedgerEntry(
            digest=o.verdict.digest,
            namespace=s.meta["namespace"],
            lease=o.spec.lease_ref.name,
            rollout=s.meta["name"],
            rollout_uid=s.meta["uid"],
            claimed_at=s.now,
            expires_at=o.lease_spec.expires_at,
        )
        return s.act(Claim(entry))
    if o.snapshot is None:
        body, _ = snapshot_configmap(o.rollout, o.target)
        return s.act(WriteSnapshot(snapshot_name(s.meta["name"]), body))
    if not _record_snapshot(s):
        # Not a faithful copy of the live target (written under the reserved name by someone
        # else, or by a pass that crashed before the target changed): replace it.
        return s.act(DeleteSnapshot(snapshot_name(s.meta["name"])))
    # Snapshot recorded (once): only from now on is the rollout "started".
    first = tiers[0]
    if first.approval == "Manual":
        approved = _approval(s, first.weight)
        if approved is None:
            return _wait_approval(s, 0, first.weight)
        _tier_entry(s, 0).approved_by = approved
    return _enter_first_tier(s, tiers)


def _record_snapshot(s: _Step) -> bool:
    """Record the snapshot found in the cluster in ``status.snapshot`` if it is a faithful copy
    of the live target; its sha256 is then the reference every restore is checked against."""
    o = s.o
    if o.snapshot is None or o.target is None:
        return False
    doc, sha = read_snapshot(o.snapshot)
    if not snapshot_matches(doc, o.target):
        return False
    s.st.snapshot = SnapshotRef(config_map=snapshot_name(s.meta["name"]), sha256=sha)
    return True


def _enter_first_tier(s: _Step, tiers: list[Tier]) -> Plan:
    """The first forward mutation: create the canary at the first tier's weight."""
    o = s.o
    assert o.spec is not None and o.verdict is not None
    first = tiers[0]
    target = _target(s)
    s.st.approval_for_tier = None
    s.st.current_tier = 0
    s.st.current_weight = first.weight
    _tier_entry(s, 0).started_at = s.now_t
    s.phase("Progressing", f"tier 1/{len(tiers)}: {first.weight}%")
    s.cond("Progressing", "True", "TierStarted", s.message)
    s.event(
        "Normal",
        "DeployStarted",
        f"canary {canary_name(target)} started at {first.weight}% of {target} "
        f"(lease {o.spec.lease_ref.name}, {o.verdict.digest[:19]}…)",
        "deploy_event.STARTED",
    )
    return _ensure_canary(s, first.weight)


def _start_problem(
    s: _Step, tiers: list[Tier], target: str, images: list[dict[str, Any]]
) -> tuple[str, str] | None:
    o = s.o
    assert o.lease_spec is not None and o.spec is not None
    if o.target is None:
        return "TargetNotFound", f'target Deployment "{target}" not found in {s.meta["namespace"]}'
    missing = missing_containers(o.target, images)
    if missing:
        return "ContainerNotFound", (
            f"lease changes container(s) {', '.join(missing)} that Deployment {target} lacks"
        )
    max_first = o.lease_spec.max_initial_weight()
    if tiers[0].weight > max_first:
        return "ConstraintViolated", (
            f"first tier weight {tiers[0].weight}% exceeds the lease's maxInitialWeight "
            f"{max_first}%"
        )
    if o.lease_spec.requires_analysis() and not o.spec.analysis.has_metrics():
        return "ConstraintViolated", (
            "the lease requires metric analysis (constraints.requireAnalysis) but the "
            "Rollout has none"
        )
    unbound = _binding_problem(s)
    if unbound:
        return "ConstraintViolated", unbound
    return None


def _binding_problem(s: _Step) -> str | None:
    """The Lease's ``rolloutRef`` (or the trust policy's demand for one) against this Rollout's
    effective spec (docs/signing.md, "Binding the rollout")."""
    o = s.o
    if o.lease_spec is None or o.spec is None or o.trust is None:
        return None
    return binding_problem(
        lease_spec=o.lease_spec,
        rollout_name=s.meta["name"],
        rollout_spec=o.spec,
        require=o.trust.policy.require_rollout_binding,
    )


def _claimed(s: _Step) -> bool:
    return s.o.claimed


# --- progress -------------------------------------------------------------------------------


def _progress(s: _Step, tiers: list[Tier]) -> Plan:
    o = s.o
    assert o.spec is not None and o.target is not None
    st = s.st
    i = int(st.current_tier or 0)
    tier = tiers[min(i, len(tiers) - 1)]
    _observe_replicas(s)

    if o.spec.paused:
        if st.phase != "Paused":
            s.phase("Paused", f"paused at {tier.weight}% by spec.paused")
            s.cond("Progressing", "False", "Paused", s.message)
            s.event("Normal", "Paused", s.message)
        return _ensure_canary(s, tier.weight)
    if st.phase == "Paused":
        # Resuming restarts the soak: time spent paused is not time spent watching.
        _tier_entry(s, i).soak_started_at = None
        s.phase("Progressing", f"resumed at {tier.weight}%")
        s.cond("Progressing", "True", "Resumed", s.message)
        s.event("Normal", "Resumed", s.message)

    if st.phase == "WaitingForApproval":
        nxt = st.approval_for_tier if st.approval_for_tier is not None else i + 1
        first = nxt == 0 and o.canary is None and not _tier_entry(s, 0).started_at
        approved = _approval(s, tiers[nxt].weight)
        if approved is None:
            return _wait_approval(
                s, nxt, tiers[nxt].weight, canary_weight=None if first else tier.weight
            )
        _tier_entry(s, nxt).approved_by = approved
        st.approval_for_tier = None
        if first:
            return _enter_first_tier(s, tiers)
        return _advance(s, tiers, i, nxt)

    plan = _ensure_canary(s, tier.weight)
    if plan.actions:
        return plan
    entry = _tier_entry(s, i)
    if not _canary_ready(s):
        return plan
    soak_start = entry.soak_started_at
    if soak_start is None:
        entry.soak_started_at = s.now_t
        return plan
    if o.spec.analysis.has_metrics():
        _count_soak(s, entry, soak_start, o.spec.analysis.interval_seconds)
        if float(entry.soaked_seconds or 0) < tier.soak_seconds:
            return plan
    elif (o.now - soak_start).total_seconds() < tier.soak_seconds:
        return plan
    if not _analysis_passed_since(s, soak_start):
        return plan
    nxt = i + 1
    if nxt >= len(tiers):
        return plan
    if tiers[nxt].approval == "Manual":
        approved = _approval(s, tiers[nxt].weight)
        if approved is None:
            entry.completed_at = entry.completed_at or s.now_t
            entry.result = "Passed"
            st.approval_for_tier = nxt
            return _wait_approval(s, nxt, tiers[nxt].weight, canary_weight=tier.weight)
        _tier_entry(s, nxt).approved_by = approved
    return _advance(s, tiers, i, nxt)


def _advance(s: _Step, tiers: list[Tier], i: int, nxt: int) -> Plan:
    st = s.st
    cur = _tier_entry(s, i)
    cur.completed_at = cur.completed_at or s.now_t
    cur.result = "Passed"
    st.current_tier = nxt
    st.current_weight = tiers[nxt].weight
    _tier_entry(s, nxt).started_at = s.now_t
    target = _target(s)
    if tiers[nxt].weight >= 100:
        s.phase("Promoting", f"promoting {target} to the new images")
        s.cond("Progressing", "True", "Promoting", s.message)
        s.event(
            "Normal",
            "CanaryPromoted",
            f"tier {nxt + 1}/{len(tiers)}: promoting {target} to 100% (lease re-verified)",
            "deploy_event.CANARY_PROMOTED",
        )
        return _promote(s, tiers)
    s.phase("Progressing", f"tier {nxt + 1}/{len(tiers)}: {tiers[nxt].weight}%")
    s.cond("Progressing", "True", "TierStarted", s.message)
    s.event(
        "Normal",
        "CanaryPromoted",
        f"tier {nxt + 1}/{len(tiers)}: canary {canary_name(target)} to {tiers[nxt].weight}% "
        "(lease re-verified)",
        "deploy_event.CANARY_PROMOTED",
    )
    return _ensure_canary(s, tiers[nxt].weight)


def _promote(s: _Step, tiers: list[Tier]) -> Plan:
    o = s.o
    assert o.target is not None
    st = s.st
    images = s.images()
    target = _target(s)
    _observe_replicas(s)
    if not images_applied(o.target, images):
        return s.act(PatchStableImages(target, images))
    if not deployment_settled(o.target):
        return s.done()
    if o.canary is not None:
        return s.act(DeleteCanary(canary_name(target)))
    last = _tier_entry(s, len(tiers) - 1)
    last.completed_at = last.completed_at or s.now_t
    last.result = "Passed"
    st.canary_replicas = 0
    st.effective_percent = 100
    assert o.spec is not None
    if o.spec.post_deploy is not None:
        name = job_name(s.meta["name"])
        st.validation = ValidationStatus(job=name, started_at=s.now_t, result="Running")
        s.phase("Validating", f"promoted; validation Job {name} running")
        s.cond("Progressing", "True", "Validating", s.message)
        s.event("Normal", "ValidationStarted", f"post-deploy Job {name} started")
        return _validate(s)
    return _complete(s)


def _complete(s: _Step) -> Plan:
    images = s.images()
    target = _target(s)
    s.phase("Completed", f"{target} runs the new images on all replicas")
    s.cond("Progressing", "False", "Completed", s.message)
    s.cond("Completed", "True", "DeployCompleted", s.message)
    s.cond("Healthy", "True", "Completed", "promotion verified")
    s.event(
        "Normal",
        "DeployCompleted",
        f"{target} promoted: {', '.join(i['name'] + '=' + i['image'] for i in images)}",
        "deploy_event.COMPLETED",
    )
    return s.done()


def _validate(s: _Step) -> Plan:
    """Post-deploy validation (docs/design.md §Report and audit): the Job must succeed within
    timeoutSeconds; failure or timeout rolls back, restoring the stable Deployment from the
    snapshot."""
    o = s.o
    assert o.spec is not None and o.spec.post_deploy is not None
    val = s.st.validation
    name = (val.job if val is not None else "") or job_name(s.meta["name"])
    if o.job is None:
        return s.act(CreateJob(name, validation_job(o.rollout, o.spec.post_deploy.job_template)))
    if val is None:
        val = s.st.validation = ValidationStatus(job=name)
    outcome = job_outcome(o.job)
    started = val.started_at or o.now
    if outcome == "Succeeded":
        val.result, val.completed_at, val.message = "Succeeded", s.now_t, "Job succeeded"
        s.event("Normal", "ValidationPassed", f"post-deploy Job {name} succeeded")
        return _complete(s)
    if outcome == "Failed":
        val.result, val.completed_at, val.message = "Failed", s.now_t, "Job failed"
        return _begin_rollback(s, "PostDeployFailed", f"post-deploy Job {name} failed")
    timeout = o.spec.post_deploy.timeout_seconds
    if (o.now - started).total_seconds() >= timeout:
        val.result, val.completed_at = "TimedOut", s.now_t
        val.message = f"Job did not finish within {timeout}s"
        _begin_rollback(
            s, "PostDeployFailed", f"post-deploy Job {name} did not finish within {timeout}s"
        )
        return s.act(DeleteJob(name))
    return s.plan


def _ensure_canary(s: _Step, weight: int) -> Plan:
    o = s.o
    assert o.target is not None and o.verdict is not None
    stable = int((o.target.get("spec") or {}).get("replicas", 1))
    want = canary_replicas(stable, weight)
    s.st.canary_replicas = want
    s.st.stable_replicas = stable
    images = s.images()
    if o.canary is None:
        body = canary_deployment(o.rollout, o.target, images, want, o.verdict.digest)
        return s.act(CreateCanary(body["metadata"]["name"], body))
    if int((o.canary.get("spec") or {}).get("replicas", 0)) != want:
        return s.act(ScaleCanary(o.canary["metadata"]["name"], want))
    return s.plan


def _count_soak(s: _Step, entry: TierStatus, soak_start: dt.datetime, interval: int) -> None:
    """A soak counts only analysed time (docs/analysis.md, "Soak"): each evaluation covers the
    time since the previous one when it passed, unless that stretch is an unanalysed gap
    (:func:`~calyx.domain.analysis.is_gap`: longer than two intervals) — an outage of the API
    server, Prometheus or the operator — which is recorded in ``analysisGaps`` and not
    counted."""
    out = s.o.analysis
    try:
        t = parse_stamp(str(out.status.get("time") or "")) if out else None
    except ValueError:
        t = None
    if out is None or t is None or t <= soak_start:
        return
    mark = entry.soak_mark_at or soak_start
    gap = (t - mark).total_seconds()
    if gap <= 0:
        return
    if is_gap(gap, interval):
        gaps = list(entry.analysis_gaps or [])
        gaps.append(AnalysisGap(since=mark, until=t, seconds=round(gap, 3)))
        entry.analysis_gaps = gaps[-10:]
    elif out.status.get("verdict") == "Pass":
        entry.soaked_seconds = round(float(entry.soaked_seconds or 0) + gap, 3)
    entry.soak_mark_at = t


def _observe_replicas(s: _Step) -> None:
    o = s.o
    c = int(((o.canary or {}).get("status") or {}).get("readyReplicas") or 0)
    n = int(((o.target or {}).get("status") or {}).get("readyReplicas") or 0)
    s.st.effective_percent = effective_percent(c, n)


def _canary_ready(s: _Step) -> bool:
    c = s.o.canary or {}
    want = int((c.get("spec") or {}).get("replicas", 0))
    return want > 0 and int((c.get("status") or {}).get("readyReplicas") or 0) >= want


def _analysis_passed_since(s: _Step, since: dt.datetime) -> bool:
    """Advance only on evidence: with analysis configured, a Pass evaluated after the soak began.
    NoData never advances (docs/analysis.md)."""
    o = s.o
    assert o.spec is not None
    if not o.spec.analysis.has_metrics():
        return True
    last = s.st.last_analysis
    return last is not None and last.verdict == "Pass" and last.time >= since


# --- approvals ------------------------------------------------------------------------------


def _approval(s: _Step, to_weight: int) -> str | None:
    """The id of a valid signed approval for entering ``to_weight``, else None.

    Rejected approvals are reported once each (by signature fingerprint, kept in status)."""
    o = s.o
    if o.trust is None or o.verdict is None:
        return None
    seen = {a.sig_sha256 for a in s.st.approvals or []}
    records = list(s.st.approvals or [])
    found = None
    for key, value in sorted((s.meta.get("annotations") or {}).items()):
        if not key.startswith(APPROVE_PREFIX):
            continue
        v = verify_approval(
            key=key,
            value=value,
            namespace=s.meta["namespace"],
            rollout=s.meta["name"],
            lease_digest=o.verdict.digest,
            to_weight=to_weight,
            trust=o.trust,
            now=o.now,
        )
        fp = sig_fingerprint(value)
        if v.valid:
            found = found or v.signer
            if fp not in seen:
                records.append(
                    ApprovalRecord(
                        signer=v.signer,
                        to_weight=to_weight,
                        valid=True,
                        reason="",
                        sig_sha256=fp,
                        seen_at=s.now_t,
                    )
                )
                s.event("Normal", "ApprovalAccepted", f"{v.signer} approved entering {to_weight}%")
        elif fp not in seen:
            records.append(
                ApprovalRecord(
                    signer=v.signer,
                    to_weight=v.to_weight,
                    valid=False,
                    reason=v.reason,
                    sig_sha256=fp,
                    seen_at=s.now_t,
                )
            )
            s.event("Warning", "ApprovalRejected", f"approval from {v.signer}: {v.reason}")
    if records:
        s.st.approvals = records[-20:]
    return found


def _wait_approval(s: _Step, nxt: int, weight: int, canary_weight: int | None = None) -> Plan:
    msg = (
        f"waiting for a signed human approval to enter {weight}% "
        f"(calyx approve-next-tier {s.meta['name']})"
    )
    if s.st.phase != "WaitingForApproval":
        s.event("Normal", "WaitingForApproval", msg)
    s.phase("WaitingForApproval", msg)
    s.st.approval_for_tier = nxt
    s.cond("Progressing", "False", "WaitingForApproval", msg)
    if canary_weight is not None:
        return _ensure_canary(s, canary_weight)
    return s.done()


# --- rollback -------------------------------------------------------------------------------


def _begin_rollback(
    s: _Step, trigger: RollbackTrigger, reason: str, breach_at: str | None = None
) -> Plan:
    rb = RollbackStatus(trigger=trigger, reason=reason, detected_at=s.now_t)
    if breach_at:
        b = parse_stamp(breach_at)
        rb.breach_at = b
        if b:
            rb.detect_seconds = round(max(0.0, (s.now_t - b).total_seconds()), 3)
    s.st.rollback = rb
    if s.o.snapshot_problem:
        return _snapshot_tampered(s)
    s.phase("RollingBack", f"rolling back ({trigger}): {reason}")
    s.cond("Progressing", "False", "RollingBack", s.message)
    s.cond("Healthy", "False", trigger, reason)
    s.plan.status_first = True
    s.plan.stamp_reverted = True
    s.event(
        "Warning", "RolledBack", f"revert issued ({trigger}): {reason}", "deploy_event.ROLLED_BACK"
    )
    _revert_actions(s)
    return s.plan


def _snapshot_tampered(s: _Step) -> Plan:
    """The rollback pack is missing or is not the payload recorded in status: restoring from
    it could install a template the keys never signed (docs/security.md). Remove the canary,
    leave the stable Deployment exactly as it is, and stop."""
    o = s.o
    target = s.target_name()
    if o.canary is not None:
        s.act(DeleteCanary(canary_name(target)))
    rb = s.st.rollback
    why = f" (rollback {rb.trigger}: {rb.reason})" if rb is not None else ""
    msg = (
        f"snapshot {snapshot_name(s.meta['name'])} cannot be trusted: {o.snapshot_problem}"
        f"{why}; canary removed, stable Deployment {target} left as it is — restore it from "
        "Git or re-run a signed rollout"
    )
    s.phase("Failed", msg)
    s.cond("Progressing", "False", "SnapshotTampered", msg)
    s.cond("Healthy", "False", "SnapshotTampered", msg)
    s.event("Warning", "SnapshotTampered", msg)
    return s.plan


def _rollback(s: _Step) -> RollbackStatus:
    """``status.rollback``, or an empty one (trigger and reason None) when none is stored."""
    return s.st.rollback if s.st.rollback is not None else _unknown_rollback()


def _revert_actions(s: _Step) -> None:
    o = s.o
    target = s.target_name(default="")
    if o.canary is not None and target:
        s.act(DeleteCanary(canary_name(target)))
    doc = o.snapshot_doc
    if o.target is None or doc is None:
        return
    live = template_sha(o.target)
    if live == snapshot_template_sha(doc):
        return
    rb = _rollback(s)
    attempts = int(rb.restore_attempts or 0)
    last = rb.last_restore_at
    if attempts >= RESTORE_FREE_ATTEMPTS and not rb.stuck:
        rb.stuck = True
        s.event(
            "Warning",
            "RollbackStuck",
            f"restoring {target} from the snapshot has not converged after {attempts} "
            f"attempts ({_template_difference(o.target, doc)}); retrying every "
            f"{RESTORE_RETRY_SECONDS}s",
        )
    if (
        attempts < RESTORE_FREE_ATTEMPTS
        or last is None
        or (o.now - last).total_seconds() >= RESTORE_RETRY_SECONDS
    ):
        rb.restore_attempts = attempts + 1
        rb.last_restore_at = s.now_t
        s.plan.status_first = True  # the attempt is on record even if the patch fails
        s.act(RestoreStable(target, doc["spec"]["template"]))
    s.st.rollback = rb


def _template_difference(live: Mapping[str, Any], doc: Mapping[str, Any]) -> str:
    """What differs between the live pod template and the snapshot's, in one short line."""
    want = (doc.get("spec") or {}).get("template") or {}
    have = (live.get("spec") or {}).get("template") or {}
    w = {c.get("name"): c.get("image") for c in (want.get("spec") or {}).get("containers") or []}
    h = {c.get("name"): c.get("image") for c in (have.get("spec") or {}).get("containers") or []}
    diffs = [
        f"{n}: {h.get(n)} ≠ snapshot {w.get(n)}"
        for n in sorted(set(w) | set(h), key=str)
        if w.get(n) != h.get(n)
    ]
    if diffs:
        return "images " + "; ".join(diffs)
    keys = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k)) or ["spec"]
    return "pod template differs in " + ", ".join(f"template.{k}" for k in keys)


def _rollback_hopeless(s: _Step) -> bool:
    rb = _rollback(s)
    detected = rb.detected_at
    late = detected is not None and (s.o.now - detected).total_seconds() >= DELETE_GRACE_SECONDS
    return bool(rb.stuck) or late


def _abandon_rollback(s: _Step) -> Plan:
    """The Rollout is being deleted and its rollback cannot finish: the canary is gone (or
    going), the stable Deployment stays as it is, and the finalizer is released so the delete
    completes (docs/security.md, "deleting a stuck rollback")."""
    target = s.target_name()
    msg = (
        f"deleted while the rollback could not finish; canary removed, stable Deployment "
        f"{target} left as it is"
    )
    if condition_field(s.prev, "Progressing", "reason") != "RollbackAbandoned":
        s.event("Warning", "RollbackAbandoned", msg)
    s.phase("Failed", msg)
    s.cond("Progressing", "False", "RollbackAbandoned", msg)
    s.plan.actions = [a for a in s.plan.actions if isinstance(a, DeleteCanary)]
    return s.plan


def _continue_rollback(s: _Step) -> Plan:
    o = s.o
    st = s.st
    if o.snapshot_problem:
        return _snapshot_tampered(s)
    _revert_actions(s)
    rb = _rollback(s)
    if not rb.reverted_at:
        # The operator died between deciding and stamping the revert: this pass (re)issues it,
        # so its time is the honest one (revertSeconds then includes the downtime). Its
        # announcement was stored with the decision (outbox) and is posted from there.
        s.plan.stamp_reverted = True
    if s.plan.actions or s.plan.stamp_reverted:
        return s.plan
    if o.target is not None:
        if not deployment_settled(o.target):
            return s.plan
        if s.started and (
            o.snapshot_doc is None
            or template_sha(o.target) != snapshot_template_sha(o.snapshot_doc)
        ):
            return s.plan
        _observe_replicas(s)
    rb.verified_at = s.now_t
    rev, det = rb.reverted_at, rb.detected_at
    if rev and det:
        rb.revert_seconds = round(max(0.0, (rev - det).total_seconds()), 3)
    st.rollback = rb
    st.canary_replicas = 0
    st.effective_percent = 0
    target = s.target_name()
    if o.target is None:
        restored = "target Deployment is gone; nothing to restore"
    elif s.started:
        restored = "stable verified equal to the snapshot"
    else:
        restored = "canary removed; the stable Deployment was never changed"
    s.phase("RolledBack", f"rolled back ({rb.trigger}): {restored}")
    s.cond("RolledBack", "True", str(rb.trigger), str(rb.reason))
    s.cond("Progressing", "False", "RolledBack", s.message)
    s.event(
        "Normal",
        "RollbackComplete",
        f"{target} restored and verified ({rb.trigger}: {rb.reason})",
        "rollback_event.COMPLETE",
    )
    return s.plan


def _target_gone(s: _Step) -> Plan:
    target = s.target_name()
    msg = (
        f'target Deployment "{target}" was deleted mid-rollout; canary removed, '
        "nothing left to promote or restore"
    )
    if s.o.canary is not None:
        s.act(DeleteCanary(canary_name(target)))
    s.phase("Failed", msg)
    s.cond("Progressing", "False", "TargetDeleted", msg)
    s.cond("Healthy", "False", "TargetDeleted", msg)
    s.event("Warning", "TargetDeleted", msg)
    return s.plan


# --- status helpers -------------------------------------------------------------------------


def _target(s: _Step) -> str:
    """The target's name, recorded before any step that needs it."""
    assert s.st.target is not None, "status.target is recorded when the rollout starts"
    return s.st.target.name


def _record_tiers(s: _Step, tiers: list[Tier]) -> None:
    old = list(s.st.tiers or [])
    out = []
    for i, t in enumerate(tiers):
        entry = old[i] if i < len(old) and old[i].weight == t.weight else TierStatus(weight=0)
        entry.weight = t.weight
        out.append(entry)
    s.st.tiers = out


def _tier_entry(s: _Step, i: int) -> TierStatus:
    if s.st.tiers is None:
        s.st.tiers = []
    tiers = s.st.tiers
    while len(tiers) <= i:
        tiers.append(TierStatus(weight=0))
    return tiers[i]


def _record_analysis(s: _Step, outcome: AnalysisOutcome) -> None:
    # Written as the analysis runner produced it (domain/analysis.py), read through the model.
    s.last_analysis = outcome.status
    try:
        s.st.last_analysis = AnalysisStatus.model_validate(outcome.status)
    except ValidationError:
        s.st.last_analysis = None
    if outcome.tier_metrics is not None:
        _tier_entry(s, int(s.st.current_tier or 0)).metrics = {
            name: MetricSample.model_validate(value) for name, value in outcome.tier_metrics.items()
        }
    for ev in outcome.events:
        s.plan.events.append(ev)
    verdict = outcome.status.get("verdict")
    if verdict == "Pass":
        s.cond("Healthy", "True", "AnalysisPassed", outcome.message or "all metrics within limits")
    elif verdict == "NoData":
        s.cond("Healthy", "Unknown", "NoData", outcome.message)
    elif verdict == "Breach":
        s.cond("Healthy", "False", "ThresholdBreached", outcome.message)
