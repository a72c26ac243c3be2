"""The watch-fed cache's rules (calyx/adapters/cache.py, docs/architecture.md "Caches").

What must never happen is a pass deciding on a world older than the operator's own last write:
these tests pin resourceVersion ordering, write-through, "unknown outcome → GET", deletes,
relists, the scope of each store, and that cached objects have the exact shape a GET returns.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from calyx.adapters.cache import (
    CachedKube,
    ObjectStore,
    Watcher,
    copy_obj,
    older,
    plain_configmap,
    plain_deployment,
)
from calyx.adapters.kube import ROLLOUTS, Kube

API = client.ApiClient()


def obj(name: str, rv: str, uid: str = "u1", ns: str = "ns", **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": ns, "resourceVersion": rv, "uid": uid}
    return {"metadata": {**meta, **extra.pop("meta", {})}, **extra}


def synced(store: ObjectStore, *items: dict[str, Any], rv: str = "1") -> ObjectStore:
    store.replace_all([("full", i) for i in items], rv)
    return store


# --- resourceVersion ordering ------------------------------------------------------------------


def test_older_compares_integers_and_lets_the_newcomer_win_otherwise() -> None:
    assert older("9", "10")  # as integers, not strings
    assert not older("10", "9")
    assert not older("10", "10")
    assert not older("abc", "10") and not older("10", "abc")  # opaque: the newcomer wins


def test_a_store_never_goes_back_to_an_older_version() -> None:
    store = synced(ObjectStore("rollouts", authoritative=True), obj("r", "5", spec={"v": 5}))
    assert store.put(obj("r", "7", spec={"v": 7}), fresh=False)
    assert not store.put(obj("r", "6", spec={"v": 6}), fresh=False)  # a late event
    assert store.lookup("ns", "r")[1]["spec"] == {"v": 7}  # type: ignore[index]
    assert store.put(obj("r", "x", spec={"v": "x"}), fresh=False)  # unparseable: accepted
    assert store.lookup("ns", "r")[1]["spec"] == {"v": "x"}  # type: ignore[index]


def test_reads_are_copies() -> None:
    kube = CachedKube(client.ApiClient())
    synced(kube.rollouts, obj("r", "5", spec={"items": [1]}))
    got = kube.get_custom(ROLLOUTS, "ns", "r")
    assert got is not None
    got["spec"]["items"].append(2)
    again = kube.get_custom(ROLLOUTS, "ns", "r")
    assert again is not None and again["spec"]["items"] == [1]


def test_copy_obj_is_deep_for_json_data() -> None:
    data = {"a": [{"b": 1}], "c": "d"}
    out = copy_obj(data)
    assert out == data and out["a"][0] is not data["a"][0]


# --- CachedKube: read-your-writes, unknown outcomes ----------------------------------------


def cached() -> CachedKube:
    """A CachedKube whose namespace "ns" holds a Rollout (so its Deployments are kept in full)."""
    kube = CachedKube(client.ApiClient())
    synced(kube.rollouts, obj("r0", "1"))
    return kube


def test_write_through_is_what_the_next_read_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = CachedKube(client.ApiClient())
    synced(kube.rollouts, obj("r", "5", status={"phase": "Progressing"}))
    written = obj("r", "8", status={"phase": "RollingBack"})
    monkeypatch.setattr(Kube, "patch_custom_status", lambda *a, **k: copy.deepcopy(written))
    kube.patch_custom_status(ROLLOUTS, "ns", "r", {"phase": "RollingBack"})
    assert kube.get_custom(ROLLOUTS, "ns", "r")["status"]["phase"] == "RollingBack"  # type: ignore[index]
    # the watch delivers the version before our write after it: ignored
    kube.rollouts.put(obj("r", "7", status={"phase": "Progressing"}), fresh=False)
    assert kube.get_custom(ROLLOUTS, "ns", "r")["status"]["phase"] == "RollingBack"  # type: ignore[index]


def test_a_failed_write_makes_the_next_read_a_get(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reset connection may hide a write the server applied: read it, do not guess."""
    kube = cached()
    synced(kube.deployments, obj("d", "5", spec={"replicas": 1}))

    def boom(*_a: Any, **_k: Any) -> Any:
        raise ConnectionResetError("reset")

    gets: list[str] = []

    def get(_self: Any, ns: str, name: str) -> dict[str, Any]:
        gets.append(name)
        return obj(name, "9", spec={"replicas": 3})

    monkeypatch.setattr(Kube, "patch_deployment", boom)
    monkeypatch.setattr(Kube, "get_deployment", get)
    with pytest.raises(ConnectionResetError):
        kube.patch_deployment("ns", "d", {"spec": {"replicas": 3}}, "application/merge-patch+json")
    assert kube.get_deployment("ns", "d")["spec"]["replicas"] == 3  # type: ignore[index]
    assert kube.get_deployment("ns", "d")["spec"]["replicas"] == 3  # type: ignore[index]
    assert gets == ["d"]  # one GET settles it; later reads are from memory again


def test_a_conflict_on_a_claim_makes_the_next_read_a_get(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cached()
    synced(kube.deployments, obj("d", "5"))

    def conflict(*_a: Any, **_k: Any) -> Any:
        raise ApiException(status=409)

    monkeypatch.setattr(Kube, "patch_deployment", conflict)
    assert not kube.annotate_deployment("ns", "d", "calyx.io/claimed-by", "r/u", "5")
    assert kube.deployments.lookup("ns", "d")[0] == "unknown"


def test_create_if_absent_reads_the_object_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kube drops the create's answer (and absorbs AlreadyExists): the next read is a GET."""
    kube = cached()
    synced(kube.configmaps)
    monkeypatch.setattr(Kube, "create_configmap_if_absent", lambda *a, **k: None)
    snap = obj("r-snapshot", "3", meta={"labels": {"calyx.io/managed-by": "calyx"}})
    monkeypatch.setattr(Kube, "get_configmap", lambda *a, **k: copy.deepcopy(snap))
    kube.create_configmap_if_absent("ns", snap)
    assert kube.configmaps.lookup("ns", "r-snapshot")[0] == "unknown"
    assert kube.get_configmap("ns", "r-snapshot") == snap
    assert kube.configmaps.lookup("ns", "r-snapshot")[0] == "hit"


def test_our_delete_hides_older_events_until_the_deleted_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = cached()
    synced(kube.deployments, obj("c", "5", uid="old"))
    monkeypatch.setattr(Kube, "delete_deployment_now", lambda *a, **k: None)
    kube.delete_deployment_now("ns", "c", "calyx.io/track=canary")
    assert kube.get_deployment("ns", "c") is None
    kube.deployments.put(obj("c", "6", uid="old"), fresh=False)  # status update before the delete
    assert kube.get_deployment("ns", "c") is None
    kube.deployments.delete_event(obj("c", "7", uid="old"))
    kube.deployments.put(obj("c", "9", uid="new"), fresh=False)  # re-created: a new uid
    assert kube.get_deployment("ns", "c")["metadata"]["uid"] == "new"  # type: ignore[index]


def test_a_deleted_event_does_not_remove_a_newer_object() -> None:
    store = synced(ObjectStore("deployments", authoritative=True), obj("c", "9", uid="new"))
    assert not store.delete_event(obj("c", "7", uid="old"))
    assert store.lookup("ns", "c")[0] == "hit"


def test_a_terminating_object_shows_even_after_our_delete() -> None:
    """A finalizer keeps it: the API has it (with deletionTimestamp), so the cache shows it."""
    store = synced(ObjectStore("deployments", authoritative=True), obj("c", "5", uid="u"))
    store.deleted("ns", "c")
    store.put(
        obj("c", "6", uid="u", meta={"deletionTimestamp": "2026-01-01T00:00:00Z"}), fresh=False
    )
    assert store.lookup("ns", "c")[0] == "hit"


# --- relist, sync, scope ----------------------------------------------------------------------


def test_relist_drops_what_is_gone_but_keeps_writes_newer_than_the_list() -> None:
    store = synced(ObjectStore("rollouts", authoritative=True), obj("a", "3"), obj("b", "4"))
    store.put(obj("c", "20"), fresh=True)  # our write, after the list below was taken
    store.replace_all([("full", obj("a", "10"))], "15")
    assert store.lookup("ns", "a")[1]["metadata"]["resourceVersion"] == "10"  # type: ignore[index]
    assert store.lookup("ns", "b") == ("absent", None)
    assert store.lookup("ns", "c")[0] == "hit"


def test_before_the_first_list_every_read_is_a_get(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = CachedKube(client.ApiClient())
    monkeypatch.setattr(Kube, "get_custom", lambda *a, **k: obj("r", "2"))
    monkeypatch.setattr(Kube, "list_custom", lambda *a, **k: [obj("r", "2")])
    assert kube.rollouts.lookup("ns", "r")[0] == "unknown"
    assert kube.get_custom(ROLLOUTS, "ns", "r") == obj("r", "2")
    assert kube.list_custom(ROLLOUTS) == [obj("r", "2")]
    kube.resync()  # a new leader distrusts what it holds until each kind is listed again
    synced(kube.rollouts, rv="5")  # the list no longer has it
    assert kube.list_custom(ROLLOUTS) == []


def test_a_managed_configmap_miss_is_a_get_and_reports_are_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A label can be removed: the label-selected store never answers 'absent'."""
    kube = cached()
    synced(kube.configmaps)
    unlabelled = obj("r-snapshot", "4")
    monkeypatch.setattr(Kube, "get_configmap", lambda *a, **k: copy.deepcopy(unlabelled))
    assert kube.get_configmap("ns", "r-snapshot") == unlabelled
    assert kube.configmaps.lookup("ns", "r-snapshot")[0] == "unknown"  # not kept: never updated
    report = obj(
        "r-report",
        "5",
        meta={"labels": {"calyx.io/managed-by": "calyx", "app.kubernetes.io/component": "report"}},
    )
    monkeypatch.setattr(Kube, "replace_configmap", lambda *a, **k: copy.deepcopy(report))
    kube.replace_configmap("ns", "r-report", report)
    assert len(kube.configmaps) == 0


def test_deployments_outside_rollout_namespaces_are_stubs(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = CachedKube(client.ApiClient())
    synced(kube.rollouts, obj("r", "1", ns="team-a"))
    kube.deployments.replace_all(
        [
            ("stub", {"metadata": {"name": "x", "namespace": "other", "resourceVersion": "2"}}),
            ("full", obj("checkout", "3", ns="team-a", spec={"replicas": 2})),
        ],
        "3",
    )
    assert kube._keep_deployment(obj("y", "1", ns="other")) == "stub"
    assert kube._keep_deployment(obj("y", "1", ns="team-a")) == "full"
    canary = obj("y-canary", "1", ns="other", meta={"labels": {"calyx.io/track": "canary"}})
    assert kube._keep_deployment(canary) == "full"
    assert kube.get_deployment("team-a", "checkout")["spec"] == {"replicas": 2}  # type: ignore[index]
    assert kube.get_deployment("other", "missing") is None  # authoritative: no GET
    monkeypatch.setattr(Kube, "get_deployment", lambda *a, **k: obj("x", "2", ns="other"))
    assert kube.get_deployment("other", "x") == obj("x", "2", ns="other")  # a stub: GET


def test_change_tokens_move_on_changes_not_on_echoes() -> None:
    kube = CachedKube(client.ApiClient())
    synced(kube.rollouts, obj("r", "5"))
    assert kube.change_token("ns") != kube.change_token("ns")  # not synced: never equal
    for store in (kube.leases, kube.deployments, kube.configmaps):
        synced(store)
    before = kube.change_token("ns")
    kube.rollouts.put(obj("r", "5"), fresh=False)  # the watch's echo of what we hold
    assert kube.change_token("ns") == before
    kube.rollouts.put(obj("r", "6"), fresh=False)
    assert kube.change_token("ns") != before
    other = kube.change_token("elsewhere")
    kube.rollouts.put(obj("r", "7"), fresh=False)
    assert kube.change_token("elsewhere") == other


def _synced_all() -> CachedKube:
    kube = CachedKube(client.ApiClient())
    synced(kube.rollouts, obj("r", "5", status={"phase": "Progressing"}))
    for store in (kube.leases, kube.deployments, kube.configmaps):
        synced(store)
    return kube


def _write_status(kube: CachedKube, monkeypatch: pytest.MonkeyPatch, rv: str) -> dict[str, Any]:
    written = obj("r", rv, status={"phase": "Progressing", "lastAnalysis": {"time": rv}})
    monkeypatch.setattr(Kube, "patch_custom_status", lambda *a, **k: copy.deepcopy(written))
    kube.patch_custom_status(ROLLOUTS, "ns", "r", {"lastAnalysis": {"time": rv}})
    return written


def test_token_after_own_write_is_the_echo_token_when_nothing_else_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = _synced_all()
    before = kube.change_token("ns")
    written = _write_status(kube, monkeypatch, "6")
    after = kube.token_after_own_write(before, ROLLOUTS, written)
    assert after is not None and after == kube.change_token("ns")
    kube.observe(ROLLOUTS, written)  # the write's echo (Kopf's event): the token stays
    assert kube.change_token("ns") == after


def test_token_after_own_write_is_none_when_anything_else_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = _synced_all()
    before = kube.change_token("ns")
    kube.deployments.put(obj("checkout", "9"), fresh=False)  # the target changed meanwhile
    written = _write_status(kube, monkeypatch, "10")
    assert kube.token_after_own_write(before, ROLLOUTS, written) is None

    # A newer version of the Rollout itself (a user's edit) arrived before our write's answer
    # was stored: one change in the token, but not ours.
    kube = _synced_all()
    before = kube.change_token("ns")
    kube.observe(ROLLOUTS, obj("r", "8", spec={"paused": True}, status={"phase": "Progressing"}))
    written = _write_status(kube, monkeypatch, "7")
    assert kube.token_after_own_write(before, ROLLOUTS, written) is None

    kube = _synced_all()
    kube.rollouts.unsync()  # relisting: nothing is skipped on the strength of a token
    before = kube.change_token("ns")
    written = _write_status(kube, monkeypatch, "6")
    assert kube.token_after_own_write(before, ROLLOUTS, written) is None


def test_kopf_bodies_feed_the_store() -> None:
    kube = CachedKube(client.ApiClient())
    synced(kube.rollouts, obj("r", "5", spec={"paused": False}))
    kube.observe(ROLLOUTS, obj("r", "6", spec={"paused": True}))
    kube.observe(ROLLOUTS, obj("r", "4", spec={"paused": False}))
    assert kube.get_custom(ROLLOUTS, "ns", "r")["spec"] == {"paused": True}  # type: ignore[index]


# --- the watch loop -------------------------------------------------------------------------


class FakeResponse:
    def __init__(self, data: Any = None, lines: list[dict[str, Any]] | None = None) -> None:
        self.data = json.dumps(data).encode() if data is not None else b""
        self.lines = lines or []
        self.status = 200

    def stream(self, _n: int, decode_content: bool = True) -> Iterator[bytes]:
        for line in self.lines:
            yield json.dumps(line).encode() + b"\n"

    def release_conn(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def test_watcher_lists_watches_and_relists_on_410() -> None:
    store = ObjectStore("rollouts", authoritative=True)
    calls: list[dict[str, Any]] = []
    watches = [
        [
            {"type": "ADDED", "object": obj("b", "11")},
            {"type": "MODIFIED", "object": obj("a", "12", spec={"v": 2})},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
        ],
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410}}],
    ]

    def list_fn(*_args: Any, **kw: Any) -> FakeResponse:
        calls.append(kw)
        if kw.get("watch"):
            return FakeResponse(lines=watches.pop(0))
        return FakeResponse({"metadata": {"resourceVersion": "10"}, "items": [obj("a", "10")]})

    w = Watcher(store, list_fn)
    rv = w._list()
    assert rv == "10" and store.synced
    assert w._watch(rv) == "13"  # follows bookmarks
    assert store.lookup("ns", "a")[1]["spec"] == {"v": 2}  # type: ignore[index]
    assert store.lookup("ns", "b")[0] == "hit"
    assert w._watch("13") is None  # 410 Gone: the caller lists again
    assert calls[1]["resource_version"] == "10" and calls[2]["resource_version"] == "13"


def test_watcher_keeps_only_the_metadata_of_a_stub() -> None:
    store = ObjectStore("deployments", authoritative=True, keep=lambda o: "stub")

    def list_fn(*_args: Any, **_kw: Any) -> FakeResponse:
        big = obj("d", "3", spec={"template": {"a": "b" * 100}})
        return FakeResponse({"metadata": {"resourceVersion": "3"}, "items": [big]})

    Watcher(store, list_fn)._list()
    assert store.lookup("ns", "d") == ("unknown", None)  # a stub: read it with a GET
    assert len(store) == 1


# --- shapes: a cached object is byte-for-byte what a GET returns -------------------------------

RAW_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "checkout",
        "namespace": "shop",
        "uid": "6a0d",
        "resourceVersion": "1234",
        "generation": 3,
        "creationTimestamp": "2026-11-25T10:00:00Z",
        "labels": {"app": "checkout"},
        "annotations": {
            "calyx.io/claimed-by": "r1/uid",
            "deployment.kubernetes.io/revision": "2",
            "looks-like-a-time": "2026-11-25T10:00:00Z",
        },
        "ownerReferences": [
            {"apiVersion": "calyx.io/v1alpha1", "kind": "Rollout", "name": "r1", "uid": "x"}
        ],
        "managedFields": [
            {
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "apps/v1",
                "time": "2026-11-25T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {".": {}}}},
            }
        ],
    },
    "spec": {
        "replicas": 10,
        "selector": {"matchLabels": {"app": "checkout"}},
        "template": {
            "metadata": {
                "creationTimestamp": None,
                "labels": {"app": "checkout"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-25T10:00:00Z"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "reg.example/checkout:1.0.0",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "env": [{"name": "WHEN", "value": "2026-11-25T10:00:00Z"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent",
                    }
                ],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "securityContext": {},
                "schedulerName": "default-scheduler",
            },
        },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"},
        },
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
    },
    "status": {
        "observedGeneration": 3,
        "replicas": 10,
        "updatedReplicas": 10,
        "readyReplicas": 10,
        "availableReplicas": 10,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "lastUpdateTime": "2026-11-25T10:00:01Z",
                "lastTransitionTime": "2026-11-25T10:00:01Z",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            }
        ],
    },
}

RAW_CONFIGMAP: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {
        "name": "r1-snapshot",
        "namespace": "shop",
        "uid": "9",
        "resourceVersion": "77",
        "creationTimestamp": "2026-11-25T10:00:02Z",
        "labels": {"calyx.io/managed-by": "calyx", "calyx.io/rollout": "r1"},
        "ownerReferences": [
            {
                "apiVersion": "calyx.io/v1alpha1",
                "kind": "Rollout",
                "name": "r1",
                "uid": "x",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    },
    "immutable": True,
    "data": {"deployment.json": '{"creationTimestamp":null,"at":"2026-11-25T10:00:00Z"}'},
}


def model_shape(raw: dict[str, Any], kind: str) -> Any:
    model = API.deserialize(json.dumps(raw), kind, "application/json")
    return API.sanitize_for_serialization(model)


@pytest.mark.parametrize(
    ("raw", "kind", "plain"),
    [
        (RAW_DEPLOYMENT, "V1Deployment", plain_deployment),
        (RAW_CONFIGMAP, "V1ConfigMap", plain_configmap),
    ],
    ids=["deployment", "configmap"],
)
def test_watched_objects_have_the_shape_a_get_returns(raw: Any, kind: str, plain: Any) -> None:
    """The snapshot's bytes, template hashes and canary ownership compare cached objects with
    ones read (or written) by GET: the two paths must agree exactly."""
    assert plain(copy.deepcopy(raw)) == model_shape(raw, kind)


@pytest.mark.parametrize("packed", [False, True], ids=["dicts", "packed"])
def test_a_packed_store_reads_like_a_plain_one(packed: bool) -> None:
    """Deployments and ConfigMaps are held as marshal blobs: every read is a private copy of
    exactly what was stored, less managedFields, and an echo of the same version is no change."""
    store = ObjectStore("deployments", authoritative=True, packed=packed)
    raw = copy.deepcopy(RAW_DEPLOYMENT)
    raw["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    synced(store, raw)
    state, got = store.lookup("shop", "checkout")
    assert state == "hit" and got is not None
    assert "managedFields" not in got["metadata"]
    assert got["spec"] == RAW_DEPLOYMENT["spec"] and got["status"] == RAW_DEPLOYMENT["status"]
    got["spec"]["replicas"] = 99
    assert store.lookup("shop", "checkout")[1]["spec"]["replicas"] == 10  # type: ignore[index]
    assert not store.put(copy.deepcopy(raw), fresh=False)  # the same version: nothing new
    assert store.version("shop", "checkout") == raw["metadata"]["resourceVersion"]
    assert store.values("shop") == [store.lookup("shop", "checkout")[1]]
    assert CachedKube(client.ApiClient()).deployments.packed


def test_a_packed_store_keeps_stubs_as_stubs() -> None:
    store = ObjectStore("deployments", authoritative=True, keep=lambda o: "stub", packed=True)
    synced(store)
    assert store.put(obj("d", "3"), fresh=False)
    assert store.lookup("ns", "d") == ("unknown", None)
    assert store.version("ns", "d") is None
