"""Replay from three records and a ledger that fails closed per digest (docs/security.md)."""

from __future__ import annotations

import datetime as dt

import pytest

from calyx.domain.ledger import LedgerEntry, decide_claim, encode_entry, read_ledger
from calyx.domain.replay import UNKNOWN_EXPIRY_DAYS, rebuild_entries, replay_holders
from calyx.domain.timefmt import format_time

NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def entry(digest: str, uid: str = "u-a") -> LedgerEntry:
    return LedgerEntry(digest, "shop", "l1", "ra", uid, format_time(NOW), "2026-11-26T00:00:00Z")


def lease(digest: str, uid: str | None, expires: str = "2026-11-26T00:00:00Z") -> dict:
    st: dict = {"digest": digest}
    if uid:
        st["consumedBy"] = {"name": "ra", "uid": uid}
    return {
        "metadata": {
            "name": "l1",
            "namespace": "shop",
            "creationTimestamp": "2026-11-25T09:00:00Z",
        },
        "spec": {"expiresAt": expires},
        "status": st,
    }


def rollout(digest: str, uid: str, started: bool = True) -> dict:
    st: dict = {"leaseDigest": digest}
    if started:
        st["snapshot"] = {"configMap": "ra-snapshot", "sha256": "x"}
    return {
        "metadata": {"name": "ra", "namespace": "shop", "uid": uid},
        "spec": {"leaseRef": {"name": "l1"}},
        "status": st,
    }


@pytest.mark.parametrize(
    ("ledger", "leases", "rollouts", "claimant", "held_by"),
    [
        ({}, [], [], "u-b", None),
        ({D1: entry(D1)}, [], [], "u-b", "u-a"),  # the ledger alone
        ({}, [lease(D1, "u-a")], [], "u-b", "u-a"),  # ledger deleted: the Lease remembers
        ({}, [], [rollout(D1, "u-a")], "u-b", "u-a"),  # ...or the started Rollout does
        ({}, [], [rollout(D1, "u-a", started=False)], "u-b", None),  # not started: no claim
        ({D1: entry(D1, "u-b")}, [], [rollout(D1, "u-a")], "u-b", "u-a"),  # any other wins
        ({D1: entry(D1, "u-b")}, [lease(D1, "u-b")], [], "u-b", "u-b"),  # our own, everywhere
        ({}, [lease(D1, None)], [], "u-b", None),  # verified, never consumed
    ],
)
def test_replay_holders_merge_three_records(
    ledger: dict, leases: list, rollouts: list, claimant: str, held_by: str | None
) -> None:
    h = replay_holders(ledger, leases, rollouts, claimant).get(D1)
    assert (h.rollout_uid if h else None) == held_by


def test_unreadable_entry_blocks_only_its_own_digest() -> None:
    k2, v2 = encode_entry(entry(D2))
    data = {"sha256." + "1" * 64: "{not json", k2: v2, "garbage-key": "x"}
    led = read_ledger(data)
    assert set(led.entries) == {D2}
    assert D1 in led.unreadable and "garbage-key" in led.bad_keys
    holders = led.holders()
    assert holders[D1].error and not holders[D2].error
    # a claim on the unreadable digest is lost (fail closed), and it stays in front of the others
    assert not decide_claim(holders, entry(D1, "u-z")).won
    merged = replay_holders(holders, [lease(D1, "u-z")], [], "u-z")
    assert merged[D1].error


def test_rebuild_takes_expiry_from_the_lease_and_drops_expired_ones() -> None:
    leases = [lease(D1, "u-a"), lease(D2, "u-b", expires="2026-11-25T09:00:00Z")]
    rollouts = [rollout(D1, "u-a"), rollout(D2, "u-b")]
    got = {e.digest: e for e in rebuild_entries(leases, rollouts, NOW)}
    assert set(got) == {D1}, "an expired lease needs no replay record"
    assert got[D1].expires_at == "2026-11-26T00:00:00Z" and got[D1].rollout_uid == "u-a"
    encode_entry(got[D1])  # writable as a ledger entry


def test_rebuild_without_the_lease_keeps_the_entry_for_a_long_horizon() -> None:
    got = rebuild_entries([], [rollout(D1, "u-a")], NOW)
    assert len(got) == 1
    horizon = format_time(NOW + dt.timedelta(days=UNKNOWN_EXPIRY_DAYS))
    assert got[0].expires_at == horizon
