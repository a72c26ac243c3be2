"""Known-answer vectors (tests/vectors/lease-cosign.json): recompute every byte independently.

The file is what another implementation tests against, so it must be (a) reproducible from the
generator and (b) self-consistent when checked with primitives that do not go through Calyx's
helpers (hashlib, nacl, the DSSE formula written out).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from nacl.signing import SigningKey, VerifyKey

from calyx.domain.signatures import (
    cosign_annotation_value,
    lease_digest,
    verify_approval,
)
from calyx.domain.trust import Policy, Signer, TrustStore
from calyx.domain.verification import verify_lease
from tests.vectors import make_vectors

VECTORS: dict[str, Any] = json.loads(make_vectors.VECTOR_FILE.read_text(encoding="utf-8"))
KEYS = {s["id"]: base64.b64decode(s["publicKeyBase64"]) for s in VECTORS["signers"]}


def canonical(obj: object) -> bytes:
    """The docs/signing.md §2 one-liner, written out here rather than imported."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def dsse(body: bytes) -> bytes:
    t: bytes = VECTORS["payloadType"].encode()
    return (
        b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(body)).encode() + b" " + body
    )


def test_generator_reproduces_the_committed_file() -> None:
    assert make_vectors.render() == make_vectors.VECTOR_FILE.read_text(encoding="utf-8")
    assert make_vectors.main(["--check"]) == 0


def test_lease_has_non_ascii_intent() -> None:
    intent = VECTORS["lease"]["spec"]["intent"]
    assert not intent.isascii()
    assert intent.encode("utf-8") in VECTORS["digestInput"].encode("utf-8")


def test_signers() -> None:
    for s in VECTORS["signers"]:
        seed = bytes.fromhex(s["seedHex"])
        assert base64.b64decode(s["seedBase64"]) == seed
        assert bytes(SigningKey(seed).verify_key) == KEYS[s["id"]]


def test_digest() -> None:
    lease = VECTORS["lease"]
    body = canonical(
        {"namespace": lease["namespace"], "name": lease["name"], "spec": lease["spec"]}
    )
    assert body.decode() == VECTORS["digestInput"]
    assert VECTORS["digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    assert lease_digest(lease["namespace"], lease["name"], lease["spec"]) == VECTORS["digest"]


@pytest.mark.parametrize(
    "vec",
    [*VECTORS["cosignatures"], VECTORS["approval"]],
    ids=[*(c["signer"] for c in VECTORS["cosignatures"]), "approval"],
)
def test_signed_vector(vec: dict[str, Any]) -> None:
    body = canonical(vec["statement"])
    assert body.decode("utf-8") == vec["canonicalStatement"]
    assert body.hex() == vec["canonicalStatementHex"]
    assert dsse(body).hex() == vec["paeHex"]
    seed = next(
        bytes.fromhex(s["seedHex"])
        for s in VECTORS["signers"]
        if s["id"] == vec["statement"]["signer"]
    )
    sig = SigningKey(seed).sign(dsse(body)).signature
    assert base64.b64encode(sig).decode() == vec["sig"]
    VerifyKey(KEYS[vec["statement"]["signer"]]).verify(dsse(body), sig)
    assert vec["annotationKey"].endswith("/" + vec["statement"]["signer"])
    assert json.loads(vec["annotationValue"])["sig"] == vec["sig"]


def test_cosign_annotation_values() -> None:
    for vec in VECTORS["cosignatures"]:
        st = vec["statement"]
        assert vec["annotationValue"] == cosign_annotation_value(
            st["role"], st["signedAt"], vec["sig"]
        )
        assert (
            vec["annotationValue"]
            == canonical(
                {"role": st["role"], "signedAt": st["signedAt"], "sig": vec["sig"]}
            ).decode()
        )


def trust() -> TrustStore:
    signers = [Signer(s["id"], s["role"], KEYS[s["id"]]) for s in VECTORS["signers"]]
    return TrustStore({s.id: s for s in signers}, Policy())


def test_vector_lease_verifies_end_to_end() -> None:
    lease = VECTORS["lease"]
    verdict = verify_lease(
        namespace=lease["namespace"],
        name=lease["name"],
        spec=lease["spec"],
        annotations={c["annotationKey"]: c["annotationValue"] for c in VECTORS["cosignatures"]},
        trust=trust(),
        now=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    )
    assert verdict.valid, verdict.reason
    assert verdict.digest == VECTORS["digest"]


def test_vector_approval_verifies_end_to_end() -> None:
    a = VECTORS["approval"]
    verdict = verify_approval(
        key=a["annotationKey"],
        value=a["annotationValue"],
        namespace=VECTORS["lease"]["namespace"],
        rollout=a["rollout"],
        lease_digest=VECTORS["digest"],
        to_weight=a["toWeight"],
        trust=trust(),
        now=datetime(2026, 11, 25, 10, 30, tzinfo=UTC),
    )
    assert verdict.valid, verdict.reason
