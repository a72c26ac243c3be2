"""Two operators, one leader (docs/operations.md, "High availability"): the standby writes
nothing while the leader lives; when the leader dies at a tier soak, right after patching the
stable images, or in the middle of a rollback, the standby takes the Lease over and finishes
from the cluster state, and every decision is announced and applied exactly once; a leader that
was frozen (SIGSTOP) past its renew deadline writes nothing when it wakes up.

Real API server; writes are attributed to a replica from the API server's audit log (user agent
``calyx-operator/<version> (<identity>)``). Takeover times are printed (run with ``-s``)."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx.domain.timefmt import parse_stamp
from tests.e2e.failover_support import (
    OperatorPair,
    epoch,
    first_write_at,
    holder,
    leader_lease,
    stamp,
    wait_takeover,
    wait_until,
    writes_by,
)
from tests.e2e.harness import (
    assert_no_forward_write_without_valid_lease,
    assert_only_signed_templates,
    events_for,
    operator_forward_writes,
    reasons,
    replicas_of,
    rollout_status,
    wait_for,
    wait_phase,
)
from tests.e2e.test_rollouts import FAST, IMG2, assert_restored, setup

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# The operator's defaults (calyx.adapters.settings): 15 s lease, 10 s renew deadline, 2 s retry.
LEASE_SECONDS = 15
TAKEOVER_BOUND = LEASE_SECONDS + 2 + 8  # + one retry + slack for a loaded 2-CPU machine


@pytest.fixture(autouse=True)
def _safety_invariant(trust: Any, kube: Kube, kube_namespace: str) -> Iterator[None]:
    """After every scenario: no forward Deployment write without a valid Lease, only signed or
    snapshot templates — whichever replica wrote them."""
    yield
    if trust.audit_log:
        assert_no_forward_write_without_valid_lease(trust, kube_namespace)
        assert_only_signed_templates(trust, kube, kube_namespace)


@pytest.fixture
def make_pair(
    trust: Any, kube: Kube, no_operator: None, tmp_path: Path
) -> Iterator[Callable[..., OperatorPair]]:
    """Start a pair (the shared operator, if any, is paused meanwhile); ``leader_env`` goes to
    the first one, which leads."""
    pairs: list[OperatorPair] = []

    def make(leader_env: Mapping[str, str] | None = None) -> OperatorPair:
        log_dir = tmp_path / f"pair-{len(pairs)}"
        log_dir.mkdir()
        pair = OperatorPair(trust.kubeconfig, log_dir)
        pair.a.extra_env.update(leader_env or {})
        pairs.append(pair)
        pair.start(kube)
        return pair

    yield make
    for pair in pairs:
        pair.stop(kube)


def leader_gauge(op: Any) -> float:
    url = f"http://127.0.0.1:{op.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("calyx_leader "))
    return float(line.split()[1])


def assert_decided_once(cluster: Any, kube: Kube, ns: str, completed: bool) -> None:
    """Every decision announced once (Events per reason) and the promotion applied once."""
    time.sleep(1)  # an Event posted just after the status write the caller waited for
    rs = reasons(kube, ns, "r1")
    expected = (
        {"DeployStarted": 1, "CanaryPromoted": 2, "DeployCompleted": 1, "RolledBack": 0}
        if completed
        else {"DeployStarted": 1, "RolledBack": 1, "RollbackComplete": 1, "DeployCompleted": 0}
    )
    for reason, n in expected.items():
        assert rs.count(reason) == n, (reason, rs)
    patches = [
        w for w in operator_forward_writes(cluster, ns) if w["objectRef"]["name"] == "checkout"
    ]
    assert len(patches) == (1 if completed else 0), "stable images patched more than once"


def report(what: str, **numbers: float) -> None:
    print(f"\n[failover] {what}: " + ", ".join(f"{k} {v:.2f}s" for k, v in numbers.items()))


def test_standby_writes_nothing_while_the_leader_is_alive(
    make_pair: Callable[..., OperatorPair], kube: Kube, trust: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    pair = make_pair()
    lead, standby = pair.a, pair.b
    since = stamp()
    before = leader_lease(kube)
    setup(trust, kube, ns, replicas=8, tiers=FAST)
    wait_phase(kube, ns, "r1", "Completed", timeout=120)
    assert_decided_once(trust, kube, ns, completed=True)
    time.sleep(3)  # more sweeps on both sides
    assert writes_by(trust, standby.identity, since=since) == [], "the standby wrote"
    assert writes_by(trust, lead.identity, since=since, namespace=ns), "nobody did the rollout"
    # Events name the replica that decided (reportingInstance): all the leader's.
    assert {e.get("reportingInstance") for e in events_for(kube, ns, "r1")} == {lead.identity}
    after = leader_lease(kube)
    assert after["holderIdentity"] == lead.identity
    assert after["leaseTransitions"] == before["leaseTransitions"], "the Lease changed hands"
    assert after["acquireTime"] == before["acquireTime"]
    assert after["renewTime"] > before["renewTime"], "the leader stopped renewing"
    assert leader_gauge(lead) == 1 and leader_gauge(standby) == 0
    assert "a standby: idle" in standby.log_text()


def test_leader_killed_at_a_tier_soak(
    make_pair: Callable[..., OperatorPair], kube: Kube, trust: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    pair = make_pair()
    soak = 25
    setup(
        trust,
        kube,
        ns,
        replicas=8,
        tiers=[
            {"weight": 5, "soakSeconds": soak},
            {"weight": 25, "soakSeconds": 2},
            {"weight": 100},
        ],
    )
    st = wait_for(
        "tier 1 soaking",
        lambda: (
            (s := rollout_status(kube, ns, "r1")).get("tiers")
            and s["tiers"][0].get("soakStartedAt")
            and s
        ),
        timeout=60,
    )
    soak_started = st["tiers"][0]["soakStartedAt"]
    time.sleep(2)
    lead = pair.leader(kube)
    survivor = pair.other(lead)
    t_kill = time.time()
    lead.kill()  # SIGKILL: no cleanup, the Lease is not released
    acquired = wait_takeover(kube, survivor.identity, timeout=TAKEOVER_BOUND + 10)
    st = wait_phase(kube, ns, "r1", "Completed", timeout=120)
    assert_decided_once(trust, kube, ns, completed=True)
    # The new leader resumed the soak from the stored start; it did not start it again.
    tier1 = st["tiers"][0]
    assert tier1["soakStartedAt"] == soak_started
    soaked = (parse_stamp(tier1["completedAt"]) - parse_stamp(soak_started)).total_seconds()
    assert soak <= soaked < soak + 10, soaked
    first = first_write_at(trust, survivor.identity, since=stamp(t_kill))
    assert first is not None
    assert writes_by(trust, lead.identity, since=stamp(t_kill)) == []
    report("killed at a soak", lease_acquired=acquired - t_kill, first_write=first - t_kill)
    assert acquired - t_kill < TAKEOVER_BOUND


def test_leader_killed_during_promotion(
    make_pair: Callable[..., OperatorPair],
    kube: Kube,
    trust: Any,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    """The leader dies right after patching the stable Deployment's images, before it recorded
    the promotion: the standby must see the promotion done, not patch again."""
    ns = kube_namespace
    pair = make_pair(
        {
            "CALYX_FAULT_EXIT_AFTER": "PatchStableImages",
            "CALYX_FAULT_MARKER": str(tmp_path / "crashed"),
        }
    )
    lead, survivor = pair.a, pair.b
    setup(trust, kube, ns, replicas=8, tiers=FAST)
    wait_until("the leader to die after patching the stable images", lambda: not lead.alive(), 90)
    (patch,) = [
        w
        for w in operator_forward_writes(trust, ns)
        if w["objectRef"]["name"] == "checkout" and lead.identity in w["userAgent"]
    ]
    t_kill = epoch(patch["requestReceivedTimestamp"])  # it exits right after this write
    acquired = wait_takeover(kube, survivor.identity, timeout=TAKEOVER_BOUND + 10)
    st = wait_phase(kube, ns, "r1", "Completed", timeout=120)
    assert_decided_once(trust, kube, ns, completed=True)
    stable = kube.get_deployment(ns, "checkout")
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == IMG2
    assert st["snapshot"]["sha256"]
    first = first_write_at(trust, survivor.identity, since=stamp(t_kill))
    assert first is not None
    report("killed during promotion", lease_acquired=acquired - t_kill, first_write=first - t_kill)
    assert first - t_kill < TAKEOVER_BOUND


def test_leader_killed_during_rollback(
    make_pair: Callable[..., OperatorPair],
    kube: Kube,
    trust: Any,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    """The leader dies after deleting the canary, before it restored the stable template: the
    standby finishes the revert from the stored decision (RollingBack), once."""
    ns = kube_namespace
    pair = make_pair(
        {"CALYX_FAULT_EXIT_AFTER": "DeleteCanary", "CALYX_FAULT_MARKER": str(tmp_path / "crashed")}
    )
    lead, survivor = pair.a, pair.b
    setup(trust, kube, ns, replicas=8, tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    wait_for("canary", lambda: replicas_of(kube, ns, "checkout-canary") == 1, timeout=60)
    kube.patch_custom(
        "rollouts", ns, "r1", {"metadata": {"annotations": {"calyx.io/force-rollback": "INC-9"}}}
    )
    wait_until("the leader to die mid-rollback", lambda: not lead.alive(), 60)
    t_kill = time.time()  # at most one poll interval after the exit
    assert rollout_status(kube, ns, "r1")["phase"] == "RollingBack"
    acquired = wait_takeover(kube, survivor.identity, timeout=TAKEOVER_BOUND + 10)
    wait_phase(kube, ns, "r1", "RolledBack", timeout=60)
    assert_restored(kube, ns, max_revert_seconds=None)  # includes the takeover
    assert_decided_once(trust, kube, ns, completed=False)
    first = first_write_at(trust, survivor.identity, since=stamp(t_kill))
    assert first is not None
    report("killed during rollback", lease_acquired=acquired - t_kill, first_write=first - t_kill)
    assert first - t_kill < TAKEOVER_BOUND


def test_frozen_leader_is_fenced_when_it_wakes_up(
    make_pair: Callable[..., OperatorPair], kube: Kube, trust: Any, kube_namespace: str
) -> None:
    """SIGSTOP the leader (a long GC pause, a frozen VM) until the standby has taken over and
    made a decision; on SIGCONT the old leader's last renewal is older than its renew deadline,
    so every write it had in mind is refused, and it learns it lost."""
    ns = kube_namespace
    pair = make_pair()
    setup(trust, kube, ns, replicas=8, tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    # Freeze at a recorded soak, not mid-pass: see test_force_rollback_of_an_unrecorded_canary.
    wait_for(
        "tier 1 soaking",
        lambda: ((rollout_status(kube, ns, "r1").get("tiers") or [{}])[0]).get("soakStartedAt"),
        timeout=60,
    )
    lead = pair.leader(kube)
    survivor = pair.other(lead)
    assert lead.proc is not None
    t_stop = time.time()
    os.killpg(lead.proc.pid, signal.SIGSTOP)
    try:
        acquired = wait_takeover(kube, survivor.identity, timeout=TAKEOVER_BOUND + 10)
        kube.patch_custom(
            "rollouts", ns, "r1", {"metadata": {"annotations": {"calyx.io/force-rollback": "x"}}}
        )
        wait_phase(kube, ns, "r1", "RolledBack", timeout=60)
        woke = stamp()
    finally:
        os.killpg(lead.proc.pid, signal.SIGCONT)
    wait_until(
        "the old leader to notice", lambda: "lost the leader Lease" in lead.log_text(), timeout=20
    )
    time.sleep(3)  # its sweeps and Kopf's queued watch events get their chance to write
    assert writes_by(trust, lead.identity, since=woke) == [], "a fenced leader wrote"
    assert holder(kube) == survivor.identity
    assert leader_gauge(lead) == 0 and leader_gauge(survivor) == 1
    assert_restored(kube, ns, max_revert_seconds=None)
    assert_decided_once(trust, kube, ns, completed=False)
    report("leader frozen", lease_acquired=acquired - t_stop)


def test_graceful_stop_hands_the_lease_over_at_once(
    make_pair: Callable[..., OperatorPair], kube: Kube, trust: Any, kube_namespace: str
) -> None:
    """SIGTERM (node drain, rolling update): the leader stops its sweeps and releases the Lease,
    so the standby leads at its next look — one retry period, not a lease duration — and a
    rollout started right after is run by it."""
    ns = kube_namespace
    pair = make_pair()
    lead, survivor = pair.a, pair.b
    before = leader_lease(kube)
    t_term = time.time()
    lead.stop()
    assert lead.proc is not None and lead.proc.returncode is not None
    assert "released the leader Lease" in lead.log_text()
    acquired = wait_takeover(kube, survivor.identity, timeout=10)
    spec = leader_lease(kube)
    assert spec["leaseTransitions"] == before["leaseTransitions"] + 1
    report("graceful stop", lease_acquired=acquired - t_term)
    # SIGTERM → Kopf's cleanup → release, then the standby's next look (2 s retry) + slack
    assert acquired - t_term < 8
    setup(trust, kube, ns, replicas=4, tiers=FAST)
    wait_phase(kube, ns, "r1", "Completed", timeout=120)
    assert_decided_once(trust, kube, ns, completed=True)
    assert {e.get("reportingInstance") for e in events_for(kube, ns, "r1")} == {survivor.identity}


def test_force_rollback_of_an_unrecorded_canary(
    make_pair: Callable[..., OperatorPair],
    kube: Kube,
    trust: Any,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    """Found by freezing a leader mid-pass: it had created the snapshot and the canary but not
    yet written the status that records them when it stopped. The standby takes over; a
    force-rollback then must remove that canary (it runs the new image), not call the Rollout
    unstarted."""
    ns = kube_namespace
    pair = make_pair(
        {"CALYX_FAULT_EXIT_AFTER": "CreateCanary", "CALYX_FAULT_MARKER": str(tmp_path / "crashed")}
    )
    lead, survivor = pair.a, pair.b
    setup(trust, kube, ns, replicas=8, tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}])
    wait_until("the leader to die after creating the canary", lambda: not lead.alive(), 60)
    assert kube.get_deployment(ns, "checkout-canary") is not None
    assert not (rollout_status(kube, ns, "r1").get("snapshot") or {}).get("configMap")
    kube.patch_custom(
        "rollouts", ns, "r1", {"metadata": {"annotations": {"calyx.io/force-rollback": "INC-1"}}}
    )
    wait_takeover(kube, survivor.identity, timeout=TAKEOVER_BOUND + 10)
    wait_for(
        "a terminal phase",
        lambda: rollout_status(kube, ns, "r1").get("phase") in ("RolledBack", "Failed"),
        timeout=60,
    )
    time.sleep(2)
    assert kube.get_deployment(ns, "checkout-canary") is None, "the canary is left running"
    assert rollout_status(kube, ns, "r1")["phase"] == "RolledBack"
