"""``KubeApi``: the part of the Kubernetes API the reconcilers depend on, as a Protocol.

Exactly the methods that ``calyx.reconcile`` (Rollouts, Leases, the report), the ledger store and
the event recorder call; :class:`calyx.adapters.kube.Kube` satisfies it, so does a caching
wrapper around it, and so does the in-memory fake the unit tests run the real reconciler
against (``tests/support/fake_kube.py``, docs/testing.md). Method names and signatures are
``Kube``'s own, so any of them can stand in for the others.

The error contract is ``Kube``'s: ``get_*`` return None for a missing object; other calls
raise ``kubernetes.client.rest.ApiException`` with the server's status (404 not found, 409
conflict or already exists, 422 invalid), except where a method documents that it absorbs one.
The client's own sub-APIs (``.core``, ``.apps``, watches) are not part of it: code that needs
them (the ConfigMap watch, the leader elector, the CLI) takes a ``Kube``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from calyx.adapters.kube import Obj


class KubeApi(Protocol):
    """Dict-in, dict-out access to the objects Calyx reconciles (see ``Kube`` for each one)."""

    # --- Calyx custom resources (plural: ``leases`` / ``rollouts``) ---------------------------
    def get_custom(self, plural: str, namespace: str, name: str) -> Obj | None: ...

    def list_custom(self, plural: str, namespace: str | None = None) -> list[Obj]: ...

    def patch_custom(
        self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> Obj: ...

    def patch_custom_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Obj: ...

    # --- ConfigMaps -----------------------------------------------------------------------
    def get_configmap(self, namespace: str, name: str) -> Obj | None: ...

    def create_configmap(self, namespace: str, body: Mapping[str, Any]) -> Obj: ...

    def replace_configmap(self, namespace: str, name: str, body: Mapping[str, Any]) -> Obj: ...

    def delete_configmap(self, namespace: str, name: str) -> None: ...

    def create_configmap_if_absent(self, namespace: str, body: Mapping[str, Any]) -> None: ...

    # --- Deployments ----------------------------------------------------------------------
    def get_deployment(self, namespace: str, name: str) -> Obj | None: ...

    def create_deployment(self, namespace: str, body: Mapping[str, Any]) -> Obj | None: ...

    def patch_deployment(self, namespace: str, name: str, patch: Any, content_type: str) -> Obj: ...

    def annotate_deployment(
        self, namespace: str, name: str, key: str, value: str | None, resource_version: str
    ) -> bool: ...

    def delete_deployment_now(self, namespace: str, name: str, pod_selector: str) -> None: ...

    # --- Jobs -----------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> Obj | None: ...

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> None: ...

    def delete_job(self, namespace: str, name: str) -> None: ...

    # --- Events ---------------------------------------------------------------------------
    def create_event(self, namespace: str, body: Mapping[str, Any]) -> None: ...


__all__ = ["KubeApi", "Obj"]
