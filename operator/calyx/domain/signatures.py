"""Statements, signatures and annotation formats (docs/signing.md §1, §2, §5).

A cosignature is an Ed25519 signature over the DSSE pre-authentication encoding (PAE) of a small
JSON *statement* rebuilt from the live object. We sign a statement rather than the object because
the object as stored carries server-set fields (uid, resourceVersion, managedFields) that a pipeline
signing a file before ``git commit`` cannot know; the PAE's payload type stops a signature made for
some other protocol with the same key from being replayed as a Calyx statement.

Everything here is pure and deterministic; the trust-store and ledger decisions live in
:mod:`calyx.domain.verification` and :func:`verify_approval` below.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from calyx.domain.canonical import CanonicalError, canonical_json
from calyx.domain.signers import PUBLIC_KEY_LEN, ROLES, SIGNER_ID_RE, Role, signer_id_error
from calyx.domain.timefmt import format_time, parse_signed_at
from calyx.domain.trust import TrustStore

__all__ = [
    "APPROVE_PREFIX",
    "APPROVE_TIER_TYPE",
    "COSIGN_PREFIX",
    "LEASE_COSIGN_TYPE",
    "PAYLOAD_TYPE",
    "ROLES",
    "SIGNATURE_LEN",
    "SIGNER_ID_RE",
    "ApprovalAnnotation",
    "ApprovalVerdict",
    "CosignAnnotation",
    "Role",
    "SignatureFormatError",
    "approval_annotation_value",
    "approval_statement",
    "check_signed_at",
    "cosign_annotation_value",
    "lease_digest",
    "lease_statement",
    "pae",
    "parse_approval_annotation",
    "parse_cosign_annotation",
    "public_key_from_seed",
    "sig_fingerprint",
    "sign_statement",
    "signer_id_error",
    "verify_approval",
    "verify_statement",
]

PAYLOAD_TYPE = b"application/vnd.calyx.statement+json"
COSIGN_PREFIX = "cosign.calyx.io/"
APPROVE_PREFIX = "approve.calyx.io/"
LEASE_COSIGN_TYPE = "calyx.io/lease-cosign/v1"
APPROVE_TIER_TYPE = "calyx.io/approve-tier/v1"

SIGNATURE_LEN = 64
SEED_LEN = 32


class SignatureFormatError(ValueError):
    """An annotation is not in the documented format; the message is one line for a status."""


# --------------------------------------------------------------------------- bytes and statements


def lease_digest(namespace: str, name: str, spec: Mapping[str, object]) -> str:
    """``sha256:<hex>`` of the canonical ``{namespace, name, spec}``: the identity of a Lease.

    The ledger is keyed by it, so two Leases with the same content in the same place are the same
    authorization and can be consumed only once. Raises :class:`CanonicalError` (e.g. floats).
    """
    body = canonical_json({"namespace": namespace, "name": name, "spec": spec})
    return "sha256:" + hashlib.sha256(body).hexdigest()


def pae(body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``body`` with Calyx's payload type."""
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE, len(body), body)


def lease_statement(
    namespace: str,
    name: str,
    spec: Mapping[str, object],
    signer: str,
    role: Role | str,
    signed_at: str,
) -> dict[str, object]:
    """The statement a lease cosignature covers (§3.2); ``role`` is what the annotation claims."""
    return {
        "type": LEASE_COSIGN_TYPE,
        "namespace": namespace,
        "name": name,
        "spec": spec,
        "signer": signer,
        "role": role,
        "signedAt": signed_at,
    }


def approval_statement(
    namespace: str,
    rollout: str,
    lease_digest: str,
    to_weight: int,
    signer: str,
    signed_at: str,
) -> dict[str, object]:
    """The statement a tier approval covers (§3.3). Binding the lease digest and the target weight
    means an approval can open exactly one gate of exactly one change."""
    return {
        "type": APPROVE_TIER_TYPE,
        "namespace": namespace,
        "name": rollout,
        "leaseDigest": lease_digest,
        "toWeight": to_weight,
        "signer": signer,
        "role": "human",
        "signedAt": signed_at,
    }


def public_key_from_seed(seed: bytes) -> bytes:
    """The 32-byte Ed25519 public key for a 32-byte seed (what ``calyx keygen`` prints)."""
    return bytes(_signing_key(seed).verify_key)


def sign_statement(statement: Mapping[str, object], seed: bytes) -> str:
    """Standard base64 of the Ed25519 signature over ``pae(canonical_json(statement))``."""
    message = pae(canonical_json(statement))
    signature = _signing_key(seed).sign(message).signature
    return base64.b64encode(signature).decode("ascii")


def verify_statement(statement: Mapping[str, object], sig_b64: str, public_key: bytes) -> bool:
    """True iff ``sig_b64`` is a valid signature of ``statement`` by ``public_key``.

    Never raises: malformed base64, wrong lengths, a statement with no canonical form or a bad key
    all mean "not a valid signature". Callers wanting a precise reason parse the annotation first.
    """
    try:
        sig = _decode_sig(sig_b64)
        if len(public_key) != PUBLIC_KEY_LEN:
            return False
        message = pae(canonical_json(statement))
        VerifyKey(bytes(public_key)).verify(message, sig)
    except (BadSignatureError, CanonicalError, SignatureFormatError, ValueError, TypeError):
        return False
    except Exception:  # nacl raises its own exception types for degenerate keys: fail closed
        return False
    return True


def sig_fingerprint(sig_b64: str) -> str:
    """Hex sha256 of the signature *string*: what the controller stores in status to remember
    that this exact cosignature was accepted once (so the age check is not repeated)."""
    return hashlib.sha256(sig_b64.encode("utf-8", "surrogatepass")).hexdigest()


def check_signed_at(
    signed_at: datetime,
    now: datetime,
    *,
    clock_skew_seconds: int,
    max_age_seconds: int | None,
) -> str:
    """Return "" if ``signed_at`` is acceptable at ``now``, else a one-line reason.

    Future timestamps beyond the skew are refused because a pre-dated signature would dodge the
    age limit; ``max_age_seconds=None`` skips the age check (a signature accepted before).
    The reason names the timestamp, never an age: the same cause must read the same on every
    re-check, or each one would be announced again (docs/audit.md, no spam).
    """
    shown = format_time(signed_at)
    ahead = (signed_at - now).total_seconds()
    if ahead > clock_skew_seconds:
        return (
            f"signedAt {shown} is in the future "
            f"(by more than clockSkewSeconds {clock_skew_seconds})"
        )
    if max_age_seconds is not None:
        age = (now - signed_at).total_seconds()
        if age >= max_age_seconds:
            return (
                f"signedAt {shown} is not younger than maxSignatureAgeSeconds "
                f"{max_age_seconds}; sign again"
            )
    return ""


# --------------------------------------------------------------------------- annotations


def cosign_annotation_value(role: Role | str, signed_at: str, sig: str) -> str:
    """The value of ``cosign.calyx.io/<id>``: canonical JSON ``{"role","signedAt","sig"}``."""
    return canonical_json({"role": role, "signedAt": signed_at, "sig": sig}).decode("utf-8")


@dataclass(frozen=True)
class CosignAnnotation:
    """A well-formed ``cosign.calyx.io/<signer>`` annotation (not yet verified)."""

    signer: str
    role: str
    signed_at: str
    sig: str


def parse_cosign_annotation(key: str, value: str) -> CosignAnnotation:
    """Parse one lease cosignature annotation, raising :class:`SignatureFormatError`."""
    signer = _signer_from_key(key, COSIGN_PREFIX)
    obj = _load_object(value, ("role", "signedAt", "sig"))
    role = _str_field(obj, "role")
    if role not in ROLES:
        raise SignatureFormatError(f"role {_show(role)} must be 'human' or 'agent'")
    signed_at = _signed_at_field(obj)
    sig = _str_field(obj, "sig")
    _decode_sig(sig)
    return CosignAnnotation(signer=signer, role=role, signed_at=signed_at, sig=sig)


def approval_annotation_value(to_weight: int, signed_at: str, sig: str) -> str:
    """The value of ``approve.calyx.io/<id>``: canonical JSON ``{"toWeight","signedAt","sig"}``."""
    return canonical_json({"toWeight": to_weight, "signedAt": signed_at, "sig": sig}).decode(
        "utf-8"
    )


@dataclass(frozen=True)
class ApprovalAnnotation:
    """A well-formed ``approve.calyx.io/<signer>`` annotation (not yet verified)."""

    signer: str
    to_weight: int
    signed_at: str
    sig: str


def parse_approval_annotation(key: str, value: str) -> ApprovalAnnotation:
    """Parse one tier approval annotation, raising :class:`SignatureFormatError`."""
    signer = _signer_from_key(key, APPROVE_PREFIX)
    obj = _load_object(value, ("toWeight", "signedAt", "sig"))
    to_weight = obj["toWeight"]
    if isinstance(to_weight, bool) or not isinstance(to_weight, int):
        raise SignatureFormatError(
            f"field 'toWeight' must be an integer, got {_json_type(to_weight)}"
        )
    if not 1 <= to_weight <= 100:
        raise SignatureFormatError(f"field 'toWeight' must be between 1 and 100, got {to_weight}")
    signed_at = _signed_at_field(obj)
    sig = _str_field(obj, "sig")
    _decode_sig(sig)
    return ApprovalAnnotation(signer=signer, to_weight=to_weight, signed_at=signed_at, sig=sig)


# --------------------------------------------------------------------------- approvals


@dataclass(frozen=True)
class ApprovalVerdict:
    """The outcome of checking one approval annotation; ``reason`` is "" when valid."""

    signer: str
    valid: bool
    reason: str
    to_weight: int | None = None
    signed_at: str | None = None


def verify_approval(
    *,
    key: str,
    value: str,
    namespace: str,
    rollout: str,
    lease_digest: str,
    to_weight: int,
    trust: TrustStore,
    now: datetime,
) -> ApprovalVerdict:
    """Verify one ``approve.calyx.io/<id>`` annotation for entering the tier weighing ``to_weight``.

    Checks, first failure wins: well-formed; signer known; signer is a human (agent keys may never
    approve: the point of a manual gate is a person); signer allowed in ``namespace``; ``toWeight``
    equals the weight being entered (an approval for 25 % must not open the 100 % gate); signature
    valid over the statement rebuilt from (``namespace``, ``rollout``, ``lease_digest``,
    ``toWeight``, signer, signedAt); signedAt not in the future beyond skew and younger than
    ``maxSignatureAgeSeconds``. Never raises on bad input.
    """
    raw_id = key[len(APPROVE_PREFIX) :] if key.startswith(APPROVE_PREFIX) else key
    try:
        ann = parse_approval_annotation(key, value)
    except SignatureFormatError as exc:
        return ApprovalVerdict(signer=raw_id, valid=False, reason=str(exc))

    def bad(reason: str) -> ApprovalVerdict:
        return ApprovalVerdict(
            signer=ann.signer,
            valid=False,
            reason=reason,
            to_weight=ann.to_weight,
            signed_at=ann.signed_at,
        )

    signer = trust.signers.get(ann.signer)
    if signer is None:
        return bad(f"unknown signer {ann.signer!r} (not in the trust store)")
    if signer.role != "human":
        return bad(f"signer {ann.signer!r} is {signer.role!r}; only human keys may approve tiers")
    if not signer.allows(namespace):
        return bad(_namespace_reason(ann.signer, namespace, signer.namespaces))
    if ann.to_weight != to_weight:
        return bad(f"approval is for toWeight {ann.to_weight}, but the next tier is {to_weight}")
    statement = approval_statement(
        namespace, rollout, lease_digest, ann.to_weight, ann.signer, ann.signed_at
    )
    if not verify_statement(statement, ann.sig, signer.public_key):
        return bad("signature does not match this rollout, lease digest and toWeight")
    policy = trust.policy
    reason = check_signed_at(
        parse_signed_at(ann.signed_at),
        now,
        clock_skew_seconds=policy.clock_skew_seconds,
        max_age_seconds=policy.max_signature_age_seconds,
    )
    if reason:
        return bad(reason)
    return ApprovalVerdict(
        signer=ann.signer, valid=True, reason="", to_weight=ann.to_weight, signed_at=ann.signed_at
    )


def _namespace_reason(signer_id: str, namespace: str, allowed: tuple[str, ...] | None) -> str:
    shown = ", ".join(allowed) if allowed else "none"
    return f"signer {signer_id!r} is not allowed in namespace {namespace!r} (allowed: {shown})"


# --------------------------------------------------------------------------- helpers


def _signing_key(seed: bytes) -> SigningKey:
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_LEN:
        raise ValueError(f"an Ed25519 seed must be exactly {SEED_LEN} bytes")
    return SigningKey(bytes(seed))


def _decode_sig(sig_b64: str) -> bytes:
    """Strict standard base64 of exactly 64 bytes, in its one canonical spelling.

    Canonical spelling matters because the controller remembers accepted signatures by the hash of
    the string; two spellings of the same bytes must not be two different signatures.
    """
    if not isinstance(sig_b64, str):
        raise SignatureFormatError(f"field 'sig' must be a string, got {type(sig_b64).__name__}")
    try:
        raw = base64.b64decode(sig_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SignatureFormatError("field 'sig' is not valid standard base64") from None
    if len(raw) != SIGNATURE_LEN:
        raise SignatureFormatError(
            f"field 'sig' decodes to {len(raw)} bytes, an Ed25519 signature is {SIGNATURE_LEN}"
        )
    if base64.b64encode(raw).decode("ascii") != sig_b64:
        raise SignatureFormatError("field 'sig' is not canonical base64 (non-zero padding bits)")
    return raw


def _signer_from_key(key: str, prefix: str) -> str:
    if not key.startswith(prefix):
        raise SignatureFormatError(f"annotation key {_show(key)} does not start with {prefix!r}")
    signer = key[len(prefix) :]
    err = signer_id_error(signer)
    if err is not None:
        raise SignatureFormatError(f"annotation key {_show(key)}: {err}")
    return signer


def _reject_constant(name: str) -> object:
    raise SignatureFormatError(f"value is not JSON ({name} is not allowed)")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise SignatureFormatError(f"duplicate field {k!r}")
        out[k] = v
    return out


def _load_object(value: str, fields: tuple[str, ...]) -> dict[str, object]:
    """Decode a JSON object with exactly ``fields``: anything else is a sign of a wrong tool or
    tampering, and silently ignoring a field would make its meaning ambiguous."""
    if not isinstance(value, str):
        raise SignatureFormatError(f"value must be a string, got {type(value).__name__}")
    try:
        obj = json.loads(value, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except SignatureFormatError:
        raise
    except (ValueError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise SignatureFormatError(f"value is not JSON ({msg})") from None
    if not isinstance(obj, dict):
        raise SignatureFormatError(f"value must be a JSON object, got {_json_type(obj)}")
    missing = [f for f in fields if f not in obj]
    if missing:
        raise SignatureFormatError(
            "missing field " + ", ".join(repr(f) for f in missing) + f" (needs {_fields(fields)})"
        )
    extra = sorted(k for k in obj if k not in fields)
    if extra:
        raise SignatureFormatError(
            "unknown field " + ", ".join(_show(f) for f in extra) + f" (allowed: {_fields(fields)})"
        )
    return obj


def _fields(fields: tuple[str, ...]) -> str:
    return ", ".join(fields)


def _str_field(obj: Mapping[str, object], name: str) -> str:
    v = obj[name]
    if not isinstance(v, str):
        raise SignatureFormatError(f"field {name!r} must be a string, got {_json_type(v)}")
    return v


def _signed_at_field(obj: Mapping[str, object]) -> str:
    s = _str_field(obj, "signedAt")
    try:
        parse_signed_at(s)
    except ValueError as exc:
        raise SignatureFormatError(str(exc)) from None
    return s


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _show(s: str) -> str:
    """repr() bounded to keep hostile input from flooding a one-line status message."""
    return repr(s if len(s) <= 64 else s[:64] + "…")
