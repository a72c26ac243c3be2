"""The Lease's outbox on the in-memory API (reconcile/lease.py; docs/audit.md, "Outbox")."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from typing import Any

from calyx.adapters.events import EventRecorder
from calyx.domain.signatures import (
    COSIGN_PREFIX,
    cosign_annotation_value,
    lease_statement,
    sign_statement,
)
from calyx.domain.timefmt import format_time
from calyx.domain.trust import parse_trust_store
from calyx.reconcile.lease import LeaseDeps, reconcile_lease
from calyx.reconcile.locks import KeyedLocks
from tests.support.fake_kube import FakeKube
from tests.support.rollout_world import ROLES, SEEDS, signers_yaml

NOW = dt.datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=dt.UTC)
SPEC = {
    "intent": "TEST-1",
    "targetRef": {"kind": "Deployment", "name": "checkout"},
    "change": {"containers": [{"name": "app", "image": "reg/x@sha256:" + "a" * 64}]},
    "expiresAt": format_time(NOW + dt.timedelta(hours=1)),
}


def cosign(spec: dict[str, Any], signer: str, name: str = "l1") -> str:
    at = format_time(NOW)
    st = lease_statement("ns", name, spec, signer, ROLES[signer], at)
    return cosign_annotation_value(ROLES[signer], at, sign_statement(st, SEEDS[signer]))


def forged(i: int) -> str:
    """Sentinel's signature over another spec: invalid here, the same reason every time."""
    other = {**SPEC, "intent": f"other {i}"}
    return cosign(other, "sentinel")


def test_two_decisions_in_one_second_are_two_events() -> None:
    """The same cause announced twice within one second (a signature rewritten) kept the same
    outbox id, so the second Event was refused as AlreadyExists and lost (e2e flood: 61 audit
    records, 42 Events)."""
    fake = FakeKube(clock=lambda: NOW)
    annotations = {COSIGN_PREFIX + "alice": cosign(SPEC, "alice")}
    annotations[COSIGN_PREFIX + "sentinel"] = forged(0)
    meta = {"name": "l1", "annotations": annotations}
    fake.create_custom("leases", "ns", {"kind": "Lease", "metadata": meta, "spec": SPEC})
    trust = parse_trust_store(signers_yaml(["alice", "sentinel"]), None)
    deps = LeaseDeps(
        kube=fake,
        events=EventRecorder(fake),
        trust=lambda: trust,
        ledger=lambda: {},
        clock=lambda: NOW,
        locks=KeyedLocks(),
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        reconcile_lease(deps, fake.get_custom("leases", "ns", "l1") or {})
        for i in (1, 2):  # two rewrites, each announced alone in its outbox
            ann = {COSIGN_PREFIX + "sentinel": forged(i)}
            fake.patch_custom("leases", "ns", "l1", {"metadata": {"annotations": ann}})
            reconcile_lease(deps, fake.get_custom("leases", "ns", "l1") or {})
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    invalid = [r for r in records if r["reason"] == "SignatureInvalid"]
    assert len(invalid) == 3 and len({r["message"] for r in invalid}) == 1
    assert len({r["data"]["outboxId"] for r in records}) == len(records)
    posted = [e["reason"] for e in fake.events("ns")]
    assert posted.count("SignatureInvalid") == 3, posted
