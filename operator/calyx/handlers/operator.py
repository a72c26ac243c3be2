"""Kopf wiring: every handler is a few lines that call into ``calyx.reconcile``.

Run with ``kopf run --standalone -A -m calyx.handlers.operator`` (what the image does).
"""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from calyx.adapters.cm_watch import ConfigMapCache
from calyx.adapters.events import EventRecorder
from calyx.adapters.kube import GROUP, LEASES, ROLLOUTS, VERSION, Kube, api_client
from calyx.adapters.ledger_store import LedgerStore
from calyx.adapters.metrics import METRICS, start_metrics_server
from calyx.adapters.settings import Settings
from calyx.adapters.trust_store import trust_store_from_configmap
from calyx.domain.ledger import read_ledger
from calyx.reconcile.analysis import AnalysisRunner
from calyx.reconcile.lease import LeaseDeps, reconcile_all_leases, reconcile_lease
from calyx.reconcile.locks import KeyedLocks
from calyx.reconcile.rollout import RolloutDeps, reconcile_all_rollouts, reconcile_rollout
from calyx.reconcile.sweeper import Sweeper

log = logging.getLogger("calyx.operator")
USER_AGENT = "calyx-operator"


class Runtime:
    """What the handlers share; built at startup from the cluster, nothing kept only here."""

    lease: LeaseDeps
    rollout: RolloutDeps
    background: list[Any]


RT = Runtime()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.peering.standalone = True
    settings.persistence.finalizer = "calyx.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="calyx.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="calyx.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    settings.execution.max_workers = 32

    cfg = Settings.from_env()
    kube = Kube(api_client(user_agent=USER_AGENT))
    where = f"{cfg.namespace}/{cfg.trust_configmap}"
    trust_cache = ConfigMapCache(kube, cfg.namespace, cfg.trust_configmap)
    ledger_cache = ConfigMapCache(kube, cfg.namespace, cfg.ledger_configmap)
    RT.lease = LeaseDeps(
        kube=kube,
        events=EventRecorder(kube),
        trust=lambda: trust_store_from_configmap(trust_cache.get(), where),
        ledger=lambda: read_ledger((ledger_cache.get() or {}).get("data")).holders(),
        clock=_utcnow,
        locks=KeyedLocks(),
    )
    RT.rollout = RolloutDeps(
        kube=kube,
        events=RT.lease.events,
        trust=RT.lease.trust,
        ledger=LedgerStore(kube, cfg, events=RT.lease.events, clock=_utcnow),
        clock=_utcnow,
        locks=RT.lease.locks,
        analyze=AnalysisRunner(cfg.prometheus_url, tolerance_seconds=cfg.rollout_tick_seconds / 2),
    )
    if cfg.metrics_port:
        try:
            METRICS.export_objects(lambda: (kube.list_custom(ROLLOUTS), kube.list_custom(LEASES)))
            start_metrics_server(cfg.metrics_port)
        except OSError as exc:  # metrics are not worth refusing to protect rollouts over
            log.error("cannot serve /metrics on port %d: %s", cfg.metrics_port, exc)
    trust_cache.on_change = lambda _cm: reconcile_all_leases(RT.lease)
    ledger_cache.on_change = _ledger_changed
    sweeper = Sweeper("leases", cfg.lease_recheck_seconds, lambda: reconcile_all_leases(RT.lease))
    pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="rollout")
    rollout_sweeper = Sweeper(
        "rollouts", cfg.rollout_tick_seconds, lambda: reconcile_all_rollouts(RT.rollout, pool=pool)
    )
    RT.background = [trust_cache, ledger_cache, sweeper, rollout_sweeper]
    for part in RT.background:
        part.start()
    log.info("calyx operator started (namespace %s)", cfg.namespace)


def _ledger_changed(cm: Any) -> None:
    if cm is None:  # deleted: rebuild it from the statuses it caches (docs/security.md)
        try:
            RT.rollout.ledger.read()
        except Exception as exc:
            log.warning("could not rebuild the ledger yet: %s", exc)
    reconcile_all_leases(RT.lease)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    for part in getattr(RT, "background", []):
        part.stop()


@kopf.on.event(GROUP, VERSION, LEASES)
def lease_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type != "DELETED":
        reconcile_lease(RT.lease, dict(body))


@kopf.on.event(GROUP, VERSION, ROLLOUTS)
def rollout_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type != "DELETED":
        meta = body["metadata"]
        reconcile_rollout(RT.rollout, meta["namespace"], meta["name"])
