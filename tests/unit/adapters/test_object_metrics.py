"""kube-state-style series: which Rollouts are exported, with which values, and a failed listing."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from calyx.adapters.metrics import OperatorMetrics, object_state_families


def rollout(name: str, phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "shop",
            "name": name,
            "creationTimestamp": "2026-11-25T09:00:00Z",
        },
        "spec": {"leaseRef": {"name": f"{name}-lease"}},
        "status": {"phase": phase, "target": {"kind": "Deployment", "name": "checkout"}, **status},
    }


def lease(name: str, phase: str, expires: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"expiresAt": expires},
        "status": {"phase": phase},
    }


def samples(families: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_only_rollouts_in_progress_are_exported_one_by_one() -> None:
    ros = [
        rollout(
            "a",
            "Progressing",
            currentWeight=25,
            effectivePercent=26,
            canaryReplicas=7,
            stableReplicas=20,
            tiers=[{"weight": 5, "startedAt": "2026-11-25T10:00:00Z"}],
            conditions=[{"type": "Ready", "lastTransitionTime": "2026-11-25T10:02:00Z"}],
            lastAnalysis={"state": {"noDataSince": "2026-11-25T10:03:00Z"}},
        ),
        rollout("b", "Completed", currentWeight=100),
        rollout("c", "RolledBack"),
        rollout("d", "WaitingForLease"),
    ]
    leases = [
        lease("a-lease", "Consumed", "2026-11-25T12:00:00Z"),
        lease("b-lease", "Consumed", "2026-11-25T12:00:00Z"),
        lease("x", "Rejected", "2026-11-25T12:00:00Z"),
    ]
    got = samples(object_state_families(ros, leases))
    a = (("namespace", "shop"), ("rollout", "a"))
    assert got[("calyx_rollout_current_weight", a)] == 25
    assert got[("calyx_rollout_effective_percent", a)] == 26
    assert got[("calyx_rollout_canary_replicas", a)] == 7
    assert got[("calyx_rollout_stable_replicas", a)] == 20
    # the latest of the condition flip (10:02) and the tier start (10:00)
    assert got[("calyx_rollout_last_progress_timestamp_seconds", a)] == 1795600920  # 10:02:00Z
    assert got[("calyx_rollout_nodata_since_timestamp_seconds", a)] == 1795600980  # 10:03:00Z
    lease_key = (("lease", "a-lease"), ("namespace", "shop"), ("rollout", "a"))
    assert got[("calyx_rollout_lease_expiry_timestamp_seconds", lease_key)] == 1795608000
    rolled = {dict(k[1])["rollout"] for k in got if k[0] == "calyx_rollout_info"}
    assert rolled == {"a", "d"}, "finished Rollouts are not exported one by one"
    # a Rollout with no progress yet counts from its creation
    d = (("namespace", "shop"), ("rollout", "d"))
    assert got[("calyx_rollout_last_progress_timestamp_seconds", d)] == 1795597200
    assert got[("calyx_leases", (("phase", "Consumed"),))] == 2
    assert got[("calyx_leases", (("phase", "Rejected"),))] == 1
    assert got[("calyx_leases", (("phase", "Verified"),))] == 0, "every phase, zero included"


def test_a_failed_listing_is_visible_and_does_not_break_the_scrape() -> None:
    metrics = OperatorMetrics()

    def broken() -> Any:
        raise ConnectionError("API server away")

    metrics.export_objects(broken)
    text = generate_latest(metrics.registry).decode()
    assert "calyx_object_metrics_up 0.0" in text
    assert "calyx_rollbacks" in text, "the operator's own series are still served"
    assert metrics.export_objects(broken) is metrics.export_objects(broken)


def test_listing_served_on_metrics() -> None:
    metrics = OperatorMetrics()
    metrics.export_objects(lambda: ([rollout("a", "Paused", currentWeight=5)], []))
    text = generate_latest(metrics.registry).decode()
    assert "calyx_object_metrics_up 1.0" in text
    assert (
        'calyx_rollout_info{lease="a-lease",namespace="shop",phase="Paused",'
        'rollout="a",target="checkout"} 1.0'
    ) in text
