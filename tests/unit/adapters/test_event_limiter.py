"""Event rate limits in the posting adapter (adapters/event_limiter.py, adapters/events.py;
docs/audit.md, "Rate limits"): on the in-memory API with a hand-driven clock."""

from __future__ import annotations

import io
import json
import logging
from typing import Any, cast

import pytest

from calyx.adapters.event_limiter import PRUNE_EVERY, EventLimiter
from calyx.adapters.events import EventRecorder
from calyx.adapters.metrics import OperatorMetrics
from calyx.domain.outbox import enqueue
from calyx.domain.ratelimit import LIMITED_REASONS, NAMESPACE_RULE, OBJECT_RULE
from calyx.reconcile.lease import LeaseDeps, announce_lease
from tests.support.fake_kube import FakeKube

LEASES = "leases"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def lease(fake: FakeKube, ns: str, name: str) -> dict[str, Any]:
    body = {"apiVersion": "calyx.io/v1alpha1", "kind": "Lease", "metadata": {"name": name}}
    return fake.create_custom(LEASES, ns, body)


def entry(i: int, reason: str = "SignatureInvalid", type_: str = "Warning") -> dict[str, Any]:
    msg = f"sentinel: signature does not match this lease ({i})"
    return {"id": f"{i:016x}", "type": type_, "reason": reason, "message": msg, "time": "t"}


def suppressed(metrics: OperatorMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("calyx_events_suppressed_total", {"reason": reason})
    return float(value or 0.0)


@pytest.fixture
def rig() -> tuple[FakeKube, EventRecorder, Clock, OperatorMetrics]:
    fake, clock, metrics = FakeKube(), Clock(), OperatorMetrics()
    return fake, EventRecorder(fake, limiter=EventLimiter(clock, metrics)), clock, metrics


def test_a_signature_flood_posts_the_burst_then_one_per_refill(
    rig: tuple[FakeKube, EventRecorder, Clock, OperatorMetrics],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, events, clock, metrics = rig
    victim = lease(fake, "ns", "victim")
    with caplog.at_level(logging.INFO, logger="calyx.events"):
        posted = [events.emit_entry(victim, entry(i)) for i in range(1000)]
    assert sum(posted) == OBJECT_RULE.burst
    assert len(fake.events("ns")) == OBJECT_RULE.burst
    assert suppressed(metrics, "SignatureInvalid") == 1000 - OBJECT_RULE.burst
    limited = [r.getMessage() for r in caplog.records if "rate" in r.getMessage()]
    assert len(limited) == 1 and "Lease ns/victim are rate-limited" in limited[0], limited
    # Posted Events are logged one by one as before; suppressed ones are not.
    assert len([r for r in caplog.records if r.getMessage().startswith("event ")]) == 10

    caplog.clear()
    clock.t += OBJECT_RULE.refill_seconds
    with caplog.at_level(logging.INFO, logger="calyx.events"):
        assert events.emit_entry(victim, entry(1000)) is True
        assert events.emit_entry(victim, entry(1001)) is False
    lines = [r.getMessage() for r in caplog.records if "rate" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "ns/victim resumed" in lines[0] and "990 suppressed" in lines[0]
    assert "rate-limited" in lines[1]


def test_decisions_are_posted_whatever_the_rate(
    rig: tuple[FakeKube, EventRecorder, Clock, OperatorMetrics],
) -> None:
    fake, events, _, metrics = rig
    obj = lease(fake, "ns", "l1")
    for i in range(100):
        events.emit_entry(obj, entry(i))  # empties both of its buckets
    decisions = ["Verified2Key", "Cosigned", "LeaseConsumed", "DeployStarted", "RolledBack"]
    for i, reason in enumerate(decisions * 20):
        assert events.emit_entry(obj, entry(1000 + i, reason, "Normal")) is True
    warnings = ("ThresholdBreached", "NoData", "RollbackStuck", "SnapshotTampered")
    for i, reason in enumerate(warnings):
        assert events.emit_entry(obj, entry(2000 + i, reason)) is True
    posted = [e["reason"] for e in fake.events("ns")]
    assert posted.count("SignatureInvalid") == OBJECT_RULE.burst
    assert len(posted) == OBJECT_RULE.burst + 100 + 4
    assert suppressed(metrics, "Verified2Key") == 0


def test_many_bad_objects_share_the_namespace_bucket(
    rig: tuple[FakeKube, EventRecorder, Clock, OperatorMetrics],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """500 bad Leases, one SignatureInvalid and one LeaseRejected each."""
    fake, events, _, metrics = rig
    with caplog.at_level(logging.WARNING, logger="calyx.events"):
        for i in range(500):
            obj = lease(fake, "attacker", f"bad-{i}")
            events.emit_entry(obj, entry(2 * i))
            events.emit_entry(obj, entry(2 * i + 1, "LeaseRejected"))
        other = lease(fake, "elsewhere", "fine")
        assert events.emit_entry(other, entry(0)) is True  # another namespace: its own bucket
    assert len(fake.events("attacker")) == NAMESPACE_RULE.burst
    total = suppressed(metrics, "SignatureInvalid") + suppressed(metrics, "LeaseRejected")
    assert total == 1000 - NAMESPACE_RULE.burst
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "namespace attacker" in lines[0], lines


def test_suppressed_entries_keep_their_audit_records_and_are_cleared(
    rig: tuple[FakeKube, EventRecorder, Clock, OperatorMetrics],
) -> None:
    """The Lease's outbox: every entry gets its chained audit record (stdout), only the
    allowed ones an Event, and the outbox is cleared either way."""
    fake, events, _, _ = rig
    obj = lease(fake, "ns", "victim")
    status: dict[str, Any] = {}

    class Ev:
        def __init__(self, i: int) -> None:
            self.type, self.reason, self.audit = "Warning", "SignatureInvalid", ""
            self.message = f"sentinel: reason {i}"

    enqueue(status, "uid-victim/0", [Ev(i) for i in range(25)], "2026-11-25T10:00:00Z")
    updated = fake.patch_custom_status(LEASES, "ns", "victim", status)
    out = io.StringIO()
    deps = cast(LeaseDeps, type("Deps", (), {"kube": fake, "events": events})())
    announce_lease(deps, updated, out=out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 26))
    assert all(r["reason"] == "SignatureInvalid" for r in records)
    assert len(fake.events("ns")) == OBJECT_RULE.burst
    st = fake.get_custom(LEASES, "ns", "victim")["status"]  # type: ignore[index]
    assert not st.get("outbox") and st["auditSeq"] == 25 and st["auditHead"] == records[-1]["hash"]
    assert obj["metadata"]["uid"] == records[0]["object"]["uid"]


def test_full_buckets_are_forgotten(
    rig: tuple[FakeKube, EventRecorder, Clock, OperatorMetrics],
) -> None:
    fake, _, clock, metrics = rig
    limiter = EventLimiter(clock, metrics)
    for i in range(PRUNE_EVERY - 1):
        limiter.allow(lease(fake, f"ns-{i % 7}", f"l{i}"), "LeaseRejected")
    assert limiter.size() == PRUNE_EVERY - 1 + 7
    clock.t += OBJECT_RULE.refill_seconds * OBJECT_RULE.burst
    limiter.allow(lease(fake, "ns-0", "last"), "LeaseRejected")  # the PRUNE_EVERY-th call
    assert limiter.size() == 2  # only the last call's own buckets (one token short)


def test_every_limited_reason_starts_at_zero() -> None:
    metrics = OperatorMetrics()
    for reason in LIMITED_REASONS:
        assert suppressed(metrics, reason) == 0.0
        value = metrics.registry.get_sample_value(
            "calyx_events_suppressed_total", {"reason": reason}
        )
        assert value == 0.0, reason
