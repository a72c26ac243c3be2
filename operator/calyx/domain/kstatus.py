"""kstatus conditions ``Ready`` / ``Reconciling`` / ``Stalled`` from a summary phase (pure).

Generic tools do not know Calyx's phases: ``kubectl wait --for=condition=Ready``, Flux's health
checks (kstatus) and Argo CD only understand the standard condition types. So both kinds carry
the three conditions, derived here from the phase alone, so the Lease and Rollout controllers
cannot disagree about what "done" or "failed" means (docs/gitops.md, "Conditions").

* exactly one of the three is ``True`` for a known phase: ``Ready`` when the object reached its
  goal, ``Stalled`` when it ended without it and needs a person, ``Reconciling`` otherwise;
* ``reason`` is the phase (already CamelCase), so ``kubectl get -o wide`` style tools that show
  a reason show the same word as the ``PHASE`` column;
* each carries ``observedGeneration``: a reader compares it with ``metadata.generation`` to
  know whether the condition is about the spec it is looking at;
* ``lastTransitionTime`` moves only when a condition's ``status`` flips
  (:func:`calyx.domain.conditions.set_condition`), so "since when" stays true across passes.

A phase this module does not know (a newer operator's, or none yet) counts as in progress:
claiming ``Ready`` or ``Stalled`` for a state we cannot interpret would be a lie to a pipeline
waiting on it, while ``Reconciling`` only makes it wait.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from calyx.api.common import CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED
from calyx.domain.conditions import set_condition

__all__ = [
    "KSTATUS_TYPES",
    "LEASE_SUMMARY",
    "READY",
    "RECONCILING",
    "ROLLOUT_SUMMARY",
    "STALLED",
    "Kind",
    "Summary",
    "kstatus_conditions",
    "summary_for",
]

READY: Final = CONDITION_READY
RECONCILING: Final = CONDITION_RECONCILING
STALLED: Final = CONDITION_STALLED
KSTATUS_TYPES: Final = (READY, RECONCILING, STALLED)

Kind = Literal["Lease", "Rollout"]
Summary = Literal["Ready", "Reconciling", "Stalled"]

#: Lease: a verified lease is what a GitOps commit wants; it stays Ready once a Rollout has
#: consumed it (it did its job). Rejected and Expired never recover on their own: a new
#: signature or a new Lease is needed, so they are Stalled.
LEASE_SUMMARY: Final[Mapping[str, Summary]] = {
    "Pending": RECONCILING,
    "Verified": READY,
    "Consumed": READY,
    "Rejected": STALLED,
    "Expired": STALLED,
}

#: Rollout: only a completed rollout reached its goal. A rolled-back one is Stalled even though
#: the revert itself succeeded: the change the commit asked for is not running, and a pipeline
#: waiting for Ready must fail, not hang. Paused and WaitingForApproval are still in progress
#: (a person will move them on); Argo CD shows them as Suspended (docs/gitops.md).
ROLLOUT_SUMMARY: Final[Mapping[str, Summary]] = {
    "Pending": RECONCILING,  # waits for another Rollout's claim on the target (TargetBusy)
    "WaitingForLease": RECONCILING,
    "Progressing": RECONCILING,
    "Paused": RECONCILING,
    "WaitingForApproval": RECONCILING,
    "Promoting": RECONCILING,
    "Validating": RECONCILING,
    "RollingBack": RECONCILING,
    "Completed": READY,
    "RolledBack": STALLED,
    "Failed": STALLED,
}

_TABLES: Final[Mapping[str, Mapping[str, Summary]]] = {
    "Lease": LEASE_SUMMARY,
    "Rollout": ROLLOUT_SUMMARY,
}

#: What a condition reason may look like (API conventions: CamelCase, no spaces).
_REASON: Final = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")

_DEFAULT_MESSAGE: Final[Mapping[Summary, str]] = {
    READY: "{kind} is {phase}",
    RECONCILING: "{kind} is {phase}: in progress",
    STALLED: "{kind} is {phase}: it will not progress without a change",
}


def summary_for(kind: Kind, phase: str | None) -> Summary:
    """Which of the three conditions is True for ``phase`` (unknown or none: Reconciling)."""
    table = _TABLES.get(kind)
    if table is None:
        raise ValueError(f"kstatus: unknown kind {kind!r} (expected Lease or Rollout)")
    return table.get(phase or "", RECONCILING)


def kstatus_conditions(
    kind: Kind,
    phase: str | None,
    generation: int | None,
    now: str,
    conditions: Iterable[Mapping[str, Any]],
    message: str = "",
) -> list[dict[str, Any]]:
    """``conditions`` with ``Ready``, ``Reconciling`` and ``Stalled`` set for ``phase``.

    ``generation`` is the ``metadata.generation`` the phase was computed from (recorded as each
    condition's ``observedGeneration``); ``now`` the RFC 3339 stamp used when a condition's
    status flips; ``message`` says what the object is doing or why it stopped (a Rollout's
    ``status.message``, a Lease's verification reason) and goes on ``Ready`` and on the condition
    that is True. Other condition types are kept as they are, in order; new types are appended.
    """
    summary = summary_for(kind, phase)
    shown = phase or "Unknown"
    reason = shown if _REASON.match(shown) else "Unknown"
    text = message.strip() or _DEFAULT_MESSAGE[summary].format(kind=kind, phase=shown)
    out = [dict(c) for c in conditions]
    for type_ in KSTATUS_TYPES:
        true = type_ == summary
        out = set_condition(
            out,
            type_=type_,
            status="True" if true else "False",
            reason=reason,
            message=text if true or type_ == READY else "",
            now=now,
            generation=generation,
        )
    return out
