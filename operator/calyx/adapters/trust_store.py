"""Reads and writes the trust store ConfigMap (``calyx-trust``, docs/signing.md §7).

Parsing and validation are pure (``calyx.domain.trust``); this module only moves the two YAML
documents in and out of the cluster, with compare-and-swap writes so two admins running
``calyx trust add`` at once cannot lose each other's key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

from calyx.adapters.kube import Kube, is_conflict
from calyx.adapters.settings import Settings
from calyx.domain.trust import (
    Signer,
    TrustStore,
    TrustStoreError,
    dump_signers_yaml,
    parse_trust_store,
)

SIGNERS_KEY = "signers.yaml"
POLICY_KEY = "policy.yaml"


def trust_store_from_configmap(cm: dict[str, object] | None, where: str) -> TrustStore:
    """Parse a ConfigMap dict; a missing ConfigMap is an error, never an empty (open) store."""
    if cm is None:
        raise TrustStoreError(f"trust store ConfigMap {where} not found")
    data = cm.get("data") or {}
    assert isinstance(data, dict)
    return parse_trust_store(data.get(SIGNERS_KEY), data.get(POLICY_KEY))


def trust_reader(
    get: Callable[[], dict[str, object] | None], where: str
) -> Callable[[], TrustStore]:
    """The trust store from ``get`` (a watched ConfigMap: the same object until it changes),
    parsed again only when ``get`` returns another object. Every Rollout and Lease pass asks for
    it, and parsing its YAML costs about a millisecond."""
    lock = threading.Lock()
    memo: list[Any] = [None, None]  # the ConfigMap object last parsed, and its result

    def read() -> TrustStore:
        cm = get()
        with lock:
            if cm is not None and cm is memo[0]:
                result = memo[1]
            else:
                try:
                    result = trust_store_from_configmap(cm, where)
                except TrustStoreError as exc:
                    result = exc
                memo[0], memo[1] = cm, result
        if isinstance(result, TrustStoreError):
            raise TrustStoreError(str(result))
        return cast(TrustStore, result)

    return read


def load_trust_store(kube: Kube, settings: Settings) -> TrustStore:
    where = f"{settings.namespace}/{settings.trust_configmap}"
    return trust_store_from_configmap(
        kube.get_configmap(settings.namespace, settings.trust_configmap), where
    )


def update_signers(
    kube: Kube, settings: Settings, change: Callable[[list[Signer]], list[Signer]]
) -> TrustStore:
    """Apply ``change`` to the signer list and write it back, retrying on conflicts.

    The new content is parsed before it is written, so a change that would make the store
    invalid (duplicate id or key) is refused and nothing is written.
    """
    ns, name = settings.namespace, settings.trust_configmap
    for _ in range(10):
        cm = kube.get_configmap(ns, name)
        data = dict((cm or {}).get("data") or {})
        current = parse_trust_store(data.get(SIGNERS_KEY), data.get(POLICY_KEY))
        signers = change(list(current.signers.values()))
        data[SIGNERS_KEY] = dump_signers_yaml(signers)
        store = parse_trust_store(data[SIGNERS_KEY], data.get(POLICY_KEY))
        try:
            if cm is None:
                kube.create_configmap(
                    ns, {"metadata": {"name": name, "namespace": ns}, "data": data}
                )
            else:
                cm["data"] = data
                kube.replace_configmap(ns, name, cm)
            return store
        except Exception as exc:
            if is_conflict(exc):
                continue
            raise
    raise RuntimeError(f"trust store {ns}/{name} kept changing under us; try again")
