"""Rollout reconciliation: observe the cluster → ``plan_rollout`` → apply one step, repeat.

Each pass re-reads everything it decides on (Rollout, Lease, ledger, Deployments, snapshot),
so the Lease is verified *at the moment* of every forward action (docs/design.md promise 1).
Passes repeat until a plan has nothing left to do, so a whole transition (verify → claim →
snapshot → canary) happens in one wake-up, yet each step stands alone after a crash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, assert_never

from calyx.adapters.audit_log import write_record
from calyx.adapters.events import EventRecorder
from calyx.adapters.failure_log import FailureLog
from calyx.adapters.kube import LEASES, ROLLOUTS, error_message, is_not_found, is_refusal
from calyx.adapters.kube_api import KubeApi
from calyx.adapters.ledger_store import LedgerStore
from calyx.adapters.metrics import METRICS
from calyx.api.errors import InvalidSpecError
from calyx.api.lease import parse_lease_spec
from calyx.api.rollout import parse_rollout_spec
from calyx.domain.canary import (
    CLAIM_ANNOTATION,
    ROLLOUT_LABEL,
    TRACK_LABEL,
    canary_deployment,
    canary_name,
    claim_of,
    claim_value,
    job_name,
    owned_by,
    snapshot_name,
    template_sha,
    trusted_snapshot,
)
from calyx.domain.lease_plan import previously_accepted
from calyx.domain.ledger import LedgerEntry
from calyx.domain.outbox import audit_records, pending
from calyx.domain.replay import replay_holders
from calyx.domain.risk import assess, recommended_tiers
from calyx.domain.risk import to_status as risk_status
from calyx.domain.rollout_plan import (
    DEFAULT_TIERS,
    FINALIZER,
    FORCE_ROLLBACK,
    REVERTS,
    TERMINAL,
    Action,
    AddFinalizer,
    AnalysisOutcome,
    Claim,
    ClaimTarget,
    CreateCanary,
    CreateJob,
    DeleteCanary,
    DeleteJob,
    DeleteSnapshot,
    Observed,
    PatchStableImages,
    Plan,
    ReleaseTarget,
    RemoveFinalizer,
    RestoreStable,
    ScaleCanary,
    SetPaused,
    WriteSnapshot,
    is_started,
    load_status,
    plan_rollout,
    stamp_reverted,
    status_dump,
)
from calyx.domain.timefmt import parse_stamp
from calyx.domain.trust import TrustStore, TrustStoreError
from calyx.domain.verification import verify_lease
from calyx.domain.wake import next_due
from calyx.reconcile.locks import KeyedLocks
from calyx.reconcile.quiet import QuietBook
from calyx.reconcile.report import write_report
from calyx.reconcile.status import status_patch

log = logging.getLogger("calyx.rollout")
FAILURES = FailureLog(log)
RECENT_ROLLBACK_DAYS = 7
MAX_PASSES = 12


@dataclass
class RolloutDeps:
    kube: KubeApi
    events: EventRecorder
    trust: Callable[[], TrustStore]
    ledger: LedgerStore
    clock: Callable[[], dt.datetime]
    locks: KeyedLocks
    # Called on timer ticks only (docs/design.md §Analysis: a timer, never watch events).
    analyze: Callable[[Observed], AnalysisOutcome | None] | None = None
    # Test-only: called with a point name right after each action succeeds (its kind, e.g.
    # "CreateCanary") and before announcing a stored decision ("Announce:<reason>"), so a
    # test can stop the pass there (docs/testing.md, "Fault points"). None in production.
    faults: Callable[[str], None] | None = None
    # The change token of everything a pass of a Rollout in a namespace reads (the watch
    # caches': CachedKube.change_token); with it, passes with nothing new and nothing due are
    # skipped (reconcile/quiet.py). None: every pass runs.
    changes: Callable[[str], Hashable] | None = None
    # The change token after this process's own status write (given the token before it and
    # the written Rollout), when nothing else changed: CachedKube.token_after_own_write. With
    # it, a pass that only wrote its status is quiet at once and its echo's pass is skipped.
    after_own_write: Callable[[Hashable, Mapping[str, Any]], Hashable | None] | None = None
    quiet: QuietBook = field(default_factory=QuietBook)


def _reverting(rollout: Mapping[str, Any]) -> bool:
    """Whether this pass can only take a change away (rollback, deletion, terminal): such a
    pass reads no ledger, trust store or Prometheus, so none of them can block it
    (docs/security.md, "rollback is never blocked")."""
    meta = rollout["metadata"]
    status = load_status(rollout.get("status"))
    started = is_started(status, rollout.get("status"))
    return (
        status.phase in (*TERMINAL, "RollingBack")
        or bool(meta.get("deletionTimestamp"))
        or (started and FORCE_ROLLBACK in (meta.get("annotations") or {}))
    )


def observe(deps: RolloutDeps, rollout: Mapping[str, Any], tick: bool) -> Observed:
    meta = rollout["metadata"]
    ns = meta["namespace"]
    now = deps.clock()
    status = load_status(rollout.get("status"))
    started = is_started(status, rollout.get("status"))
    reverting = _reverting(rollout)
    try:
        spec = parse_rollout_spec(rollout.get("spec"))
    except InvalidSpecError as exc:
        if not (started or reverting):
            return Observed(rollout=rollout, now=now, spec_error=str(exc))
        spec = None  # a started rollout still rolls back when its spec was broken under it
    lease_name = spec.lease_ref.name if spec else ""
    lease = deps.kube.get_custom(LEASES, ns, lease_name) if lease_name else None
    lease_spec = verdict = trust = None
    trust_error = None
    claimed = False
    others: Sequence[Mapping[str, Any]] = []
    if lease is not None:
        try:
            lease_spec = parse_lease_spec(lease.get("spec"))
        except InvalidSpecError as exc:
            trust_error = f"lease {lease_name} is invalid: {exc}"
    if lease is not None and lease_spec is not None and not reverting:
        try:
            trust = deps.trust()
        except TrustStoreError as exc:
            trust_error = str(exc)
        if trust is not None:
            holders: Mapping[str, LedgerEntry] = {}
            if not started:
                # Replay is refused on any of three records (docs/security.md); a started
                # Rollout has claimed its Lease already and needs none of them.
                others = deps.kube.list_custom(ROLLOUTS, ns)
                holders = replay_holders(
                    deps.ledger.entries(), deps.kube.list_custom(LEASES, ns), others, meta["uid"]
                )
            lmeta = lease["metadata"]
            verdict = verify_lease(
                namespace=ns,
                name=lmeta["name"],
                spec=lease.get("spec") or {},
                annotations=lmeta.get("annotations") or {},
                trust=trust,
                now=now,
                ledger=holders,
                claimant_uid=meta["uid"],
                previously_accepted=previously_accepted(lease.get("status")),
            )
            holder = holders.get(verdict.digest)
            claimed = started or (holder is not None and holder.rollout_uid == meta["uid"])
    target_name = (status.target.name if status.target else None) or (
        lease_spec.target_ref.name if lease_spec else None
    )
    target = deps.kube.get_deployment(ns, target_name) if target_name else None
    canary = deps.kube.get_deployment(ns, canary_name(target_name)) if target_name else None
    snapshot = deps.kube.get_configmap(ns, snapshot_name(meta["name"]))
    snapshot_doc, snapshot_problem = None, ""
    if started:
        snapshot_doc, snapshot_problem = trusted_snapshot(
            snapshot, status.snapshot.sha256 if status.snapshot else None
        )
    foreign = None
    images = [c.model_dump() for c in status.change.containers] if status.change else []
    if canary is not None and not _our_canary(
        rollout, canary, snapshot_doc if started else target, images
    ):
        foreign, canary = canary, None
    busy = _busy_by(deps, rollout, target, others) if not started and not reverting else None
    query_problem = None
    check = getattr(deps.analyze, "check", None)
    if (
        check is not None
        and not started
        and not reverting
        and verdict is not None
        and verdict.valid
        and target is not None
        and busy is None
        and foreign is None
        and FINALIZER not in (meta.get("finalizers") or [])
    ):
        # Once per start attempt, right before the first write (docs/analysis.md).
        query_problem = check(Observed(rollout=rollout, now=now, spec=spec, target=target))
    job = None
    if status.phase == "Validating" or (status.validation and status.validation.job):
        job = deps.kube.get_job(ns, job_name(meta["name"]))
    risk = status_dump(status.risk) if status.risk else None
    if risk is None and lease_spec is not None and target is not None and spec is not None:
        risk = assess_risk(
            deps.kube, rollout, lease, target, spec.tiers[0].weight if spec.tiers else 5, now
        )
    observed = Observed(
        rollout=rollout,
        risk=risk,
        default_tiers=recommended_tiers(risk["level"]) if risk else DEFAULT_TIERS,
        now=now,
        spec=spec,
        lease=lease,
        lease_spec=lease_spec,
        verdict=verdict,
        claimed=claimed,
        trust=trust,
        trust_error=trust_error,
        target=target,
        canary=canary,
        foreign_canary=foreign,
        busy_by=busy,
        snapshot=snapshot,
        snapshot_doc=snapshot_doc,
        snapshot_problem=snapshot_problem,
        query_problem=query_problem,
        job=job,
    )
    if tick and deps.analyze is not None and not reverting and spec is not None:
        outcome = deps.analyze(observed)
        if outcome is not None:
            # The decision's time is when analysis ended (its queries may have waited), so a
            # rollback's detectedAt and revertSeconds are honest.
            observed = Observed(**{**observed.__dict__, "analysis": outcome, "now": deps.clock()})
    return observed


def _our_canary(
    rollout: Mapping[str, Any],
    canary: Mapping[str, Any],
    base: Mapping[str, Any] | None,
    images: Sequence[Mapping[str, Any]],
) -> bool:
    """A ``<target>-canary`` is this Rollout's only if its controller owner is this Rollout's
    uid *and* its pod template is exactly the one the operator builds from the snapshot (or,
    before the snapshot, the target) with the Lease's images: an ownerReference alone can be
    written by anyone who can create a Deployment (docs/security.md, "target claim")."""
    meta = rollout["metadata"]
    if not owned_by(canary, meta["uid"]):
        return False
    if base is None or not images:
        return True  # nothing to compare against yet; ownership is all there is
    expected = canary_deployment(rollout, base, images, 0, "")
    return template_sha(expected) == template_sha(canary)


def _busy_by(
    deps: RolloutDeps,
    rollout: Mapping[str, Any],
    target: Mapping[str, Any] | None,
    rollouts: Sequence[Mapping[str, Any]],
) -> str | None:
    """Name of another live Rollout changing ``target``, from its claim annotation or, since
    anyone with Deployment write can remove an annotation, from Rollout statuses (which only
    the operator writes): another started, unfinished Rollout of the same target."""
    if target is None:
        return None
    meta = rollout["metadata"]
    claim = claim_of(target)
    if claim is not None and claim[1] != meta["uid"]:
        other = deps.kube.get_custom(ROLLOUTS, meta["namespace"], claim[0])
        if (
            other is not None
            and other["metadata"].get("uid") == claim[1]
            and (other.get("status") or {}).get("phase") not in TERMINAL
        ):
            return claim[0]
    tname = target["metadata"]["name"]
    for peer in rollouts:
        # Read as stored, not through the model: a peer's record that does not validate must
        # still keep this Rollout off its target.
        st = peer.get("status") or {}
        if (
            peer["metadata"].get("uid") != meta["uid"]
            and (st.get("target") or {}).get("name") == tname
            and (st.get("snapshot") or {}).get("configMap")
            and st.get("phase") not in TERMINAL
        ):
            return str(peer["metadata"]["name"])
    return None


def assess_risk(
    kube: KubeApi,
    rollout: Mapping[str, Any],
    lease: Mapping[str, Any] | None,
    target: Mapping[str, Any],
    first_weight: int,
    now: dt.datetime,
) -> dict[str, Any]:
    """``status.risk`` for a Rollout about to start (docs/risk.md): computed once and stored, so
    the tier plan it recommends cannot change under a running rollout."""
    ns = rollout["metadata"]["namespace"]
    tname = target["metadata"]["name"]
    since = now - dt.timedelta(days=RECENT_ROLLBACK_DAYS)
    recent = 0
    for other in kube.list_custom(ROLLOUTS, ns):
        st = other.get("status") or {}  # as stored: a partial record still counts
        when = parse_stamp((st.get("rollback") or {}).get("verifiedAt"))
        if (
            st.get("phase") == "RolledBack"
            and (st.get("target") or {}).get("name") == tname
            and when is not None
            and when >= since
        ):
            recent += 1
    spec = (lease or {}).get("spec") or {}
    assessment = assess(
        current_containers=target["spec"]["template"]["spec"].get("containers") or [],
        change=spec.get("change", {}).get("containers") or [],
        replicas=int(target["spec"].get("replicas", 1)),
        recent_rollbacks=recent,
        constraints=spec.get("constraints"),
        first_weight=first_weight,
        rollback_window_days=RECENT_ROLLBACK_DAYS,
    )
    return risk_status(assessment)


def apply(
    deps: RolloutDeps,
    rollout: Mapping[str, Any],
    plan: Plan,
    observed_lease: Mapping[str, Any] | None = None,
) -> Mapping[str, Any] | None:
    """Run ``plan`` and write its status; returns the Rollout as the last status write left it
    (None: no status write)."""
    meta = rollout["metadata"]
    ns, name = meta["namespace"], meta["name"]
    prev = rollout.get("status") or {}
    patch = status_patch(prev, plan.status)
    updated: Mapping[str, Any] | None = None
    if plan.status_first and patch is not None:
        updated = deps.kube.patch_custom_status(ROLLOUTS, ns, name, patch)
        patch = None
    for action in plan.actions:
        if isinstance(action, REVERTS):
            # A revert that fails (a policy denies it, the API is flaky) is recorded and
            # retried on a bounded schedule by the planner; it must not stop the other reverts
            # nor the announcements of this pass.
            try:
                _do(deps, rollout, action)
            except Exception as exc:
                log.warning(
                    "%s/%s: %s %s failed: %s",
                    ns,
                    name,
                    action.kind,
                    getattr(action, "name", ""),
                    error_message(exc),
                )
            continue
        _do(deps, rollout, action)
    if plan.stamp_reverted:
        reverted = deps.clock()
        rb = stamp_reverted(plan.status, reverted)
        patch = status_patch(prev, plan.status)
        breach = rb.breach_at
        METRICS.record_rollback(
            str(rb.trigger),
            (reverted - breach).total_seconds() if breach else None,
        )
    if patch is not None:
        updated = deps.kube.patch_custom_status(ROLLOUTS, ns, name, patch)
    if updated is not None and (
        pending(updated.get("status")) or plan.status.get("phase") != prev.get("phase")
    ):
        for entry in pending(updated.get("status")):
            _fault(deps, f"Announce:{entry['reason']}")  # decision stored, not yet announced
        announce(deps, updated, observed_lease)
    return updated


def announce(
    deps: RolloutDeps, rollout: Mapping[str, Any], lease: Mapping[str, Any] | None
) -> None:
    """Post what the outbox holds: audit records (report ConfigMap, stdout), then Events, then
    clear it. Each step is idempotent (docs/audit.md, "Outbox"), so a crash anywhere here makes
    the next pass post exactly what is missing."""
    meta = rollout["metadata"]
    ns, name = meta["namespace"], meta["name"]
    entries = pending(rollout.get("status"))
    recorded = True
    try:
        write_report(deps.kube, rollout, lease, entries, deps.clock())
    except Exception as exc:  # the report must never block a rollback; next pass retries
        FAILURES.failed(f"report/{ns}/{name}", f"writing the report of {ns}/{name}", exc)
        # A refusal that retrying cannot cure (the namespace is terminating, a policy denies
        # it, the object is gone): the records still reach stdout, the independent copy, and
        # the entries are cleared instead of being retried on every pass forever. Anything
        # else (unreachable, a conflict storm, this replica fenced for a moment) keeps the
        # entries for the next pass: clearing them lost a record from the report.
        recorded = is_refusal(exc)
        if recorded:
            for record in audit_records([], entries, rollout):
                write_record(record)
    else:
        FAILURES.ok(f"report/{ns}/{name}", f"writing the report of {ns}/{name}")
    for entry in entries:
        deps.events.emit_entry(rollout, entry)
    if entries and recorded:
        try:
            deps.kube.patch_custom_status(ROLLOUTS, ns, name, {"outbox": None})
        except Exception as exc:
            if not is_not_found(exc):
                raise


def _fault(deps: RolloutDeps, point: str) -> None:
    """A fault point: tell the test's hook (``RolloutDeps.faults``) where this pass is."""
    if deps.faults is not None:
        deps.faults(point)


def _do(deps: RolloutDeps, rollout: Mapping[str, Any], action: Action) -> None:
    meta = rollout["metadata"]
    ns = meta["namespace"]
    kube = deps.kube
    log.info("%s/%s: %s %s", ns, meta["name"], action.kind, getattr(action, "name", ""))
    match action:
        case AddFinalizer() | RemoveFinalizer():
            fins = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
            if isinstance(action, AddFinalizer):
                fins.append(FINALIZER)
            kube.patch_custom(
                ROLLOUTS,
                ns,
                meta["name"],
                {"metadata": {"finalizers": fins, "resourceVersion": meta["resourceVersion"]}},
            )
        case Claim(entry=entry):
            deps.ledger.claim(entry, deps.clock())
        case ClaimTarget(name=target, resource_version=version):
            # The target's resourceVersion is the precondition: of two Rollouts claiming at
            # once the API server accepts one write; the other re-observes and waits
            # (TargetBusy).
            kube.annotate_deployment(ns, target, CLAIM_ANNOTATION, claim_value(rollout), version)
        case ReleaseTarget(name=target, resource_version=version):
            kube.annotate_deployment(ns, target, CLAIM_ANNOTATION, None, version)
        case DeleteSnapshot(name=cm):
            kube.delete_configmap(ns, cm)
        case WriteSnapshot(body=body):
            kube.create_configmap_if_absent(ns, body)
        case CreateCanary(body=body):
            kube.create_deployment(ns, body)
        case ScaleCanary(name=canary, replicas=replicas):
            kube.patch_deployment(
                ns, canary, {"spec": {"replicas": replicas}}, "application/merge-patch+json"
            )
        case PatchStableImages(name=target, containers=images):
            containers = [{"name": c["name"], "image": c["image"]} for c in images]
            kube.patch_deployment(
                ns,
                target,
                {"spec": {"template": {"spec": {"containers": containers}}}},
                "application/strategic-merge-patch+json",
            )
        case DeleteCanary(name=canary):
            selector = f"{TRACK_LABEL}=canary,{ROLLOUT_LABEL}={meta['name']}"
            kube.delete_deployment_now(ns, canary, selector)
        case RestoreStable(name=target, template=template):
            kube.patch_deployment(
                ns,
                target,
                [{"op": "replace", "path": "/spec/template", "value": template}],
                "application/json-patch+json",
            )
        case CreateJob(body=body):
            kube.create_job(ns, body)
        case DeleteJob(name=job):
            kube.delete_job(ns, job)
        case SetPaused(paused=paused):
            kube.patch_custom(ROLLOUTS, ns, meta["name"], {"spec": {"paused": paused}})
        case _:  # pragma: no cover - mypy checks that every Action class is handled
            assert_never(action)
    _fault(deps, action.kind)


def _token(deps: RolloutDeps, namespace: str) -> Hashable | None:
    return deps.changes(namespace) if deps.changes is not None else None


def _quiet_until(deps: RolloutDeps, o: Observed) -> dt.datetime | None:
    """Until when a Rollout whose pass just planned nothing may be skipped (domain/wake.py):
    exactly its next due time. Not earlier: a pass chosen before its evaluation is due is not
    in the sweep's batch, and when it then runs after the due time it queries on its own (at
    1,000 Rollouts most evaluations did)."""
    runner_due = getattr(deps.analyze, "next_due", None)
    try:
        return next_due(o, (lambda: runner_due(o)) if runner_due is not None else None)
    except Exception:  # an optimisation only: when in doubt, run the next pass
        log.debug("no due time for %s", o.rollout["metadata"].get("name"), exc_info=True)
        return None


#: The status fields :func:`observe` reads (directly or through ``is_started``/``_reverting``):
#: a write that leaves them as they were leaves every observation as it was.
OBSERVED_STATUS = ("phase", "target", "snapshot", "change", "validation", "risk")


def _carried_over(observed: Observed, written: Mapping[str, Any]) -> Observed | None:
    """``observed`` with its Rollout replaced by ``written`` (the answer to this pass's status
    write), when nothing else in the Rollout changed and none of :data:`OBSERVED_STATUS` did:
    then every other observation still holds. None when they may not."""
    before = observed.rollout
    if any(before.get(k) != written.get(k) for k in {*before, *written} - {"status", "metadata"}):
        return None  # someone else's change came back with our write
    skip = {"resourceVersion", "managedFields"}
    bmeta, wmeta = before["metadata"], written["metadata"]
    if any(bmeta.get(k) != wmeta.get(k) for k in {*bmeta, *wmeta} - skip):
        return None
    bstatus, wstatus = before.get("status") or {}, written.get("status") or {}
    if any(bstatus.get(k) != wstatus.get(k) for k in OBSERVED_STATUS):
        return None
    return dataclasses.replace(observed, rollout=written, analysis=None)


def _settle(
    deps: RolloutDeps,
    key: str,
    token: Hashable | None,
    observed: Observed,
    written: Mapping[str, Any],
) -> None:
    """After a pass that only wrote its Rollout's status (an evaluation's result, a condition):
    plan again on the status as written and, when nothing is left to do and nothing else
    changed meanwhile, record the Rollout quiet at the token its write's echo will find. That
    echo then runs no pass: before, it observed everything again to find nothing to do, a
    second full pass per evaluation (docs/performance.md, run 8). Announcements are left to
    that pass (they write again), and so is any doubt; a phase change is one, since the phase
    is among :data:`OBSERVED_STATUS`."""
    status = written.get("status") or {}
    if deps.after_own_write is None or token is None or pending(status):
        return
    after = deps.after_own_write(token, written)
    carried = _carried_over(observed, written) if after is not None else None
    if carried is None:
        return
    plan = plan_rollout(carried)
    if plan.actions or plan.stamp_reverted or status_patch(status, plan.status) is not None:
        return
    deps.quiet.record(key, after, _quiet_until(deps, carried))


def reconcile_rollout(
    deps: RolloutDeps,
    namespace: str,
    name: str,
    tick: bool = False,
    lazy: bool = False,
) -> None:
    """Run passes until the plan is empty; analysis (when due) only on the first, timer pass.

    Takes names, not a body: every pass re-reads the Rollout inside the lock, because a copy
    from a watch event or a listing may predate another pass's writes. ``lazy``: do nothing
    when the last pass planned nothing, nothing it read has changed since and nothing is due
    (reconcile/quiet.py)."""
    key = f"{namespace}/{name}"
    with deps.locks.hold(f"rollout/{key}"):
        if lazy and deps.quiet.is_quiet(key, _token(deps, namespace), deps.clock()):
            return
        for i in range(MAX_PASSES):
            token = _token(deps, namespace)  # before the first read: a change after it shows
            rollout = deps.kube.get_custom(ROLLOUTS, namespace, name)
            if rollout is None:
                deps.quiet.forget(key)
                return
            if pending(rollout.get("status")) and i == 0:  # left by a pass that died
                announce(deps, rollout, None)  # mid-announcement; never blocks the pass below
                rollout = deps.kube.get_custom(ROLLOUTS, namespace, name)
                if rollout is None:
                    return
            observed = observe(deps, rollout, tick=tick and i == 0)
            plan = plan_rollout(observed)
            changed = status_patch(rollout.get("status") or {}, plan.status) is not None
            work = bool(plan.actions) or plan.stamp_reverted
            if not work and not changed:
                deps.quiet.record(key, token, _quiet_until(deps, observed))
                return
            deps.quiet.forget(key)
            try:
                written = apply(deps, rollout, plan, observed.lease)
            except Exception as exc:
                if is_not_found(exc) and not plan.actions:
                    return
                raise
            if not work:
                if written is not None:
                    _settle(deps, key, token, observed, written)
                return
        log.warning("%s/%s: still changing after %d passes", namespace, name, MAX_PASSES)


def _listing(kube: KubeApi, plural: str) -> list[dict[str, Any]]:
    """The cache's own objects when it offers them (a sweep only reads; copying every Rollout
    each tick cost a fifth of the operator's CPU at 1,000), else a listing."""
    shared = getattr(kube, "list_custom_shared", None)
    held = shared(plural) if shared is not None else None
    return held if held is not None else kube.list_custom(plural)


def _one_pass(deps: RolloutDeps, namespace: str, name: str, tick: bool, queued: bool) -> None:
    """One lazy pass of a Rollout, its failure logged once per state change; ``queued``: it
    was claimed in ``deps.quiet`` and tells it when it starts."""
    key = f"{namespace}/{name}"
    if queued:
        deps.quiet.start(key)
    try:
        reconcile_rollout(deps, namespace, name, tick=tick, lazy=True)
    except Exception as exc:
        FAILURES.failed(key, f"reconciling rollout {key}", exc)
    else:
        FAILURES.ok(key, f"reconciling rollout {key}")


def _submit(
    deps: RolloutDeps, pool: ThreadPoolExecutor, namespace: str, name: str, tick: bool
) -> bool:
    """Queue a claimed pass; False (and the claim dropped) when the pool is shutting down."""
    key = f"{namespace}/{name}"
    try:
        future = pool.submit(_one_pass, deps, namespace, name, tick, True)
    except RuntimeError:  # the pool is shutting down (the operator stops)
        deps.quiet.drop(key)
        return False
    future.add_done_callback(functools.partial(_ended, deps, pool, namespace, name))
    return True


def _ended(
    deps: RolloutDeps, pool: ThreadPoolExecutor, namespace: str, name: str, _future: object
) -> None:
    if deps.quiet.end(f"{namespace}/{name}"):  # a watch event came in while it ran
        _submit(deps, pool, namespace, name, tick=False)


def request_pass(deps: RolloutDeps, pool: ThreadPoolExecutor, namespace: str, name: str) -> None:
    """A watch event's pass, handed to ``pool`` instead of run by the event's handler: at most
    one queued or running per Rollout, and one more after a running one when the event came in
    after it started (reconcile/quiet.py). Run by Kopf's handler, a pass held one of Kopf's
    threads and its event's body until it ended: while 1,000 Rollouts started, thousands of
    events waited that way, the largest part of the operator's peak memory
    (docs/performance.md, run 8)."""
    if deps.quiet.request(f"{namespace}/{name}"):
        _submit(deps, pool, namespace, name, tick=False)


def _key(body: Mapping[str, Any]) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def _last_evaluated(body: Mapping[str, Any]) -> str:
    """The last evaluation's time as stored (fixed-width RFC 3339: it sorts as a string);
    "" for never, which sorts first."""
    return str(((body.get("status") or {}).get("lastAnalysis") or {}).get("time") or "")


def reconcile_all_rollouts(
    deps: RolloutDeps,
    tick: bool = True,
    pool: ThreadPoolExecutor | None = None,
    max_queued: int | None = None,
) -> None:
    """One timer sweep over every Rollout that still has work (in parallel when given a pool:
    each Rollout's pass is mostly waiting on the API server and Prometheus).

    With a pool the sweep hands the passes over and returns: it does not wait for the slowest
    one (a claim retrying against a busy ledger, a query waiting on Prometheus), which would
    hold every other Rollout's next analysis until it ends. A Rollout whose pass from an
    earlier sweep is still queued or running is left out of this one. With ``max_queued``, at
    most that many passes are queued or running at once, the longest unevaluated first, and
    the batched queries cover only those: an operator behind schedule no longer fetches every
    Rollout's metrics each tick for passes that run seconds later, when the batch is too old
    to use (the 1,000-Rollout feedback loop in docs/performance.md)."""
    bodies = _listing(deps.kube, ROLLOUTS)  # read only, never changed or kept
    phases: dict[str, int] = {}
    for body in bodies:
        key = str((body.get("status") or {}).get("phase") or "Pending")
        phases[key] = phases.get(key, 0) + 1
    METRICS.set_rollouts_by_phase(phases)
    now = deps.clock()
    deps.quiet.retain({_key(b) for b in bodies})
    chosen = [
        b
        for b in bodies
        if (
            (b.get("status") or {}).get("phase") not in TERMINAL
            or FINALIZER in (b["metadata"].get("finalizers") or [])
        )
        and not deps.quiet.is_quiet(_key(b), _token(deps, b["metadata"]["namespace"]), now)
    ]
    if pool is not None:
        chosen = [b for b in chosen if not deps.quiet.is_running(_key(b))]
        if max_queued is not None:
            room = max(0, max_queued - deps.quiet.running())
            if len(chosen) > room:
                chosen = sorted(chosen, key=_last_evaluated)[:room]
    prepare = getattr(deps.analyze, "prepare", None)
    if tick and prepare is not None:
        try:
            prepare(bodies, now, {_key(b) for b in chosen})
        except Exception as exc:  # a failed batch only means per-Rollout queries this tick
            FAILURES.failed("batch", "batched analysis queries", exc)
        else:
            FAILURES.ok("batch", "batched analysis queries")
    active = [b["metadata"] for b in chosen]
    for meta in active:
        ns, name = meta["namespace"], meta["name"]
        if pool is None:
            _one_pass(deps, ns, name, tick, queued=False)
        elif deps.quiet.begin(f"{ns}/{name}") and not _submit(deps, pool, ns, name, tick):
            return
