"""Pure model of the replay ledger, ConfigMap ``calyx-ledger`` (docs/signing.md §8 rule 4).

Signatures do not bind a Lease's uid (so a pipeline can sign before committing to Git); what stops
a signed Lease from authorizing two rollouts, or from being deleted and re-created to run again, is
this ledger: one entry per consumed lease digest, written by the first Rollout that claims it and
*before* its first mutation. The adapter that reads and writes the ConfigMap (with
resourceVersion-guarded updates) lives in ``calyx.adapters``; here are only the decisions.

Data keys: ConfigMap keys must match ``[-._a-zA-Z0-9]+``, so ``sha256:<hex>`` is stored under
``sha256.<hex>`` (``:`` → ``.``). Values are canonical JSON with camelCase fields::

    {"claimedAt":"…Z","digest":"sha256:…","expiresAt":"…Z","lease":"checkout-2-3-1",
     "namespace":"shop","rollout":"checkout-2-3-1","rolloutUid":"…"}

A corrupt entry is an error, never skipped: dropping it would re-open its lease for replay.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from calyx.domain.canonical import canonical_json
from calyx.domain.timefmt import parse_time

__all__ = [
    "ClaimOutcome",
    "LedgerEntry",
    "LedgerError",
    "LedgerRead",
    "decide_claim",
    "digest_from_key",
    "encode_entry",
    "ledger_key",
    "parse_ledger",
    "prunable",
    "read_ledger",
]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_KEY = re.compile(r"sha256\.[0-9a-f]{64}", re.ASCII)

# JSON field -> LedgerEntry attribute
_FIELDS: dict[str, str] = {
    "digest": "digest",
    "namespace": "namespace",
    "lease": "lease",
    "rollout": "rollout",
    "rolloutUid": "rollout_uid",
    "claimedAt": "claimed_at",
    "expiresAt": "expires_at",
}


class LedgerError(ValueError):
    """The ledger holds something that is not a valid entry; the message names the data key."""


@dataclass(frozen=True)
class LedgerEntry:
    """One consumed lease: which Rollout (by uid) claimed which digest, and until when it matters.

    ``claimed_at`` / ``expires_at`` are RFC 3339 strings (``expires_at`` is the Lease's expiresAt:
    after it, the lease is expired anyway, so the entry can be pruned without re-opening replay).
    """

    digest: str
    namespace: str
    lease: str
    rollout: str
    rollout_uid: str
    claimed_at: str
    expires_at: str
    error: str = ""
    """Set on a stand-in for an entry that could not be parsed: its digest fails closed."""


@dataclass(frozen=True)
class LedgerRead:
    """The ledger as read for verification: a corrupt entry blocks only its own digest.

    ``unreadable`` maps digest → why its entry could not be parsed; ``bad_keys`` maps data keys
    that name no digest at all → why (they can block nothing, so they are only reported).
    """

    entries: Mapping[str, LedgerEntry]
    unreadable: Mapping[str, str]
    bad_keys: Mapping[str, str]

    def holders(self) -> dict[str, LedgerEntry]:
        """Digest → holder, with a fail-closed stand-in (``error`` set) for unreadable ones."""
        out = dict(self.entries)
        for digest, why in self.unreadable.items():
            out[digest] = LedgerEntry(digest, "", "", "", "", "", "", error=why)
        return out


@dataclass(frozen=True)
class ClaimOutcome:
    """Result of a claim: ``entry`` is the candidate when won, the existing holder when lost."""

    won: bool
    entry: LedgerEntry


def ledger_key(digest: str) -> str:
    """ConfigMap data key for a lease digest: ``sha256:<hex>`` → ``sha256.<hex>``."""
    if _DIGEST.fullmatch(digest) is None:
        raise LedgerError(f"{digest!r} is not a lease digest (sha256:<64 lowercase hex>)")
    return "sha256." + digest[len("sha256:") :]


def digest_from_key(key: str) -> str:
    """Inverse of :func:`ledger_key`."""
    if _KEY.fullmatch(key) is None:
        raise LedgerError(f"ledger key {key!r} is not sha256.<64 lowercase hex>")
    return "sha256:" + key[len("sha256.") :]


def encode_entry(entry: LedgerEntry) -> tuple[str, str]:
    """``(data key, canonical JSON value)`` for writing ``entry`` into the ConfigMap."""
    value = {field: getattr(entry, attr) for field, attr in _FIELDS.items()}
    return ledger_key(entry.digest), canonical_json(value).decode("utf-8")


def parse_ledger(data: Mapping[str, str] | None) -> dict[str, LedgerEntry]:
    """Parse the ConfigMap's ``data`` into entries keyed by digest; raise :class:`LedgerError`.

    Unknown extra fields in a value are tolerated (a newer operator may add some, and failing on
    them during a rolling upgrade would halt every rollout); missing or mistyped ones are not.
    """
    entries: dict[str, LedgerEntry] = {}
    for key, value in sorted((data or {}).items()):
        entry = _parse_entry(key, value)
        entries[entry.digest] = entry
    return entries


def read_ledger(data: Mapping[str, str] | None) -> LedgerRead:
    """Parse leniently for verification: one bad entry must not block every rollout
    (docs/security.md, "ledger"), yet it must still block its own digest."""
    entries: dict[str, LedgerEntry] = {}
    unreadable: dict[str, str] = {}
    bad_keys: dict[str, str] = {}
    for key, value in sorted((data or {}).items()):
        try:
            entry = _parse_entry(key, value)
        except LedgerError as exc:
            try:
                unreadable[digest_from_key(key)] = str(exc)
            except LedgerError:
                bad_keys[key] = str(exc)
            continue
        entries[entry.digest] = entry
    return LedgerRead(entries=entries, unreadable=unreadable, bad_keys=bad_keys)


def decide_claim(entries: Mapping[str, LedgerEntry], candidate: LedgerEntry) -> ClaimOutcome:
    """Whether ``candidate`` may claim its digest given the current ``entries`` (keyed by digest).

    Free → won. Held by the same Rollout uid → won with the *existing* entry (an idempotent
    re-claim after a crash must not move ``claimedAt``). Held by anyone else → lost, with the
    holder so the message can name it. A re-created Rollout with the same name has a new uid and
    therefore loses: that is the replay the ledger exists to stop.
    """
    existing = entries.get(candidate.digest)
    if existing is not None and existing.error:
        return ClaimOutcome(won=False, entry=existing)
    if existing is None:
        return ClaimOutcome(won=True, entry=candidate)
    return ClaimOutcome(won=existing.rollout_uid == candidate.rollout_uid, entry=existing)


def prunable(entries: Mapping[str, LedgerEntry], now: datetime) -> list[str]:
    """ConfigMap data keys (not digests) of entries whose ``expires_at`` < ``now``, sorted.

    Safe because a Lease is rejected as expired from ``now >= expiresAt`` on, and its expiresAt is
    part of the digest: a re-created copy of a pruned lease is expired too.
    """
    return sorted(
        ledger_key(e.digest)
        for e in entries.values()
        if parse_time(e.expires_at, field="expiresAt") < now
    )


def _parse_entry(key: str, value: object) -> LedgerEntry:
    where = f"ledger entry {key!r}"
    try:
        digest = digest_from_key(key)
    except LedgerError as exc:
        raise LedgerError(f"{where}: {exc}") from None
    if not isinstance(value, str):
        raise LedgerError(f"{where}: value must be a string, got {type(value).__name__}")
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise LedgerError(f"{where}: value is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise LedgerError(f"{where}: value must be a JSON object")
    attrs: dict[str, str] = {}
    for field, attr in _FIELDS.items():
        v = obj.get(field)
        if not isinstance(v, str) or not v:
            raise LedgerError(f"{where}: field {field!r} must be a non-empty string")
        attrs[attr] = v
    if attrs["digest"] != digest:
        raise LedgerError(f"{where}: digest {attrs['digest']!r} does not match the key")
    for field in ("claimedAt", "expiresAt"):
        try:
            parse_time(obj[field], field=field)
        except ValueError as exc:
            raise LedgerError(f"{where}: {exc}") from None
    return LedgerEntry(**attrs)
