"""Operator settings, read once from the environment.

Settings live in the environment (set by the Helm chart) rather than in a CRD so the operator
can start before any Calyx object exists and so a GitOps diff of the chart shows every knob.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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
        )
