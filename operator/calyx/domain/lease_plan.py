"""Plans a Lease's status and Events from a verification verdict (pure; docs/api.md, docs/audit.md).

Events are derived by comparing the new verdict with the status already stored in the
cluster, so a restarted operator does not announce the same transition twice: the previous
status *is* the memory of what has been announced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from calyx.domain.conditions import condition_field, set_condition
from calyx.domain.kstatus import kstatus_conditions
from calyx.domain.verification import LeaseVerdict


@dataclass(frozen=True)
class PlannedEvent:
    type: str  # Normal | Warning
    reason: str  # CamelCase (docs/operations.md, "Events")
    message: str
    audit: str = ""  # seed event name for the audit chain, e.g. "lease_event.COSIGNED"


@dataclass(frozen=True)
class LeasePlan:
    status: dict[str, Any]
    events: list[PlannedEvent] = field(default_factory=list)


def previously_accepted(status: Mapping[str, Any] | None) -> dict[str, str]:
    """Signer id → fingerprint of the signature an earlier verification accepted."""
    out: dict[str, str] = {}
    for c in (status or {}).get("cosigners") or []:
        if c.get("valid") and c.get("sigSha256"):
            out[str(c["id"])] = str(c["sigSha256"])
    return out


def plan_lease_status(
    *,
    verdict: LeaseVerdict,
    previous: Mapping[str, Any] | None,
    generation: int | None,
    now: str,
    consumed_by: Mapping[str, str] | None,
) -> LeasePlan:
    """New status for the Lease and the Events that announce what changed since ``previous``."""
    prev = dict(previous or {})
    prev_cosigners = {str(c.get("id")): c for c in prev.get("cosigners") or []}
    cosigners: list[dict[str, Any]] = []
    events: list[PlannedEvent] = []
    for v in verdict.cosigners:
        entry: dict[str, Any] = {"id": v.id, "role": v.role, "valid": v.valid, "reason": v.reason}
        if v.signed_at:
            entry["signedAt"] = v.signed_at
        if v.sig_sha256:
            entry["sigSha256"] = v.sig_sha256
        cosigners.append(entry)
        old = prev_cosigners.get(v.id)
        same_sig = old is not None and old.get("sigSha256") == entry.get("sigSha256")
        if v.valid and not (same_sig and old is not None and old.get("valid")):
            events.append(
                PlannedEvent(
                    "Normal",
                    "Cosigned",
                    f"{v.id} ({v.role}) cosigned {verdict.digest[:19]}… at {v.signed_at}",
                    "lease_event.COSIGNED",
                )
            )
        if not v.valid and not (
            same_sig and old is not None and not old.get("valid") and old.get("reason") == v.reason
        ):
            events.append(PlannedEvent("Warning", "SignatureInvalid", f"{v.id}: {v.reason}"))

    phase = verdict.phase
    status: dict[str, Any] = {
        "phase": phase,
        "digest": verdict.digest,
        "cosigners": cosigners,
        "observedGeneration": generation,
    }
    if consumed_by:
        status["consumedBy"] = dict(consumed_by)
    cond_status, reason, message = _verified_condition(verdict)
    status["conditions"] = set_condition(
        prev.get("conditions") or [],
        type_="Verified",
        status=cond_status,
        reason=reason,
        message=message,
        now=now,
        generation=generation,
    )
    # A consumed Lease did its job: when it later expires it stays Ready for GitOps health
    # (a finished deploy must not turn the app red); its phase still says Expired.
    summary_phase = "Consumed" if consumed_by and phase == "Expired" else phase
    status["conditions"] = kstatus_conditions(
        "Lease", summary_phase, generation, now, status["conditions"], message
    )
    if phase != prev.get("phase"):
        events.extend(_phase_events(verdict))
    return LeasePlan(status=status, events=events)


def plan_unverifiable(
    *,
    previous: Mapping[str, Any] | None,
    generation: int | None,
    now: str,
    reason: str,
    message: str,
) -> LeasePlan:
    """Status when verification cannot run (trust store missing or broken, spec invalid).

    Fails closed: the phase leaves ``Verified`` so no Rollout acts on it, and the condition
    says exactly what to fix.
    """
    prev = dict(previous or {})
    phase = "Rejected" if reason == "InvalidSpec" else "Pending"
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": generation,
        "cosigners": prev.get("cosigners") or [],
        "conditions": set_condition(
            prev.get("conditions") or [],
            type_="Verified",
            status="False" if phase == "Rejected" else "Unknown",
            reason=reason,
            message=message,
            now=now,
            generation=generation,
        ),
    }
    status["conditions"] = kstatus_conditions(
        "Lease", phase, generation, now, status["conditions"], message
    )
    if prev.get("digest"):
        status["digest"] = prev["digest"]
    events = []
    if phase != prev.get("phase") or condition_field(prev, "Verified", "message") != message:
        events.append(
            PlannedEvent("Warning", "LeaseRejected" if phase == "Rejected" else reason, message)
        )
    return LeasePlan(status=status, events=events)


def _verified_condition(verdict: LeaseVerdict) -> tuple[str, str, str]:
    if verdict.phase == "Verified":
        signers = ", ".join(f"{c.id} ({c.role})" for c in verdict.cosigners if c.valid)
        return "True", "Verified2Key", f"cosigned by {signers}"
    reasons = {"Rejected": "Rejected", "Expired": "Expired", "Consumed": "Consumed"}
    return "False", reasons.get(verdict.phase, verdict.phase), verdict.reason


def _phase_events(verdict: LeaseVerdict) -> list[PlannedEvent]:
    if verdict.phase == "Verified":
        signers = ", ".join(f"{c.id} ({c.role})" for c in verdict.cosigners if c.valid)
        return [
            PlannedEvent(
                "Normal",
                "Verified2Key",
                f"two-key verified: {signers}; digest {verdict.digest[:19]}…",
                "lease_event.VERIFIED_2KEY",
            )
        ]
    if verdict.phase == "Expired":
        return [PlannedEvent("Warning", "LeaseExpired", verdict.reason)]
    if verdict.phase == "Rejected":
        return [PlannedEvent("Warning", "LeaseRejected", verdict.reason)]
    if verdict.phase == "Consumed":
        return [PlannedEvent("Normal", "LeaseConsumed", verdict.reason)]
    return []
