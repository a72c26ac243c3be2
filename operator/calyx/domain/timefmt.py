"""Every time format Calyx reads and writes (docs/api.md, docs/signing.md §1).

One home, so each format is spelled once:

* :func:`format_time` -- ``2026-11-25T17:03:12Z``: ``signedAt``, ``expiresAt``, ledger times;
* :func:`format_time_ms` -- ``2026-11-25T17:03:12.345Z``: times the operator records in status
  (rollback timings, soak starts, analysis), audit records, the report;
* :func:`format_micro_time` -- ``2026-11-25T17:03:12.345678Z``, always six fraction digits:
  Kubernetes ``MicroTime`` (the leader-election Lease's ``acquireTime`` and ``renewTime``);
* :func:`format_k8s_time` -- Kubernetes ``metav1.Time``, microseconds only when there are any:
  the API models' timestamps and Events. It is defined in :mod:`calyx.api.common`, the bottom
  layer, which the pydantic models need and which cannot import this module;
* :func:`parse_signed_at` -- exactly ``YYYY-MM-DDTHH:MM:SSZ``;
* :func:`parse_time` -- strict RFC 3339 (``expiresAt``, ledger times);
* :func:`parse_stamp` -- a time the operator wrote in status (always with ``Z``), ``None`` when
  absent.

Why these and no others:

* ``signedAt`` is *signed*, so it has exactly one spelling: ``YYYY-MM-DDTHH:MM:SSZ``. Accepting
  ``+00:00`` or fractions there would let two byte-different statements describe the same moment,
  and a pipeline in another language would have to guess which one we rebuild.
* ``expiresAt`` (and ledger times) are read, never rebuilt, so any strict RFC 3339 time is fine:
  ``Z`` or a numeric offset (converted to UTC), optional fractional seconds (truncated to
  microseconds, which can only make a lease expire earlier, never later).
* Times the operator records in status (rollback timings, soak starts, analysis times) are
  sub-second and say so: milliseconds.

Everything returned is timezone-aware UTC; naive datetimes are refused because an implicit local
zone is how a lease expires an hour late on one machine.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from calyx.api.common import format_time as format_k8s_time

__all__ = [
    "format_k8s_time",
    "format_micro_time",
    "format_time",
    "format_time_ms",
    "parse_signed_at",
    "parse_stamp",
    "parse_time",
]

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_SIGNED_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", re.ASCII)


def format_time(dt: datetime) -> str:
    """Render ``dt`` as ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, dropping sub-second precision."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"refusing to format naive datetime {dt.isoformat()} (no timezone)")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_time_ms(dt: datetime) -> str:
    """Render ``dt`` as RFC 3339 in UTC with milliseconds, e.g. ``2026-11-25T17:03:12.345Z``."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"refusing naive datetime {dt.isoformat()} (no timezone)")
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_micro_time(dt: datetime) -> str:
    """A ``MicroTime`` as the API server writes one: RFC 3339 in UTC with six fraction digits."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(s: str | None) -> datetime | None:
    """A time the operator recorded in status (:func:`format_time_ms`); ``None`` when absent."""
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def parse_time(s: object, *, field: str = "time") -> datetime:
    """Parse a strict RFC 3339 date-time into an aware UTC datetime.

    ``field`` only names the value in the error message, e.g.
    ``expiresAt '2026-13-01' is not an RFC 3339 time (expected e.g. 2026-11-25T18:00:00Z)``.
    """
    if not isinstance(s, str):
        raise ValueError(
            f"{field} must be an RFC 3339 string such as 2026-11-25T18:00:00Z, "
            f"got {type(s).__name__}"
        )
    bad = f"{field} {_show(s)} is not an RFC 3339 time (expected e.g. 2026-11-25T18:00:00Z)"
    m = _RFC3339.fullmatch(s)
    if m is None:
        raise ValueError(bad)
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, offset = m.group(7), m.group(8)
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    try:
        if offset in ("Z", "z"):
            tz = UTC
        else:
            sign = 1 if offset[0] == "+" else -1
            oh, om = int(offset[1:3]), int(offset[4:6])
            if oh > 23 or om > 59:
                raise ValueError("offset out of range")
            tz = timezone(sign * timedelta(hours=oh, minutes=om))
        dt = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"{bad}: {exc}") from None
    return dt.astimezone(UTC)


def parse_signed_at(s: object) -> datetime:
    """Parse ``signedAt``: exactly ``YYYY-MM-DDTHH:MM:SSZ`` (the only spelling that is signed)."""
    if not isinstance(s, str) or _SIGNED_AT.fullmatch(s) is None:
        shown = _show(s) if isinstance(s, str) else type(s).__name__
        raise ValueError(
            f"signedAt {shown} must be exactly YYYY-MM-DDTHH:MM:SSZ (UTC, whole seconds)"
        )
    try:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"signedAt {_show(s)} is not a valid date: {exc}") from None


def _show(s: str) -> str:
    """Quote a user-supplied value for a one-line message, bounded so it cannot flood a status."""
    r = repr(s[:64] + "…" if len(s) > 64 else s)
    return r
