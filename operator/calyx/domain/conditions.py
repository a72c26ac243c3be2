"""Status conditions per the Kubernetes API conventions.

``lastTransitionTime`` moves only when ``status`` flips, so ``kubectl wait`` and dashboards see
real transitions, not every reconcile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    *,
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Return a new list with the condition ``type_`` set; other conditions keep their order."""
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        transition = cond.get("lastTransitionTime") if cond.get("status") == status else now
        out.append(_cond(type_, status, reason, message, transition or now, generation))
    if not found:
        out.append(_cond(type_, status, reason, message, now, generation))
    return out


def get_condition(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def _cond(
    type_: str, status: str, reason: str, message: str, when: str, generation: int | None
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def condition_field(status: Mapping[str, Any] | None, type_: str, key: str) -> str | None:
    """``status.conditions[type=type_].<key>`` as a string, or None when absent."""
    cond = get_condition((status or {}).get("conditions") or [], type_)
    return None if cond is None or cond.get(key) is None else str(cond.get(key))
