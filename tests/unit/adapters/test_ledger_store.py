"""The ledger store's reads and claims (calyx/adapters/ledger_store.py) on the fake API: a
thousand Rollouts starting at once must not each parse (or copy) the whole ledger per attempt
(docs/performance.md, run 8's census: ~46,000 ledger entries alive at once)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

import calyx.adapters.ledger_store as store_mod
from calyx.adapters.ledger_store import LedgerStore
from calyx.adapters.settings import Settings
from calyx.domain.canary import MANAGED_BY
from calyx.domain.ledger import LedgerEntry, encode_entry
from tests.support.fake_kube import FakeKube

NS = "calyx-system"
NOW = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)


def entry(i: int) -> LedgerEntry:
    return LedgerEntry(
        digest=f"sha256:{i:064x}",
        namespace="team",
        lease=f"l{i}",
        rollout=f"r{i}",
        rollout_uid=f"u{i}",
        claimed_at="2026-11-30T07:00:00Z",
        expires_at="2026-11-30T09:00:00Z",
    )


class Kube(FakeKube):
    """The fake, counting ledger reads, refusing the first ``conflicts`` writes with 409 (other
    claims won), and optionally answering like a watch cache holding the ledger."""

    def __init__(self, conflicts: int = 0, cached: bool = False) -> None:
        super().__init__(clock=lambda: NOW)
        self.conflicts = conflicts
        self.gets = 0
        if cached:
            self.configmap_version = self._version

    def _version(self, namespace: str, name: str) -> str | None:
        cm = self.peek("configmaps", namespace, name)
        return None if cm is None else str(cm["metadata"]["resourceVersion"])

    def get_configmap(self, namespace: str, name: str) -> Any:
        self.gets += 1
        return super().get_configmap(namespace, name)

    def replace_configmap(self, namespace: str, name: str, body: Any) -> Any:
        if self.conflicts:
            self.conflicts -= 1
            raise ApiException(status=409, reason="Conflict")
        return super().replace_configmap(namespace, name, body)


def ledger(kube: Kube, count: int) -> LedgerStore:
    data = dict(encode_entry(entry(i)) for i in range(count))
    kube.create_configmap(
        NS, {"metadata": {"name": "calyx-ledger", "labels": dict(MANAGED_BY)}, "data": data}
    )
    return LedgerStore(kube, Settings(namespace=NS))


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    counted: list[int] = []
    real = store_mod.read_ledger

    def counting(data: Any) -> Any:
        counted.append(len(data or {}))
        return real(data)

    monkeypatch.setattr(store_mod, "read_ledger", counting)
    return counted


def test_a_claim_retrying_against_the_same_version_parses_it_once(parses: list[int]) -> None:
    kube = Kube(conflicts=5)
    store = ledger(kube, 100)
    assert store.claim(entry(500), NOW).won
    assert parses == [100], "five conflicts at one version: one parse, not six"
    assert store.entries()[entry(500).digest].rollout == "r500"
    assert parses == [100, 101]


def test_a_read_from_a_cache_holding_the_parsed_version_copies_nothing(
    parses: list[int],
) -> None:
    kube = Kube(cached=True)
    store = ledger(kube, 100)
    first = store.entries()
    gets = kube.gets
    for _ in range(10):
        assert store.entries() == first
    assert kube.gets == gets and parses == [100]
    assert store.claim(entry(500), NOW).won  # a new version: read and parsed again
    assert entry(500).digest in store.entries()
    assert parses == [100, 101]


def test_without_a_cache_every_read_is_a_get_but_one_parse_per_version(
    parses: list[int],
) -> None:
    kube = Kube()
    store = ledger(kube, 10)
    for _ in range(3):
        store.entries()
    assert kube.gets == 3 and parses == [10]
