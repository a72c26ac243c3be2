"""Status writes as minimal JSON merge patches.

A merge patch cannot remove a key by omission, so keys the new status no longer has are sent
as null; and an unchanged status is not written at all, which keeps reconcile loops from
waking themselves up with their own no-op updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def status_patch(prev: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch turning ``prev`` into ``new`` (None values dropped), or None if equal."""
    wanted = {k: v for k, v in new.items() if v is not None}
    if dict(prev) == wanted:
        return None
    patch: dict[str, Any] = {k: None for k in prev if k not in wanted}
    patch.update({k: v for k, v in wanted.items() if prev.get(k) != v})
    return patch
