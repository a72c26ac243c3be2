"""Audit chain (docs/audit.md): record format, hashing, and tamper detection."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from typing import Any

import pytest

from calyx.domain import audit
from calyx.domain.audit import GENESIS, append, event_name, head, verify
from calyx.domain.canonical import canonical_json

T0 = dt.datetime(2026, 11, 25, 17, 0, 0, 123456, tzinfo=dt.UTC)
ROLLOUT = {
    "apiVersion": "calyx.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "checkout-2-3-1", "namespace": "shop", "uid": "u-1"},
}
STEPS = [
    ("DeployStarted", "Normal", "canary started at 5%"),
    ("CanaryPromoted", "Normal", "tier 2/3: 25%"),
    ("ThresholdBreached", "Warning", "errorRate canary 23‰ > max 10‰"),
    ("RolledBack", "Warning", "revert issued (Breach)"),
    ("RollbackComplete", "Normal", "checkout restored and verified"),
]


def build(n: int = len(STEPS)) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    for i in range(n):
        reason, type_, message = STEPS[i % len(STEPS)]
        rec = append(
            chain,
            time=T0 + dt.timedelta(seconds=i),
            event=None,
            reason=reason,
            type=type_,
            obj=ROLLOUT,
            message=message,
            data={"tier": i, "weight": 5},
        )
        chain = [*chain, rec]
    return chain


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "kind", "name"),
    [
        ("Cosigned", "Lease", "lease_event.COSIGNED"),
        ("Verified2Key", "Lease", "lease_event.VERIFIED_2KEY"),
        ("DeployStarted", "Rollout", "deploy_event.STARTED"),
        ("CanaryPromoted", "Rollout", "deploy_event.CANARY_PROMOTED"),
        ("RolledBack", "Rollout", "deploy_event.ROLLED_BACK"),
        ("DeployCompleted", "Rollout", "deploy_event.COMPLETED"),
        ("RollbackComplete", "Rollout", "rollback_event.COMPLETE"),
        ("ThresholdBreached", "Rollout", "analysis_event.BREACH"),
        ("NoData", "Rollout", "analysis_event.NO_DATA"),
        ("SignatureInvalid", "Lease", "lease_event.SIGNATURE_INVALID"),
        ("LeaseExpired", "Rollout", "lease_event.EXPIRED"),
        ("Paused", "Rollout", "deploy_event.PAUSED"),
        ("TargetDeleted", "Rollout", "deploy_event.TARGET_DELETED"),
        ("ContainerNotFound", "Rollout", "deploy_event.CONTAINER_NOT_FOUND"),
        ("LeaseConsumed", "Lease", "lease_event.LEASE_CONSUMED"),
        ("HTTPError", "Rollout", "deploy_event.HTTP_ERROR"),
    ],
)
def test_event_names(reason: str, kind: str, name: str) -> None:
    assert event_name(reason, kind) == name


def test_explicit_event_name_wins() -> None:
    rec = append([], time=T0, event="deploy_event.STARTED", reason="X", type="Normal",
                 obj=ROLLOUT, message="m")  # fmt: skip
    assert rec["event"] == "deploy_event.STARTED"


# --- records ---------------------------------------------------------------------------------


def test_record_format() -> None:
    chain = build(2)
    first, second = chain
    assert list(first) == list(audit.FIELDS)
    assert first["seq"] == 1 and second["seq"] == 2
    assert first["time"] == "2026-11-25T17:00:00.123Z"
    assert first["event"] == "deploy_event.STARTED"
    assert first["object"] == {
        "kind": "Rollout", "namespace": "shop", "name": "checkout-2-3-1", "uid": "u-1"
    }  # fmt: skip
    assert first["prev"] == GENESIS == "sha256:" + "0" * 64
    assert second["prev"] == first["hash"]
    body = {k: v for k, v in first.items() if k != "hash"}
    assert first["hash"] == "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()
    assert head(chain) == second["hash"] and head([]) == GENESIS


def test_hash_matches_an_independent_implementation() -> None:
    rec = build(1)[0]
    body = {k: v for k, v in rec.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert rec["hash"] == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_append_is_pure() -> None:
    chain = build(3)
    before = copy.deepcopy(chain)
    append(chain, time=T0, event=None, reason="Paused", type="Normal", obj=ROLLOUT, message="m")
    assert chain == before


def test_ref_object_accepted_and_floats_become_strings() -> None:
    rec = append(
        [],
        time="2026-11-25T17:00:00.000Z",
        event=None,
        reason="RolledBack",
        type="Warning",
        obj={"kind": "Rollout", "namespace": "shop", "name": "r", "uid": "u"},
        message="x" * 5000,
        data={"detectSeconds": 0.25, "nan": float("nan"), "when": T0, "n": [1, 2.5]},
    )
    assert rec["object"]["name"] == "r"
    assert rec["data"] == {
        "detectSeconds": "0.25", "nan": "nan", "when": "2026-11-25T17:00:00.123Z", "n": [1, "2.5"]
    }  # fmt: skip
    assert len(rec["message"]) == audit.MAX_MESSAGE_CHARS
    assert verify([rec]).ok


def test_big_data_is_replaced_by_a_note() -> None:
    rec = append([], time=T0, event=None, reason="NoData", type="Warning", obj=ROLLOUT,
                 message="m", data={"blob": "x" * 10_000})  # fmt: skip
    assert "omitted" in rec["data"] and rec["data"]["keys"] == ["blob"]


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        append([], time=dt.datetime(2026, 1, 1), event=None, reason="X", type="Normal",
               obj=ROLLOUT, message="m")  # fmt: skip


# --- verification ----------------------------------------------------------------------------


def test_intact_chain_verifies() -> None:
    chain = build(12)
    r = verify(chain)
    assert (r.ok, r.index, r.head, r.count) == (True, None, chain[-1]["hash"], 12)
    assert r.reason == "12 record(s), seq 1-12"
    assert verify([]).ok and verify([]).head == GENESIS


def _modified(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    chain[2]["message"] = "nothing happened"
    return chain, 2


def _modified_and_rehashed(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    chain[2]["message"] = "nothing happened"
    chain[2]["hash"] = audit.record_hash(chain[2])
    return chain, 3  # detected at the next record, whose prev no longer matches


def _modified_data(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    chain[1]["data"]["weight"] = 100
    return chain, 1


def _removed(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    del chain[2]
    return chain, 2


def _removed_first(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    del chain[0]
    return chain, 0


def _inserted(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    fake = append(chain[:2], time=T0, event=None, reason="DeployCompleted", type="Normal",
                  obj=ROLLOUT, message="all good")  # fmt: skip
    chain.insert(2, fake)
    return chain, 3  # the forged record is consistent with its predecessor; its successor is not


def _inserted_renumbered(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    fake = append(chain[:2], time=T0, event=None, reason="DeployCompleted", type="Normal",
                  obj=ROLLOUT, message="all good")  # fmt: skip
    rest = chain[2:]
    for rec in rest:
        rec["seq"] += 1
    return [*chain[:2], fake, *rest], 3


def _reordered(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    chain[1], chain[2] = chain[2], chain[1]
    return chain, 1


def _duplicated(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    chain.insert(3, copy.deepcopy(chain[2]))
    return chain, 3


def _field_removed(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    del chain[4]["data"]
    return chain, 4


def _float_added(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    chain[4]["data"]["x"] = 1.5
    return chain, 4


def _genesis_changed(chain: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    chain[0]["prev"] = "sha256:" + "1" * 64
    return chain, 0


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (_modified, "hash does not match its content"),
        (_modified_and_rehashed, "does not match the hash of record 2"),
        (_modified_data, "hash does not match its content"),
        (_removed, "1 record(s) missing before it"),
        (_removed_first, "does not start where expected"),
        (_inserted, "out of order, duplicated or inserted"),
        (_inserted_renumbered, "does not match the hash of record 2"),
        (_reordered, "missing before it"),
        (_duplicated, "out of order, duplicated or inserted"),
        (_field_removed, "lacks field(s) data"),
        (_float_added, "not canonical JSON"),
        (_genesis_changed, "does not match the anchor"),
    ],
)
def test_tampering_is_detected(tamper: Any, words: str) -> None:
    chain, bad = tamper(build(8))
    r = verify(chain)
    assert not r.ok
    assert r.index == bad, r.reason
    assert words in r.reason
    assert "\n" not in r.reason


def test_tail_verifies_from_its_anchor() -> None:
    chain = build(10)
    t = chain[4:]
    assert verify(t, anchor=chain[3]["hash"], start_seq=5).ok
    assert not verify(t).ok  # not a whole chain
    r = verify(t, anchor=chain[2]["hash"], start_seq=5)
    assert not r.ok and r.index == 0
    assert verify(t, anchor=None, start_seq=None).ok  # internal consistency only


def test_tail_keeps_the_newest_records_within_budget() -> None:
    chain = build(50)
    t = audit.tail(chain, max_records=10, max_bytes=10**9)
    assert [r["seq"] for r in t.records] == list(range(41, 51))
    assert (t.dropped, t.anchor) == (40, chain[39]["hash"])
    assert verify(t.records, anchor=t.anchor, start_seq=t.dropped + 1).ok

    line = len(audit.log_line(chain[-1]).encode()) + 1
    t = audit.tail(chain, max_records=1000, max_bytes=3 * line + 5)
    assert len(t.records) == 3 and t.dropped == 47

    whole = audit.tail(chain, max_records=1000, max_bytes=10**9)
    assert (whole.dropped, whole.anchor, len(whole.records)) == (0, GENESIS, 50)

    none = audit.tail(chain, max_records=0, max_bytes=10**9)
    assert (none.records, none.dropped, none.anchor) == ([], 50, chain[-1]["hash"])

    # a tail of a tail counts from seq 1
    again = audit.tail(t.records, max_records=2, max_bytes=10**9)
    assert again.dropped == 48 and again.anchor == chain[47]["hash"]


def test_append_after_a_stored_tail_continues_the_chain() -> None:
    chain = build(10)
    stored = audit.parse_jsonl(audit.to_jsonl(chain[7:]))
    rec = append(stored, time=T0, event=None, reason="Paused", type="Normal", obj=ROLLOUT,
                 message="m")  # fmt: skip
    full = [*chain, rec]
    assert rec["seq"] == 11 and verify(full).ok


def test_jsonl_round_trip_and_errors() -> None:
    chain = build(3)
    text = audit.to_jsonl(chain)
    assert text.count("\n") == 3 and text.endswith("\n")
    assert audit.parse_jsonl(text + "\n\n") == chain
    with pytest.raises(audit.AuditFormatError, match="line 2"):
        audit.parse_jsonl(text.splitlines()[0] + "\n{oops\n")
    with pytest.raises(audit.AuditFormatError, match="line 1: not a JSON object"):
        audit.parse_jsonl("[1]\n")


def test_verify_reports_non_objects() -> None:
    r = verify([build(1)[0], "junk"])
    assert not r.ok and r.index == 1 and "not a JSON object" in r.reason


LEASE = {
    "apiVersion": "calyx.io/v1alpha1",
    "kind": "Lease",
    "metadata": {"name": "checkout-2-3-1", "namespace": "shop", "uid": "l-1"},
    "status": {
        "digest": "sha256:" + "cd" * 32,
        "cosigners": [
            {"id": "alice", "role": "human", "signedAt": "2026-11-25T16:50:00Z", "valid": True},
            {"id": "sentinel", "role": "agent", "signedAt": "2026-11-25T16:51:00Z",
             "valid": True},
            {"id": "mallory", "role": "human", "signedAt": "2026-11-25T16:52:00Z",
             "valid": False, "reason": "bad signature"},
        ],
    },
}  # fmt: skip


def test_lease_records_tell_the_leases_story_once() -> None:
    recs = audit.lease_records([], lease=LEASE, time=T0)
    assert [r["event"] for r in recs] == [
        "lease_event.COSIGNED",
        "lease_event.COSIGNED",
        "lease_event.VERIFIED_2KEY",
    ]
    assert [r["data"].get("signer") for r in recs[:2]] == ["alice", "sentinel"]
    assert recs[2]["data"] == {"digest": LEASE["status"]["digest"], "humans": 1, "agents": 1}
    assert recs[0]["object"] == {"kind": "Lease", "namespace": "shop", "name": "checkout-2-3-1",
                                 "uid": "l-1"}  # fmt: skip
    assert verify(recs).ok
    chain = [*build(2), *audit.lease_records(build(2), lease=LEASE, time=T0)]
    assert verify(chain).ok
    assert audit.lease_records(chain, lease=LEASE, time=T0) == []
