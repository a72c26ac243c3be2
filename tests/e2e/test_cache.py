"""The operator's watch caches against a real API server (docs/architecture.md, "Caches").

A soaking Rollout, nothing happening: with the caches the operator reads memory and skips the
passes that have nothing due, so it makes (almost) no GETs; without them (``CALYX_WATCH_CACHE=
false``, the old behaviour) every 0.5 s tick re-reads the Rollout, its Lease, both Deployments
and the snapshot. Counted from the API server's audit log, which records the reads of
ServiceAccounts in namespace ``calyx-reads`` (calyx_dev.controlplane's policy): the operator
runs here with such a token. A regression to polling shows as a failure, not as a slow machine.

Also: a user's change still acts at once (a watch event is never skipped), and the objects a
pass reads from the cache are exactly what a GET returns (less ``managedFields``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from calyx.adapters.cache import CachedKube
from calyx.adapters.kube import Kube
from calyx_dev.operator_process import OperatorProcess
from tests.e2e.harness import (
    deployment_body,
    lease_body,
    replicas_of,
    rollout_body,
    rollout_status,
    wait_for,
    wait_phase,
)
from tests.e2e.plugin import apply_obj
from tests.packaging.test_image_entry import _service_account_kubeconfig

pytestmark = [pytest.mark.e2e]

READS_NS = "calyx-reads"  # its ServiceAccounts' reads are in the audit log
SA = "operator"
IMG1, IMG2 = "reg.example/checkout:1.0.0", "reg.example/checkout:1.1.0"
WINDOW = 12.0  # seconds of soak measured per configuration
CACHED_RESOURCES = {("apps", "deployments"), ("", "configmaps"), ("calyx.io", "rollouts")}
CACHED_RESOURCES |= {("calyx.io", "leases")}


@pytest.fixture
def reads_operator(
    calyx_crds: Any, trust: Any, no_operator: None, tmp_path: Path
) -> Iterator[Callable[[dict[str, str]], OperatorProcess]]:
    """Starts operators authenticated as ServiceAccount ``calyx-reads/operator`` (bound to
    cluster-admin: RBAC is not under test here), in place of the shared operator."""
    cluster = calyx_crds
    if cluster.kubectl("get", "namespace", READS_NS, check=False).returncode != 0:
        cluster.create_namespace(READS_NS)
    cluster.kubectl("create", "serviceaccount", SA, "-n", READS_NS, check=False)
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        f"{READS_NS}-{SA}",
        "--clusterrole=cluster-admin",
        f"--serviceaccount={READS_NS}:{SA}",
        check=False,
    )
    kubeconfig = tmp_path / "sa.kubeconfig"
    _service_account_kubeconfig(cluster, READS_NS, SA, kubeconfig)
    started: list[OperatorProcess] = []

    def start(env: dict[str, str]) -> OperatorProcess:
        op = OperatorProcess(str(kubeconfig), tmp_path, env=env)
        op.start()
        started.append(op)
        return op

    try:
        yield start
    finally:
        for op in started:
            op.stop()


def reads(cluster: Any, ns: str, since: float, until: float) -> list[dict[str, Any]]:
    """GETs of the cached kinds by the operator's ServiceAccount in [since, until)."""
    user = f"system:serviceaccount:{READS_NS}:{SA}"
    out = []
    for ev in cluster.read_audit_events(verbs=["get"], user=user):
        ref = ev.get("objectRef") or {}
        when = _epoch(ev["requestReceivedTimestamp"])
        if (ref.get("apiGroup", ""), ref.get("resource")) not in CACHED_RESOURCES:
            continue
        if ref.get("namespace") in (ns, "calyx-system") and since <= when < until:
            out.append(ev)
    return out


def _epoch(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def unmanaged(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """``obj`` as the cache keeps it: without ``metadata.managedFields`` (Calyx never reads it)."""
    if obj is not None:
        obj["metadata"].pop("managedFields", None)
    return obj


def soaking(kube: Kube, ns: str) -> bool:
    st = rollout_status(kube, ns, "r1")
    tiers = st.get("tiers") or [{}]
    return st.get("phase") == "Progressing" and bool(tiers[0].get("soakStartedAt"))


def test_a_soaking_rollout_costs_no_reads_with_the_caches(
    calyx_crds: Any,
    kube: Kube,
    kube_namespace: str,
    reads_operator: Callable[[dict[str, str]], OperatorProcess],
) -> None:
    cluster, ns = calyx_crds, kube_namespace
    apply_obj(cluster, deployment_body(ns, "checkout", 4, IMG1))
    constraints = {"maxInitialWeight": 25, "requireAnalysis": False}
    apply_obj(cluster, lease_body(ns, "l1", "checkout", {"app": IMG2}, constraints=constraints))
    tiers = [{"weight": 25, "soakSeconds": 3600}, {"weight": 100}]
    apply_obj(cluster, rollout_body(ns, "r1", "l1", tiers=tiers))

    op = reads_operator({})
    wait_for("soaking at 25 %", lambda: soaking(kube, ns), timeout=90)
    time.sleep(2)  # the echo of the soak start's status write
    t0 = time.time()
    time.sleep(WINDOW)
    cached = reads(cluster, ns, t0, time.time())

    # a user's change is a watch event: acted on at once, never skipped
    kube.patch_custom("rollouts", ns, "r1", {"spec": {"paused": True}})
    t = time.monotonic()
    wait_phase(kube, ns, "r1", "Paused", timeout=10)
    paused_after = time.monotonic() - t
    kube.patch_custom("rollouts", ns, "r1", {"spec": {"paused": False}})
    wait_for("soaking again", lambda: soaking(kube, ns), timeout=30)

    # what the cache serves is what a GET returns
    cache = CachedKube(cluster.api_client())
    cache.start()
    try:
        assert cache.wait_synced(30)
        direct = Kube(cluster.api_client())
        for name in ("checkout", "checkout-canary"):
            assert cache.get_deployment(ns, name) == unmanaged(direct.get_deployment(ns, name))
        snapshot = direct.get_configmap(ns, "r1-snapshot")
        assert cache.get_configmap(ns, "r1-snapshot") == unmanaged(snapshot)
    finally:
        cache.stop()

    op.stop()
    reads_operator({"CALYX_WATCH_CACHE": "false"})
    wait_for("the uncached operator at work", lambda: replicas_of(kube, ns, "checkout-canary"))
    time.sleep(2)
    t0 = time.time()
    time.sleep(WINDOW)
    uncached = reads(cluster, ns, t0, time.time())

    summary = f"GETs in {WINDOW:.0f} s: {len(cached)} with the caches, {len(uncached)} without"
    print(summary)
    assert len(uncached) >= 20, summary  # the measurement sees the operator's reads at all
    assert len(cached) * 20 <= len(uncached), (
        summary
        + ": "
        + ", ".join(
            f"{e['objectRef'].get('resource')}/{e['objectRef'].get('name')}" for e in cached
        )
    )
    assert paused_after < 3, f"pause acted on after {paused_after:.1f} s"
