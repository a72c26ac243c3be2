"""The one place that talks to the Kubernetes API (besides Kopf's own watches).

A thin wrapper over the official client that returns plain dicts, so the layers above never
see generated model classes and tests can build inputs as literal YAML-like data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from calyx import __version__
from calyx.api import common as api_common
from calyx.api import lease as api_lease
from calyx.api import rollout as api_rollout

# The API's coordinates are defined once, in calyx.api; named here for the callers of this module.
GROUP = api_common.GROUP
VERSION = api_common.VERSION
LEASES = api_lease.PLURAL
ROLLOUTS = api_rollout.PLURAL

Obj = dict[str, Any]


class KubeError(RuntimeError):
    """An API call failed for a reason the caller should show the user verbatim."""


class FencedError(KubeError):
    """A write refused before it was sent: this replica cannot prove it is the leader.

    Raised instead of an API error, and handled like one: the pass stops and the next pass
    (on whichever replica leads by then) observes the cluster again (docs/operations.md, "High
    availability")."""


class Fence(Protocol):
    """What the Kube adapter asks before every write (``calyx.adapters.leader`` implements it)."""

    def holds(self, now: float) -> bool:
        """True while this replica may write; ``now`` is ``time.monotonic()``."""
        ...

    def explain(self, now: float) -> str:
        """Why ``holds(now)`` is false, for the exception message and the log."""
        ...


#: HTTP methods that change the cluster; GET/HEAD (reads, watches) never need the fence.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def api_client(
    kubeconfig: str | None = None,
    context: str | None = None,
    user_agent: str = "calyx",
    connections: int | None = None,
) -> client.ApiClient:
    """In-cluster config when running as a pod, else the kubeconfig (like kubectl).

    ``user_agent`` names the caller in the API server's audit log, so every write can be
    attributed to the operator or to a human's CLI. ``connections``: how many connections
    to the API server are kept open for reuse, at least the number of threads that send
    requests at once. The client's default is 5 per CPU (10 on a 2-CPU node); each request
    beyond that opened a connection, with a TLS handshake, and closed it afterwards.
    """
    cfg = client.Configuration()
    if connections is not None:
        cfg.connection_pool_maxsize = connections
    loaded = False
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config(client_configuration=cfg)
            loaded = True
        except config.ConfigException:
            pass
    if not loaded:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    api = client.ApiClient(cfg)
    api.user_agent = f"{user_agent}/{__version__}"
    return api


def _fence_writes(api: client.ApiClient, fence: Fence, monotonic: Callable[[], float]) -> None:
    """Make ``api`` check ``fence`` right before it sends any write.

    Checked as late as possible — after the body is serialised, just before the socket — so the
    time between "proved leadership" and "the API server has the request" stays small; the
    safety margin between the renew deadline and the lease duration covers that time."""
    send = api.call_api

    def call_api(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() in WRITE_METHODS:
            now = monotonic()
            if not fence.holds(now):
                path = urlsplit(url).path
                raise FencedError(f"{method} {path} refused: {fence.explain(now)}")
        return send(method, url, *args, **kwargs)

    api.call_api = call_api


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    """409: a resourceVersion precondition failed or the object already exists."""
    return isinstance(exc, ApiException) and exc.status == 409


RETRYABLE_4XX = frozenset({408, 409, 429})
"""Client errors that a later attempt can cure: timeout, conflict, throttling."""


def is_refusal(exc: BaseException) -> bool:
    """The API server refused the request itself (a policy, a validation, a namespace being
    deleted, an object gone): sending it again cannot succeed. Not a timeout (408), a conflict
    (409, another writer: read again and retry) or throttling (429); and not a failure that
    never reached a decision (unreachable, 5xx, this replica fenced)."""
    if not isinstance(exc, ApiException) or exc.status in RETRYABLE_4XX:
        return False
    return 400 <= (exc.status or 0) < 500


def api_message(exc: ApiException) -> str:
    """The server's own one-line message (e.g. a CEL rule's text), not the HTTP dump."""
    import json

    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


def error_message(exc: BaseException) -> str:
    """One line for a log: the server's message for an API error, else the exception text."""
    return api_message(exc) if isinstance(exc, ApiException) else str(exc)


class Kube:
    """Dict-in, dict-out access to the resources Calyx reads and writes.

    With a ``fence`` (the operator passes its leader elector), every write made through this
    client — a wrapper below, Events, or a direct ``.core``/``.apps``/... call — is refused with
    :class:`FencedError` unless ``fence.holds(now)``. The check sits at the client's single
    request entry point (``call_api``), so a write added later cannot forget it. Without a fence
    (the CLI, tests) nothing changes.
    """

    def __init__(
        self,
        api: client.ApiClient,
        fence: Fence | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.fence = fence
        if fence is not None:
            _fence_writes(api, fence, monotonic)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        # Only the leader elector uses it (its own Kube, without a fence: renewing the Lease is
        # how a leader proves it leads, so that write must not wait for the proof).
        self.coordination = client.CoordinationV1Api(api)

    def _plain(self, obj: object) -> Obj:
        return cast(Obj, self.api.sanitize_for_serialization(obj))

    # --- Calyx custom resources -------------------------------------------------------------
    def get_custom(self, plural: str, namespace: str, name: str) -> Obj | None:
        try:
            return cast(
                Obj,
                self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_custom(self, plural: str, namespace: str | None = None) -> list[Obj]:
        if namespace is None:
            res = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        else:
            res = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        return cast(list[Obj], res.get("items", []))

    def create_custom(self, plural: str, namespace: str, body: Mapping[str, Any]) -> Obj:
        return cast(
            Obj,
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body),
        )

    def patch_custom(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> Obj:
        """JSON merge patch of metadata/spec (annotations, paused)."""
        return cast(
            Obj,
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                patch,
                _content_type="application/merge-patch+json",
            ),
        )

    def patch_custom_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Obj:
        """Merge-patch the status subresource; lists (conditions, cosigners) are replaced whole."""
        return cast(
            Obj,
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": dict(status)},
                _content_type="application/merge-patch+json",
            ),
        )

    # --- ConfigMaps -------------------------------------------------------------------------
    def get_configmap(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._plain(self.core.read_namespaced_config_map(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_configmap(self, namespace: str, body: Mapping[str, Any]) -> Obj:
        return self._plain(self.core.create_namespaced_config_map(namespace, body))

    def replace_configmap(self, namespace: str, name: str, body: Mapping[str, Any]) -> Obj:
        """Full replace; ``body.metadata.resourceVersion`` makes it a compare-and-swap."""
        return self._plain(self.core.replace_namespaced_config_map(name, namespace, body))

    def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- Deployments (the only workload kind a Lease may target for now) ----------------------
    def get_deployment(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._plain(self.apps.read_namespaced_deployment(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_deployment(self, namespace: str, body: Mapping[str, Any]) -> Obj | None:
        """Create; an AlreadyExists (a repeat after a crash) is not an error."""
        try:
            return self._plain(self.apps.create_namespaced_deployment(namespace, body))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def patch_deployment(self, namespace: str, name: str, patch: Any, content_type: str) -> Obj:
        return self._plain(
            self.apps.patch_namespaced_deployment(
                name, namespace, patch, _content_type=content_type
            )
        )

    def annotate_deployment(
        self, namespace: str, name: str, key: str, value: str | None, resource_version: str
    ) -> bool:
        """Set (or, with None, remove) one annotation, only if the Deployment is still at
        ``resource_version``. False when it changed meanwhile or is gone: the caller observes
        again rather than overwrite what it has not seen."""
        patch = {"metadata": {"annotations": {key: value}, "resourceVersion": resource_version}}
        try:
            self.patch_deployment(namespace, name, patch, "application/merge-patch+json")
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def delete_deployment_now(self, namespace: str, name: str, pod_selector: str) -> None:
        """Delete a Deployment and, right away, its pods: pods with a deletionTimestamp leave
        the Service's endpoints at once, without waiting for the garbage collector's chain
        Deployment → ReplicaSet → Pod."""
        try:
            self.apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise
        self.core.delete_collection_namespaced_pod(namespace, label_selector=pod_selector)

    def create_configmap_if_absent(self, namespace: str, body: Mapping[str, Any]) -> None:
        try:
            self.core.create_namespaced_config_map(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    # --- Jobs (post-deploy validation) -----------------------------------------------------
    def get_job(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._plain(self.batch.read_namespaced_job(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> None:
        try:
            self.batch.create_namespaced_job(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- Events ---------------------------------------------------------------------------
    def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Post one core/v1 Event; errors (409 for a name already taken) are the caller's."""
        self.core.create_namespaced_event(namespace, body)
