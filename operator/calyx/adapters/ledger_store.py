"""The consumed-lease ledger ConfigMap (``calyx-ledger``, DESIGN §3.5 rule 4).

A claim is a compare-and-swap on the ConfigMap's resourceVersion: of two Rollouts claiming one
Lease at once, the API server accepts exactly one write and the other re-reads and sees the
winner. That is what makes a Lease single-use without a lock service.
"""

from __future__ import annotations

import datetime as dt

from calyx.adapters.kube import Kube, Obj, is_conflict
from calyx.adapters.settings import Settings
from calyx.domain.ledger import (
    ClaimOutcome,
    LedgerEntry,
    decide_claim,
    encode_entry,
    ledger_key,
    parse_ledger,
    prunable,
)

MAX_ATTEMPTS = 20


class LedgerStore:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.ns = settings.namespace
        self.name = settings.ledger_configmap

    def _read(self) -> Obj | None:
        return self.kube.get_configmap(self.ns, self.name)

    def entries(self) -> dict[str, LedgerEntry]:
        """All entries by digest; a corrupt entry raises (a silently dropped one allows replay)."""
        cm = self._read()
        return parse_ledger((cm or {}).get("data"))

    def claim(self, candidate: LedgerEntry, now: dt.datetime) -> ClaimOutcome:
        """Record ``candidate`` unless another Rollout holds the digest; idempotent for its owner.

        Expired entries are pruned in the same write, so the ledger stays bounded without a
        separate garbage-collection loop racing the claims.
        """
        for _ in range(MAX_ATTEMPTS):
            cm = self._read()
            data = dict((cm or {}).get("data") or {})
            entries = parse_ledger(data)
            outcome = decide_claim(entries, candidate)
            if not outcome.won or candidate.digest in entries:
                return outcome
            for key in prunable(entries, now):
                data.pop(key, None)
            key, value = encode_entry(candidate)
            data[key] = value
            try:
                if cm is None:
                    self.kube.create_configmap(
                        self.ns,
                        {"metadata": {"name": self.name, "namespace": self.ns}, "data": data},
                    )
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
            cm = self._read()
            if cm is None:
                return []
            data = dict(cm.get("data") or {})
            gone = prunable(parse_ledger(data), now)
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


__all__ = ["LedgerStore", "ledger_key"]
