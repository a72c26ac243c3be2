"""An in-memory Kubernetes API: ``calyx.adapters.kube_api.KubeApi`` over dicts, for unit tests.

The real reconcilers run against it (``tests/support/rollout_world.py``), so what it must get right
is what they rely on from a real API server (docs/testing.md, "The fake Kube"):

* every write bumps a cluster-wide ``resourceVersion``; a write that changes nothing does not;
  a change outside ``metadata``/``status`` bumps ``metadata.generation``; ``uid`` and
  ``creationTimestamp`` are set on create;
* errors are ``kubernetes.client.rest.ApiException`` with the server's status: 404 not found,
  409 already exists or a failed ``resourceVersion`` precondition, 422 invalid, and the
  ``Kube`` wrappers' own absorptions (``get_*`` → None, ``create_deployment`` → None on 409,
  ``delete_configmap`` ignores 404, ...);
* patches: JSON merge patch (RFC 7386), strategic merge patch (lists of containers, volumes,
  env, ... merged by their key, other lists replaced), JSON patch (RFC 6902); a merge or
  strategic patch carrying ``metadata.resourceVersion`` and a replace carrying one are
  compare-and-swaps;
* the status subresource: writes to the object ignore ``status``, status writes change only it;
* a ConfigMap with ``immutable: true`` refuses changes to its data (422);
* finalizers: deleting an object that has some sets ``deletionTimestamp``; it is removed when
  its last finalizer is, and no finalizer may be added meanwhile;
* garbage collection: removing an object deletes the objects whose ``ownerReferences`` name it;
* Events are stored by name (409 on a repeated name, which the outbox relies on);
* a tiny Deployment "controller": after a create or a spec change, a Deployment for which
  ``ready(deployment)`` holds gets a settled status (all replicas updated, ready, available).
  ``ready=None`` switches it off; :meth:`FakeKube.settle_deployment` settles one by hand.

It is not a validating API server: no schemas, no defaulting, no admission, no watches, no
pods other than what a test creates. Those are the end-to-end suite's job.

Tests may reach the stored objects directly with :meth:`FakeKube.peek` (the live dict, like
editing etcd: no resourceVersion bump, no controller) to set up a situation a client could not
produce; everything the code under test does goes through the API methods.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from calyx.adapters.kube import GROUP, LEASES, ROLLOUTS, VERSION
from calyx.adapters.kube_api import KubeApi
from calyx.domain.timefmt import format_time

Obj = dict[str, Any]
Key = tuple[str, str, str]
"""(resource plural, namespace, name)"""

CONFIGMAPS, DEPLOYMENTS, JOBS, EVENTS, PODS = "configmaps", "deployments", "jobs", "events", "pods"

KINDS: Mapping[str, tuple[str, str]] = {
    CONFIGMAPS: ("v1", "ConfigMap"),
    DEPLOYMENTS: ("apps/v1", "Deployment"),
    JOBS: ("batch/v1", "Job"),
    EVENTS: ("v1", "Event"),
    PODS: ("v1", "Pod"),
    ROLLOUTS: (f"{GROUP}/{VERSION}", "Rollout"),
    LEASES: (f"{GROUP}/{VERSION}", "Lease"),
}
STATUS_SUBRESOURCE = frozenset({DEPLOYMENTS, JOBS, PODS, ROLLOUTS, LEASES})
"""Resources whose status is written through ``/status`` only (and that have a generation)."""

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

MERGE_KEYS: Mapping[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
"""Lists a strategic merge patch merges item by item (the key each item is matched on); every
other list is replaced whole, as in a JSON merge patch."""


def api_error(status: int, reason: str, message: str) -> ApiException:
    """An ``ApiException`` as the client raises it: status, reason and a ``Status`` body."""
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": status,
        }
    )
    return exc


def not_found(resource: str, name: str) -> ApiException:
    return api_error(404, "NotFound", f'{resource} "{name}" not found')


def conflict(resource: str, name: str) -> ApiException:
    return api_error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
    )


def invalid(resource: str, name: str, why: str) -> ApiException:
    return api_error(422, "Invalid", f'{resource} "{name}" is invalid: {why}')


def _plain(obj: Any) -> Any:
    """A deep, JSON-shaped copy: what a round trip through the wire makes of a body."""

    def default(o: object) -> Any:
        if isinstance(o, dt.datetime | dt.date):
            return o.isoformat()
        if isinstance(o, Mapping):
            return dict(o)
        if isinstance(o, tuple | set | frozenset):
            return list(o)
        raise TypeError(f"not JSON-serialisable: {type(o).__name__}")

    return json.loads(json.dumps(obj, default=default))


# --- patch semantics ----------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes' strategic merge patch, for the built-in lists the reconciler patches:
    a list named in :data:`MERGE_KEYS` is merged item by item on that key (patched items merge
    into the matching one, new ones are appended); ``$patch`` directives are not supported."""
    if isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise ValueError(f"strategic merge directives are not supported by the fake: {patch}")
        out = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge_patch(out.get(key), value, key)
        return out
    key = MERGE_KEYS.get(field)
    if (
        key is not None
        and isinstance(patch, list)
        and isinstance(target, list)
        and all(isinstance(i, dict) and key in i for i in [*patch, *target])
    ):
        merged = [dict(i) for i in target]
        for item in patch:
            for i, have in enumerate(merged):
                if have[key] == item[key]:
                    merged[i] = strategic_merge_patch(have, item)
                    break
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ValueError(f"doc is missing path: {path}")
    return node


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 ``add``, ``remove``, ``replace`` and ``test`` (what a client sends)."""
    if not isinstance(ops, list):
        raise ValueError("a JSON patch is a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), str(op.get("path", ""))
        parts = _pointer(path)
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op["value"])
                continue
            raise ValueError(f"{kind} of the whole document is not supported")
        parent, last = _parent(doc, parts, path), parts[-1]
        idx = -1
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last) if last.isdigit() else -1
            exists = 0 <= idx < len(parent)
        elif isinstance(parent, dict):
            exists = last in parent
        else:
            raise ValueError(f"doc is missing path: {path}")
        if kind == "test":
            if not exists or (parent[idx] if isinstance(parent, list) else parent[last]) != op.get(
                "value"
            ):
                raise ValueError(f"test failed at {path}")
        elif kind == "remove" or kind == "replace":
            if not exists:
                raise ValueError(f"{kind} operation does not apply: doc is missing path: {path}")
            if kind == "remove":
                del parent[idx if isinstance(parent, list) else last]
            elif isinstance(parent, list):
                parent[idx] = copy.deepcopy(op["value"])
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "add":
            if isinstance(parent, list):
                if not 0 <= idx <= len(parent):
                    raise ValueError(f"add operation does not apply: index out of range: {path}")
                parent.insert(idx, copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"JSON patch op {kind!r} is not supported by the fake")
    return doc


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    """An equality-based label selector: ``a=b,c!=d,e`` (existence)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.strip() not in labels:
            return False
    return True


def _without_server_fields(obj: Mapping[str, Any]) -> Obj:
    """What a write may change: everything but metadata and status (that is, what moves
    ``generation``)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def always_ready(_deployment: Mapping[str, Any]) -> bool:
    return True


class FakeKube:
    """Dict storage behind the ``KubeApi`` methods (plus a few a test needs: ``create_custom``,
    ``delete_custom``, the generic ``create``/``get``/``list_objects``/``update``/``patch``/
    ``delete``)."""

    def __init__(
        self,
        clock: Callable[[], dt.datetime] | None = None,
        ready: Callable[[Mapping[str, Any]], bool] | None = always_ready,
    ) -> None:
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.ready = ready
        self.objects: dict[Key, Obj] = {}
        self.tombstones: dict[Key, Obj] = {}
        """The last state of every removed object (what a watch's DELETED event carries)."""
        self.revision = 0
        self._uids: set[str] = set()
        self._lock = threading.RLock()

    # --- storage ----------------------------------------------------------------------------
    def _bump(self) -> str:
        self.revision += 1
        return str(self.revision)

    def _uid(self, name: str) -> str:
        """Readable and unique: ``uid-<name>``, then ``uid-<name>-2``, ..."""
        for n in itertools.count(1):
            uid = f"uid-{name}" if n == 1 else f"uid-{name}-{n}"
            if uid not in self._uids:
                self._uids.add(uid)
                return uid
        raise AssertionError("unreachable")

    def _key(self, resource: str, namespace: str, name: str) -> Key:
        if resource not in KINDS:
            raise ValueError(f"the fake does not serve {resource}")
        return (resource, namespace, name)

    def peek(self, resource: str, namespace: str, name: str) -> Obj | None:
        """The stored object itself (not a copy), for a test to read or edit in place."""
        return self.objects.get(self._key(resource, namespace, name))

    def items(self, resource: str, namespace: str | None = None) -> Iterator[Obj]:
        """The stored objects of one resource (live), in etcd's key order."""
        for (res, ns, _name), obj in sorted(self.objects.items()):
            if res == resource and (namespace is None or ns == namespace):
                yield obj

    # --- generic verbs ----------------------------------------------------------------------
    def create(self, resource: str, namespace: str, body: Mapping[str, Any]) -> Obj:
        with self._lock:
            obj = _plain(body)
            meta = obj.setdefault("metadata", {})
            name = meta.get("name")
            if not name:
                raise invalid(resource, "", "metadata.name: Required value")
            if meta.get("namespace", namespace) != namespace:
                raise api_error(
                    400, "BadRequest", "the namespace of the object does not match the request"
                )
            if meta.get("resourceVersion"):
                raise invalid(resource, name, "metadata.resourceVersion: must not be set on create")
            key = self._key(resource, namespace, name)
            if key in self.objects:
                raise api_error(409, "AlreadyExists", f'{resource} "{name}" already exists')
            api_version, kind = KINDS[resource]
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            meta["namespace"] = namespace
            meta["uid"] = self._uid(name)
            meta["creationTimestamp"] = format_time(self.clock())
            meta.pop("deletionTimestamp", None)
            if resource in STATUS_SUBRESOURCE:
                obj.pop("status", None)
                meta["generation"] = 1
            meta["resourceVersion"] = self._bump()
            self.objects[key] = obj
            if resource == DEPLOYMENTS:
                self._deployment_controller(obj)
            return copy.deepcopy(obj)

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        obj = self.peek(resource, namespace, name)
        if obj is None:
            raise not_found(resource, name)
        return copy.deepcopy(obj)

    def list_objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for o in self.items(resource, namespace)]

    def update(
        self,
        resource: str,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        subresource: str = "",
    ) -> Obj:
        """PUT: the whole object; ``metadata.resourceVersion``, when given, must be current."""
        with self._lock:
            old = self.get(resource, namespace, name)
            new = _plain(body)
            want = (new.get("metadata") or {}).get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            return self._write(resource, old, new, subresource)

    def patch(
        self,
        resource: str,
        namespace: str,
        name: str,
        patch: Any,
        content_type: str = MERGE,
        subresource: str = "",
    ) -> Obj:
        with self._lock:
            old = self.get(resource, namespace, name)
            body = _plain(patch)
            if content_type == JSON_PATCH:
                apply: Callable[[Any, Any], Any] = json_patch
            elif content_type == MERGE:
                apply = merge_patch
            elif content_type == STRATEGIC:
                if resource in (ROLLOUTS, LEASES):
                    raise api_error(
                        415, "UnsupportedMediaType", "strategic merge patch is not supported"
                    )
                apply = strategic_merge_patch
            else:
                raise api_error(415, "UnsupportedMediaType", f"unsupported patch {content_type}")
            if isinstance(body, dict):
                want = (body.get("metadata") or {}).get("resourceVersion")
                if want and want != old["metadata"]["resourceVersion"]:
                    raise conflict(resource, name)
            try:
                new = apply(old, body)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise invalid(resource, name, str(exc)) from None
            return self._write(resource, old, new, subresource)

    def delete(self, resource: str, namespace: str, name: str) -> Obj:
        """Remove the object, or only mark it (``deletionTimestamp``) while it has finalizers."""
        with self._lock:
            key = self._key(resource, namespace, name)
            obj = self.objects.get(key)
            if obj is None:
                raise not_found(resource, name)
            meta = obj["metadata"]
            if meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = format_time(self.clock())
                    meta["deletionGracePeriodSeconds"] = 0
                    meta["resourceVersion"] = self._bump()
                return copy.deepcopy(obj)
            self._remove(key)
            return copy.deepcopy(obj)

    def delete_collection(self, resource: str, namespace: str, label_selector: str = "") -> None:
        with self._lock:
            for obj in list(self.items(resource, namespace)):
                if _matches(obj["metadata"].get("labels") or {}, label_selector):
                    self.delete(resource, namespace, obj["metadata"]["name"])

    # --- what every write obeys -------------------------------------------------------------
    def _write(self, resource: str, old: Obj, new: Obj, subresource: str) -> Obj:
        name = old["metadata"]["name"]
        if not isinstance(new, dict):
            raise invalid(resource, name, "the object must be a JSON object")
        new = copy.deepcopy(new)  # a patch result may share nested dicts with ``old``
        key = self._key(resource, old["metadata"]["namespace"], name)
        if subresource == "status":
            # Only the status moves; whatever else the body says is ignored.
            new = {**copy.deepcopy(old), "status": new.get("status")}
            if new["status"] is None:
                del new["status"]
        elif subresource:
            raise ValueError(f"the fake has no {subresource} subresource")
        else:
            if resource in STATUS_SUBRESOURCE:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            meta = new.setdefault("metadata", {})
            for field in ("name", "namespace", "uid", "creationTimestamp", "generation"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
                else:
                    meta.pop(field, None)
            new.setdefault("apiVersion", old.get("apiVersion"))
            new.setdefault("kind", old.get("kind"))
            self._check_finalizers(resource, old, new)
            self._check_immutable(resource, old, new)
            if resource in STATUS_SUBRESOURCE and _without_server_fields(
                new
            ) != _without_server_fields(old):
                meta["generation"] = int(old["metadata"].get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return copy.deepcopy(self.objects[key])  # a no-op write changes nothing
        new["metadata"]["resourceVersion"] = self._bump()
        self.objects[key] = new
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(key)
            return copy.deepcopy(new)
        if resource == DEPLOYMENTS and meta.get("generation") != old["metadata"].get("generation"):
            self._deployment_controller(new)
        return copy.deepcopy(self.objects[key])

    @staticmethod
    def _check_finalizers(resource: str, old: Obj, new: Obj) -> None:
        if not old["metadata"].get("deletionTimestamp"):
            return
        added = set(new["metadata"].get("finalizers") or []) - set(
            old["metadata"].get("finalizers") or []
        )
        if added:
            raise invalid(
                resource,
                old["metadata"]["name"],
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object "
                "is being deleted",
            )

    @staticmethod
    def _check_immutable(resource: str, old: Obj, new: Obj) -> None:
        if resource != CONFIGMAPS or not old.get("immutable"):
            return
        if (
            not new.get("immutable")
            or new.get("data") != old.get("data")
            or new.get("binaryData") != old.get("binaryData")
        ):
            raise invalid(
                resource,
                old["metadata"]["name"],
                "data: Forbidden: field is immutable when `immutable` is set",
            )

    def _remove(self, key: Key) -> None:
        """Take the object out and collect its dependents (background propagation)."""
        obj = self.objects.pop(key)
        self.tombstones[key] = obj
        uid = obj["metadata"].get("uid")
        for dkey, dep in list(self.objects.items()):
            refs = dep["metadata"].get("ownerReferences") or []
            if dkey in self.objects and any(r.get("uid") == uid for r in refs):
                self.delete(*dkey)

    # --- the Deployment "controller" --------------------------------------------------------
    def _deployment_controller(self, dep: Obj) -> None:
        if self.ready is not None and self.ready(dep):
            self._settle(dep)

    def _settle(self, dep: Obj) -> None:
        n = int((dep.get("spec") or {}).get("replicas", 1))
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
        }
        if dep.get("status") != status:
            dep["status"] = status
            dep["metadata"]["resourceVersion"] = self._bump()

    def settle_deployment(self, namespace: str, name: str) -> None:
        """What the Deployment controller reports once every pod of the current template is
        ready and available (whatever ``ready`` says)."""
        with self._lock:
            dep = self.peek(DEPLOYMENTS, namespace, name)
            if dep is None:
                raise not_found(DEPLOYMENTS, name)
            self._settle(dep)

    # --- KubeApi: Calyx custom resources ----------------------------------------------------
    def get_custom(self, plural: str, namespace: str, name: str) -> Obj | None:
        obj = self.peek(plural, namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    def list_custom(self, plural: str, namespace: str | None = None) -> list[Obj]:
        return self.list_objects(plural, namespace)

    def create_custom(self, plural: str, namespace: str, body: Mapping[str, Any]) -> Obj:
        return self.create(plural, namespace, body)

    def delete_custom(self, plural: str, namespace: str, name: str) -> Obj:
        return self.delete(plural, namespace, name)

    def patch_custom(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> Obj:
        return self.patch(plural, namespace, name, patch, MERGE)

    def patch_custom_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Obj:
        return self.patch(plural, namespace, name, {"status": dict(status)}, MERGE, "status")

    # --- KubeApi: ConfigMaps ----------------------------------------------------------------
    def get_configmap(self, namespace: str, name: str) -> Obj | None:
        obj = self.peek(CONFIGMAPS, namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    def create_configmap(self, namespace: str, body: Mapping[str, Any]) -> Obj:
        return self.create(CONFIGMAPS, namespace, body)

    def replace_configmap(self, namespace: str, name: str, body: Mapping[str, Any]) -> Obj:
        return self.update(CONFIGMAPS, namespace, name, body)

    def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            self.delete(CONFIGMAPS, namespace, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def create_configmap_if_absent(self, namespace: str, body: Mapping[str, Any]) -> None:
        try:
            self.create(CONFIGMAPS, namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    # --- KubeApi: Deployments ---------------------------------------------------------------
    def get_deployment(self, namespace: str, name: str) -> Obj | None:
        obj = self.peek(DEPLOYMENTS, namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    def create_deployment(self, namespace: str, body: Mapping[str, Any]) -> Obj | None:
        try:
            return self.create(DEPLOYMENTS, namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def patch_deployment(self, namespace: str, name: str, patch: Any, content_type: str) -> Obj:
        return self.patch(DEPLOYMENTS, namespace, name, patch, content_type)

    def annotate_deployment(
        self, namespace: str, name: str, key: str, value: str | None, resource_version: str
    ) -> bool:
        patch = {"metadata": {"annotations": {key: value}, "resourceVersion": resource_version}}
        try:
            self.patch_deployment(namespace, name, patch, MERGE)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def delete_deployment_now(self, namespace: str, name: str, pod_selector: str) -> None:
        try:
            self.delete(DEPLOYMENTS, namespace, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        self.delete_collection(PODS, namespace, pod_selector)

    # --- KubeApi: Jobs ----------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> Obj | None:
        obj = self.peek(JOBS, namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> None:
        try:
            self.create(JOBS, namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.delete(JOBS, namespace, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- KubeApi: Events --------------------------------------------------------------------
    def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.create(EVENTS, namespace, body)

    def events(self, namespace: str | None = None) -> list[Obj]:
        """Events in the order they were posted (they are never updated here)."""
        return sorted(
            self.list_objects(EVENTS, namespace),
            key=lambda e: int(e["metadata"]["resourceVersion"]),
        )


def _is_a_kube_api(fake: FakeKube) -> KubeApi:
    """Checked by mypy (``make lint`` covers tests/support): every ``KubeApi`` method, same
    signature."""
    return fake


__all__ = [
    "CONFIGMAPS",
    "DEPLOYMENTS",
    "EVENTS",
    "JOBS",
    "JSON_PATCH",
    "MERGE",
    "PODS",
    "STRATEGIC",
    "FakeKube",
    "api_error",
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
]
