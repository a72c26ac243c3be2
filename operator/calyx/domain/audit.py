"""The hash-chained audit trail: one JSON record per decision (docs/audit.md; promise 5 of
docs/design.md).

Kubernetes Events expire after about an hour; audit records do not. Each record carries the
hash of its predecessor (``prev``) and its own ``hash``, so removing, inserting, reordering or
editing a record breaks the chain where it happened and :func:`verify` says so. Records are
hashed over their canonical JSON (docs/signing.md §2,
:func:`calyx.domain.canonical.canonical_json`), so the chain can be checked in any language
(docs/audit.md has a ``jq`` + ``sha256sum`` script).

Record (every field always present)::

    {"seq": 7, "time": "2026-11-25T17:03:12.345Z", "event": "deploy_event.CANARY_PROMOTED",
     "reason": "CanaryPromoted", "type": "Normal",
     "object": {"kind": "Rollout", "namespace": "shop", "name": "checkout-2-3-1", "uid": "..."},
     "message": "...", "data": {...}, "prev": "sha256:...", "hash": "sha256:..."}

``hash = "sha256:" + hex(sha256(canonical_json(record without "hash"))))``; the first record's
``prev`` is :data:`GENESIS`. Records contain no floats (canonical JSON has none): floats in
``data`` are stored as their decimal string. A stored chain may be a *tail* (the ConfigMap keeps
the newest records, see :func:`tail`): it verifies from its first record's ``prev`` (the anchor).

Pure: times are passed in; nothing is read or written here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from calyx.domain.canonical import CanonicalError, canonical_json
from calyx.domain.timefmt import format_time_ms

__all__ = [
    "FIELDS",
    "GENESIS",
    "SEED_EVENTS",
    "AuditFormatError",
    "Tail",
    "VerifyResult",
    "append",
    "event_name",
    "head",
    "lease_records",
    "log_line",
    "parse_jsonl",
    "record_hash",
    "tail",
    "to_jsonl",
    "verify",
]

GENESIS: Final = "sha256:" + "0" * 64
"""``prev`` of the first record of a chain."""

FIELDS: Final = (
    "seq",
    "time",
    "event",
    "reason",
    "type",
    "object",
    "message",
    "data",
    "prev",
    "hash",
)

MAX_MESSAGE_CHARS: Final = 1024
"""Like a Kubernetes Event message: one readable line, bounded."""

MAX_DATA_BYTES: Final = 2048
"""``data`` is a small dict of facts; anything bigger is replaced by a note saying so."""

#: The seed event names and the Kubernetes Event reasons they go with (docs/design.md §Report and
#: audit, docs/audit.md).
SEED_EVENTS: Final[Mapping[str, str]] = {
    "Cosigned": "lease_event.COSIGNED",
    "Verified2Key": "lease_event.VERIFIED_2KEY",
    "DeployStarted": "deploy_event.STARTED",
    "CanaryPromoted": "deploy_event.CANARY_PROMOTED",
    "RolledBack": "deploy_event.ROLLED_BACK",
    "DeployCompleted": "deploy_event.COMPLETED",
    "RollbackComplete": "rollback_event.COMPLETE",
}

#: Decisions without a seed name that belong to a more specific family than their object kind.
DERIVED_EVENTS: Final[Mapping[str, str]] = {
    "ThresholdBreached": "analysis_event.BREACH",
    "NoData": "analysis_event.NO_DATA",
    "AnalysisPassed": "analysis_event.PASS",
    "ApprovalAccepted": "approval_event.ACCEPTED",
    "ApprovalRejected": "approval_event.REJECTED",
    "WaitingForApproval": "approval_event.WAITING",
    "SignatureInvalid": "lease_event.SIGNATURE_INVALID",
    "LeaseRejected": "lease_event.REJECTED",
    "LeaseExpired": "lease_event.EXPIRED",
    "LeaseNotVerified": "lease_event.NOT_VERIFIED",
    "PostDeployStarted": "validation_event.STARTED",
    "PostDeployPassed": "validation_event.PASSED",
    "PostDeployFailed": "validation_event.FAILED",
}

_HASH_RE: Final = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_CAMEL_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


class AuditFormatError(ValueError):
    """A stored chain is not readable (bad JSON line); the message names the line."""


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify`."""

    ok: bool
    index: int | None
    """Index (0-based, in the list given) of the first bad record; None when ok."""
    reason: str
    """One line: why that record is bad, or a summary when ok."""
    head: str
    """Hash of the last record (the anchor when the chain is empty)."""
    count: int
    """Number of records checked."""


# --------------------------------------------------------------------------------------------
# Building records
# --------------------------------------------------------------------------------------------


def event_name(reason: str, kind: str = "Rollout") -> str:
    """The audit event name for a Kubernetes Event reason.

    Seed reasons map as docs/design.md §Report and audit says (``DeployStarted`` ->
    ``deploy_event.STARTED``); other known reasons have a family (``ThresholdBreached`` ->
    ``analysis_event.BREACH``); anything else is ``<lease|deploy>_event.<UPPER_SNAKE_REASON>`` by
    the object's kind (``Paused`` on a Rollout -> ``deploy_event.PAUSED``).
    """
    if reason in SEED_EVENTS:
        return SEED_EVENTS[reason]
    if reason in DERIVED_EVENTS:
        return DERIVED_EVENTS[reason]
    family = "lease_event" if kind == "Lease" else "deploy_event"
    snake = _CAMEL_BOUNDARY.sub("_", reason).upper() or "UNKNOWN"
    return f"{family}.{snake}"


def _object_ref(obj: Mapping[str, Any]) -> dict[str, str]:
    """``{kind, namespace, name, uid}`` from a whole Kubernetes object or from such a ref."""
    meta = obj.get("metadata")
    src: Mapping[str, Any] = meta if isinstance(meta, Mapping) else obj
    return {
        "kind": str(obj.get("kind") or ""),
        "namespace": str(src.get("namespace") or ""),
        "name": str(src.get("name") or ""),
        "uid": str(src.get("uid") or ""),
    }


def _plain(value: Any) -> Any:
    """JSON types only, floats as decimal strings (canonical JSON refuses floats)."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return format_time_ms(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _bounded_data(data: Mapping[str, Any] | None) -> dict[str, Any]:
    plain = _plain(dict(data or {}))
    try:
        size = len(canonical_json(plain))
    except CanonicalError as exc:
        return {"omitted": f"data not representable: {exc}"[:200]}
    if size > MAX_DATA_BYTES:
        return {
            "omitted": f"data of {size} bytes exceeds {MAX_DATA_BYTES}",
            "keys": sorted(plain)[:20],
        }
    result: dict[str, Any] = plain
    return result


def record_hash(record: Mapping[str, Any]) -> str:
    """``"sha256:" + hex(sha256(canonical_json(record without "hash")))``."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()


def head(chain: Sequence[Mapping[str, Any]]) -> str:
    """The hash of the last record (:data:`GENESIS` for an empty chain)."""
    if not chain:
        return GENESIS
    return str(chain[-1].get("hash", GENESIS))


def append(
    chain: Sequence[Mapping[str, Any]],
    *,
    time: dt.datetime | str,
    event: str | None,
    reason: str,
    type: str,
    obj: Mapping[str, Any],
    message: str,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The next record after ``chain`` (which is not modified): append it yourself.

    ``event`` empty or None derives the name from ``reason`` (:func:`event_name`). ``obj`` is the
    Kubernetes object the decision is about (or a ``{kind, namespace, name, uid}`` ref).
    ``chain`` may be a stored tail: only its last record is used.
    """
    last = chain[-1] if chain else None
    seq = int(last["seq"]) + 1 if last is not None else 1
    ref = _object_ref(obj)
    record: dict[str, Any] = {
        "seq": seq,
        "time": format_time_ms(time) if isinstance(time, dt.datetime) else str(time),
        "event": event or event_name(reason, ref["kind"]),
        "reason": reason,
        "type": type,
        "object": ref,
        "message": message[:MAX_MESSAGE_CHARS],
        "data": _bounded_data(data),
        "prev": head(chain) if last is not None else GENESIS,
    }
    record["hash"] = record_hash(record)
    return record


def lease_records(
    chain: Sequence[Mapping[str, Any]],
    *,
    lease: Mapping[str, Any],
    time: dt.datetime | str,
) -> list[dict[str, Any]]:
    """The Lease's story for a Rollout's chain: one ``lease_event.COSIGNED`` per valid cosigner
    and one ``lease_event.VERIFIED_2KEY``, chained after ``chain``.

    Lease decisions happen before a Rollout (and its report) exists, so the reconciler adds them
    to the Rollout's chain when it first verifies the Lease (before ``deploy_event.STARTED``).
    Idempotent: returns ``[]`` when ``chain`` already records the Lease's digest as verified.
    """
    raw = lease.get("status")
    status: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    digest = str(status.get("digest") or "")
    for rec in chain:
        if rec.get("event") == SEED_EVENTS["Verified2Key"] and (
            isinstance(rec.get("data"), Mapping) and rec["data"].get("digest") == digest
        ):
            return []
    name = _object_ref(lease)["name"]
    out: list[dict[str, Any]] = []
    roles: dict[str, int] = {}
    for c in status.get("cosigners") or []:
        if not isinstance(c, Mapping) or c.get("valid") is not True:
            continue
        role = str(c.get("role") or "")
        roles[role] = roles.get(role, 0) + 1
        out.append(
            append(
                [*chain, *out],
                time=time,
                event=SEED_EVENTS["Cosigned"],
                reason="Cosigned",
                type="Normal",
                obj={**dict(lease), "kind": lease.get("kind") or "Lease"},
                message=f"{c.get('id')} ({role}) cosigned lease {name}",
                data={
                    "signer": str(c.get("id") or ""),
                    "role": role,
                    "signedAt": str(c.get("signedAt") or ""),
                    "digest": digest,
                },
            )
        )
    humans, agents = roles.get("human", 0), roles.get("agent", 0)
    out.append(
        append(
            [*chain, *out],
            time=time,
            event=SEED_EVENTS["Verified2Key"],
            reason="Verified2Key",
            type="Normal",
            obj={**dict(lease), "kind": lease.get("kind") or "Lease"},
            message=(
                f"lease {name} verified: {humans} human and {agents} agent cosignature(s), "
                f"digest {digest}"
            ),
            data={"digest": digest, "humans": humans, "agents": agents},
        )
    )
    return out


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


def _where(i: int, rec: Mapping[str, Any]) -> str:
    seq = rec.get("seq") if isinstance(rec, Mapping) else None
    return f"record {i} (seq {seq})" if isinstance(seq, int) else f"record {i}"


def _shape_problem(rec: Any) -> str | None:
    if not isinstance(rec, Mapping):
        return "is not a JSON object"
    missing = [f for f in FIELDS if f not in rec]
    if missing:
        return "lacks field(s) " + ", ".join(missing)
    if isinstance(rec["seq"], bool) or not isinstance(rec["seq"], int):
        return "has a non-integer seq"
    for key in ("prev", "hash"):
        if not isinstance(rec[key], str) or not _HASH_RE.fullmatch(rec[key]):
            return f"has a malformed {key} (expected sha256:<64 hex>)"
    return None


def verify(
    chain: Sequence[Any],
    *,
    anchor: str | None = GENESIS,
    start_seq: int | None = 1,
) -> VerifyResult:
    """Check a chain; the first problem found is reported with its index.

    ``anchor`` is the hash the first record's ``prev`` must equal and ``start_seq`` its ``seq``:
    :data:`GENESIS` and 1 for a whole chain. To check a stored tail pass the hash of the record
    before it (from ``report.json``'s ``audit.anchor``, or the operator log), or ``None`` to take
    the first record's own ``prev`` and ``seq`` on trust (then only the tail's internal
    consistency is proven).

    Detects: an edited record (hash mismatch), an edited record whose hash was recomputed (the
    next record's ``prev`` no longer matches), a removed, inserted or reordered record (``seq``
    not consecutive, ``prev`` mismatch). It cannot detect the removal of records at the *end*, or
    a whole chain recomputed by someone who can rewrite it: compare :func:`head` with an
    independent copy (docs/audit.md).
    """
    prev = anchor
    expect_seq = start_seq
    for i, rec in enumerate(chain):
        problem = _shape_problem(rec)
        if problem is not None:
            return _bad(i, f"{_where(i, rec)} {problem}", prev, i)
        seq = int(rec["seq"])
        if expect_seq is not None and seq != expect_seq:
            if i > 0 and seq < expect_seq:
                why = "records are out of order, duplicated or inserted"
            elif i > 0:
                why = f"{seq - expect_seq} record(s) missing before it, or records out of order"
            else:
                why = "the chain does not start where expected"
            return _bad(
                i, f"{_where(i, rec)}: seq {seq} where {expect_seq} expected: {why}", prev, i
            )
        if prev is not None and rec["prev"] != prev:
            what = "the anchor" if i == 0 else f"the hash of record {i - 1} (seq {seq - 1})"
            return _bad(
                i,
                f"{_where(i, rec)}: prev {rec['prev'][:19]}… does not match {what} "
                f"{prev[:19]}…: a record before it was modified, removed or inserted",
                prev,
                i,
            )
        try:
            computed = record_hash(rec)
        except CanonicalError as exc:
            return _bad(i, f"{_where(i, rec)} is not canonical JSON: {exc}", prev, i)
        if computed != rec["hash"]:
            return _bad(
                i,
                f"{_where(i, rec)}: hash does not match its content (the record was modified)",
                prev,
                i,
            )
        prev = computed
        expect_seq = seq + 1
    last = head(chain) if chain else (anchor or GENESIS)
    if chain:
        first = chain[0]["seq"]
        summary = f"{len(chain)} record(s), seq {first}-{first + len(chain) - 1}"
    else:
        summary = "empty chain"
    return VerifyResult(True, None, summary, last, len(chain))


def _bad(i: int, reason: str, prev: str | None, count: int) -> VerifyResult:
    return VerifyResult(False, i, reason, prev or GENESIS, count)


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


def log_line(record: Mapping[str, Any]) -> str:
    """The record as one canonical JSON line, for stdout (the independent witness)."""
    return canonical_json(record).decode("utf-8")


def to_jsonl(chain: Sequence[Mapping[str, Any]]) -> str:
    """One canonical JSON record per line (``audit.jsonl``), newline-terminated."""
    return "".join(log_line(r) + "\n" for r in chain)


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """Read ``audit.jsonl``; blank lines are skipped, anything else must be a JSON object."""
    out: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AuditFormatError(f"audit.jsonl line {n}: not JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise AuditFormatError(f"audit.jsonl line {n}: not a JSON object")
        out.append(value)
    return out


@dataclass(frozen=True)
class Tail:
    """The newest records of a chain that fit a budget, and what was left out."""

    records: list[dict[str, Any]]
    anchor: str
    """``prev`` of the first kept record (:data:`GENESIS` when nothing was dropped)."""
    dropped: int
    """Records before the kept ones (``seq`` 1 .. dropped)."""


def tail(chain: Sequence[Mapping[str, Any]], *, max_records: int, max_bytes: int) -> Tail:
    """Keep the newest records, contiguous, within ``max_records`` and ``max_bytes`` of JSONL.

    The kept tail still verifies from :attr:`Tail.anchor` (the hash of the last dropped record),
    which the report records; the dropped records remain in the operator's log.
    """
    kept: list[dict[str, Any]] = []
    size = 0
    for rec in reversed(chain):
        n = len(log_line(rec).encode("utf-8")) + 1
        if len(kept) >= max_records or size + n > max_bytes:
            break
        kept.append(dict(rec))
        size += n
    kept.reverse()
    if kept:
        return Tail(kept, str(kept[0].get("prev", GENESIS)), _seq(kept[0]) - 1)
    last = chain[-1] if chain else None
    return Tail([], head(chain), _seq(last) if last is not None else 0)


def _seq(rec: Mapping[str, Any]) -> int:
    seq = rec.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
