"""Event coverage, the report and the audit chain end to end (issue 6, docs/report.md,
docs/audit.md).

A full successful rollout and a rolled-back one must each emit every seed Event
(docs/design.md §Report and audit) exactly once per transition; every decision must also be a
hash-chained record in the report ConfigMap, which `calyx audit verify` checks and which detects
tampering."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from tests.e2e.harness import events_for, reasons, replicas_of, rollout_body, wait_for, wait_phase
from tests.e2e.plugin import apply_obj
from tests.e2e.test_leases import cli
from tests.e2e.test_rollouts import setup

pytestmark = [pytest.mark.e2e]
TIERS = [{"weight": 5, "soakSeconds": 2}, {"weight": 25, "soakSeconds": 2}, {"weight": 100}]


def _counts(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def test_successful_rollout_events_report_and_audit(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(trust, kube, ns, replicas=8, tiers=TIERS)
    wait_phase(kube, ns, "r1", "Completed", timeout=90)
    time.sleep(2)  # let a few more sweeps run: still nothing announced twice
    lease = _counts(reasons(kube, ns, "l1"))
    assert lease["Cosigned"] == 2 and lease["Verified2Key"] == 1, lease
    rollout = _counts(reasons(kube, ns, "r1"))
    assert rollout == {"DeployStarted": 1, "CanaryPromoted": 2, "DeployCompleted": 1}, rollout
    msgs = {e["reason"]: e["message"] for e in events_for(kube, ns, "r1")}
    assert "5%" in msgs["DeployStarted"] and "checkout-canary" in msgs["DeployStarted"]
    assert "reg.example/checkout@sha256:" in msgs["DeployCompleted"]

    cm = kube.get_configmap(ns, "r1-report")
    assert cm is not None, "no report ConfigMap"
    report = json.loads(cm["data"]["report.json"])
    text = json.dumps(report)
    assert "TEST-1" in text  # the intent
    assert report["lease"]["digest"].startswith("sha256:")
    events = [json.loads(line)["event"] for line in cm["data"]["audit.jsonl"].splitlines()]
    assert _counts(events) == {
        "lease_event.COSIGNED": 2,
        "lease_event.VERIFIED_2KEY": 1,
        "deploy_event.STARTED": 1,
        "deploy_event.CANARY_PROMOTED": 2,
        "deploy_event.COMPLETED": 1,
    }, events
    md = cli(trust, "report", "r1", "-n", ns).stdout
    assert "Completed" in md and "checkout" in md
    out = cli(trust, "audit", "verify", "r1", "-n", ns)
    assert out.returncode == 0 and "ok" in out.stdout.lower()


def test_rolled_back_rollout_events_and_tamper_detection(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(
        trust,
        kube,
        ns,
        replicas=8,
        tiers=[
            {"weight": 5, "soakSeconds": 2},
            {"weight": 25, "soakSeconds": 600},
            {"weight": 100},
        ],
    )
    wait_for("25%", lambda: replicas_of(kube, ns, "checkout-canary") == 3, timeout=60)
    cli(trust, "force-rollback", "r1", "-n", ns, "--reason", "INC-9 checkout errors")
    wait_phase(kube, ns, "r1", "RolledBack", timeout=30)
    time.sleep(2)
    rollout = _counts(reasons(kube, ns, "r1"))
    assert rollout == {
        "DeployStarted": 1,
        "CanaryPromoted": 1,
        "RolledBack": 1,
        "RollbackComplete": 1,
    }, rollout
    msgs = {e["reason"]: e["message"] for e in events_for(kube, ns, "r1")}
    assert "INC-9 checkout errors" in msgs["RolledBack"]
    assert "restored and verified" in msgs["RollbackComplete"]
    types = {e["reason"]: e["type"] for e in events_for(kube, ns, "r1")}
    assert types["RolledBack"] == "Warning" and types["RollbackComplete"] == "Normal"

    cm = kube.get_configmap(ns, "r1-report")
    report = json.loads(cm["data"]["report.json"])
    assert report["rollback"]["trigger"] == "Manual"
    events = [json.loads(line)["event"] for line in cm["data"]["audit.jsonl"].splitlines()]
    assert events[-2:] == ["deploy_event.ROLLED_BACK", "rollback_event.COMPLETE"]
    assert cli(trust, "audit", "verify", "r1", "-n", ns).returncode == 0

    # Tamper with one record's message: verification fails and names the record.
    lines = cm["data"]["audit.jsonl"].splitlines()
    rec = json.loads(lines[3])
    rec["message"] = "nothing to see here"
    lines[3] = json.dumps(rec, separators=(",", ":"), sort_keys=True)
    cm["data"]["audit.jsonl"] = "\n".join(lines) + "\n"
    kube.replace_configmap(ns, "r1-report", cm)
    bad = cli(trust, "audit", "verify", "r1", "-n", ns, check=False)
    assert bad.returncode == 1, bad.stdout
    assert "4" in (bad.stdout + bad.stderr)  # the 4th record is named


def test_report_is_written_for_a_rollout_deleted_before_it_ends(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    """The audit trail outlives the Rollout (and Events, which expire after about an hour)."""
    ns = kube_namespace
    setup(trust, kube, ns, replicas=4, tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    wait_phase(kube, ns, "r1", "Progressing", timeout=60)
    trust.kubectl("delete", "rollouts.calyx.io", "r1", "-n", ns, "--wait=false")
    wait_for("rollout gone", lambda: kube.get_custom("rollouts", ns, "r1") is None, timeout=30)
    cm = kube.get_configmap(ns, "r1-report")
    assert cm is not None
    events = [json.loads(line)["event"] for line in cm["data"]["audit.jsonl"].splitlines()]
    assert events[-1] == "rollback_event.COMPLETE"
    apply_obj(trust, rollout_body(ns, "unused", "l1", tiers=TIERS))  # lease already consumed
    wait_phase(kube, ns, "unused", "Failed", timeout=30)
