"""Replay refusal from three records, not one (docs/security.md, "ledger").

A Lease digest counts as consumed when **any** of these says so:

1. the ledger ConfigMap ``calyx-ledger`` has an entry for it;
2. a Lease with that digest has ``status.consumedBy``;
3. a Rollout's ``status.leaseDigest`` equals it and that Rollout has started (its
   ``status.snapshot`` is recorded: it claimed the Lease before its snapshot).

The last two live in status subresources, which only the operator can write, so deleting the
ledger (or one entry) no longer re-opens a consumed Lease. The ledger is the fast path and a cache
of the other two; :func:`rebuild_entries` restores it from them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from calyx.domain.ledger import LedgerEntry
from calyx.domain.timefmt import format_time, parse_time

UNKNOWN_EXPIRY_DAYS = 366
"""A rebuilt entry whose Lease is gone keeps this long: a replay needs a Lease with the same
digest, and so the same expiresAt, which is within this horizon for any sane trust policy."""


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def lease_holders(leases: Iterable[Mapping[str, Any]]) -> list[LedgerEntry]:
    """Consumption recorded on Leases (``status.consumedBy`` next to ``status.digest``)."""
    out = []
    for lease in leases:
        st = _status(lease)
        by = st.get("consumedBy") or {}
        digest = st.get("digest")
        if not (digest and by.get("uid")):
            continue
        meta = lease.get("metadata") or {}
        expires = str((lease.get("spec") or {}).get("expiresAt") or "")
        out.append(
            LedgerEntry(
                digest=str(digest),
                namespace=str(meta.get("namespace") or ""),
                lease=str(meta.get("name") or ""),
                rollout=str(by.get("name") or ""),
                rollout_uid=str(by["uid"]),
                claimed_at=str(meta.get("creationTimestamp") or ""),
                expires_at=expires,
            )
        )
    return out


def rollout_holders(rollouts: Iterable[Mapping[str, Any]]) -> list[LedgerEntry]:
    """Consumption recorded on started Rollouts (``status.leaseDigest`` + a snapshot)."""
    out = []
    for rollout in rollouts:
        st = _status(rollout)
        digest = st.get("leaseDigest")
        if not digest or not (st.get("snapshot") or {}).get("configMap"):
            continue
        meta = rollout.get("metadata") or {}
        spec = rollout.get("spec") or {}
        out.append(
            LedgerEntry(
                digest=str(digest),
                namespace=str(meta.get("namespace") or ""),
                lease=str((spec.get("leaseRef") or {}).get("name") or ""),
                rollout=str(meta.get("name") or ""),
                rollout_uid=str(meta.get("uid") or ""),
                claimed_at=str(meta.get("creationTimestamp") or ""),
                expires_at="",
            )
        )
    return out


def replay_holders(
    ledger: Mapping[str, LedgerEntry],
    leases: Iterable[Mapping[str, Any]],
    rollouts: Iterable[Mapping[str, Any]],
    claimant_uid: str | None,
) -> dict[str, LedgerEntry]:
    """Digest → the holder that verification should see for ``claimant_uid``.

    Where the records name different Rollouts, one that is not the claimant wins (any record
    of another consumer means replay); an unreadable ledger entry wins over everything (fail
    closed for that digest)."""
    out: dict[str, LedgerEntry] = {}
    for entry in [*ledger.values(), *lease_holders(leases), *rollout_holders(rollouts)]:
        have = out.get(entry.digest)
        if have is None or (
            not have.error
            and (entry.error or (have.rollout_uid == claimant_uid != entry.rollout_uid))
        ):
            out[entry.digest] = entry
    return out


def rebuild_entries(
    leases: Iterable[Mapping[str, Any]],
    rollouts: Iterable[Mapping[str, Any]],
    now: dt.datetime,
) -> list[LedgerEntry]:
    """Ledger entries recovered from Lease and Rollout statuses, one per digest, not expired.

    A Lease's own record carries its expiry; a Rollout-only record borrows the expiry of a
    Lease with the same digest if one still exists, else :data:`UNKNOWN_EXPIRY_DAYS`."""
    leases = list(leases)
    by_lease = {e.digest: e for e in lease_holders(leases)}
    expiry = {
        str(_status(lease).get("digest")): str((lease.get("spec") or {}).get("expiresAt") or "")
        for lease in leases
        if _status(lease).get("digest")
    }
    horizon = format_time(now + dt.timedelta(days=UNKNOWN_EXPIRY_DAYS))
    out: dict[str, LedgerEntry] = {}
    for entry in [*rollout_holders(rollouts), *by_lease.values()]:
        if entry.digest in out:
            continue
        expires = entry.expires_at or expiry.get(entry.digest) or horizon
        claimed = entry.claimed_at or format_time(now)
        try:
            if parse_time(expires, field="expiresAt") < now:
                continue
            parse_time(claimed, field="claimedAt")
        except ValueError:
            expires, claimed = horizon, format_time(now)
        out[entry.digest] = LedgerEntry(
            digest=entry.digest,
            namespace=entry.namespace,
            lease=entry.lease,
            rollout=entry.rollout,
            rollout_uid=entry.rollout_uid,
            claimed_at=claimed,
            expires_at=expires,
        )
    return list(out.values())
