"""The replay ledger model (docs/signing.md §8 rule 4): encoding, claims, pruning, corruption."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from calyx.domain.ledger import (
    ClaimOutcome,
    LedgerEntry,
    LedgerError,
    decide_claim,
    digest_from_key,
    encode_entry,
    ledger_key,
    parse_ledger,
    prunable,
)

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def entry(
    digest: str = D1, uid: str = "uid-1", expires_at: str = "2026-11-25T18:00:00Z"
) -> LedgerEntry:
    return LedgerEntry(
        digest=digest,
        namespace="shop",
        lease="checkout-2-3-1",
        rollout="checkout-2-3-1",
        rollout_uid=uid,
        claimed_at="2026-11-25T09:45:00Z",
        expires_at=expires_at,
    )


def test_ledger_key_is_a_valid_configmap_key() -> None:
    key = ledger_key(D1)
    assert key == "sha256." + "a" * 64
    assert digest_from_key(key) == D1


@pytest.mark.parametrize("digest", ["sha256:abc", "sha512:" + "a" * 64, "sha256:" + "A" * 64, ""])
def test_ledger_key_refuses_non_digests(digest: str) -> None:
    with pytest.raises(LedgerError, match="is not a lease digest"):
        ledger_key(digest)


def test_encode_is_canonical_camel_case_json() -> None:
    key, value = encode_entry(entry())
    assert key == ledger_key(D1)
    assert value == (
        '{"claimedAt":"2026-11-25T09:45:00Z","digest":"' + D1 + '",'
        '"expiresAt":"2026-11-25T18:00:00Z","lease":"checkout-2-3-1","namespace":"shop",'
        '"rollout":"checkout-2-3-1","rolloutUid":"uid-1"}'
    )


def test_round_trip() -> None:
    entries = [entry(D1), entry(D2, uid="uid-2")]
    data = dict(encode_entry(e) for e in entries)
    assert parse_ledger(data) == {D1: entries[0], D2: entries[1]}


@pytest.mark.parametrize("data", [None, {}])
def test_empty_ledger(data: dict[str, str] | None) -> None:
    assert parse_ledger(data) == {}


def test_unknown_extra_fields_are_tolerated() -> None:
    key, value = encode_entry(entry())
    doc = json.loads(value) | {"addedInV2": "x"}
    assert parse_ledger({key: json.dumps(doc)}) == {D1: entry()}


def _corrupt(**changes: object) -> str:
    doc = json.loads(encode_entry(entry())[1])
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not ...})


KEY1 = ledger_key(D1)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "checkout",
            _corrupt(),
            "ledger entry 'checkout': ledger key 'checkout' is not sha256.<64",
        ),
        (KEY1, "{", f"ledger entry '{KEY1}': value is not JSON"),
        (KEY1, "[]", f"ledger entry '{KEY1}': value must be a JSON object"),
        (
            KEY1,
            _corrupt(rolloutUid=...),
            f"ledger entry '{KEY1}': field 'rolloutUid' must be a non-empty string",
        ),
        (
            KEY1,
            _corrupt(rollout=7),
            f"ledger entry '{KEY1}': field 'rollout' must be a non-empty string",
        ),
        (KEY1, _corrupt(digest=D2), f"ledger entry '{KEY1}': digest '{D2}' does not match the key"),
        (
            KEY1,
            _corrupt(expiresAt="tomorrow"),
            f"ledger entry '{KEY1}': expiresAt 'tomorrow' is not an RFC 3339 time",
        ),
        (
            KEY1,
            _corrupt(claimedAt="2026-11-25"),
            f"ledger entry '{KEY1}': claimedAt '2026-11-25' is not an RFC 3339 time",
        ),
    ],
    ids=[
        "bad-key",
        "not-json",
        "not-object",
        "missing-uid",
        "uid-not-string",
        "digest-mismatch",
        "bad-expiry",
        "bad-claimed",
    ],
)
def test_corrupt_entry_is_an_error_never_dropped(key: str, value: str, message: str) -> None:
    good_key, good_value = encode_entry(entry(D2))
    with pytest.raises(LedgerError) as info:
        parse_ledger({good_key: good_value, key: value})
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("existing", "candidate", "expected"),
    [
        ({}, entry(uid="uid-1"), ClaimOutcome(won=True, entry=entry(uid="uid-1"))),
        ({D2: entry(D2, uid="uid-9")}, entry(uid="uid-1"), ClaimOutcome(True, entry(uid="uid-1"))),
        ({D1: entry(uid="uid-1")}, entry(uid="uid-1"), ClaimOutcome(True, entry(uid="uid-1"))),
        ({D1: entry(uid="uid-1")}, entry(uid="uid-2"), ClaimOutcome(False, entry(uid="uid-1"))),
    ],
    ids=["free", "other-digest-held", "same-uid-idempotent", "other-uid-loses"],
)
def test_decide_claim(
    existing: dict[str, LedgerEntry], candidate: LedgerEntry, expected: ClaimOutcome
) -> None:
    assert decide_claim(existing, candidate) == expected


def test_reclaim_keeps_the_original_claim_time() -> None:
    original = entry(uid="uid-1")
    retry = LedgerEntry(**{**original.__dict__, "claimed_at": "2026-11-25T11:00:00Z"})
    assert decide_claim({D1: original}, retry).entry.claimed_at == "2026-11-25T09:45:00Z"


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 25, 17, 59, 59, tzinfo=UTC), []),
        (datetime(2026, 11, 25, 18, 0, 0, tzinfo=UTC), []),
        (datetime(2026, 11, 25, 18, 0, 1, tzinfo=UTC), [ledger_key(D1)]),
        (datetime(2026, 11, 27, tzinfo=UTC), [ledger_key(D1), ledger_key(D2)]),
    ],
    ids=["before", "at-expiry", "after-first", "after-both"],
)
def test_prunable(now: datetime, expected: list[str]) -> None:
    entries = {D1: entry(D1), D2: entry(D2, expires_at="2026-11-26T18:00:00Z")}
    assert prunable(entries, now) == expected
