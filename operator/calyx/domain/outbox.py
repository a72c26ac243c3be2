"""The announcement outbox (docs/audit.md, "Outbox"): a decision and its announcements are
stored in one status write; Events and audit records are posted from there and the entries are
cleared afterwards.

Exactly once, across crashes, without a lock: each entry has an id derived from the decision
(object uid, reason, message, time), the Event is created under the name ``<object>.<id>`` (a
repeat is refused by the API server as AlreadyExists) and the audit record carries the id in
``data.outboxId`` (a repeat finds it in the chain). Pure: ids are hashes, times are passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from calyx.api.common import OUTBOX_MAX_ITEMS
from calyx.domain import audit

OUTBOX = "outbox"
ID_KEY = "outboxId"
"""Key of the entry id in an audit record's ``data``."""


class Announcement(Protocol):
    """What the planners emit (rollout ``Event``, lease ``PlannedEvent``)."""

    @property
    def type(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def audit(self) -> str: ...


def entry_id(uid: str, reason: str, message: str, time: str, index: int) -> str:
    digest = hashlib.sha256(f"{uid}\x00{reason}\x00{message}\x00{time}\x00{index}".encode())
    return digest.hexdigest()[:16]


def enqueue(
    status: dict[str, Any], uid: str, events: Iterable[Announcement], time: str
) -> list[dict[str, Any]]:
    """Append ``events`` to ``status.outbox`` (kept in order, bounded) and return the new
    entries. Called by the planner, so the entries go out in the decision's own write."""
    pending = list(status.get(OUTBOX) or [])
    new = []
    for i, ev in enumerate(events):
        entry: dict[str, Any] = {
            "id": entry_id(uid, ev.reason, ev.message, time, len(pending) + i),
            "type": ev.type,
            "reason": ev.reason,
            "message": ev.message[:1024],
            "time": time,
        }
        if ev.audit:
            entry["audit"] = ev.audit
        new.append(entry)
    if new:
        status[OUTBOX] = (pending + new)[-OUTBOX_MAX_ITEMS:]
    return new


def pending(status: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [dict(e) for e in (status or {}).get(OUTBOX) or [] if isinstance(e, Mapping)]


def event_name(object_name: str, entry: Mapping[str, Any]) -> str:
    """The Event's name: fixed per entry, so posting twice is refused by the API server."""
    return f"{object_name}.{entry['id']}"


def recorded_ids(chain: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids of outbox entries that already have their audit record in ``chain``."""
    out = set()
    for rec in chain:
        data = rec.get("data") or {}
        if isinstance(data, Mapping) and data.get(ID_KEY):
            out.add(str(data[ID_KEY]))
    return out


def audit_record(
    chain: Sequence[Mapping[str, Any]], entry: Mapping[str, Any], obj: Mapping[str, Any]
) -> dict[str, Any]:
    """The entry's audit record after ``chain``: stamped with the decision's time and tagged
    with the entry id, so a replay produces the same record and is recognised."""
    return audit.append(
        chain,
        time=str(entry["time"]),
        event=entry.get("audit") or None,
        reason=str(entry["reason"]),
        type=str(entry["type"]),
        obj=obj,
        message=str(entry["message"]),
        data={ID_KEY: entry["id"]},
    )


def audit_records(
    chain: Sequence[Mapping[str, Any]],
    entries: Iterable[Mapping[str, Any]],
    obj: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One chained record per entry, continuing ``chain`` (a stored tail, or ``[]``)."""
    out: list[dict[str, Any]] = []
    for entry in entries:
        out.append(audit_record([*chain, *out][-1:], entry, obj))
    return out
