"""docs/signing.md §8 rules 1-4 through ``verify_lease``, one attack or mistake per row.

Each row asserts the exact reason an SRE would read in ``kubectl describe leases.calyx.io``.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from calyx.domain.ledger import LedgerEntry
from calyx.domain.signatures import (
    Role,
    cosign_annotation_value,
    lease_digest,
    lease_statement,
    public_key_from_seed,
    sig_fingerprint,
    sign_statement,
)
from calyx.domain.trust import Policy, Signer, TrustStore
from calyx.domain.verification import LeaseVerdict, verify_lease
from tests.vectors.make_vectors import ALICE_SEED, NAME, NAMESPACE, SENTINEL_SEED, SIGNED_AT, SPEC

BOB_SEED = bytes([0x03]) * 32
MALLORY_SEED = bytes([0x04]) * 32
NOW = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)  # 30 min after SIGNED_AT, lease until 18:00

BOTH_MISMATCH = (
    "needs 1 valid human cosignature, has 0; needs 1 valid agent cosignature, has 0 "
    "(alice: signature does not match this lease; sentinel: signature does not match this lease)"
)


def make_trust(policy: Policy | None = None, extra: tuple[Signer, ...] = ()) -> TrustStore:
    signers = [
        Signer("alice", "human", public_key_from_seed(ALICE_SEED), ("shop", "pay-*")),
        Signer("sentinel", "agent", public_key_from_seed(SENTINEL_SEED), None),
        Signer("bob", "human", public_key_from_seed(BOB_SEED), ("shop",)),
        *extra,
    ]
    return TrustStore({s.id: s for s in signers}, policy or Policy())


def cosign(
    signer: str,
    role: Role,
    seed: bytes,
    *,
    namespace: str = NAMESPACE,
    name: str = NAME,
    spec: Mapping[str, object] = SPEC,
    signed_at: str = SIGNED_AT,
    annotated_role: str | None = None,
) -> tuple[str, str]:
    """One cosign annotation (key, value) signed over the given statement fields."""
    statement = lease_statement(namespace, name, spec, signer, role, signed_at)
    sig = sign_statement(statement, seed)
    return f"cosign.calyx.io/{signer}", cosign_annotation_value(
        annotated_role or role, signed_at, sig
    )


def alice(**kw: object) -> tuple[str, str]:
    return cosign("alice", "human", ALICE_SEED, **kw)  # type: ignore[arg-type]


def sentinel(**kw: object) -> tuple[str, str]:
    return cosign("sentinel", "agent", SENTINEL_SEED, **kw)  # type: ignore[arg-type]


def spec_with(**changes: object) -> dict[str, object]:
    spec = copy.deepcopy(SPEC)
    spec.update(changes)
    return spec


OTHER_SPEC = spec_with(change={"containers": [{"name": "app", "image": "evil/miner:latest"}]})
LONG_SPEC = spec_with(expiresAt="2026-11-26T10:00:00Z")  # 24h30m after SIGNED_AT
FLOAT_SPEC = spec_with(constraints={"maxInitialWeight": 5.0, "requireAnalysis": True})
DIGEST = lease_digest(NAMESPACE, NAME, SPEC)


def ledger_entry(uid: str) -> LedgerEntry:
    return LedgerEntry(
        digest=DIGEST,
        namespace="shop",
        lease=NAME,
        rollout="checkout-2-3-1",
        rollout_uid=uid,
        claimed_at="2026-11-25T09:45:00Z",
        expires_at="2026-11-25T18:00:00Z",
    )


@dataclass
class Case:
    annotations: list[tuple[str, str]]
    phase: str
    rule: int | None
    reason: str
    namespace: str = NAMESPACE
    name: str = NAME
    spec: Mapping[str, object] = field(default_factory=lambda: SPEC)
    now: datetime = NOW
    trust: TrustStore = field(default_factory=make_trust)
    ledger: dict[str, LedgerEntry] | None = None
    claimant_uid: str | None = None
    previously_accepted: dict[str, str] | None = None


def _sig_of(annotation: tuple[str, str]) -> str:
    import json

    return str(json.loads(annotation[1])["sig"])


OLD = "2026-11-25T08:59:00Z"  # 3660 s before NOW
CASES: dict[str, Callable[[], Case]] = {
    "valid": lambda: Case([alice(), sentinel()], "Verified", None, ""),
    "valid, unrelated annotations ignored": lambda: Case(
        [alice(), sentinel(), ("kubectl.kubernetes.io/last-applied-configuration", "{}")],
        "Verified",
        None,
        "",
    ),
    "valid, spec key order does not matter": lambda: Case(
        [alice(), sentinel()], "Verified", None, "", spec=dict(reversed(list(SPEC.items())))
    ),
    # ---- rule 1
    "expired": lambda: Case(
        [alice(), sentinel()],
        "Expired",
        1,
        "lease expired at 2026-11-25T18:00:00Z",
        now=datetime(2026, 11, 25, 18, 0, 0, tzinfo=UTC),
    ),
    "expired wins over bad signatures (rule order)": lambda: Case(
        [("cosign.calyx.io/alice", "nope")],
        "Expired",
        1,
        "lease expired at 2026-11-25T18:00:00Z",
        now=datetime(2026, 11, 26, tzinfo=UTC),
    ),
    "expiresAt not a time": lambda: Case(
        [alice(spec=spec_with(expiresAt="2026-13-01")), sentinel()],
        "Rejected",
        1,
        "expiresAt '2026-13-01' is not an RFC 3339 time (expected e.g. 2026-11-25T18:00:00Z)",
        spec=spec_with(expiresAt="2026-13-01"),
    ),
    "expiresAt impossible month": lambda: Case(
        [],
        "Rejected",
        1,
        "expiresAt '2026-13-01T00:00:00Z' is not an RFC 3339 time "
        "(expected e.g. 2026-11-25T18:00:00Z): month must be in 1..12",
        spec=spec_with(expiresAt="2026-13-01T00:00:00Z"),
    ),
    "expiresAt missing": lambda: Case(
        [], "Rejected", 1, "spec.expiresAt is missing", spec={"intent": "x"}
    ),
    "expiresAt an integer": lambda: Case(
        [],
        "Rejected",
        1,
        "expiresAt must be an RFC 3339 string such as 2026-11-25T18:00:00Z, got int",
        spec=spec_with(expiresAt=1795000000),
    ),
    "expiresAt beyond maxLeaseSeconds": lambda: Case(
        [alice(spec=LONG_SPEC), sentinel(spec=LONG_SPEC)],
        "Rejected",
        1,
        "expiresAt 2026-11-26T10:00:00Z is more than maxLeaseSeconds 86400 after the newest "
        "valid signature (2026-11-25T09:30:00Z); latest allowed is 2026-11-26T09:30:00Z",
        spec=LONG_SPEC,
    ),
    "expiresAt within maxLeaseSeconds of the NEWEST valid signature": lambda: Case(
        [
            alice(spec=LONG_SPEC),
            sentinel(spec=LONG_SPEC, signed_at="2026-11-25T10:00:00Z"),
        ],
        "Verified",
        None,
        "",
        spec=LONG_SPEC,
    ),
    "expiresAt with offset and fraction accepted": lambda: Case(
        [
            alice(spec=spec_with(expiresAt="2026-11-25T19:00:00.5+01:00")),
            sentinel(spec=spec_with(expiresAt="2026-11-25T19:00:00.5+01:00")),
        ],
        "Verified",
        None,
        "",
        spec=spec_with(expiresAt="2026-11-25T19:00:00.5+01:00"),
    ),
    # ---- rule 2 (each invalid cosignature shows up in rule 3's reason)
    "agent signed another spec": lambda: Case(
        [alice(), sentinel(spec=OTHER_SPEC)],
        "Rejected",
        3,
        "needs 1 valid agent cosignature, has 0 (sentinel: signature does not match this lease)",
    ),
    "signatures copied to a lease with another name": lambda: Case(
        [alice(), sentinel()], "Rejected", 3, BOTH_MISMATCH, name="checkout-2-3-2"
    ),
    "signatures copied to another allowed namespace": lambda: Case(
        [alice(), sentinel()], "Rejected", 3, BOTH_MISMATCH, namespace="pay-eu"
    ),
    "expiresAt edited after signing": lambda: Case(
        [alice(), sentinel()],
        "Rejected",
        3,
        BOTH_MISMATCH,
        spec=spec_with(expiresAt="2026-11-25T18:00:01Z"),
    ),
    "unicode normalisation changed (NFD vs NFC)": lambda: Case(
        [alice(), sentinel()],
        "Rejected",
        3,
        BOTH_MISMATCH,
        spec=spec_with(intent=str(SPEC["intent"]).replace("ï", "i\u0308")),
    ),
    "signer outside its namespaces": lambda: Case(
        [alice(namespace="prod"), sentinel(namespace="prod")],
        "Rejected",
        3,
        "needs 1 valid human cosignature, has 0 (alice: signer 'alice' is not allowed in "
        "namespace 'prod' (allowed: shop, pay-*))",
        namespace="prod",
    ),
    "agent key signing as human": lambda: Case(
        [alice(), cosign("sentinel", "human", SENTINEL_SEED)],
        "Rejected",
        3,
        "needs 1 valid agent cosignature, has 0 (sentinel: annotation claims role 'human' but "
        "signer 'sentinel' is 'agent' in the trust store)",
    ),
    "human key signing as agent": lambda: Case(
        [cosign("alice", "agent", ALICE_SEED), sentinel()],
        "Rejected",
        3,
        "needs 1 valid human cosignature, has 0 (alice: annotation claims role 'agent' but "
        "signer 'alice' is 'human' in the trust store)",
    ),
    "role in annotation edited (signature said agent)": lambda: Case(
        [alice(annotated_role="agent"), sentinel()],
        "Rejected",
        3,
        "needs 1 valid human cosignature, has 0 (alice: annotation claims role 'agent' but "
        "signer 'alice' is 'human' in the trust store)",
    ),
    "unknown signer": lambda: Case(
        [alice(), cosign("mallory", "agent", MALLORY_SEED)],
        "Rejected",
        3,
        "needs 1 valid agent cosignature, has 0 (mallory: unknown signer 'mallory' "
        "(not in the trust store))",
    ),
    "known id, signed with another key": lambda: Case(
        [alice(), cosign("sentinel", "agent", MALLORY_SEED)],
        "Rejected",
        3,
        "needs 1 valid agent cosignature, has 0 (sentinel: signature does not match this lease)",
    ),
    "signedAt in the future beyond skew": lambda: Case(
        [alice(signed_at="2026-11-25T10:05:00Z"), sentinel()],
        "Rejected",
        3,
        "needs 1 valid human cosignature, has 0 (alice: signedAt 2026-11-25T10:05:00Z is in "
        "the future (by more than clockSkewSeconds 60))",
    ),
    "signedAt in the future within skew": lambda: Case(
        [alice(signed_at="2026-11-25T10:00:59Z"), sentinel()], "Verified", None, ""
    ),
    "signature too old at first verification": lambda: Case(
        [alice(signed_at=OLD), sentinel()],
        "Rejected",
        3,
        f"needs 1 valid human cosignature, has 0 (alice: signedAt {OLD} is not younger "
        "than maxSignatureAgeSeconds 3600; sign again)",
    ),
    "old signature accepted before skips the age check": lambda: Case(
        [alice(signed_at=OLD), sentinel()],
        "Verified",
        None,
        "",
        previously_accepted={"alice": sig_fingerprint(_sig_of(alice(signed_at=OLD)))},
    ),
    "previously accepted fingerprint of another signature does not help": lambda: Case(
        [alice(signed_at=OLD), sentinel()],
        "Rejected",
        3,
        f"needs 1 valid human cosignature, has 0 (alice: signedAt {OLD} is not younger "
        "than maxSignatureAgeSeconds 3600; sign again)",
        previously_accepted={"alice": sig_fingerprint(_sig_of(alice()))},
    ),
    "malformed JSON": lambda: Case(
        [("cosign.calyx.io/alice", '{"role": "human",'), sentinel()],
        "Rejected",
        3,
        "needs 1 valid human cosignature, has 0 (alice: value is not JSON "
        "(Expecting property name enclosed in double quotes))",
    ),
    "bad base64": lambda: Case(
        [
            ("cosign.calyx.io/alice", cosign_annotation_value("human", SIGNED_AT, "not*base64")),
            sentinel(),
        ],
        "Rejected",
        3,
        "needs 1 valid human cosignature, has 0 (alice: field 'sig' is not valid standard base64)",
    ),
    "wrong signature length": lambda: Case(
        [
            (
                "cosign.calyx.io/alice",
                cosign_annotation_value(
                    "human", SIGNED_AT, base64.b64encode(b"\x00" * 63).decode()
                ),
            ),
            sentinel(),
        ],
        "Rejected",
        3,
        "needs 1 valid human cosignature, has 0 (alice: field 'sig' decodes to 63 bytes, "
        "an Ed25519 signature is 64)",
    ),
    "weird signer id in annotation key": lambda: Case(
        [("cosign.calyx.io/Alice", alice()[1]), sentinel()],
        "Rejected",
        3,
        "needs 1 valid human cosignature, has 0 (Alice: annotation key 'cosign.calyx.io/Alice': "
        "signer id 'Alice' is invalid (lowercase letters, digits, '-' and '.', starting and "
        "ending alphanumeric, at most 63 characters))",
    ),
    "no cosignatures at all": lambda: Case(
        [],
        "Rejected",
        3,
        "needs 1 valid human cosignature, has 0; needs 1 valid agent cosignature, has 0 "
        "(no cosign.calyx.io/* annotations)",
    ),
    "float in spec is rejected, not a crash": lambda: Case(
        [alice(), sentinel()],
        "Rejected",
        2,
        "spec cannot be canonicalised, so no signature can match: "
        "spec.constraints.maxInitialWeight: float 5.0 is not allowed in signed documents; "
        "use an integer or a string",
        spec=FLOAT_SPEC,
    ),
    # ---- rule 3
    "two humans, no agent": lambda: Case(
        [alice(), cosign("bob", "human", BOB_SEED)],
        "Rejected",
        3,
        "needs 1 valid agent cosignature, has 0 (valid: alice (human), bob (human))",
    ),
    "policy wants two humans": lambda: Case(
        [alice(), sentinel()],
        "Rejected",
        3,
        "needs 2 valid human cosignatures, has 1 (valid: alice (human), sentinel (agent))",
        trust=make_trust(Policy(humans=2)),
    ),
    "policy wants two humans and gets them": lambda: Case(
        [alice(), cosign("bob", "human", BOB_SEED), sentinel()],
        "Verified",
        None,
        "",
        trust=make_trust(Policy(humans=2)),
    ),
    "one key under two ids counts once (never for both roles)": lambda: Case(
        [alice(), cosign("alice-bot", "agent", ALICE_SEED)],
        "Rejected",
        3,
        "needs 1 valid agent cosignature, has 0 (alice-bot: same public key as signer "
        "'alice', which is already counted)",
        trust=make_trust(
            extra=(Signer("alice-bot", "agent", public_key_from_seed(ALICE_SEED), None),)
        ),
    ),
    # ---- rule 4
    "digest consumed by another rollout": lambda: Case(
        [alice(), sentinel()],
        "Consumed",
        4,
        "consumed by Rollout shop/checkout-2-3-1",
        ledger={DIGEST: ledger_entry("uid-1")},
    ),
    "digest consumed, re-created rollout with a new uid": lambda: Case(
        [alice(), sentinel()],
        "Consumed",
        4,
        "consumed by Rollout shop/checkout-2-3-1",
        ledger={DIGEST: ledger_entry("uid-1")},
        claimant_uid="uid-2",
    ),
    "digest held by the claimant itself": lambda: Case(
        [alice(), sentinel()],
        "Verified",
        None,
        "",
        ledger={DIGEST: ledger_entry("uid-1")},
        claimant_uid="uid-1",
    ),
    "other digests in the ledger do not matter": lambda: Case(
        [alice(), sentinel()],
        "Verified",
        None,
        "",
        ledger={"sha256:" + "0" * 64: ledger_entry("uid-1")},
    ),
}


def run(case: Case) -> LeaseVerdict:
    return verify_lease(
        namespace=case.namespace,
        name=case.name,
        spec=case.spec,
        annotations=dict(case.annotations),
        trust=case.trust,
        now=case.now,
        ledger=case.ledger,
        claimant_uid=case.claimant_uid,
        previously_accepted=case.previously_accepted,
    )


@pytest.mark.parametrize("make_case", CASES.values(), ids=list(CASES))
def test_verify_lease(make_case: Callable[[], Case]) -> None:
    case = make_case()
    verdict = run(case)
    assert (verdict.phase, verdict.rule, verdict.reason) == (case.phase, case.rule, case.reason)
    assert verdict.valid is (case.phase == "Verified")
    assert "\n" not in verdict.reason
    assert all("\n" not in c.reason for c in verdict.cosigners)


def test_valid_verdict_details() -> None:
    verdict = run(CASES["valid"]())
    assert verdict.digest == DIGEST
    assert verdict.expires_at == datetime(2026, 11, 25, 18, tzinfo=UTC)
    assert (verdict.humans, verdict.agents) == (1, 1)
    assert [(c.id, c.role, c.signed_at, c.valid, c.reason) for c in verdict.cosigners] == [
        ("alice", "human", SIGNED_AT, True, ""),
        ("sentinel", "agent", SIGNED_AT, True, ""),
    ]
    assert verdict.accepted == {
        "alice": sig_fingerprint(_sig_of(alice())),
        "sentinel": sig_fingerprint(_sig_of(sentinel())),
    }


def test_accepted_round_trip_keeps_a_long_rollout_verified() -> None:
    """What the controller does: store ``accepted`` in status, pass it back hours later."""
    first = run(CASES["valid"]())
    later = verify_lease(
        namespace=NAMESPACE,
        name=NAME,
        spec=SPEC,
        annotations=dict([alice(), sentinel()]),
        trust=make_trust(),
        now=NOW + timedelta(hours=5),
        previously_accepted=first.accepted,
    )
    assert later.valid, later.reason
    without = verify_lease(
        namespace=NAMESPACE,
        name=NAME,
        spec=SPEC,
        annotations=dict([alice(), sentinel()]),
        trust=make_trust(),
        now=NOW + timedelta(hours=5),
    )
    assert without.rule == 3


def test_float_spec_reports_each_cosigner_and_empty_digest() -> None:
    verdict = run(CASES["float in spec is rejected, not a crash"]())
    assert verdict.digest == ""
    assert [c.reason for c in verdict.cosigners] == ["spec cannot be canonicalised"] * 2


def test_invalid_cosigners_are_all_reported_even_when_lease_is_valid() -> None:
    case = Case(
        [alice(), sentinel(), cosign("mallory", "human", MALLORY_SEED)], "Verified", None, ""
    )
    verdict = run(case)
    assert verdict.valid
    assert [(c.id, c.valid) for c in verdict.cosigners] == [
        ("alice", True),
        ("mallory", False),
        ("sentinel", True),
    ]


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_lease(
            namespace=NAMESPACE,
            name=NAME,
            spec=SPEC,
            annotations={},
            trust=make_trust(),
            now=datetime(2026, 11, 25, 10, 0),
        )


@pytest.mark.parametrize("signed_at", [OLD, "2026-11-25T10:05:00Z"])
def test_an_unchanged_bad_signature_is_announced_once(signed_at: str) -> None:
    """Probe: a stale- or future-dated signature posted SignatureInvalid on every re-check,
    with a changing age in the message (~1,800 Events per hour per Lease)."""
    from calyx.domain.lease_plan import plan_lease_status

    previous: dict[str, object] | None = None
    posted = []
    for minute in range(30):
        now = NOW + timedelta(seconds=minute * 2)
        case = Case([alice(signed_at=signed_at), sentinel()], "Rejected", 3, "", now=now)
        plan = plan_lease_status(
            verdict=run(case),
            previous=previous,
            generation=1,
            now=now.isoformat(),
            consumed_by=None,
        )
        posted += [e.reason for e in plan.events if e.reason == "SignatureInvalid"]
        previous = plan.status
    assert posted == ["SignatureInvalid"]
