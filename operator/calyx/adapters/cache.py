"""Watch-fed caches: a pass reads memory, not the API server (docs/architecture.md, "Caches").

A Rollout pass reads its Rollout, Lease, target and canary Deployments, snapshot and the ledger.
Read with a GET each, that is about six requests per pass whatever changed: at a few hundred
Rollouts most of the operator's CPU and the API server's load (docs/performance.md).
:class:`CachedKube` lists each of those kinds once and then follows a watch, so a pass reads a
copy from memory. It is a :class:`~calyx.adapters.kube.Kube` (same methods, same results), so
it stands in wherever one is expected; the CLI keeps the plain ``Kube``.

What a stale read could break is a decision made on a world older than the operator's own last
write (announcing twice, patching twice). The rules that prevent it, each unit-tested
(tests/unit/adapters/test_cache.py):

* **read-your-writes**: every write made through this class stores the server's answer;
* **never back in time**: an object is replaced only by one with an equal or newer
  ``resourceVersion`` (compared as integers when both parse; otherwise the newcomer wins), and
  an object this process deleted stays gone until a DELETED event or a new uid;
* **unknown outcome → GET**: a write that failed in any way (timeout, reset, conflict, 404)
  leaves that object's next read to a direct GET, whose answer is stored;
* **not covered → GET**: before the first list of a kind has arrived, for an object a
  label-selected watch may not see, and for a Deployment kept only as a stub.

Cached objects have exactly the shape a GET returns, less ``metadata.managedFields``, which
nothing in Calyx reads and which is a third to a half of every object's bytes.

Scope of the watches (cheap and still complete where the answer "absent" is served):

* Rollouts and Leases: every namespace (Kopf watches them anyway).
* Deployments: every namespace, because a target carries no label a server-side selector could
  use (its claim is an annotation, added only once the Rollout starts). Full copies are kept
  for Deployments in namespaces that hold a Rollout, for canaries (``calyx.io/track=canary``)
  and for claimed targets; every other Deployment is a stub (namespace, name, uid,
  resourceVersion), so "absent" stays an authoritative answer without holding the cluster's
  Deployments in memory. Reading a stub is a GET.
* ConfigMaps: label ``calyx.io/managed-by=calyx`` minus the reports
  (``app.kubernetes.io/component!=report``: up to 1 MiB each, read only when announcing).
  That is every snapshot and the ledger. A ConfigMap the watch does not hold is read with a
  GET (a label can be removed), so a miss is never served as "absent". The trust store has no
  such label and keeps its own field-selected watch (:mod:`calyx.adapters.cm_watch`).

Watch events arrive a few milliseconds after a change; whoever reacts to an event (Kopf's
handlers) hands its body to :meth:`CachedKube.observe` first, so the pass it triggers reads at
least that version. :meth:`CachedKube.change_token` moves whenever anything cached in a
namespace changes: the reconciler uses it to skip passes that would see nothing new.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import marshal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes import client

from calyx.adapters.failure_log import FailureLog
from calyx.adapters.kube import GROUP, LEASES, ROLLOUTS, VERSION, Fence, Kube, Obj

log = logging.getLogger("calyx.cache")

Key = tuple[str, str]
Keep = Literal["full", "stub", "no"]
Lookup = Literal["hit", "absent", "unknown"]

CANARY_SELECTOR = ("calyx.io/track", "canary")
CLAIM_ANNOTATION = "calyx.io/claimed-by"
MANAGED_SELECTOR = "calyx.io/managed-by=calyx,app.kubernetes.io/component!=report"
#: Server-side end of one watch request; the client re-watches from the last resourceVersion.
WATCH_SECONDS = 60
#: Client-side read timeout: a connection silent for this long (a network partition) is
#: abandoned and the kind relisted, which bounds how stale a silently broken watch can be.
READ_TIMEOUT_SECONDS = WATCH_SECONDS + 30
#: How long a tombstone (an object this process deleted) outlives a missing DELETED event.
TOMBSTONE_SECONDS = 300.0


# --- copies and shapes ----------------------------------------------------------------------


def copy_obj(obj: Any) -> Any:
    """A deep copy of JSON-like data (dicts, lists, scalars): what every read hands out, so a
    caller mutating its copy (the ledger store does) can never change the cache. Through
    ``marshal`` (C, about ten times faster than ``copy.deepcopy`` on a Rollout); other types
    (a Kopf body's mapping views) are copied by hand."""
    try:
        return marshal.loads(marshal.dumps(obj))
    except ValueError:
        return _copy_by_hand(obj)


def _copy_by_hand(obj: Any) -> Any:
    t = type(obj)
    if t is dict or isinstance(obj, Mapping):
        return {k: _copy_by_hand(v) for k, v in obj.items()}
    if t is list or t is tuple:
        return [_copy_by_hand(v) for v in obj]
    return obj


def _drop_none(obj: Any) -> Any:
    t = type(obj)
    if t is dict:
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if t is list:
        return [_drop_none(v) for v in obj]
    return obj


def _iso(value: Any) -> Any:
    """A Kubernetes timestamp (``...Z``) as the client's models print it (``...+00:00``)."""
    if not isinstance(value, str):
        return value
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()
    except ValueError:
        return value


def _object_meta(meta: Any) -> None:
    if not isinstance(meta, dict):
        return
    for key in ("creationTimestamp", "deletionTimestamp"):
        if key in meta:
            meta[key] = _iso(meta[key])
    for entry in meta.get("managedFields") or []:
        if isinstance(entry, dict) and "time" in entry:
            entry["time"] = _iso(entry["time"])


def plain_configmap(raw: Mapping[str, Any]) -> Obj:
    """A ConfigMap from a watch, in exactly the shape ``Kube.get_configmap`` returns (the
    client's models drop nulls and print timestamps with ``+00:00``): the snapshot's bytes and
    every comparison stay the same whichever path read it. Checked against the models in
    tests/unit/adapters/test_cache.py; about a hundred times cheaper than building the model."""
    obj: Obj = _drop_none(raw)
    _object_meta(obj.get("metadata"))
    return obj


def plain_deployment(raw: Mapping[str, Any]) -> Obj:
    """A Deployment from a watch, in exactly the shape ``Kube.get_deployment`` returns."""
    obj: Obj = _drop_none(raw)
    _object_meta(obj.get("metadata"))
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict):
        _object_meta(template.get("metadata"))
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict):
            for key in ("lastUpdateTime", "lastTransitionTime"):
                if key in cond:
                    cond[key] = _iso(cond[key])
    return obj


def _strip(obj: Obj) -> None:
    """Drop ``metadata.managedFields`` from a stored object: no reader uses it, and it is a
    third to a half of a Rollout's or Lease's bytes, copied on every read."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        meta = dict(meta)
        del meta["managedFields"]
        obj["metadata"] = meta


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _key(obj: Mapping[str, Any]) -> Key:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def older(candidate: str, stored: str) -> bool:
    """Whether ``candidate`` is an older resourceVersion than ``stored``.

    resourceVersions are opaque by contract but etcd revisions in practice: compared as
    integers when both parse; when they do not, nothing is called older (the newcomer wins)."""
    try:
        return int(candidate) < int(stored)
    except (TypeError, ValueError):
        return False


# --- one kind ---------------------------------------------------------------------------------


@dataclass
class _Entry:
    rv: str
    uid: str
    obj: Obj | None  # None: a stub (the object exists; its content is not kept), or packed
    blob: bytes | None = None  # a packed store's object, marshalled

    @property
    def full(self) -> bool:
        return self.obj is not None or self.blob is not None

    def copy(self) -> Obj:
        """A private copy of the stored object (the caller may change or keep it)."""
        copied: Obj = marshal.loads(self.blob) if self.blob is not None else copy_obj(self.obj)
        return copied


class ObjectStore:
    """The objects of one kind by (namespace, name), fed by a watch and by our own writes.

    ``authoritative``: the watch sees every object of the kind, so once synced a missing key
    means "does not exist". ``keep`` decides, per object, whether to hold it in full, as a
    stub, or not at all (label-selected stores hold only what matches). ``on_change`` is told
    the namespace of every change that a reader could see. ``packed``: hold each object as
    one ``marshal`` blob instead of a tree of dicts and strings (docs/architecture.md, "Caches"):
    about an eighth of the bytes, outside the interpreter's small-object arenas, and a read is
    one ``marshal.loads``; for kinds nothing reads without copying (no :meth:`values` with
    ``shared``).
    """

    def __init__(
        self,
        kind: str,
        *,
        authoritative: bool,
        keep: Callable[[Mapping[str, Any]], Keep] | None = None,
        on_change: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        packed: bool = False,
    ) -> None:
        self.kind = kind
        self.packed = packed
        self.authoritative = authoritative
        self.keep = keep or (lambda _obj: "full")
        self.on_change = on_change or (lambda _ns: None)
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._items: dict[Key, _Entry] = {}
        self._tombs: dict[Key, tuple[str, float]] = {}
        self._dirty: set[Key] = set()
        self._namespaces: Counter[str] = Counter()
        self._synced = threading.Event()

    # -- reads -------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def _held(self, namespace: str, name: str) -> tuple[Lookup, _Entry | None]:
        key = (namespace, name)
        with self._lock:
            if not self._synced.is_set() or key in self._dirty:
                return "unknown", None
            entry = self._items.get(key)
            if entry is None:
                return ("absent" if self.authoritative else "unknown"), None
            if not entry.full:
                return "unknown", None
            return "hit", entry

    def lookup(self, namespace: str, name: str) -> tuple[Lookup, Obj | None]:
        """``("hit", obj)`` (a private copy of the stored object), ``("absent", None)`` when
        the store may say so, else ``("unknown", None)``: read it from the API."""
        state, entry = self._held(namespace, name)
        # Stored objects are replaced, never changed: copying outside the lock is safe.
        return state, (entry.copy() if entry is not None else None)

    def values(self, namespace: str | None = None, shared: bool = False) -> list[Obj] | None:
        """Every stored object (of ``namespace``), sorted like the API server lists them, as
        copies or, with ``shared``, the stored objects themselves (not for a packed store);
        None when the store cannot answer a list (not synced, not authoritative, holds
        stubs)."""
        with self._lock:
            if not (self._synced.is_set() and self.authoritative):
                return None
            held = []
            for key in sorted(self._items):
                if namespace is not None and key[0] != namespace:
                    continue
                entry = self._items[key]
                if not entry.full or key in self._dirty:
                    return None
                held.append(entry)
        if shared and not self.packed:
            return [e.obj for e in held if e.obj is not None]
        return [e.copy() for e in held]

    def version(self, namespace: str, name: str) -> str | None:
        """The ``resourceVersion`` a read of this object would be served from memory at; None
        when a read would not be served from memory."""
        _, entry = self._held(namespace, name)
        return entry.rv if entry is not None else None

    def has_namespace(self, namespace: str) -> bool:
        with self._lock:
            return self._namespaces[namespace] > 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # -- writes into the store ----------------------------------------------------------------

    def put(
        self,
        obj: Mapping[str, Any],
        *,
        fresh: bool,
        copy: bool = True,
        keep: Keep | None = None,
    ) -> bool:
        """Store ``obj`` unless the store already holds a newer version; True if it changed.

        ``fresh``: the answer to a request of ours (a write or a GET), which settles an unknown
        outcome for that key; a watch event (or a body handed over by Kopf) does not. ``keep``:
        what the watch decided when it shaped ``obj`` (a stub's metadata must stay a stub)."""
        meta = _meta(obj)
        key = _key(obj)
        rv = str(meta.get("resourceVersion") or "")
        uid = str(meta.get("uid") or "")
        if keep is None:
            keep = self.keep(obj)
            if fresh and keep == "stub":  # just read or written by a pass: worth keeping
                keep = "full"
        with self._lock:
            if fresh:
                self._dirty.discard(key)
            tomb = self._tombs.get(key)
            if tomb is not None:
                if tomb[0] == uid and not meta.get("deletionTimestamp"):
                    return False  # an older event of an object this process deleted
                del self._tombs[key]
            current = self._items.get(key)
            if current is not None and older(rv, current.rv):
                return False
            if keep == "no":
                if current is not None:
                    self._remove(key)
                    return True
                return False
            if (
                current is not None
                and rv == current.rv
                and current.uid == uid
                and (current.full or keep == "stub")
            ):
                return False  # the same version (our write's echo): nothing new
            entry = _Entry(rv, uid, None)
            if keep == "full" and self.packed:
                stored = dict(obj)
                _strip(stored)
                entry.blob = marshal.dumps(stored)  # itself a deep copy
            elif keep == "full":
                entry.obj = copy_obj(obj) if copy else dict(obj)
                _strip(entry.obj)
            if current is None:
                self._namespaces[key[0]] += 1
            self._items[key] = entry
        self.on_change(key[0])
        return True

    def _remove(self, key: Key) -> None:
        if self._items.pop(key, None) is not None:
            self._namespaces[key[0]] -= 1
            if self._namespaces[key[0]] <= 0:
                del self._namespaces[key[0]]

    def delete_event(self, obj: Mapping[str, Any]) -> bool:
        """A DELETED watch event: remove the object unless a newer one (a re-creation, or a
        write-through the event predates) already replaced it."""
        meta = _meta(obj)
        key = _key(obj)
        rv = str(meta.get("resourceVersion") or "")
        uid = str(meta.get("uid") or "")
        with self._lock:
            tomb = self._tombs.get(key)
            if tomb is not None and tomb[0] == uid:
                del self._tombs[key]
            current = self._items.get(key)
            if current is None:
                return False
            if current.uid != uid and older(rv, current.rv):
                return False
            self._remove(key)
        self.on_change(key[0])
        return True

    def deleted(self, namespace: str, name: str) -> None:
        """This process deleted the object (the API said so, or said it was already gone):
        forget it, and ignore older events of the same uid still in flight."""
        key = (namespace, name)
        with self._lock:
            self._dirty.discard(key)
            current = self._items.get(key)
            if current is not None:
                if current.uid:
                    self._tombs[key] = (current.uid, self.monotonic())
                self._remove(key)
            self._expire_tombs()
        if current is not None:
            self.on_change(namespace)

    def absent(self, namespace: str, name: str) -> None:
        """A GET answered 404: nothing by that name exists right now."""
        key = (namespace, name)
        with self._lock:
            self._dirty.discard(key)
            had = key in self._items
            self._remove(key)
        if had:
            self.on_change(namespace)

    def invalidate(self, namespace: str, name: str) -> None:
        """A write of ours failed (its outcome may be unknown): read this one from the API
        next time, and keep what that read returns."""
        with self._lock:
            self._dirty.add((namespace, name))
        self.on_change(namespace)

    def replace_all(self, items: list[tuple[Keep, Mapping[str, Any]]], list_rv: str) -> None:
        """A fresh list of ``(keep, object)``: store every item (by the same rules as events)
        and drop what the list no longer holds, except objects newer than the list (a
        write-through that overtook it)."""
        seen: set[Key] = set()
        for keep, obj in items:
            seen.add(_key(obj))
            self.put(obj, fresh=False, copy=False, keep=keep)
        gone: list[Key] = []
        with self._lock:
            for key, entry in list(self._items.items()):
                if key not in seen and not older(list_rv, entry.rv):
                    self._remove(key)
                    gone.append(key)
            for key in [k for k in self._tombs if k not in seen]:
                del self._tombs[key]
            self._synced.set()
        for key in gone:
            self.on_change(key[0])

    def unsync(self) -> None:
        """Distrust the content until the next full list (reads go to the API meanwhile)."""
        self._synced.clear()

    def _expire_tombs(self) -> None:
        cutoff = self.monotonic() - TOMBSTONE_SECONDS
        for key in [k for k, (_, at) in self._tombs.items() if at < cutoff]:
            del self._tombs[key]


# --- the watch that feeds one store -----------------------------------------------------------


class Watcher:
    """List, then watch from the list's resourceVersion; relist on 410 Gone or any error.

    Plain JSON (no client models): building a model costs ~5 ms per Deployment, the whole
    budget of a pass. ``convert`` turns a kept object into the shape ``Kube`` returns.
    """

    def __init__(
        self,
        store: ObjectStore,
        list_fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        *,
        label_selector: str | None = None,
        convert: Callable[[Mapping[str, Any]], Obj] | None = None,
        after: ObjectStore | None = None,
        backoff_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.list_fn = list_fn
        self.args = args
        self.label_selector = label_selector
        self.convert = convert or (lambda raw: dict(raw))
        self.after = after  # start listing once that store synced (Deployments wait for Rollouts)
        self.backoff = backoff_seconds
        self.failures = FailureLog(log)
        self._stop = threading.Event()
        self._restart = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=f"cache-{store.kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._close()

    def relist(self) -> None:
        """Drop the current watch and list again (the store reads from the API meanwhile)."""
        self.store.unsync()
        self._restart.set()
        self._close()

    def _close(self) -> None:
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):  # a dead connection: nothing to report
                resp.shutdown()

    def _kw(self) -> dict[str, Any]:
        return {"label_selector": self.label_selector} if self.label_selector else {}

    def _run(self) -> None:
        if self.after is not None:
            self.after.wait_synced(30)
        what = f"watch of {self.store.kind}"
        while not self._stop.is_set():
            try:
                self._restart.clear()
                rv: str | None = self._list()
                self.failures.ok(self.store.kind, what)
                while rv is not None and not self._stop.is_set() and not self._restart.is_set():
                    rv = self._watch(rv)
                # 410 Gone or an error event: events may be missing until the list is in.
                self.store.unsync()
            except Exception as exc:
                # Events may have been missed (a cut connection): reads are GETs until the list.
                self.store.unsync()
                if self._stop.is_set():
                    return
                if not self._restart.is_set():
                    self.failures.failed(self.store.kind, what, exc)
                    self._stop.wait(self.backoff)

    def _list(self) -> str:
        resp = self.list_fn(
            *self.args,
            _preload_content=False,
            _request_timeout=(10, READ_TIMEOUT_SECONDS),
            **self._kw(),
        )
        try:
            listing = json.loads(resp.data)
        finally:
            resp.release_conn()
        if not isinstance(listing, dict) or "items" not in listing:
            raise RuntimeError(f"list of {self.store.kind}: unexpected answer")
        rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        items = listing.get("items") or []
        kind = str(listing.get("kind") or "").removesuffix("List")
        for raw in items:  # list items of built-in kinds omit these; a GET's answer has them
            raw.setdefault("apiVersion", listing.get("apiVersion"))
            raw.setdefault("kind", kind)
        shaped = [self._shape(raw) for raw in items]
        self.store.replace_all([(k, o) for k, o in shaped if o is not None], rv)
        return rv

    def _shape(self, raw: Mapping[str, Any]) -> tuple[Keep, Obj | None]:
        keep = self.store.keep(raw)
        if keep == "full":
            return keep, self.convert(raw)
        if keep == "stub":  # only the metadata a stub needs
            meta = _meta(raw)
            names = ("namespace", "name", "uid", "resourceVersion")
            return keep, {"metadata": {k: meta.get(k) for k in names}}
        return keep, None

    def _watch(self, rv: str) -> str | None:
        """Follow the watch from ``rv``; the resourceVersion to continue from, None to relist."""
        resp = self.list_fn(
            *self.args,
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
            _request_timeout=(10, READ_TIMEOUT_SECONDS),
            **self._kw(),
        )
        self._resp = resp
        try:
            if getattr(resp, "status", 200) != 200:
                return None
            for line in _lines(resp):
                if self._stop.is_set() or self._restart.is_set():
                    return None
                ev = json.loads(line)
                kind = ev.get("type")
                raw = ev.get("object") or {}
                if kind == "ERROR":  # 410 Gone (too old) or another error: list again
                    return None
                rv = str(_meta(raw).get("resourceVersion") or rv)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.store.delete_event(raw)
                    continue
                keep, shaped = self._shape(raw)
                if shaped is None:  # left what this store keeps: as good as deleted
                    self.store.delete_event(raw)
                else:
                    self.store.put(shaped, fresh=False, copy=False, keep=keep)
        finally:
            self._resp = None
            with contextlib.suppress(Exception):  # a dead connection: nothing to report
                resp.release_conn()
        return rv


def _lines(resp: Any) -> Iterator[bytes]:
    buf = b""
    for chunk in resp.stream(65536, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line


# --- the Kube stand-in ------------------------------------------------------------------------


class CachedKube(Kube):
    """``Kube`` whose reads of Rollouts, Leases, Deployments and managed ConfigMaps come from
    watch-fed stores (module docstring), and whose writes keep those stores current.

    Construct it like ``Kube``; :meth:`start` begins the watches (reads before each kind's
    first list are direct GETs), :meth:`stop` ends them. ``create_custom`` (the CLI's; the
    operator never creates Rollouts or Leases) is Kube's own: its object appears with the
    watch event.
    """

    def __init__(
        self,
        api: client.ApiClient,
        fence: Fence | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(api, fence, monotonic)
        self._changes_lock = threading.Lock()
        self._epoch = 0
        self._changed: Counter[str] = Counter()
        self._unsynced = 0  # counts down: a token no synced state can have
        self.rollouts = ObjectStore("rollouts", authoritative=True, on_change=self._bump)
        self.leases = ObjectStore("leases", authoritative=True, on_change=self._bump)
        # Packed: only ever read one at a time, by a pass that copies what it reads anyway.
        self.deployments = ObjectStore(
            "deployments",
            authoritative=True,
            keep=self._keep_deployment,
            on_change=self._bump,
            packed=True,
        )
        self.configmaps = ObjectStore(
            "configmaps", authoritative=False, keep=_keep_managed, on_change=self._bump, packed=True
        )
        # Watches hold their connections for minutes: a client of their own, so the requests
        # of the passes never wait for a free connection behind them.
        stream = client.ApiClient(api.configuration)
        stream.user_agent = api.user_agent
        w = Kube(stream)
        self._watchers = [
            Watcher(self.rollouts, w.custom.list_cluster_custom_object, (GROUP, VERSION, ROLLOUTS)),
            Watcher(self.leases, w.custom.list_cluster_custom_object, (GROUP, VERSION, LEASES)),
            Watcher(
                self.deployments,
                w.apps.list_deployment_for_all_namespaces,
                convert=plain_deployment,
                after=self.rollouts,
            ),
            Watcher(
                self.configmaps,
                w.core.list_config_map_for_all_namespaces,
                label_selector=MANAGED_SELECTOR,
                convert=plain_configmap,
            ),
        ]

    # -- lifecycle and bookkeeping -------------------------------------------------------------

    def start(self) -> None:
        for watcher in self._watchers:
            watcher.start()

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()

    @property
    def synced(self) -> bool:
        return all(w.store.synced for w in self._watchers)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(
            w.store.wait_synced(max(0.0, deadline - time.monotonic())) for w in self._watchers
        )

    def resync(self) -> None:
        """List every kind again; reads are direct GETs until each list is in. Called when this
        replica becomes the leader: a standby's watch may have been silently cut."""
        with self._changes_lock:
            self._epoch += 1
        for watcher in self._watchers:
            watcher.relist()

    def _bump(self, namespace: str) -> None:
        with self._changes_lock:
            self._changed[namespace] += 1

    def change_token(self, namespace: str) -> tuple[int, int]:
        """Moves whenever anything cached in ``namespace`` changes (or everything is relisted):
        equal tokens mean a reader of that namespace would see exactly what it saw before.
        While any kind is not synced (reads are GETs, events may be missing) every call
        returns a new token, so nothing is skipped on the strength of it."""
        with self._changes_lock:
            if not self.synced:
                self._unsynced -= 1
                return self._epoch, self._unsynced
            return self._epoch, self._changed[namespace]

    def token_after_own_write(
        self, before: tuple[int, int], plural: str, written: Mapping[str, Any]
    ) -> tuple[int, int] | None:
        """The change token of ``written``'s namespace now, if the one change since ``before``
        is this process's own write whose answer was ``written`` (the store serves exactly
        that version); else None. A pass that wrote only its Rollout's status marks itself
        quiet at this token, so the pass its write's echo triggers is skipped
        (docs/architecture.md, "Passes skipped when nothing is due")."""
        meta = _meta(written)
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        store = self._custom_store(plural)
        with self._changes_lock:
            token = self._epoch, self._changed[namespace]
            synced = self.synced
        if not synced or store is None or token != (before[0], before[1] + 1):
            return None
        # After the token: a change to this object landing in between shows as another version.
        if store.version(namespace, name) != meta.get("resourceVersion"):
            return None
        return token

    def observe(self, plural: str, body: Mapping[str, Any]) -> None:
        """A Rollout or Lease body from another watch (Kopf's): store it if it is newer, so the
        pass its event triggers reads at least this version."""
        store = self._custom_store(plural)
        if store is not None and _meta(body).get("resourceVersion"):
            store.put(body, fresh=False)

    def _keep_deployment(self, obj: Mapping[str, Any]) -> Keep:
        meta = _meta(obj)
        labels = meta.get("labels") or {}
        if (
            labels.get(CANARY_SELECTOR[0]) == CANARY_SELECTOR[1]
            or CLAIM_ANNOTATION in (meta.get("annotations") or {})
            or self.rollouts.has_namespace(str(meta.get("namespace") or ""))
        ):
            return "full"
        return "stub"

    def _custom_store(self, plural: str) -> ObjectStore | None:
        return {ROLLOUTS: self.rollouts, LEASES: self.leases}.get(plural)

    def _read(
        self, store: ObjectStore, namespace: str, name: str, get: Callable[[], Obj | None]
    ) -> Obj | None:
        state, obj = store.lookup(namespace, name)
        if state == "hit":
            return obj
        if state == "absent":
            return None
        got = get()
        if got is None:
            store.absent(namespace, name)
        else:
            store.put(got, fresh=True)
        return got

    def _wrote(self, store: ObjectStore, obj: Mapping[str, Any] | None) -> None:
        if obj is not None:
            store.put(obj, fresh=True)

    # -- Calyx custom resources --------------------------------------------------------------

    def get_custom(self, plural: str, namespace: str, name: str) -> Obj | None:
        store = self._custom_store(plural)
        if store is None:
            return super().get_custom(plural, namespace, name)
        return self._read(
            store,
            namespace,
            name,
            lambda: super(CachedKube, self).get_custom(plural, namespace, name),
        )

    def list_custom(self, plural: str, namespace: str | None = None) -> list[Obj]:
        store = self._custom_store(plural)
        held = store.values(namespace) if store is not None else None
        if held is not None:
            return held
        items = super().list_custom(plural, namespace)
        if store is not None:
            for obj in items:
                store.put(obj, fresh=False)
        return items

    def patch_custom(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> Obj:
        store = self._custom_store(plural)
        try:
            obj = super().patch_custom(plural, namespace, name, patch)
        except Exception:
            if store is not None:
                store.invalidate(namespace, name)
            raise
        if store is not None:
            self._wrote(store, obj)
        return obj

    def patch_custom_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Obj:
        store = self._custom_store(plural)
        try:
            obj = super().patch_custom_status(plural, namespace, name, status)
        except Exception:
            if store is not None:
                store.invalidate(namespace, name)
            raise
        if store is not None:
            self._wrote(store, obj)
        return obj

    # -- ConfigMaps --------------------------------------------------------------------------

    def get_configmap(self, namespace: str, name: str) -> Obj | None:
        return self._read(
            self.configmaps,
            namespace,
            name,
            lambda: super(CachedKube, self).get_configmap(namespace, name),
        )

    def create_configmap(self, namespace: str, body: Mapping[str, Any]) -> Obj:
        name = str(_meta(body).get("name") or "")
        try:
            obj = super().create_configmap(namespace, body)
        except Exception:
            self.configmaps.invalidate(namespace, name)
            raise
        self._wrote(self.configmaps, obj)
        return obj

    def replace_configmap(self, namespace: str, name: str, body: Mapping[str, Any]) -> Obj:
        try:
            obj = super().replace_configmap(namespace, name, body)
        except Exception:
            self.configmaps.invalidate(namespace, name)
            raise
        self._wrote(self.configmaps, obj)
        return obj

    def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            super().delete_configmap(namespace, name)
        except Exception:
            self.configmaps.invalidate(namespace, name)
            raise
        self.configmaps.deleted(namespace, name)

    def list_custom_shared(self, plural: str) -> list[Obj] | None:
        """Every cached Rollout or Lease *without copying* (None when the cache cannot answer):
        for a sweep that only reads them, and would otherwise copy 1,000 objects per tick.
        The caller must not change what it gets, nor keep it."""
        store = self._custom_store(plural)
        return store.values(shared=True) if store is not None else None

    def configmap_version(self, namespace: str, name: str) -> str | None:
        """The ``resourceVersion`` a read of this ConfigMap would return from memory (None: a
        read would be a GET): lets a reader that parsed that version skip the copy."""
        return self.configmaps.version(namespace, name)

    def create_configmap_if_absent(self, namespace: str, body: Mapping[str, Any]) -> None:
        # Kube drops the answer (and absorbs AlreadyExists): the next read of it is a GET.
        try:
            super().create_configmap_if_absent(namespace, body)
        finally:
            self.configmaps.invalidate(namespace, str(_meta(body).get("name") or ""))

    # -- Deployments -------------------------------------------------------------------------

    def get_deployment(self, namespace: str, name: str) -> Obj | None:
        return self._read(
            self.deployments,
            namespace,
            name,
            lambda: super(CachedKube, self).get_deployment(namespace, name),
        )

    def create_deployment(self, namespace: str, body: Mapping[str, Any]) -> Obj | None:
        name = str(_meta(body).get("name") or "")
        try:
            obj = super().create_deployment(namespace, body)
        except Exception:
            self.deployments.invalidate(namespace, name)
            raise
        if obj is None:  # it existed already: whatever it is, read it next time
            self.deployments.invalidate(namespace, name)
        else:
            self._wrote(self.deployments, obj)
        return obj

    def patch_deployment(self, namespace: str, name: str, patch: Any, content_type: str) -> Obj:
        try:
            obj = super().patch_deployment(namespace, name, patch, content_type)
        except Exception:
            self.deployments.invalidate(namespace, name)
            raise
        self._wrote(self.deployments, obj)
        return obj

    def delete_deployment_now(self, namespace: str, name: str, pod_selector: str) -> None:
        try:
            super().delete_deployment_now(namespace, name, pod_selector)
        except Exception:
            self.deployments.invalidate(namespace, name)
            raise
        self.deployments.deleted(namespace, name)


def _keep_managed(obj: Mapping[str, Any]) -> Keep:
    """What the ConfigMap watch selects, checked again for objects read or written directly: an
    object the watch would not see must not be stored (it would never be updated)."""
    meta = _meta(obj)
    labels = meta.get("labels") or {}
    if labels.get("calyx.io/managed-by") != "calyx":
        return "no"
    if labels.get("app.kubernetes.io/component") == "report":
        return "no"
    return "full"


__all__ = [
    "CachedKube",
    "ObjectStore",
    "Watcher",
    "copy_obj",
    "plain_configmap",
    "plain_deployment",
]
