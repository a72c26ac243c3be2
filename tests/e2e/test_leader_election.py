"""The leader elector and the write fence (calyx.adapters.leader, calyx.adapters.kube) against
the real API server, with hand-moved clocks: the Lease each step writes is read back with
kubectl, so the record is what client-go and ``kubectl get lease`` see."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest

from calyx.adapters.kube import FencedError, Kube
from calyx.adapters.leader import LeaderElector, micro_time
from calyx.adapters.settings import Settings

pytestmark = [pytest.mark.e2e]
NAME = "calyx-operator"
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Clock:
    """A monotonic clock and a wall clock that move only when told."""

    def __init__(self, wall: dt.datetime | None = None) -> None:
        self.t = 1000.0
        self.wall0 = wall or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def mono(self) -> float:
        return self.t

    def wall(self) -> dt.datetime:
        return self.wall0 + dt.timedelta(seconds=self.t - 1000.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


def elector(kube: Kube, ns: str, who: str, clock: Clock, **kw: Any) -> LeaderElector:
    timings = {"lease_seconds": 15, "renew_deadline_seconds": 10, "retry_seconds": 2, **kw}
    return LeaderElector(kube, ns, NAME, who, monotonic=clock.mono, wallclock=clock.wall, **timings)


def lease(cluster: Any, ns: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "leases.coordination.k8s.io", NAME, "-n", ns, "-o", "json")
    return dict(json.loads(out.stdout))


def test_first_replica_creates_the_lease_with_microtime_and_holds_it(
    kube: Kube, kube_cluster: Any, kube_namespace: str
) -> None:
    clock = Clock()
    a = elector(kube, kube_namespace, "pod-a", clock)
    assert not a.holds(clock.mono())
    assert a.step()
    spec = lease(kube_cluster, kube_namespace)["spec"]
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert MICRO.match(spec["renewTime"]) and spec["acquireTime"] == spec["renewTime"]
    assert spec["renewTime"] == micro_time(clock.wall())
    assert a.holds(clock.mono())
    # Renewals keep acquireTime and the transition count; renewTime follows the clock.
    clock.advance(2)
    assert a.step()
    spec2 = lease(kube_cluster, kube_namespace)["spec"]
    assert spec2["acquireTime"] == spec["acquireTime"] and spec2["leaseTransitions"] == 0
    assert spec2["renewTime"] == micro_time(clock.wall()) != spec["renewTime"]


def test_standby_waits_a_full_duration_of_its_own_clock_then_takes_over(
    kube: Kube, kube_cluster: Any, kube_namespace: str
) -> None:
    ca, cb = Clock(), Clock()
    a = elector(kube, kube_namespace, "pod-a", ca)
    b = elector(kube, kube_namespace, "pod-b", cb)
    assert a.step()
    assert not b.step() and b.leader == "pod-a" and not b.holds()
    # While the leader renews, the standby never takes over however long it waits.
    for _ in range(10):
        ca.advance(2)
        cb.advance(2)
        assert a.step() and not b.step()
    assert b.next_wait() == 2
    # The leader dies. Its last renewal was seen at cb's current time: 14.9 s later, not yet.
    cb.advance(14.9)
    assert b.next_wait() == pytest.approx(0.15)
    assert not b.step()
    cb.advance(0.2)
    assert b.step() and b.holds()
    spec = lease(kube_cluster, kube_namespace)["spec"]
    assert spec["holderIdentity"] == "pod-b" and spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == spec["renewTime"] == micro_time(cb.wall())
    # The old leader, back from a pause, sees it lost: no renewal, fence shut.
    ca.advance(1)
    assert not a.step() and not a.holds() and a.leader == "pod-b"
    assert "not the leader" in a.explain() and "pod-b" in a.explain()


def test_expiry_ignores_the_renew_time_written_by_a_skewed_clock(
    kube: Kube, kube_namespace: str
) -> None:
    """A leader whose wall clock is an hour behind writes an ancient renewTime; the standby must
    still wait for the record to stay unchanged for the lease duration (client-go's rule)."""
    ca = Clock(wall=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) - dt.timedelta(hours=1))
    cb = Clock()
    a = elector(kube, kube_namespace, "pod-a", ca)
    b = elector(kube, kube_namespace, "pod-b", cb)
    assert a.step()
    assert not b.step()
    cb.advance(10)
    assert not b.step(), "took over from a live leader because its renewTime looked old"
    ca.advance(10)
    assert a.step()  # renewed: the standby's clock starts again at its next look
    cb.advance(1)
    assert not b.step()
    cb.advance(14)
    assert not b.step()
    cb.advance(1.1)
    assert b.step()


def test_compare_and_swap_lets_one_of_two_racing_standbys_win(
    kube: Kube, kube_cluster: Any, kube_namespace: str
) -> None:
    ca, cb, cc = Clock(), Clock(), Clock()
    a = elector(kube, kube_namespace, "pod-a", ca)
    b = elector(kube, kube_namespace, "pod-b", cb)
    c = elector(kube, kube_namespace, "pod-c", cc)
    assert a.step()
    seen_b, seen_c = b.observe(), c.observe()
    cb.advance(16)
    cc.advance(16)
    # Both read the same expired record; both try to replace it at that resourceVersion.
    assert b.claim(seen_b)
    assert not c.claim(seen_c), "a stale resourceVersion must be refused (409)"
    assert b.holds() and not c.holds()
    assert lease(kube_cluster, kube_namespace)["spec"]["holderIdentity"] == "pod-b"
    # The same race on a missing Lease: one create wins.
    other = kube_namespace
    kube_cluster.kubectl("delete", "leases.coordination.k8s.io", NAME, "-n", other)
    d = elector(kube, other, "pod-d", Clock())
    e = elector(kube, other, "pod-e", Clock())
    seen_d, seen_e = d.observe(), e.observe()
    assert seen_d.record is None and seen_e.record is None
    assert d.claim(seen_d) and not e.claim(seen_e)


def test_fence_closes_at_the_renew_deadline_not_the_lease_duration(
    kube: Kube, kube_cluster: Any, kube_namespace: str
) -> None:
    """The leader cannot reach the API server (a client pointed at a closed port): after 10 s
    without a successful renewal it may not write, 5 s before any standby may take over."""
    clock = Clock()
    a = elector(kube, kube_namespace, "pod-a", clock)
    assert a.step() and a.holds()
    a.kube = Kube(_unreachable(kube_cluster))
    for _ in range(4):
        clock.advance(2)
        assert not a.step()  # the renewal fails; the proof ages
        assert a.holds()
    clock.advance(1.99)
    assert a.holds()
    clock.advance(0.02)
    assert not a.holds()
    assert "10s" in a.explain() and "10.0s ago" in a.explain()
    # Reachable again and nobody took over meanwhile: it renews and may write again.
    a.kube = kube
    clock.advance(1)
    assert a.step() and a.holds()


def _unreachable(cluster: Any) -> Any:
    api = cluster.api_client()
    api.configuration.host = "https://127.0.0.1:1"  # nothing listens there
    return api


def test_restart_in_place_takes_its_own_lease_back_at_once(
    kube: Kube, kube_cluster: Any, kube_namespace: str
) -> None:
    a = elector(kube, kube_namespace, "pod-a", Clock())
    assert a.step()
    first = lease(kube_cluster, kube_namespace)["spec"]
    again = elector(kube, kube_namespace, "pod-a", Clock())  # same pod name, fresh process
    assert again.step() and again.holds()
    spec = lease(kube_cluster, kube_namespace)["spec"]
    assert spec["acquireTime"] == first["acquireTime"] and spec["leaseTransitions"] == 0


def test_release_hands_over_without_waiting(
    kube: Kube, kube_cluster: Any, kube_namespace: str
) -> None:
    ca, cb = Clock(), Clock()
    a = elector(kube, kube_namespace, "pod-a", ca)
    b = elector(kube, kube_namespace, "pod-b", cb)
    assert a.step() and not b.step()
    assert a.release() and not a.holds()
    spec = lease(kube_cluster, kube_namespace)["spec"]
    assert "holderIdentity" not in spec and spec["leaseDurationSeconds"] == 1
    assert b.step(), "a released Lease is free at once"
    assert lease(kube_cluster, kube_namespace)["spec"]["leaseTransitions"] == 1
    assert not a.release(), "releasing a Lease someone else holds must not touch it"
    assert lease(kube_cluster, kube_namespace)["spec"]["holderIdentity"] == "pod-b"


def test_kube_refuses_every_write_without_the_fence_and_allows_reads(
    kube: Kube, kube_cluster: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    clock = Clock()
    leader = elector(kube, ns, "pod-a", clock)
    fenced = Kube(kube_cluster.api_client(), fence=leader, monotonic=clock.mono)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": ns}}
    with pytest.raises(FencedError, match="not the leader"):
        fenced.create_configmap(ns, cm)
    assert kube.get_configmap(ns, "x") is None, "the refused write reached the API server"
    assert leader.step()
    fenced.create_configmap(ns, cm)
    clock.advance(10)
    event = {"metadata": {"generateName": "x."}, "involvedObject": {"namespace": ns}}
    refused = [
        lambda: fenced.replace_configmap(ns, "x", cm),
        lambda: fenced.delete_configmap(ns, "x"),
        lambda: fenced.patch_deployment(ns, "d", {}, "application/merge-patch+json"),
        lambda: fenced.patch_custom_status("rollouts", ns, "r", {"phase": "Completed"}),
        lambda: fenced.core.create_namespaced_event(ns, event),  # Events, even called directly
        lambda: fenced.core.delete_collection_namespaced_pod(ns, label_selector="a=b"),
    ]
    for write in refused:
        with pytest.raises(FencedError, match=r"renewed .* 10\.0s ago"):
            write()
    # Reads never need leadership (a standby keeps its caches warm).
    assert fenced.get_configmap(ns, "x") is not None
    assert fenced.list_custom("rollouts", ns) == []
    # Without a fence (CLI, tests) a Kube writes as before.
    kube.delete_configmap(ns, "x")


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"CALYX_LEADER_RENEW_DEADLINE_SECONDS": "15"}, "RENEW_DEADLINE"),
        ({"CALYX_LEADER_RETRY_SECONDS": "10"}, "RETRY"),
        ({"CALYX_LEADER_RETRY_SECONDS": "0"}, "RETRY"),
    ],
)
def test_settings_refuse_timings_that_could_overlap_two_leaders(
    env: dict[str, str], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        Settings.from_env(env)


def test_settings_defaults_and_identity() -> None:
    cfg = Settings.from_env({"POD_NAME": "calyx-7d9f-abcde"})
    assert cfg.leader_lease_name == "calyx-operator"
    assert (cfg.leader_lease_seconds, cfg.leader_renew_deadline_seconds) == (15, 10)
    assert cfg.leader_retry_seconds == 2
    assert cfg.leader_identity == "calyx-7d9f-abcde"
    assert re.match(r"^.+_\d+$", Settings.from_env({}).leader_identity), "hostname_pid"
