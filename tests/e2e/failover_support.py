"""Two operator processes — a leader and a standby — and what each of them wrote.

Used by tests/e2e/test_failover.py and bench/failover.py. Each process has its own identity in
the leader Lease (``POD_NAME``), which the operator also puts in its user agent
(``calyx-operator/<version> (<identity>)``), so the API server's audit log attributes every
write to one replica. Times are wall-clock on one machine (the API server, the operators and
the test share the clock).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calyx.adapters.kube import Kube
from calyx_dev.operator_process import OPERATOR_NS, OperatorProcess

LEADER_LEASE = "calyx-operator"


def stamp(t: float | None = None) -> str:
    """RFC 3339 with microseconds, the audit log's own precision."""
    when = dt.datetime.fromtimestamp(time.time() if t is None else t, dt.UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def epoch(stamp_: str) -> float:
    return dt.datetime.fromisoformat(stamp_.replace("Z", "+00:00")).timestamp()


def leader_lease(kube: Kube) -> dict[str, Any]:
    """The coordination.k8s.io Lease's spec ({} when there is none yet)."""
    try:
        resp = kube.coordination.read_namespaced_lease(
            LEADER_LEASE, OPERATOR_NS, _preload_content=False
        )
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            return {}
        raise
    return dict(json.loads(resp.data).get("spec") or {})


def holder(kube: Kube) -> str | None:
    return leader_lease(kube).get("holderIdentity")


def writes_by(
    cluster: Any, identity: str, since: str | None = None, namespace: str | None = None
) -> list[dict[str, Any]]:
    """Successful writes whose user agent names ``identity`` (the audit policy records writes to
    Deployments, ConfigMaps and calyx.io objects), oldest first."""
    events = cluster.read_audit_events(namespace=namespace, since=since, succeeded=True)
    mine = [e for e in events if f"({identity})" in str(e.get("userAgent", ""))]
    return sorted(mine, key=lambda e: e["requestReceivedTimestamp"])


def first_write_at(cluster: Any, identity: str, since: str) -> float | None:
    """Epoch seconds of ``identity``'s first write at or after ``since`` (None: none yet)."""
    writes = writes_by(cluster, identity, since=since)
    return epoch(writes[0]["requestReceivedTimestamp"]) if writes else None


class OperatorPair:
    """Two ``kopf run`` processes against one cluster, each with its own identity."""

    def __init__(
        self,
        kubeconfig: str,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        tag: str | None = None,
    ) -> None:
        tag = tag or uuid.uuid4().hex[:6]
        self.a = OperatorProcess(kubeconfig, log_dir, env=dict(env or {}), identity=f"op-a-{tag}")
        self.b = OperatorProcess(kubeconfig, log_dir, env=dict(env or {}), identity=f"op-b-{tag}")

    @property
    def both(self) -> tuple[OperatorProcess, OperatorProcess]:
        return self.a, self.b

    def by_identity(self, identity: str | None) -> OperatorProcess | None:
        return next((op for op in self.both if op.identity == identity), None)

    def other(self, op: OperatorProcess) -> OperatorProcess:
        return self.b if op is self.a else self.a

    def start(self, kube: Kube, timeout: float = 60) -> None:
        """A first, until it holds the Lease (a previous holder that died unreleased costs up
        to one lease duration); then B, until it has started as a standby."""
        self.a.start()
        wait_until(f"{self.a.identity} to lead", lambda: holder(kube) == self.a.identity, timeout)
        self.b.start()
        wait_until(
            f"{self.b.identity} to start as a standby",
            lambda: "a standby" in self.b.log_text() or not self.b.alive(),
            timeout,
        )
        assert self.b.alive(), self.b.log_text()[-3000:]

    def leader(self, kube: Kube) -> OperatorProcess:
        op = self.by_identity(holder(kube))
        assert op is not None, f"the Lease is held by {holder(kube)!r}, not by this pair"
        return op

    def stop(self, kube: Kube) -> None:
        """Standby first, then the leader, each with SIGTERM: the leader releases the Lease, so
        whatever runs next in this cluster takes it over at once."""
        try:
            lead = holder(kube)
        except Exception:  # stopping must not fail on a read
            lead = None
        for op in sorted(self.both, key=lambda o: o.identity == lead):
            op.stop()


def wait_until(what: str, pred: Any, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_takeover(kube: Kube, identity: str, timeout: float = 60) -> float:
    """Wait until ``identity`` holds the Lease; returns the wall-clock time it was seen."""
    wait_until(f"{identity} to take the Lease over", lambda: holder(kube) == identity, timeout)
    return time.time()
