"""Lease reconciliation: observe the live Lease, trust store and ledger → verify → write status.

Triggered by Lease watch events, by a short timer (so expiry shows within seconds, not at the
next unrelated event) and by every trust-store change (so a revoked key turns a Verified lease
Rejected without a restart). All three converge on the same idempotent function.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calyx.adapters.audit_log import write_record
from calyx.adapters.cache import copy_obj
from calyx.adapters.events import EventRecorder
from calyx.adapters.failure_log import FailureLog
from calyx.adapters.kube import LEASES, is_not_found
from calyx.adapters.kube_api import KubeApi
from calyx.adapters.metrics import METRICS
from calyx.api.errors import InvalidSpecError
from calyx.api.lease import parse_lease_spec
from calyx.domain.lease_plan import (
    LeasePlan,
    plan_lease_status,
    plan_unverifiable,
    previously_accepted,
)
from calyx.domain.ledger import LedgerEntry
from calyx.domain.outbox import audit_records, enqueue, pending
from calyx.domain.timefmt import format_time
from calyx.domain.trust import TrustStore, TrustStoreError
from calyx.domain.verification import verify_lease
from calyx.domain.wake import lease_next_due
from calyx.reconcile.locks import KeyedLocks
from calyx.reconcile.quiet import QuietBook
from calyx.reconcile.status import status_patch

log = logging.getLogger("calyx.lease")
FAILURES = FailureLog(log)


@dataclass
class LeaseDeps:
    kube: KubeApi
    events: EventRecorder
    trust: Callable[[], TrustStore]  # raises TrustStoreError
    ledger: Callable[[], Mapping[str, LedgerEntry]]
    clock: Callable[[], dt.datetime]
    locks: KeyedLocks
    # Given a Lease, what moves when anything its verdict reads besides the Lease changes (the
    # trust store, its ledger entry); None from it: verify this one every time. With it, the
    # sweep skips a Lease whose verdict nothing but the clock could change before its due time
    # (domain/wake.py). None: every Lease is verified on every sweep.
    changes: Callable[[Mapping[str, Any]], Hashable | None] | None = None
    quiet: QuietBook = field(default_factory=QuietBook)


def spec_problem(spec: Mapping[str, Any]) -> str | None:
    """One line naming every invalid field, or None."""
    try:
        parse_lease_spec(spec)
    except InvalidSpecError as exc:
        return str(exc)
    return None


CARRIED = ("outbox", "auditHead", "auditSeq")
"""Status fields the verification plan does not compute: the announcement bookkeeping."""


def plan(deps: LeaseDeps, body: Mapping[str, Any]) -> LeasePlan:
    """The verification plan, keeping the outbox and audit-chain head it does not compute."""
    result = _plan(deps, body)
    prev = body.get("status") or {}
    for key in CARRIED:
        if key in prev:
            result.status[key] = prev[key]
    return result


def _plan(deps: LeaseDeps, body: Mapping[str, Any]) -> LeasePlan:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    spec = body.get("spec") or {}
    annotations = meta.get("annotations") or {}
    prev = body.get("status") or {}
    generation = meta.get("generation")
    now = deps.clock()
    stamp = format_time(now)
    problem = spec_problem(spec)
    if problem:
        return plan_unverifiable(
            previous=prev, generation=generation, now=stamp, reason="InvalidSpec", message=problem
        )
    try:
        trust = deps.trust()
    except TrustStoreError as exc:
        return plan_unverifiable(
            previous=prev,
            generation=generation,
            now=stamp,
            reason="TrustStoreInvalid",
            message=str(exc),
        )
    ledger = dict(deps.ledger())
    # Consumption is sticky: the Lease's own status is one of the three replay records, so a
    # deleted ledger entry does not turn a Consumed Lease back into Verified.
    prev_by = prev.get("consumedBy") or {}
    if prev.get("digest") and prev_by.get("uid") and prev["digest"] not in ledger:
        ledger[prev["digest"]] = LedgerEntry(
            str(prev["digest"]),
            ns,
            name,
            str(prev_by.get("name") or ""),
            str(prev_by["uid"]),
            "",
            "",
        )
    verdict = verify_lease(
        namespace=ns,
        name=name,
        spec=spec,
        annotations=annotations,
        trust=trust,
        now=now,
        ledger=ledger,
        previously_accepted=previously_accepted(prev),
    )
    METRICS.record_signature(verdict.phase)
    holder = ledger.get(verdict.digest)
    consumed_by = (
        {"name": holder.rollout, "uid": holder.rollout_uid} if holder and not holder.error else None
    )
    return plan_lease_status(
        verdict=verdict,
        previous=prev,
        generation=generation,
        now=stamp,
        consumed_by=consumed_by,
    )


def reconcile_lease(deps: LeaseDeps, body: Mapping[str, Any]) -> None:
    """Observe → plan → apply for one Lease; a no-op when the stored status is already right.

    The copy in hand (from a watch event or a sweep's listing) may predate the last status
    write, and planning from it could announce a transition twice. So when the plan wants to
    write, the Lease is re-read inside the per-object lock and planned again from the fresh
    copy; the common case — nothing changed — costs no extra read.
    """
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    with deps.locks.hold(f"lease/{ns}/{name}"):
        if meta.get("deletionTimestamp"):
            return
        if pending(body.get("status")):  # left by a pass that died mid-announcement
            fresh = deps.kube.get_custom(LEASES, ns, name)
            if fresh is not None:
                announce_lease(deps, fresh)
            return
        if status_patch(body.get("status") or {}, plan(deps, body).status) is None:
            return
        fresh = deps.kube.get_custom(LEASES, ns, name)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        result = plan(deps, fresh)
        # The chain position keeps ids apart: two decisions in one second with the same
        # message (a signature rewritten twice, the same cause) are two Events, not one.
        seq = int((fresh.get("status") or {}).get("auditSeq") or 0)
        key = f"{meta.get('uid') or ''}/{seq}"
        enqueue(result.status, key, result.events, format_time(deps.clock()))
        patch = status_patch(fresh.get("status") or {}, result.status)
        if patch is None:
            return
        try:
            updated = deps.kube.patch_custom_status(LEASES, ns, name, patch)
        except Exception as exc:
            if is_not_found(exc):
                return
            raise
        announce_lease(deps, updated)


def announce_lease(deps: LeaseDeps, lease: Mapping[str, Any], out: Any = None) -> None:
    """Post the Lease's outbox: one audit record per entry, chained from ``status.auditHead``
    and printed to stdout (a Lease has no report ConfigMap; a Rollout that uses it copies the
    Lease's story into its own chain), then the Events, then clear the entries and advance the
    head in one status write. A crash before that write repeats byte-identical records (same
    time, same prev) and Events the API server refuses as AlreadyExists (docs/audit.md)."""
    meta = lease["metadata"]
    ns, name = meta["namespace"], meta["name"]
    status = lease.get("status") or {}
    entries = pending(status)
    if not entries:
        return
    head = status.get("auditHead")
    tail = [{"seq": int(status.get("auditSeq") or 0), "hash": head}] if head else []
    chain = audit_records(tail, entries, lease)
    stream = out or sys.stdout
    for record, entry in zip(chain, entries, strict=True):
        write_record(record, stream)
        deps.events.emit_entry(lease, entry)
    try:
        deps.kube.patch_custom_status(
            LEASES,
            ns,
            name,
            {"outbox": None, "auditHead": chain[-1]["hash"], "auditSeq": chain[-1]["seq"]},
        )
    except Exception as exc:
        if not is_not_found(exc):
            raise


def reconcile_all_leases(deps: LeaseDeps) -> None:
    """Re-verify every Lease from a fresh listing (after a trust-store or ledger change, and on
    the sweep's timer), except one verified before with the same resourceVersion, trust store
    and ledger whose verdict no clock fact can change yet (reconcile/quiet.py): ~1 ms of
    Ed25519 and parsing each, which a 1 s sweep over 1,000 Leases cannot afford."""
    now = deps.clock()
    shared = getattr(deps.kube, "list_custom_shared", None)
    held = shared(LEASES) if shared is not None else None  # the cache's own: read only
    bodies = held if held is not None else deps.kube.list_custom(LEASES)
    deps.quiet.retain({_key(b) for b in bodies})
    for body in bodies:
        key = _key(body)
        base = deps.changes(body) if deps.changes is not None else None
        token = (body["metadata"].get("resourceVersion"), base) if base is not None else None
        if deps.quiet.is_quiet(key, token, now):
            continue
        if held is not None:
            body = copy_obj(body)  # a pass may change what it is given
        try:
            reconcile_lease(deps, body)
        except Exception as exc:
            FAILURES.failed(key, f"re-verifying lease {key}", exc)
            deps.quiet.forget(key)
        else:
            FAILURES.ok(key, f"re-verifying lease {key}")
            # A status write gives the Lease a new resourceVersion: the next sweep verifies it
            # once more (and finds nothing to write) before it counts as quiet.
            deps.quiet.record(key, token, _lease_due(deps, body, now))


def _key(body: Mapping[str, Any]) -> str:
    return f"{body['metadata'].get('namespace')}/{body['metadata'].get('name')}"


def _lease_due(deps: LeaseDeps, body: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
    try:
        return lease_next_due(body, deps.trust(), now)
    except Exception:  # no trust store, an odd spec: verify it every time
        return None
