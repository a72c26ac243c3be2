"""Statements, PAE, sign/verify, annotation formats and tier approvals (docs/signing.md §1-§5)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from calyx.domain.signatures import (
    APPROVE_TIER_TYPE,
    LEASE_COSIGN_TYPE,
    ApprovalAnnotation,
    CosignAnnotation,
    SignatureFormatError,
    approval_annotation_value,
    approval_statement,
    cosign_annotation_value,
    lease_digest,
    lease_statement,
    pae,
    parse_approval_annotation,
    parse_cosign_annotation,
    public_key_from_seed,
    sign_statement,
    verify_approval,
    verify_statement,
)
from calyx.domain.trust import Policy, Signer, TrustStore
from tests.vectors.make_vectors import ALICE_SEED, NAME, NAMESPACE, SENTINEL_SEED, SPEC

SIG = base64.b64encode(bytes(range(64))).decode()
SIGNED_AT = "2026-11-25T09:30:00Z"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_pae_layout() -> None:
    assert pae(b"{}") == b"DSSEv1 36 application/vnd.calyx.statement+json 2 {}"
    assert pae("é".encode()) == b"DSSEv1 36 application/vnd.calyx.statement+json 2 \xc3\xa9"


def test_lease_digest_is_content_addressed() -> None:
    digest = lease_digest(NAMESPACE, NAME, SPEC)
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    assert lease_digest(NAMESPACE, NAME, dict(reversed(list(SPEC.items())))) == digest
    assert lease_digest("other", NAME, SPEC) != digest
    assert lease_digest(NAMESPACE, "other", SPEC) != digest


def test_statements() -> None:
    assert lease_statement("ns", "n", {"a": 1}, "alice", "human", SIGNED_AT) == {
        "type": LEASE_COSIGN_TYPE,
        "namespace": "ns",
        "name": "n",
        "spec": {"a": 1},
        "signer": "alice",
        "role": "human",
        "signedAt": SIGNED_AT,
    }
    assert approval_statement("ns", "r", "sha256:x", 25, "alice", SIGNED_AT) == {
        "type": APPROVE_TIER_TYPE,
        "namespace": "ns",
        "name": "r",
        "leaseDigest": "sha256:x",
        "toWeight": 25,
        "signer": "alice",
        "role": "human",
        "signedAt": SIGNED_AT,
    }


def test_sign_and_verify() -> None:
    statement = lease_statement(NAMESPACE, NAME, SPEC, "alice", "human", SIGNED_AT)
    sig = sign_statement(statement, ALICE_SEED)
    assert len(base64.b64decode(sig)) == 64
    assert sign_statement(statement, ALICE_SEED) == sig  # deterministic
    assert verify_statement(statement, sig, public_key_from_seed(ALICE_SEED))
    assert not verify_statement(statement, sig, public_key_from_seed(SENTINEL_SEED))
    assert not verify_statement(
        {**statement, "role": "agent"}, sig, public_key_from_seed(ALICE_SEED)
    )


@pytest.mark.parametrize(
    ("sig", "key"),
    [
        ("", public_key_from_seed(ALICE_SEED)),
        ("!!!!", public_key_from_seed(ALICE_SEED)),
        ("é", public_key_from_seed(ALICE_SEED)),
        (SIG, b"short"),
        (SIG, b"\x00" * 32),  # small-order point
        (SIG, public_key_from_seed(ALICE_SEED)),
    ],
    ids=["empty", "not-base64", "non-ascii", "short-key", "degenerate-key", "wrong-sig"],
)
def test_verify_statement_never_raises(sig: str, key: bytes) -> None:
    assert verify_statement({"a": 1}, sig, key) is False


def test_verify_statement_false_for_uncanonicalisable_statement() -> None:
    assert verify_statement({"a": 1.5}, SIG, public_key_from_seed(ALICE_SEED)) is False


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        public_key_from_seed(b"\x01" * 31)
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        sign_statement({}, b"\x01" * 64)


def test_annotation_values_are_canonical() -> None:
    assert (
        cosign_annotation_value("human", SIGNED_AT, SIG)
        == f'{{"role":"human","sig":"{SIG}","signedAt":"{SIGNED_AT}"}}'
    )
    assert (
        approval_annotation_value(25, SIGNED_AT, SIG)
        == f'{{"sig":"{SIG}","signedAt":"{SIGNED_AT}","toWeight":25}}'
    )


def test_parse_cosign_annotation_round_trip() -> None:
    value = cosign_annotation_value("agent", SIGNED_AT, SIG)
    assert parse_cosign_annotation("cosign.calyx.io/sentinel", value) == CosignAnnotation(
        signer="sentinel", role="agent", signed_at=SIGNED_AT, sig=SIG
    )
    # whitespace and key order are not significant in the annotation (only in the statement)
    loose = json.dumps({"sig": SIG, "role": "agent", "signedAt": SIGNED_AT}, indent=2)
    assert parse_cosign_annotation("cosign.calyx.io/sentinel", loose).sig == SIG


def _val(**fields: object) -> str:
    base: dict[str, object] = {"role": "human", "signedAt": SIGNED_AT, "sig": SIG}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


SIG63 = base64.b64encode(b"\x00" * 63).decode()
SIG_NONCANON = SIG[:-3] + "x=="  # "Pw==" -> "Px==": same bytes, non-zero padding bits


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "cosign.calyx.io/alice",
            "{",
            "value is not JSON (Expecting property name enclosed in double quotes)",
        ),
        ("cosign.calyx.io/alice", "", "value is not JSON (Expecting value)"),
        ("cosign.calyx.io/alice", '["human"]', "value must be a JSON object, got array"),
        ("cosign.calyx.io/alice", '"x"', "value must be a JSON object, got string"),
        ("cosign.calyx.io/alice", _val(sig=...), "missing field 'sig' (needs role, signedAt, sig)"),
        ("cosign.calyx.io/alice", _val(role=..., sig=...), "missing field 'role', 'sig'"),
        (
            "cosign.calyx.io/alice",
            _val(uid="x"),
            "unknown field 'uid' (allowed: role, signedAt, sig)",
        ),
        (
            "cosign.calyx.io/alice",
            '{"role":"human","role":"agent","signedAt":"x","sig":"y"}',
            "duplicate field 'role'",
        ),
        ("cosign.calyx.io/alice", _val(role="admin"), "role 'admin' must be 'human' or 'agent'"),
        ("cosign.calyx.io/alice", _val(role=1), "field 'role' must be a string, got integer"),
        (
            "cosign.calyx.io/alice",
            _val(signedAt=1795000000),
            "field 'signedAt' must be a string, got integer",
        ),
        (
            "cosign.calyx.io/alice",
            _val(signedAt="2026-11-25T09:30:00+00:00"),
            "signedAt '2026-11-25T09:30:00+00:00' must be exactly YYYY-MM-DDTHH:MM:SSZ "
            "(UTC, whole seconds)",
        ),
        (
            "cosign.calyx.io/alice",
            _val(signedAt="2026-02-30T09:30:00Z"),
            "signedAt '2026-02-30T09:30:00Z' is not a valid date",
        ),
        ("cosign.calyx.io/alice", _val(sig=None), "field 'sig' must be a string, got null"),
        ("cosign.calyx.io/alice", _val(sig="a b"), "field 'sig' is not valid standard base64"),
        (
            "cosign.calyx.io/alice",
            _val(sig=SIG.replace("+", "-").replace("/", "_")),
            "field 'sig' is not valid standard base64",
        ),
        (
            "cosign.calyx.io/alice",
            _val(sig=SIG63),
            "field 'sig' decodes to 63 bytes, an Ed25519 signature is 64",
        ),
        (
            "cosign.calyx.io/alice",
            _val(sig=SIG_NONCANON),
            "field 'sig' is not canonical base64 (non-zero padding bits)",
        ),
        ("cosign.calyx.io/alice", '{"role":NaN}', "value is not JSON (NaN is not allowed)"),
        (
            "cosign.calyx.io/Alice",
            _val(),
            "annotation key 'cosign.calyx.io/Alice': signer id 'Alice' is invalid",
        ),
        ("cosign.calyx.io/", _val(), "annotation key 'cosign.calyx.io/': signer id '' is invalid"),
        ("cosign.calyx.io/a/b", _val(), "signer id 'a/b' is invalid"),
        ("cosign.calyx.io/-alice", _val(), "signer id '-alice' is invalid"),
        ("cosign.calyx.io/" + "a" * 64, _val(), "signer id 'aaaa"),
        (
            "approve.calyx.io/alice",
            _val(),
            "annotation key 'approve.calyx.io/alice' does not start with 'cosign.calyx.io/'",
        ),
    ],
    ids=[
        "truncated-json",
        "empty",
        "array",
        "string",
        "missing-sig",
        "missing-two",
        "extra-field",
        "duplicate-field",
        "unknown-role",
        "role-not-string",
        "signedAt-not-string",
        "signedAt-offset",
        "signedAt-impossible",
        "sig-null",
        "sig-space",
        "sig-urlsafe",
        "sig-63-bytes",
        "sig-noncanonical",
        "nan",
        "uppercase-id",
        "empty-id",
        "slash-in-id",
        "leading-dash",
        "id-too-long",
        "wrong-prefix",
    ],
)
def test_parse_cosign_annotation_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(SignatureFormatError) as info:
        parse_cosign_annotation(key, value)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_signature_noncanonical_really_decodes_to_64_bytes() -> None:
    assert len(base64.b64decode(SIG_NONCANON)) == 64
    assert SIG_NONCANON != SIG


def test_parse_approval_annotation() -> None:
    value = approval_annotation_value(25, SIGNED_AT, SIG)
    assert parse_approval_annotation("approve.calyx.io/alice", value) == ApprovalAnnotation(
        signer="alice", to_weight=25, signed_at=SIGNED_AT, sig=SIG
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"toWeight": "25"}, "field 'toWeight' must be an integer, got string"),
        ({"toWeight": True}, "field 'toWeight' must be an integer, got boolean"),
        ({"toWeight": 25.0}, "field 'toWeight' must be an integer, got number"),
        ({"toWeight": 0}, "field 'toWeight' must be between 1 and 100, got 0"),
        ({"toWeight": 101}, "field 'toWeight' must be between 1 and 100, got 101"),
        ({"role": "human"}, "unknown field 'role' (allowed: toWeight, signedAt, sig)"),
    ],
    ids=["string", "bool", "float", "zero", "over-100", "role-field"],
)
def test_parse_approval_annotation_errors(value: dict[str, object], message: str) -> None:
    doc: dict[str, object] = {"toWeight": 25, "signedAt": SIGNED_AT, "sig": SIG, **value}
    with pytest.raises(SignatureFormatError) as info:
        parse_approval_annotation("approve.calyx.io/alice", json.dumps(doc))
    assert str(info.value) == message


# --------------------------------------------------------------------------- verify_approval

DIGEST = lease_digest(NAMESPACE, NAME, SPEC)
ROLLOUT = "checkout-2-3-1"


def _trust() -> TrustStore:
    return TrustStore(
        {
            "alice": Signer("alice", "human", public_key_from_seed(ALICE_SEED), ("shop",)),
            "sentinel": Signer("sentinel", "agent", public_key_from_seed(SENTINEL_SEED)),
        },
        Policy(),
    )


def approval(
    *,
    signer: str = "alice",
    seed: bytes = ALICE_SEED,
    namespace: str = NAMESPACE,
    rollout: str = ROLLOUT,
    digest: str = DIGEST,
    to_weight: int = 25,
    signed_at: str = SIGNED_AT,
) -> tuple[str, str]:
    statement = approval_statement(namespace, rollout, digest, to_weight, signer, signed_at)
    sig = sign_statement(statement, seed)
    return f"approve.calyx.io/{signer}", approval_annotation_value(to_weight, signed_at, sig)


@pytest.mark.parametrize(
    ("annotation", "kwargs", "reason"),
    [
        (approval(), {}, ""),
        (
            approval(signer="sentinel", seed=SENTINEL_SEED),
            {},
            "signer 'sentinel' is 'agent'; only human keys may approve tiers",
        ),
        (
            approval(signer="mallory", seed=b"\x09" * 32),
            {},
            "unknown signer 'mallory' (not in the trust store)",
        ),
        (
            approval(namespace="prod"),
            {"namespace": "prod"},
            "signer 'alice' is not allowed in namespace 'prod' (allowed: shop)",
        ),
        (approval(to_weight=100), {}, "approval is for toWeight 100, but the next tier is 25"),
        (
            approval(rollout="other"),
            {},
            "signature does not match this rollout, lease digest and toWeight",
        ),
        (
            approval(digest="sha256:" + "0" * 64),
            {},
            "signature does not match this rollout, lease digest and toWeight",
        ),
        (
            approval(seed=SENTINEL_SEED),
            {},
            "signature does not match this rollout, lease digest and toWeight",
        ),
        (
            approval(signed_at="2026-11-25T10:02:00Z"),
            {},
            "signedAt 2026-11-25T10:02:00Z is in the future (by more than clockSkewSeconds 60)",
        ),
        (
            approval(signed_at="2026-11-25T08:00:00Z"),
            {},
            "signedAt 2026-11-25T08:00:00Z is not younger than maxSignatureAgeSeconds 3600; "
            "sign again",
        ),
        (
            ("approve.calyx.io/alice", "{}"),
            {},
            "missing field 'toWeight', 'signedAt', 'sig' (needs toWeight, signedAt, sig)",
        ),
        (
            ("approve.calyx.io/ALICE", "{}"),
            {},
            "annotation key 'approve.calyx.io/ALICE': signer id 'ALICE' is invalid",
        ),
    ],
    ids=[
        "valid",
        "agent-may-not-approve",
        "unknown-signer",
        "outside-namespace",
        "wrong-tier",
        "other-rollout",
        "other-lease",
        "wrong-key",
        "future",
        "too-old",
        "malformed",
        "bad-id",
    ],
)
def test_verify_approval(annotation: tuple[str, str], kwargs: dict[str, str], reason: str) -> None:
    verdict = verify_approval(
        key=annotation[0],
        value=annotation[1],
        namespace=kwargs.get("namespace", NAMESPACE),
        rollout=ROLLOUT,
        lease_digest=DIGEST,
        to_weight=25,
        trust=_trust(),
        now=NOW,
    )
    assert verdict.reason.startswith(reason) and (reason or not verdict.reason)
    assert verdict.valid is (reason == "")
