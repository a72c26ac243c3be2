"""Reads and writes the trust store ConfigMap (``calyx-trust``, docs/signing.md §7).

Parsing and validation are pure (``calyx.domain.trust``); this module only moves the two YAML
documents in and out of the cluster, with compare-and-swap writes so two admins running
``calyx trust add`` at once cannot lose each other's key.
"""

from __future__ import annotations

from collections.abc import Callable

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
