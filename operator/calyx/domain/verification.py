"""Lease verification: docs/signing.md §8 rules 1 to 4 as one pure function.

The controller calls :func:`verify_lease` before every mutation (promise 1), so it must be cheap,
deterministic and total: whatever an attacker or a typo puts into a Lease, the answer is a verdict
with a one-line reason, never an exception. Rule 5 (the Lease's ``constraints``) belongs to the
rollout planner.

Evaluation order vs. reporting order: rule 1's ``maxLeaseSeconds`` bound is relative to the newest
*valid* cosignature, which is rule 2's output, so every cosignature is judged first; failures are
then reported in rule order (1, 2, 3, 4) and the first one is the verdict's reason. All cosigner
verdicts are always returned so that ``status.cosigners`` explains every annotation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from calyx.domain.canonical import CanonicalError, canonical_json
from calyx.domain.ledger import LedgerEntry
from calyx.domain.signatures import (
    COSIGN_PREFIX,
    ApprovalVerdict,
    SignatureFormatError,
    check_signed_at,
    lease_digest,
    lease_statement,
    parse_cosign_annotation,
    sig_fingerprint,
    verify_approval,
    verify_statement,
)
from calyx.domain.timefmt import format_time, parse_signed_at, parse_time
from calyx.domain.trust import TrustStore

__all__ = [
    "ApprovalVerdict",
    "CosignerVerdict",
    "LeasePhase",
    "LeaseVerdict",
    "verify_approval",
    "verify_lease",
]

LeasePhase = Literal["Verified", "Rejected", "Expired", "Consumed"]


@dataclass(frozen=True)
class CosignerVerdict:
    """One ``cosign.calyx.io/<id>`` annotation, judged. ``reason`` is "" when valid.

    ``role`` is the role the annotation claims ("" if it could not be parsed). ``sig_sha256`` is
    :func:`~calyx.domain.signatures.sig_fingerprint` of the signature when it was well-formed; the
    controller stores it for valid ones and passes it back as ``previously_accepted``.
    """

    id: str
    role: str
    signed_at: str | None
    valid: bool
    reason: str
    sig_sha256: str = ""


@dataclass(frozen=True)
class LeaseVerdict:
    """The outcome for a Lease. ``rule`` is the first failing rule (1..4), ``None`` when valid;
    ``humans``/``agents`` count *valid* cosignatures by distinct key; ``digest`` is "" only when
    the spec has no canonical form."""

    valid: bool
    phase: LeasePhase
    digest: str
    rule: int | None
    reason: str
    cosigners: tuple[CosignerVerdict, ...]
    expires_at: datetime | None
    humans: int
    agents: int
    accepted: Mapping[str, str] = field(default_factory=dict)
    """signer id → sig fingerprint of each valid cosignature: the next ``previously_accepted``."""


def verify_lease(
    *,
    namespace: str,
    name: str,
    spec: Mapping[str, object],
    annotations: Mapping[str, str],
    trust: TrustStore,
    now: datetime,
    ledger: Mapping[str, LedgerEntry] | None = None,
    claimant_uid: str | None = None,
    previously_accepted: Mapping[str, str] | None = None,
) -> LeaseVerdict:
    """Verify a Lease against the trust store at ``now`` (tz-aware UTC).

    ``ledger`` maps digest → entry (see :func:`calyx.domain.ledger.parse_ledger`); ``claimant_uid``
    is the uid of the Rollout asking (an entry it holds itself is not a replay).
    ``previously_accepted`` maps signer id → sig fingerprint that an earlier verification accepted;
    such a signature skips the ``maxSignatureAgeSeconds`` check, which only applies at first
    verification (otherwise every rollout longer than the age limit would fail half-way).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    policy = trust.policy
    accepted_before = previously_accepted or {}

    # The spec's canonical form is needed for the digest and every statement; without it no
    # signature can be checked, so remember the reason once (rule 2).
    canon_error = ""
    digest = ""
    if not isinstance(spec, Mapping):
        spec = {}
        canon_error = "spec is not an object"
    else:
        try:
            digest = lease_digest(namespace, name, spec)
        except CanonicalError:
            try:  # again, on the spec alone, so the error names "spec.…" not "$.spec.…"
                canonical_json(spec, root="spec")
            except CanonicalError as exc:
                canon_error = f"spec cannot be canonicalised, so no signature can match: {exc}"
            else:
                canon_error = "namespace or name cannot be canonicalised"

    # Rule 2, evaluated first because rule 1 needs the newest valid signedAt.
    verdicts: list[CosignerVerdict] = []
    counted_keys: dict[bytes, str] = {}
    for key in sorted(k for k in annotations if k.startswith(COSIGN_PREFIX)):
        cv = _judge_cosignature(
            key,
            annotations[key],
            namespace=namespace,
            name=name,
            spec=spec,
            trust=trust,
            now=now,
            canon_error=canon_error,
            accepted_before=accepted_before,
        )
        if cv.valid:
            # Rule 3's "distinct public key": the trust store refuses duplicate keys, but a store
            # built in code might not, and one key must never be two votes or both roles.
            public_key = trust.signers[cv.id].public_key
            holder = counted_keys.get(public_key)
            if holder is not None:
                cv = replace(
                    cv,
                    valid=False,
                    reason=f"same public key as signer {holder!r}, which is already counted",
                )
            else:
                counted_keys[public_key] = cv.id
        verdicts.append(cv)

    valid = [v for v in verdicts if v.valid]
    humans = sum(1 for v in valid if v.role == "human")
    agents = sum(1 for v in valid if v.role == "agent")
    accepted = {v.id: v.sig_sha256 for v in valid}
    expires_at: datetime | None = None

    def result(phase: LeasePhase, rule: int | None, reason: str) -> LeaseVerdict:
        return LeaseVerdict(
            valid=phase == "Verified",
            phase=phase,
            digest=digest,
            rule=rule,
            reason=reason,
            cosigners=tuple(verdicts),
            expires_at=expires_at,
            humans=humans,
            agents=agents,
            accepted=accepted,
        )

    # Rule 1: expiry and the maxLeaseSeconds bound.
    if "expiresAt" not in spec:
        return result("Rejected", 1, "spec.expiresAt is missing")
    try:
        expires_at = parse_time(spec["expiresAt"], field="expiresAt")
    except ValueError as exc:
        return result("Rejected", 1, str(exc))
    if now >= expires_at:
        return result("Expired", 1, f"lease expired at {format_time(expires_at)}")
    if valid:
        newest = max(parse_signed_at(v.signed_at) for v in valid)
        limit = newest + timedelta(seconds=policy.max_lease_seconds)
        if expires_at > limit:
            return result(
                "Rejected",
                1,
                f"expiresAt {format_time(expires_at)} is more than maxLeaseSeconds "
                f"{policy.max_lease_seconds} after the newest valid signature "
                f"({format_time(newest)}); latest allowed is {format_time(limit)}",
            )

    # Rule 2: only a lease-wide failure stops here; single bad cosignatures just do not count.
    if canon_error:
        return result("Rejected", 2, canon_error)

    # Rule 3: enough valid cosignatures of each role.
    shortfalls = []
    for role, have, need in (("human", humans, policy.humans), ("agent", agents, policy.agents)):
        if have < need:
            plural = "" if need == 1 else "s"
            shortfalls.append(f"needs {need} valid {role} cosignature{plural}, has {have}")
    if shortfalls:
        invalid = [f"{v.id}: {v.reason}" for v in verdicts if not v.valid]
        if not verdicts:
            detail = f"no {COSIGN_PREFIX}* annotations"
        elif invalid:
            detail = "; ".join(invalid)
        else:
            detail = "valid: " + ", ".join(f"{v.id} ({v.role})" for v in valid)
        return result("Rejected", 3, "; ".join(shortfalls) + f" ({detail})")

    # Rule 4: not consumed by another Rollout.
    entry = (ledger or {}).get(digest)
    if entry is not None and entry.error:
        return result(
            "Rejected",
            4,
            f"the ledger entry for this digest is unreadable ({entry.error}); refusing until "
            "it is repaired (docs/security.md)",
        )
    if entry is not None and not (claimant_uid and claimant_uid == entry.rollout_uid):
        return result("Consumed", 4, f"consumed by Rollout {entry.namespace}/{entry.rollout}")

    return result("Verified", None, "")


def _judge_cosignature(
    key: str,
    value: str,
    *,
    namespace: str,
    name: str,
    spec: Mapping[str, object],
    trust: TrustStore,
    now: datetime,
    canon_error: str,
    accepted_before: Mapping[str, str],
) -> CosignerVerdict:
    """Rule 2 for one annotation: first failing check is the reason."""
    raw_id = key[len(COSIGN_PREFIX) :]
    try:
        ann = parse_cosign_annotation(key, value)
    except SignatureFormatError as exc:
        return CosignerVerdict(
            id=raw_id[:63], role="", signed_at=None, valid=False, reason=str(exc)
        )
    fingerprint = sig_fingerprint(ann.sig)

    def bad(reason: str) -> CosignerVerdict:
        return CosignerVerdict(
            id=ann.signer,
            role=ann.role,
            signed_at=ann.signed_at,
            valid=False,
            reason=reason,
            sig_sha256=fingerprint,
        )

    signer = trust.signers.get(ann.signer)
    if signer is None:
        return bad(f"unknown signer {ann.signer!r} (not in the trust store)")
    if signer.role != ann.role:
        return bad(
            f"annotation claims role {ann.role!r} but signer {ann.signer!r} is "
            f"{signer.role!r} in the trust store"
        )
    if not signer.allows(namespace):
        shown = ", ".join(signer.namespaces) if signer.namespaces else "none"
        return bad(
            f"signer {ann.signer!r} is not allowed in namespace {namespace!r} (allowed: {shown})"
        )
    if canon_error:
        return bad("spec cannot be canonicalised")
    statement = lease_statement(namespace, name, spec, ann.signer, ann.role, ann.signed_at)
    if not verify_statement(statement, ann.sig, signer.public_key):
        return bad("signature does not match this lease")
    policy = trust.policy
    skip_age = accepted_before.get(ann.signer) == fingerprint
    reason = check_signed_at(
        parse_signed_at(ann.signed_at),
        now,
        clock_skew_seconds=policy.clock_skew_seconds,
        max_age_seconds=None if skip_age else policy.max_signature_age_seconds,
    )
    if reason:
        return bad(reason)
    return CosignerVerdict(
        id=ann.signer,
        role=ann.role,
        signed_at=ann.signed_at,
        valid=True,
        reason="",
        sig_sha256=fingerprint,
    )
