"""Rollout reconciliation: observe the cluster → ``plan_rollout`` → apply one step, repeat.

Each pass re-reads everything it decides on (Rollout, Lease, ledger, Deployments, snapshot),
so the Lease is verified *at the moment* of every forward action (DESIGN §1.1). Passes repeat
until a plan has nothing left to do, so a whole transition (verify → claim → snapshot →
canary) happens in one wake-up, yet each step stands alone after a crash.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from calyx.adapters.events import EventRecorder
from calyx.adapters.kube import LEASES, ROLLOUTS, Kube, is_not_found
from calyx.adapters.ledger_store import LedgerStore
from calyx.adapters.metrics import METRICS
from calyx.api.errors import InvalidSpecError
from calyx.api.lease import parse_lease_spec
from calyx.api.rollout import parse_rollout_spec
from calyx.domain.canary import ROLLOUT_LABEL, TRACK_LABEL, canary_name, job_name, snapshot_name
from calyx.domain.lease_plan import previously_accepted
from calyx.domain.risk import assess, recommended_tiers
from calyx.domain.risk import to_status as risk_status
from calyx.domain.rollout_plan import (
    DEFAULT_TIERS,
    FINALIZER,
    TERMINAL,
    AnalysisOutcome,
    Observed,
    Plan,
    parse_stamp,
    plan_rollout,
    stamp,
)
from calyx.domain.trust import TrustStore, TrustStoreError
from calyx.domain.verification import verify_lease
from calyx.reconcile.locks import KeyedLocks
from calyx.reconcile.report import write_report
from calyx.reconcile.status import status_patch

log = logging.getLogger("calyx.rollout")
RECENT_ROLLBACK_DAYS = 7
MAX_PASSES = 12


@dataclass
class RolloutDeps:
    kube: Kube
    events: EventRecorder
    trust: Callable[[], TrustStore]
    ledger: LedgerStore
    clock: Callable[[], dt.datetime]
    locks: KeyedLocks
    # Called on timer ticks only (DESIGN §5: analysis runs from a timer, never watch events).
    analyze: Callable[[Observed], AnalysisOutcome | None] | None = None


def observe(deps: RolloutDeps, rollout: Mapping[str, Any], tick: bool) -> Observed:
    meta = rollout["metadata"]
    ns = meta["namespace"]
    now = deps.clock()
    status = rollout.get("status") or {}
    try:
        spec = parse_rollout_spec(rollout.get("spec"))
    except InvalidSpecError as exc:
        return Observed(rollout=rollout, now=now, spec_error=str(exc))
    lease = deps.kube.get_custom(LEASES, ns, spec.lease_ref.name)
    lease_spec = verdict = trust = None
    trust_error = None
    claimed = False
    if lease is not None:
        try:
            lease_spec = parse_lease_spec(lease.get("spec"))
        except InvalidSpecError as exc:
            trust_error = f"lease {spec.lease_ref.name} is invalid: {exc}"
        try:
            trust = deps.trust()
        except TrustStoreError as exc:
            trust_error = str(exc)
        if trust is not None and lease_spec is not None:
            entries = deps.ledger.entries()
            lmeta = lease["metadata"]
            verdict = verify_lease(
                namespace=ns,
                name=lmeta["name"],
                spec=lease.get("spec") or {},
                annotations=lmeta.get("annotations") or {},
                trust=trust,
                now=now,
                ledger=entries,
                claimant_uid=meta["uid"],
                previously_accepted=previously_accepted(lease.get("status")),
            )
            holder = entries.get(verdict.digest)
            claimed = holder is not None and holder.rollout_uid == meta["uid"]
    target_name = (status.get("target") or {}).get("name") or (
        lease_spec.target_ref.name if lease_spec else None
    )
    target = deps.kube.get_deployment(ns, target_name) if target_name else None
    canary = deps.kube.get_deployment(ns, canary_name(target_name)) if target_name else None
    snapshot = deps.kube.get_configmap(ns, snapshot_name(meta["name"]))
    job = None
    if status.get("phase") == "Validating" or (status.get("validation") or {}).get("job"):
        job = deps.kube.get_job(ns, job_name(meta["name"]))
    risk = status.get("risk")
    if risk is None and lease_spec is not None and target is not None:
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
        snapshot=snapshot,
        job=job,
    )
    if tick and deps.analyze is not None and status.get("phase") not in TERMINAL:
        outcome = deps.analyze(observed)
        if outcome is not None:
            observed = Observed(**{**observed.__dict__, "analysis": outcome})
    return observed


def assess_risk(
    kube: Kube,
    rollout: Mapping[str, Any],
    lease: Mapping[str, Any] | None,
    target: Mapping[str, Any],
    first_weight: int,
    now: dt.datetime,
) -> dict[str, Any]:
    """``status.risk`` for a Rollout about to start (DESIGN §6): computed once and stored, so
    the tier plan it recommends cannot change under a running rollout."""
    ns = rollout["metadata"]["namespace"]
    tname = target["metadata"]["name"]
    since = now - dt.timedelta(days=RECENT_ROLLBACK_DAYS)
    recent = 0
    for other in kube.list_custom(ROLLOUTS, ns):
        st = other.get("status") or {}
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
) -> None:
    meta = rollout["metadata"]
    ns, name = meta["namespace"], meta["name"]
    prev = rollout.get("status") or {}
    patch = status_patch(prev, plan.status)
    if plan.status_first and patch is not None:
        deps.kube.patch_custom_status(ROLLOUTS, ns, name, patch)
        patch = None
    for action in plan.actions:
        _do(deps, rollout, action)
    if plan.stamp_reverted:
        rb = dict(plan.status.get("rollback") or {})
        reverted = deps.clock()
        rb["revertedAt"] = stamp(reverted)
        plan.status["rollback"] = rb
        patch = status_patch(prev, plan.status)
        breach = parse_stamp(rb.get("breachAt"))
        METRICS.record_rollback(
            str(rb.get("trigger")),
            (reverted - breach).total_seconds() if breach else None,
        )
    if patch is not None:
        updated = deps.kube.patch_custom_status(ROLLOUTS, ns, name, patch)
        if plan.events or plan.status.get("phase") != prev.get("phase"):
            try:
                write_report(deps.kube, updated, observed_lease, plan.events, deps.clock())
            except Exception:  # the report must never block a rollback; next pass retries
                log.exception("%s/%s: writing the report failed", ns, name)
    for ev in plan.events:
        deps.events.emit(rollout, ev.type, ev.reason, ev.message)


def _fault_point(kind: str) -> None:
    """Test-only fault injection: ``CALYX_FAULT_EXIT_AFTER=<ActionKind>`` makes the process
    die (exit 137, like SIGKILL) right after the first such action, so crash-safety tests can
    stop the operator at an exact point. A marker file makes it fire once per test."""
    wanted = os.environ.get("CALYX_FAULT_EXIT_AFTER")
    marker = os.environ.get("CALYX_FAULT_MARKER")
    if wanted != kind or not marker or os.path.exists(marker):
        return
    with open(marker, "w") as fh:
        fh.write(kind)
    log.warning("fault injection: exiting after %s", kind)
    os._exit(137)


def _do(deps: RolloutDeps, rollout: Mapping[str, Any], action: Any) -> None:
    meta = rollout["metadata"]
    ns = meta["namespace"]
    kube = deps.kube
    kind = action.kind
    log.info("%s/%s: %s %s", ns, meta["name"], kind, action.name)
    if kind in ("AddFinalizer", "RemoveFinalizer"):
        fins = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        if kind == "AddFinalizer":
            fins.append(FINALIZER)
        kube.patch_custom(
            ROLLOUTS,
            ns,
            meta["name"],
            {"metadata": {"finalizers": fins, "resourceVersion": meta["resourceVersion"]}},
        )
    elif kind == "Claim":
        deps.ledger.claim(action.entry, deps.clock())
    elif kind == "WriteSnapshot":
        kube.create_configmap_if_absent(ns, action.body)
    elif kind == "CreateCanary":
        kube.create_deployment(ns, action.body)
    elif kind == "ScaleCanary":
        kube.patch_deployment(
            ns, action.name, {"spec": {"replicas": action.replicas}}, "application/merge-patch+json"
        )
    elif kind == "PatchStableImages":
        containers = [{"name": c["name"], "image": c["image"]} for c in action.body["containers"]]
        kube.patch_deployment(
            ns,
            action.name,
            {"spec": {"template": {"spec": {"containers": containers}}}},
            "application/strategic-merge-patch+json",
        )
    elif kind == "DeleteCanary":
        selector = f"{TRACK_LABEL}=canary,{ROLLOUT_LABEL}={meta['name']}"
        kube.delete_deployment_now(ns, action.name, selector)
    elif kind == "RestoreStable":
        template = action.body["spec"]["template"]
        kube.patch_deployment(
            ns,
            action.name,
            [{"op": "replace", "path": "/spec/template", "value": template}],
            "application/json-patch+json",
        )
    elif kind == "CreateJob":
        kube.create_job(ns, action.body)
    elif kind == "DeleteJob":
        kube.delete_job(ns, action.name)
    elif kind == "SetPaused":
        kube.patch_custom(ROLLOUTS, ns, meta["name"], {"spec": {"paused": action.paused}})
    else:  # pragma: no cover - the planner's Literal type lists every kind
        raise ValueError(f"unknown action {kind}")
    _fault_point(kind)


def reconcile_rollout(
    deps: RolloutDeps,
    namespace: str,
    name: str,
    tick: bool = False,
) -> None:
    """Run passes until the plan is empty; analysis (when due) only on the first, timer pass.

    Takes names, not a body: every pass re-reads the Rollout inside the lock, because a copy
    from a watch event or a listing may predate another pass's writes."""
    with deps.locks.hold(f"rollout/{namespace}/{name}"):
        for i in range(MAX_PASSES):
            rollout = deps.kube.get_custom(ROLLOUTS, namespace, name)
            if rollout is None:
                return
            observed = observe(deps, rollout, tick=tick and i == 0)
            plan = plan_rollout(observed)
            changed = status_patch(rollout.get("status") or {}, plan.status) is not None
            work = bool(plan.actions) or plan.stamp_reverted
            if not work and not changed:
                return
            try:
                apply(deps, rollout, plan, observed.lease)
            except Exception as exc:
                if is_not_found(exc) and not plan.actions:
                    return
                raise
            if not work:
                return
        log.warning("%s/%s: still changing after %d passes", namespace, name, MAX_PASSES)


def reconcile_all_rollouts(
    deps: RolloutDeps, tick: bool = True, pool: ThreadPoolExecutor | None = None
) -> None:
    """One timer sweep over every Rollout that still has work (in parallel when given a pool:
    each Rollout's pass is mostly waiting on the API server and Prometheus)."""
    bodies = deps.kube.list_custom(ROLLOUTS)
    phases: dict[str, int] = {}
    for body in bodies:
        key = str((body.get("status") or {}).get("phase") or "Pending")
        phases[key] = phases.get(key, 0) + 1
    METRICS.set_rollouts_by_phase(phases)
    prepare = getattr(deps.analyze, "prepare", None)
    if tick and prepare is not None:
        try:
            prepare(bodies, deps.clock())
        except Exception:  # a failed batch only means per-Rollout queries this tick
            log.exception("batched analysis queries failed")
    active = [
        b["metadata"]
        for b in bodies
        if (b.get("status") or {}).get("phase") not in TERMINAL
        or FINALIZER in (b["metadata"].get("finalizers") or [])
    ]

    def one(meta: Mapping[str, Any]) -> None:
        try:
            reconcile_rollout(deps, meta["namespace"], meta["name"], tick=tick)
        except Exception:
            log.exception("reconciling rollout %s/%s failed", meta["namespace"], meta["name"])

    if pool is None:
        for meta in active:
            one(meta)
    else:
        list(pool.map(one, active))
