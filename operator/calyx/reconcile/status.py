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

from calyx.domain.merge_patch import merge_diff, prune_none

__all__ = ["merge_diff", "status_patch"]


def status_patch(prev: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch turning ``prev`` into ``new`` (None values dropped), or None if equal."""
    wanted = prune_none(new)
    patch = merge_diff(prune_none(prev), wanted)
    return patch or None
