"""JSON merge patches (RFC 7386), pure: the diff that turns one document into another, and
applying one.

A merge patch merges nested objects and cannot remove a key by omission, so every key the new
document no longer has, at any depth, is sent as null. Lists are replaced whole. Used for the
status writes (``reconcile/status.py``) and by the Rollout planner, which applies what it changed
in the typed status to the stored one (``domain/rollout_plan.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def prune_none(value: Any) -> Any:
    """``value`` without None values in any object, at any depth."""
    if isinstance(value, Mapping):
        return {k: prune_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_none(v) for v in value]
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


def merge_apply(doc: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with ``patch`` applied (a new dict; ``doc`` is not changed)."""
    out = dict(doc)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_apply(out[k], v)
        else:
            out[k] = v
    return out
