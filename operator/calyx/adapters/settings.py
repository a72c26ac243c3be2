"""Operator settings, read once from the environment.

Settings live in the environment (set by the Helm chart) rather than in a CRD so the operator
can start before any Calyx object exists and so a GitOps diff of the chart shows every knob.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field


def default_identity() -> str:
    """Who this process is in the leader Lease outside a pod: ``<hostname>_<pid>``.

    In a pod it is the pod's name (``POD_NAME``, set by the chart from the downward API): a
    container restarted in place keeps it, so it takes its own unexpired Lease back at once."""
    return f"{socket.gethostname()}_{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """Where the operator keeps its own state and how often it re-checks time-bound facts."""

    namespace: str = "calyx-system"
    trust_configmap: str = "calyx-trust"
    ledger_configmap: str = "calyx-ledger"
    prometheus_url: str = "http://127.0.0.1:9090"
    # How often every Lease is re-verified even when nothing changed: bounds how late an
    # expiry or a clock-driven signature-age change shows up in `kubectl get`.
    lease_recheck_seconds: float = 2.0
    # The Rollout timer: soak ends, approvals, readiness and analysis are checked this often.
    rollout_tick_seconds: float = 1.0
    # Port of the operator's own /metrics (0 disables it, e.g. for several operators in tests).
    metrics_port: int = 9100
    # Leader election (docs/operations.md, "High availability"): the coordination.k8s.io/v1
    # Lease every replica competes for, in ``namespace``.
    leader_lease_name: str = "calyx-operator"
    # A standby takes over after it has seen no renewal for this long (its own clock).
    leader_lease_seconds: float = 15.0
    # The leader stops writing (the fence closes) when its last successful renewal is this old;
    # the gap to ``leader_lease_seconds`` is the safety margin for clock rate and writes in flight.
    leader_renew_deadline_seconds: float = 10.0
    # How often the leader renews and a standby looks at the Lease.
    leader_retry_seconds: float = 2.0
    leader_identity: str = field(default_factory=default_identity)
    # Reads from watch-fed caches instead of a GET each (docs/architecture.md, "Caches"); off
    # only to compare, or to rule the caches out when chasing a bug.
    watch_cache: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from ``CALYX_*`` variables; unknown values keep their defaults."""
        e = dict(os.environ) if env is None else env
        d = cls()
        return cls(
            namespace=e.get("CALYX_NAMESPACE", d.namespace),
            trust_configmap=e.get("CALYX_TRUST_CONFIGMAP", d.trust_configmap),
            ledger_configmap=e.get("CALYX_LEDGER_CONFIGMAP", d.ledger_configmap),
            prometheus_url=e.get("CALYX_PROMETHEUS_URL", d.prometheus_url),
            lease_recheck_seconds=float(
                e.get("CALYX_LEASE_RECHECK_SECONDS", str(d.lease_recheck_seconds))
            ),
            metrics_port=int(e.get("CALYX_METRICS_PORT", str(d.metrics_port))),
            rollout_tick_seconds=float(
                e.get("CALYX_ROLLOUT_TICK_SECONDS", str(d.rollout_tick_seconds))
            ),
            leader_lease_name=e.get("CALYX_LEADER_LEASE_NAME", d.leader_lease_name),
            leader_lease_seconds=float(
                e.get("CALYX_LEADER_LEASE_SECONDS", str(d.leader_lease_seconds))
            ),
            leader_renew_deadline_seconds=float(
                e.get("CALYX_LEADER_RENEW_DEADLINE_SECONDS", str(d.leader_renew_deadline_seconds))
            ),
            leader_retry_seconds=float(
                e.get("CALYX_LEADER_RETRY_SECONDS", str(d.leader_retry_seconds))
            ),
            leader_identity=e.get("POD_NAME") or d.leader_identity,
            watch_cache=e.get("CALYX_WATCH_CACHE", "true").strip().lower()
            not in ("0", "false", "no", "off"),
        )

    def __post_init__(self) -> None:
        """Refuse leader timings that could let two replicas write at once: the fence must
        close before a standby may take over, and the leader must get several tries to renew."""
        if not 0 < self.leader_retry_seconds < self.leader_renew_deadline_seconds:
            raise ValueError(
                "CALYX_LEADER_RETRY_SECONDS must be > 0 and < CALYX_LEADER_RENEW_DEADLINE_SECONDS"
            )
        if not self.leader_renew_deadline_seconds < self.leader_lease_seconds:
            raise ValueError(
                "CALYX_LEADER_RENEW_DEADLINE_SECONDS must be < CALYX_LEADER_LEASE_SECONDS"
            )
