"""Every Event has its audit record, Lease events included (docs/audit.md, "Outbox").

Probe: in one run 102 ``SignatureInvalid``, 11 ``LeaseConsumed`` and 2 ``LeaseExpired`` Events
had no audit record at all. Now each announcement is stored in the Lease's status with its
decision, posted as an Event named after the entry and as a hash-chained audit record (stdout),
and cleared.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx.domain import audit
from tests.e2e.harness import cosign, events_for, lease_body, lease_phase, wait_for
from tests.e2e.plugin import apply_obj

pytestmark = [pytest.mark.e2e]


def audit_lines(op: Any, uid: str) -> list[dict[str, Any]]:
    out = []
    for line in op.log_text().splitlines():
        line = line.strip()
        if not line.startswith("{") or '"hash"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("object", {}).get("uid") == uid:
            out.append(rec)
    return out


def test_lease_events_each_have_one_chained_audit_record(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    body = lease_body(ns, "l1", "checkout", {"app": "reg/x@sha256:" + "a" * 64}, signers=["alice"])
    body["metadata"]["annotations"]["cosign.calyx.io/watcher"] = "{not json"
    apply_obj(trust, body)
    wait_for("Rejected", lambda: lease_phase(kube, ns, "l1") == "Rejected")
    live = kube.get_custom("leases", ns, "l1")
    assert live is not None
    kube.patch_custom(
        "leases",
        ns,
        "l1",
        {"metadata": {"annotations": {"cosign.calyx.io/sentinel": cosign(live, "sentinel")}}},
    )
    wait_for("Verified", lambda: lease_phase(kube, ns, "l1") == "Verified")

    def settled() -> Any:
        st = (kube.get_custom("leases", ns, "l1") or {}).get("status") or {}
        return not st.get("outbox") and st.get("auditHead") and st

    st = wait_for("outbox drained", settled, timeout=20)
    uid = live["metadata"]["uid"]
    events = events_for(kube, ns, "l1")
    reasons = sorted(e["reason"] for e in events)
    for r in ("Cosigned", "SignatureInvalid", "LeaseRejected", "Verified2Key"):
        assert r in reasons, reasons
    records = wait_for(
        "audit records",
        lambda: (
            len(audit_lines(running_operator, uid)) >= len(events)
            and audit_lines(running_operator, uid)
        ),
    )
    by_id = {r["data"]["outboxId"]: r for r in records}
    for ev in events:  # one record per Event, tied by the outbox id in the Event's name
        rec = by_id.get(ev["metadata"]["name"].rsplit(".", 1)[1])
        assert rec is not None, f"no audit record for Event {ev['reason']}"
        assert rec["reason"] == ev["reason"]
    chain = sorted({r["hash"]: r for r in records}.values(), key=lambda r: r["seq"])
    assert audit.verify(chain).ok, "the Lease's records form one hash chain"
    assert st["auditHead"] == chain[-1]["hash"] and st["auditSeq"] == chain[-1]["seq"]
