"""Generate ``tests/vectors/lease-cosign.json``: known-answer vectors for other implementations.

Ed25519 (RFC 8032) is deterministic, so fixed seeds give fixed signatures: a pipeline written in
Go, Rust or shell can check every intermediate byte string (canonical statement, PAE, signature,
annotation) against this file. ``tests/unit/domain/test_vectors.py`` recomputes everything and
checks that running this script reproduces the committed file byte for byte.

Run: ``.venv/bin/python tests/vectors/make_vectors.py`` (writes the file) or with ``--check``.
The seeds below are public test keys: never trust them in a real cluster.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from calyx.domain.canonical import canonical_json
from calyx.domain.signatures import (
    PAYLOAD_TYPE,
    Role,
    approval_annotation_value,
    approval_statement,
    cosign_annotation_value,
    lease_digest,
    lease_statement,
    pae,
    public_key_from_seed,
    sign_statement,
)

VECTOR_FILE = Path(__file__).with_name("lease-cosign.json")

ALICE_SEED = bytes([0x01]) * 32
SENTINEL_SEED = bytes([0x02]) * 32
SIGNERS: tuple[tuple[str, Role, bytes], ...] = (
    ("alice", "human", ALICE_SEED),
    ("sentinel", "agent", SENTINEL_SEED),
)

NAMESPACE = "shop"
NAME = "checkout-2-3-1"
SPEC: dict[str, object] = {
    "intent": "INT-42: checkout 2.3.1 fixes cart rounding (5 € → 5,00 €, naïve café)",
    "targetRef": {"kind": "Deployment", "name": "checkout"},
    "change": {
        "containers": [
            {
                "name": "app",
                "image": "registry.example/checkout@sha256:"
                "3b5e1c1fbd0e4ef5a5a6c6cbd1fbb0a5b1f8d5f0e1d2c3b4a5968778695a4b3c",
            }
        ]
    },
    "constraints": {"maxInitialWeight": 5, "requireAnalysis": True},
    "expiresAt": "2026-11-25T18:00:00Z",
}
SIGNED_AT = "2026-11-25T09:30:00Z"
ROLLOUT = "checkout-2-3-1"
TO_WEIGHT = 25
APPROVED_AT = "2026-11-25T10:15:00Z"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _signed(statement: dict[str, object], seed: bytes) -> dict[str, object]:
    body = canonical_json(statement)
    return {
        "statement": statement,
        "canonicalStatement": body.decode("utf-8"),
        "canonicalStatementHex": body.hex(),
        "paeHex": pae(body).hex(),
        "sig": sign_statement(statement, seed),
    }


def build() -> dict[str, object]:
    """All vectors as one JSON-able document."""
    digest = lease_digest(NAMESPACE, NAME, SPEC)
    digest_input = canonical_json({"namespace": NAMESPACE, "name": NAME, "spec": SPEC})
    cosignatures = []
    for signer_id, role, seed in SIGNERS:
        statement = lease_statement(NAMESPACE, NAME, SPEC, signer_id, role, SIGNED_AT)
        vec = _signed(statement, seed)
        vec["annotationKey"] = f"cosign.calyx.io/{signer_id}"
        vec["annotationValue"] = cosign_annotation_value(role, SIGNED_AT, str(vec["sig"]))
        cosignatures.append({"signer": signer_id, **vec})

    approval = approval_statement(NAMESPACE, ROLLOUT, digest, TO_WEIGHT, "alice", APPROVED_AT)
    avec = _signed(approval, ALICE_SEED)
    avec["annotationKey"] = "approve.calyx.io/alice"
    avec["annotationValue"] = approval_annotation_value(TO_WEIGHT, APPROVED_AT, str(avec["sig"]))

    return {
        "description": (
            "Calyx signature test vectors (docs/signing.md). Ed25519 over "
            "DSSEv1 PAE(payloadType, canonical JSON statement). Public test seeds: never trust."
        ),
        "payloadType": PAYLOAD_TYPE.decode("ascii"),
        "signers": [
            {
                "id": signer_id,
                "role": role,
                "seedHex": seed.hex(),
                "seedBase64": _b64(seed),
                "publicKeyBase64": _b64(public_key_from_seed(seed)),
            }
            for signer_id, role, seed in SIGNERS
        ],
        "lease": {"namespace": NAMESPACE, "name": NAME, "spec": SPEC},
        "digestInput": digest_input.decode("utf-8"),
        "digest": digest,
        "cosignatures": cosignatures,
        "approval": {"rollout": ROLLOUT, "toWeight": TO_WEIGHT, "signer": "alice", **avec},
    }


def render() -> str:
    """The file's exact text: indented for review, UTF-8 unescaped, trailing newline."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = VECTOR_FILE.read_text(encoding="utf-8") if VECTOR_FILE.exists() else ""
        if current != text:
            print(f"{VECTOR_FILE} is stale; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    VECTOR_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {VECTOR_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
