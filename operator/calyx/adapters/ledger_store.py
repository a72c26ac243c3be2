"""The consumed-lease ledger ConfigMap (``calyx-ledger``, docs/design.md §Replay: three records).

A claim is a compare-and-swap on the ConfigMap's resourceVersion: of two Rollouts claiming one
Lease at once, the API server accepts exactly one write and the other re-reads and sees the
winner. That is what makes a Lease single-use without a lock service.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, cast

from calyx.adapters.events import EventRecorder
from calyx.adapters.kube import LEASES, ROLLOUTS, Obj, is_conflict
from calyx.adapters.kube_api import KubeApi
from calyx.adapters.settings import Settings
from calyx.domain.canary import MANAGED_BY
from calyx.domain.ledger import (
    ClaimOutcome,
    LedgerEntry,
    LedgerRead,
    decide_claim,
    encode_entry,
    ledger_key,
    prunable,
    read_ledger,
)
from calyx.domain.replay import rebuild_entries

log = logging.getLogger("calyx.ledger")
MAX_ATTEMPTS = 20


class LedgerStore:
    def __init__(
        self,
        kube: KubeApi,
        settings: Settings,
        events: EventRecorder | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.kube = kube
        self.ns = settings.namespace
        self.name = settings.ledger_configmap
        self.events = events
        self.clock = clock
        self._reported: set[str] = set()
        self._parsed: tuple[str, LedgerRead] | None = None

    def _read(self) -> Obj | None:
        cm = self.kube.get_configmap(self.ns, self.name)
        if cm is None:
            cm = self.rebuild()
        return cm

    def read(self) -> LedgerRead:
        """The ledger, rebuilt first if it is missing; corrupt entries fail only their digest.

        Parsed again only when its resourceVersion moved, and not even copied out of a watch
        cache that still holds the version parsed last (a 1,000-entry ledger is ~300 kB, read
        by every pass of a Rollout that has not started)."""
        held = getattr(self.kube, "configmap_version", None)
        memo = self._parsed
        if held is not None and memo is not None and held(self.ns, self.name) == memo[0]:
            return memo[1]
        return self._parse(self._read())

    def _parse(self, cm: Mapping[str, Any] | None) -> LedgerRead:
        """``cm``'s entries, from the last parse when it has the same resourceVersion: the
        claims of a thousand Rollouts starting at once each parsed the whole ledger per
        attempt, ~46,000 entries alive at once (docs/performance.md, run 8's census)."""
        rv = ((cm or {}).get("metadata") or {}).get("resourceVersion")
        memo = self._parsed
        if rv and memo is not None and memo[0] == rv:
            return memo[1]
        ledger = read_ledger((cm or {}).get("data"))
        self._report(ledger)
        self._parsed = (rv, ledger) if rv else None
        return ledger

    def entries(self) -> dict[str, LedgerEntry]:
        """Digest → holder, with a fail-closed stand-in for each unreadable entry."""
        return self.read().holders()

    def _report(self, ledger: LedgerRead) -> None:
        """One log line per corrupt entry per process, not one per pass."""
        for key, why in {**ledger.unreadable, **ledger.bad_keys}.items():
            if key not in self._reported:
                self._reported.add(key)
                log.error("ledger %s/%s: %s (that digest is refused)", self.ns, self.name, why)

    def rebuild(self) -> Obj | None:
        """Re-create a missing ledger from Lease and Rollout statuses (Warning ``LedgerRebuilt``).

        Statuses are written only by the operator, so they are the records the ledger caches
        (docs/security.md); of two operators rebuilding at once, one create wins and the other
        reads it."""
        now = self.clock()
        entries = rebuild_entries(
            self.kube.list_custom(LEASES), self.kube.list_custom(ROLLOUTS), now
        )
        try:
            created = self.kube.create_configmap(
                self.ns, self._body(dict(encode_entry(e) for e in entries))
            )
        except Exception as exc:
            if is_conflict(exc):
                return self.kube.get_configmap(self.ns, self.name)
            raise
        msg = (
            f"ledger {self.ns}/{self.name} was missing; rebuilt with {len(entries)} "
            "consumed lease(s) from Lease and Rollout statuses"
        )
        log.warning(msg)
        if self.events is not None:
            self.events.emit(created, "Warning", "LedgerRebuilt", msg)
        return created

    def _body(self, data: dict[str, str]) -> dict[str, Any]:
        """A new ledger ConfigMap, labelled as the operator's own (the admission guard's)."""
        return {
            "metadata": {"name": self.name, "namespace": self.ns, "labels": dict(MANAGED_BY)},
            "data": data,
        }

    def claim(self, candidate: LedgerEntry, now: dt.datetime) -> ClaimOutcome:
        """Record ``candidate`` unless another Rollout holds the digest; idempotent for its owner.

        Expired entries are pruned in the same write, so the ledger stays bounded without a
        separate garbage-collection loop racing the claims. Unreadable entries are kept as they
        are (dropping one would re-open its digest).
        """
        for _ in range(MAX_ATTEMPTS):
            cm = self._read()
            data = dict((cm or {}).get("data") or {})
            ledger = self._parse(cm)
            entries = ledger.holders()
            outcome = decide_claim(entries, candidate)
            if not outcome.won or candidate.digest in entries:
                return outcome
            for key in prunable(ledger.entries, now):
                data.pop(key, None)
            key, value = encode_entry(candidate)
            data[key] = value
            try:
                if cm is None:
                    self.kube.create_configmap(self.ns, self._body(data))
                else:
                    cm["data"] = data
                    self.kube.replace_configmap(self.ns, self.name, cm)
                return outcome
            except Exception as exc:
                if is_conflict(exc):
                    continue
                raise
        raise RuntimeError(f"ledger {self.ns}/{self.name}: too many concurrent claims, retrying")

    def prune(self, now: dt.datetime) -> list[str]:
        """Drop entries past their lease's expiry (a replay of those fails rule 1 anyway)."""
        for _ in range(MAX_ATTEMPTS):
            cm = self.kube.get_configmap(self.ns, self.name)
            if cm is None:
                return []
            data = dict(cm.get("data") or {})
            gone = prunable(read_ledger(data).entries, now)
            if not gone:
                return []
            for key in gone:
                data.pop(key, None)
            cm["data"] = data
            try:
                self.kube.replace_configmap(self.ns, self.name, cm)
                return gone
            except Exception as exc:
                if is_conflict(exc):
                    continue
                raise
        return []

    def holder(self, digest: str) -> LedgerEntry | None:
        return self.entries().get(digest)


def ledger_reader(get: Callable[[], Obj | None]) -> Callable[[], Mapping[str, LedgerEntry]]:
    """Digest → holder from ``get`` (a watched ConfigMap: the same object until it changes),
    parsed again only when ``get`` returns another object: the Lease sweep asks once per Lease,
    and re-parsing 1,000 entries each time made the sweep quadratic in Leases."""
    lock = threading.Lock()
    memo: list[Any] = [None, {}]

    def read() -> Mapping[str, LedgerEntry]:
        cm = get()
        with lock:
            if cm is None or cm is not memo[0]:
                memo[0], memo[1] = cm, read_ledger((cm or {}).get("data")).holders()
            return cast(Mapping[str, LedgerEntry], memo[1])

    return read


__all__ = ["LedgerStore", "ledger_key", "ledger_reader"]
