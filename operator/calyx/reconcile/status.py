"""Status writes as minimal JSON merge patches (RFC 7386).

A merge patch merges nested objects and cannot remove a key by omission, so every key the new
status no longer has — at any depth — is sent as null (a stale ``noDataSince`` left inside
``lastAnalysis.state`` would make the next no-data streak look ancient). Lists are replaced
whole, as merge patch does. An unchanged status is not written at all, which keeps reconcile
loops from waking themselves up with their own no-op updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _prune_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _prune_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_none(v) for v in value]
    return value


def merge_diff(prev: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``prev`` into ``new`` (both without None values)."""
    patch: dict[str, Any] = {k: None for k in prev if k not in new}
    for k, v in new.items():
        old = prev.get(k)
        if isinstance(v, Mapping) and isinstance(old, Mapping):
            sub = merge_diff(old, v)
            if sub:
                patch[k] = sub
        elif old != v or k not in prev:
            patch[k] = v
    return patch


def status_patch(prev: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch turning ``prev`` into ``new`` (None values dropped), or None if equal."""
    wanted = _prune_none(new)
    patch = merge_diff(_prune_none(prev), wanted)
    return patch or None
