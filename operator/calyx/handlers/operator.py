"""Kopf wiring: every handler is a few lines that call into ``calyx.reconcile``.

Run with ``kopf run --standalone -A -m calyx.handlers.operator`` (what the image does).

Several replicas may run; only the one holding the leader Lease acts (docs/operations.md, "High
availability"). Kopf's own peering is *not* that: it pauses an operator while one of higher
priority runs, with no expiry clock and no fence, so ``--standalone`` stays and every entry
point below asks ``RT.leader`` first. A standby keeps its watches and caches warm and does
nothing else; it resumes from the cluster state through the periodic sweeps once it leads.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from calyx import __version__
from calyx.adapters.cache import CachedKube
from calyx.adapters.cm_watch import ConfigMapCache
from calyx.adapters.events import EventRecorder
from calyx.adapters.kube import GROUP, LEASES, ROLLOUTS, VERSION, Kube, api_client
from calyx.adapters.leader import LeaderElector
from calyx.adapters.ledger_store import LedgerStore, ledger_reader
from calyx.adapters.metrics import METRICS, start_metrics_server
from calyx.adapters.settings import Settings
from calyx.adapters.trust_store import trust_reader
from calyx.domain.ledger import LedgerEntry
from calyx.reconcile.analysis import AnalysisRunner
from calyx.reconcile.lease import FAILURES as LEASE_FAILURES
from calyx.reconcile.lease import LeaseDeps, reconcile_all_leases, reconcile_lease
from calyx.reconcile.locks import KeyedLocks
from calyx.reconcile.rollout import RolloutDeps, reconcile_all_rollouts, request_pass
from calyx.reconcile.sweeper import Sweeper

log = logging.getLogger("calyx.operator")
STOP_GRACE_SECONDS = 10.0
"""How long a graceful stop waits for sweeps in flight (a pod's default grace period is 30 s)."""
SWEEP_WORKERS = 32
"""Threads running Rollout passes (docs/performance.md, 1,000 Rollouts)."""
KOPF_WORKERS = 32
"""Threads of Kopf's executor: the Lease event handler's passes."""
API_CONNECTIONS = SWEEP_WORKERS + KOPF_WORKERS
"""Connections kept open to the API server: one per thread that may send a request at once."""
USER_AGENT = "calyx-operator"


class Runtime:
    """What the handlers share; built at startup from the cluster, nothing kept only here."""

    lease: LeaseDeps
    rollout: RolloutDeps
    leader: LeaderElector | None = None
    cache: CachedKube | None = None
    background: list[Any]
    pool: ThreadPoolExecutor | None = None


RT = Runtime()

#: Test-only seam, None in production: ``RolloutDeps.faults`` for this process. The end-to-end
#: harness loads a module of its own next to this one (``kopf run -m calyx.handlers.operator
#: -m tests.support.faults``) that sets it before startup (docs/testing.md, "Fault points").
FAULTS: Callable[[str], None] | None = None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def leading() -> bool:
    """The cheap check at the top of every entry point: does this replica lead right now?"""
    return RT.leader is not None and RT.leader.holds()


def _when_leading(tick: Callable[[], None]) -> Callable[[], None]:
    """A sweep body that does nothing on a standby (or on a leader whose fence has closed)."""

    def run() -> None:
        if leading():
            tick()

    return run


def _leadership_changed(holds: bool) -> None:
    METRICS.leader.set(1 if holds else 0)
    if not holds:  # a standby's gauges must not add to the leader's in a sum() over replicas
        METRICS.set_rollouts_by_phase({})
    log.info("this replica is %s", "the leader: reconciling" if holds else "a standby: idle")
    if holds and RT.cache is not None:  # a standby's watch may have been cut without a sign
        RT.cache.resync()


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: Kopf builds one (a deep copy of the whole object, status included) for
    every watch event, for ``on.create``/``on.update`` handlers to see what changed. Calyx has
    only ``on.event`` handlers, which never read it (a level-based pass reads everything
    itself): at 1,000 Rollouts that copy was a tenth of the operator's CPU
    (docs/performance.md, run 10). tests/unit/handlers/test_kopf_wiring.py fails if a handler
    that would need it is ever registered."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.peering.standalone = True
    settings.persistence.finalizer = "calyx.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="calyx.io")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    # The Kubernetes client's urllib3 logs a warning per retried connection: during an API-server
    # outage that is hundreds of lines a minute saying the same thing. The loops that use the
    # client log one line per state change themselves (docs/operations.md, "Outages").
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    settings.watching.server_timeout = 120
    settings.execution.max_workers = KOPF_WORKERS

    cfg = Settings.from_env()
    # The identity is in the user agent too, so the API server's audit log tells the replicas'
    # writes apart. The elector has a client of its own: its renewals never queue behind a sweep.
    agent = f"{USER_AGENT}/{__version__} ({cfg.leader_identity})"
    RT.leader = LeaderElector(
        Kube(_client(agent)),
        cfg.namespace,
        cfg.leader_lease_name,
        cfg.leader_identity,
        lease_seconds=cfg.leader_lease_seconds,
        renew_deadline_seconds=cfg.leader_renew_deadline_seconds,
        retry_seconds=cfg.leader_retry_seconds,
        on_change=_leadership_changed,
    )
    RT.leader.step()  # a free Lease, or our own after a restart in place: lead from the start
    RT.leader.start()
    # Reads come from watch-fed caches (docs/architecture.md, "Caches"); the CLI keeps Kube.
    RT.cache = CachedKube(_client(agent), fence=RT.leader) if cfg.watch_cache else None
    kube = RT.cache or Kube(_client(agent), fence=RT.leader)
    where = f"{cfg.namespace}/{cfg.trust_configmap}"
    trust_cache = ConfigMapCache(kube, cfg.namespace, cfg.trust_configmap)
    ledger_cache = ConfigMapCache(kube, cfg.namespace, cfg.ledger_configmap)
    ledger_holders = ledger_reader(ledger_cache.get)
    RT.lease = LeaseDeps(
        kube=kube,
        events=EventRecorder(kube, instance=cfg.leader_identity),
        trust=trust_reader(trust_cache.get, where),
        ledger=ledger_holders,
        clock=_utcnow,
        locks=KeyedLocks(),
        changes=_lease_token(trust_cache, ledger_holders),
    )
    analysis = AnalysisRunner(cfg.prometheus_url, tick_seconds=cfg.rollout_tick_seconds)
    RT.rollout = RolloutDeps(
        kube=kube,
        events=RT.lease.events,
        trust=RT.lease.trust,
        ledger=LedgerStore(kube, cfg, events=RT.lease.events, clock=_utcnow),
        clock=_utcnow,
        locks=RT.lease.locks,
        analyze=analysis,
        faults=FAULTS,
        changes=_change_token(RT.cache, trust_cache),
        after_own_write=_after_own_write(RT.cache, trust_cache),
    )
    if cfg.metrics_port:
        try:
            METRICS.export_objects(lambda: (kube.list_custom(ROLLOUTS), kube.list_custom(LEASES)))
            start_metrics_server(cfg.metrics_port)
        except OSError as exc:  # metrics are not worth refusing to protect rollouts over
            log.error("cannot serve /metrics on port %d: %s", cfg.metrics_port, exc)
    sweeper = Sweeper(
        "leases", cfg.lease_recheck_seconds, _when_leading(lambda: reconcile_all_leases(RT.lease))
    )
    # A change of either re-checks every Lease: in the sweep's thread, once for any number of
    # changes, never in the watch's (docs/architecture.md, "Reconciliation").
    trust_cache.on_change = lambda _cm: sweeper.wake()
    ledger_cache.on_change = functools.partial(_ledger_changed, sweeper.wake)
    # A pass mostly waits on the API server (its status write), so more threads than cores;
    # at most twice as many passes queued as run, the longest unevaluated first.
    pool = RT.pool = ThreadPoolExecutor(max_workers=SWEEP_WORKERS, thread_name_prefix="rollout")
    rollout_sweeper = Sweeper(
        "rollouts",
        analysis.tick_seconds,
        _when_leading(
            lambda: reconcile_all_rollouts(RT.rollout, pool=pool, max_queued=2 * SWEEP_WORKERS)
        ),
    )
    parts = (RT.cache, trust_cache, ledger_cache, sweeper, rollout_sweeper)
    RT.background = [part for part in parts if part is not None]
    for part in RT.background:
        part.start()
    log.info(
        "calyx operator started (namespace %s, identity %s, %s)",
        cfg.namespace,
        cfg.leader_identity,
        "leader" if leading() else f"standby: Lease held by {RT.leader.leader}",
    )


def _change_token(
    cache: CachedKube | None, trust: ConfigMapCache
) -> Callable[[str], Hashable] | None:
    """What moves when anything a pass of a started Rollout in a namespace reads changes: that
    namespace's cached objects and the trust store. Not the ledger (in the operator's
    namespace): only a Rollout that has not started reads it, and those are never skipped —
    with it, each of a thousand claims would wake every Rollout."""
    if cache is None:
        return None
    return lambda ns: (cache.change_token(ns), trust.version)


def _after_own_write(
    cache: CachedKube | None, trust: ConfigMapCache
) -> Callable[[Hashable, Mapping[str, Any]], Hashable | None] | None:
    """The token of :func:`_change_token` after a pass's own Rollout status write, if that write
    is the one change since ``before``."""
    if cache is None:
        return None

    def after(before: Hashable, written: Mapping[str, Any]) -> Hashable | None:
        cached, version = cast(tuple[tuple[int, int], int], before)  # _change_token's shape
        token = cache.token_after_own_write(cached, ROLLOUTS, written)
        return (token, version) if token is not None and trust.version == version else None

    return after


def _lease_token(
    trust: ConfigMapCache, holders: Callable[[], Mapping[str, LedgerEntry]]
) -> Callable[[Mapping[str, Any]], Hashable | None]:
    """What a Lease's verdict reads besides the Lease: the trust store, and the ledger entry of
    its digest (a claim of another Lease must not re-verify all of them)."""

    def token(lease: Mapping[str, Any]) -> Hashable | None:
        digest = (lease.get("status") or {}).get("digest")
        return (trust.version, repr(holders().get(digest))) if digest else None

    return token


def _client(agent: str) -> Any:
    api = api_client(connections=API_CONNECTIONS)
    api.user_agent = agent
    return api


def _ledger_changed(recheck_leases: Callable[[], None], cm: Any) -> None:
    if not leading():
        return
    if RT.cache is not None:  # this watch may be ahead of the cache's: read the ledger afresh
        RT.cache.configmaps.invalidate(RT.rollout.ledger.ns, RT.rollout.ledger.name)
    if cm is None:  # deleted: rebuild it from the statuses it caches (docs/security.md)
        try:
            RT.rollout.ledger.read()
        except Exception as exc:
            log.warning("could not rebuild the ledger yet: %s", exc)
    recheck_leases()


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    """Graceful stop (SIGTERM: node drain, rolling update): stop the sweeps, then give the
    leader Lease up so the standby takes over at its next look instead of after 15 s."""
    parts = getattr(RT, "background", [])
    for part in parts:
        part.stop()
    # Let passes in flight finish their writes while this replica still leads: releasing first
    # would fence them mid-pass (an Event or status write refused) and fail the exit.
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for part in parts:
        if isinstance(part, Sweeper):
            part.join(max(0.0, deadline - time.monotonic()))
    if RT.pool is not None:
        RT.pool.shutdown(wait=False, cancel_futures=True)
        # The sweep hands its passes to the pool without waiting: wait here for the running
        # ones (the cancelled ones end at once).
        deps = getattr(RT, "rollout", None)
        while deps is not None and deps.quiet.running() and time.monotonic() < deadline:
            time.sleep(0.05)
    if RT.leader is not None:
        RT.leader.stop(release=True)


@kopf.on.event(GROUP, VERSION, LEASES)
def lease_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type != "DELETED" and leading():
        key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        if RT.cache is not None:  # the pass must read at least this version
            RT.cache.observe(LEASES, body)
        try:
            reconcile_lease(RT.lease, dict(body))
        except Exception as exc:  # the sweep retries; one line per state change, no spam
            LEASE_FAILURES.failed(key, f"lease {key}", exc)


@kopf.on.event(GROUP, VERSION, ROLLOUTS)
async def rollout_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Hands the pass to the Rollout pool and returns (reconcile/rollout.py, ``request_pass``):
    async, so no thread of Kopf's, nor the event's body, waits for the pass."""
    if type != "DELETED" and leading() and RT.pool is not None:
        meta = body["metadata"]
        if RT.cache is not None:  # the pass must read at least this version
            RT.cache.observe(ROLLOUTS, body)
        request_pass(RT.rollout, RT.pool, meta["namespace"], meta["name"])
