"""Capture real Lease and Rollout objects, one per phase, into tests/fixtures/status/.

Not collected by default (the file name does not start with ``test_``): run it on purpose when
the status shape changes, and commit the result::

    .venv/bin/python -m pytest tests/e2e/capture_status_fixtures.py

It drives the real operator on the local control plane through every phase a GitOps tool can
see, and writes each object as the API server returned it, minus server bookkeeping
(``managedFields``, ``uid``, ``resourceVersion``) and with the throw-away namespace renamed to
``shop``. tests/unit/tooling/test_argocd_health.py runs the Argo CD health script against
these files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from tests.e2e.harness import (
    REPO,
    deployment,
    deployment_body,
    lease_body,
    lease_phase,
    rollout_body,
    rollout_status,
    wait_for,
    wait_phase,
)
from tests.e2e.plugin import apply_obj

pytestmark = [pytest.mark.e2e]

OUT = REPO / "tests" / "fixtures" / "status"
IMG1 = "reg.example/checkout:1.0.0"
IMG2 = "reg.example/checkout@sha256:" + "e" * 64
NO_ANALYSIS = {"requireAnalysis": False}
LONG = [{"weight": 5, "soakSeconds": 3600}, {"weight": 100}]
FAST = [{"weight": 5, "soakSeconds": 1}, {"weight": 100}]


def clean(obj: dict[str, Any], ns: str) -> dict[str, Any]:
    meta = obj["metadata"]
    for key in ("managedFields", "uid", "resourceVersion"):
        meta.pop(key, None)
    text = json.dumps(obj, indent=2, sort_keys=True).replace(ns, "shop")
    return dict(json.loads(text))


def dump(kube: Kube, plural: str, ns: str, name: str, file: str) -> None:
    obj = kube.get_custom(plural, ns, name)
    assert obj is not None
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / file).write_text(json.dumps(clean(obj, ns), indent=2, sort_keys=True) + "\n")


def target(cluster: Any, kube: Kube, ns: str, name: str) -> None:
    apply_obj(cluster, deployment_body(ns, name, 4, IMG1))
    wait_for(
        f"{name} ready",
        lambda: (deployment(kube, ns, name) or {}).get("status", {}).get("readyReplicas") == 4,
        timeout=60,
    )


def lease(cluster: Any, ns: str, name: str, tgt: str, **kw: Any) -> None:
    apply_obj(cluster, lease_body(ns, name, tgt, {"app": IMG2}, constraints=NO_ANALYSIS, **kw))


def phase_is(kube: Kube, ns: str, name: str, phase: str) -> bool:
    return rollout_status(kube, ns, name).get("phase") == phase


def test_capture(kube: Kube, trust: Any, running_operator: Any, kube_namespace: str) -> None:
    ns, c = kube_namespace, trust
    for t in ("done", "back", "paused", "approval", "soaking", "waiting"):
        target(c, kube, ns, t)

    # Leases: Verified (unused), Rejected (one key), Expired
    lease(c, ns, "lease-verified", "done")
    lease(c, ns, "lease-rejected", "waiting", signers=["alice"])
    lease(c, ns, "lease-expired", "done", expires_in=4)
    wait_for("verified", lambda: lease_phase(kube, ns, "lease-verified") == "Verified")
    wait_for("rejected", lambda: lease_phase(kube, ns, "lease-rejected") == "Rejected")
    wait_for("expired", lambda: lease_phase(kube, ns, "lease-expired") == "Expired", timeout=30)
    dump(kube, "leases", ns, "lease-verified", "lease-verified.json")
    dump(kube, "leases", ns, "lease-rejected", "lease-rejected.json")
    dump(kube, "leases", ns, "lease-expired", "lease-expired.json")

    # Completed, and its Lease Consumed
    lease(c, ns, "l-done", "done")
    apply_obj(c, rollout_body(ns, "done", "l-done", tiers=FAST))
    wait_phase(kube, ns, "done", "Completed", timeout=90)
    dump(kube, "rollouts", ns, "done", "rollout-completed.json")
    wait_for("consumed", lambda: lease_phase(kube, ns, "l-done") == "Consumed")
    dump(kube, "leases", ns, "l-done", "lease-consumed.json")

    # Failed: a second Rollout for the consumed Lease
    apply_obj(c, rollout_body(ns, "replay", "l-done", tiers=FAST))
    wait_phase(kube, ns, "replay", "Failed", timeout=60)
    dump(kube, "rollouts", ns, "replay", "rollout-failed.json")

    # WaitingForLease: its Lease is Rejected
    apply_obj(c, rollout_body(ns, "waiting", "lease-rejected", tiers=FAST))
    wait_for("waiting", lambda: phase_is(kube, ns, "waiting", "WaitingForLease"))
    dump(kube, "rollouts", ns, "waiting", "rollout-waitingforlease.json")

    # Progressing (soaking), Paused, WaitingForApproval, RolledBack (forced)
    for name in ("soaking", "paused", "back"):
        lease(c, ns, f"l-{name}", name)
        apply_obj(c, rollout_body(ns, name, f"l-{name}", tiers=LONG))
    lease(c, ns, "l-approval", "approval")
    manual = [
        {"weight": 5, "soakSeconds": 1},
        {"weight": 25, "approval": "Manual"},
        {"weight": 100},
    ]
    apply_obj(c, rollout_body(ns, "approval", "l-approval", tiers=manual))
    for name in ("soaking", "paused", "back"):
        wait_for(
            f"{name} soaking",
            lambda n=name: bool(
                (rollout_status(kube, ns, n).get("tiers") or [{}])[0].get("soakStartedAt")
            ),
            timeout=60,
        )
    dump(kube, "rollouts", ns, "soaking", "rollout-progressing.json")
    c.kubectl(
        "patch", "crollout", "paused", "-n", ns, "--type=merge", "-p", '{"spec":{"paused":true}}'
    )
    wait_phase(kube, ns, "paused", "Paused", timeout=30)
    dump(kube, "rollouts", ns, "paused", "rollout-paused.json")
    wait_phase(kube, ns, "approval", "WaitingForApproval", timeout=60)
    dump(kube, "rollouts", ns, "approval", "rollout-waitingforapproval.json")
    c.kubectl("annotate", "crollout", "back", "-n", ns, "calyx.io/force-rollback=fixture capture")
    wait_phase(kube, ns, "back", "RolledBack", timeout=60)
    dump(kube, "rollouts", ns, "back", "rollout-rolledback.json")

    assert len(list(Path(OUT).glob("*.json"))) >= 11
