"""The in-memory API the reconciler unit tests run on (tests/support/fake_kube.py) behaves as the
real API server does where Calyx relies on it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from calyx.adapters.events import EventRecorder
from calyx.adapters.kube import ROLLOUTS, api_message, is_conflict, is_not_found
from calyx.adapters.kube_api import KubeApi
from tests.support.fake_kube import (
    DEPLOYMENTS,
    JSON_PATCH,
    MERGE,
    PODS,
    STRATEGIC,
    FakeKube,
    merge_patch,
    strategic_merge_patch,
)

T0 = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)
NS = "shop"


def deployment(name: str = "web", replicas: int = 3, image: str = "app:1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"containerPort": 80}]},
                        {"name": "sidecar", "image": "proxy:1"},
                    ]
                },
            },
        },
    }


def rollout(name: str = "r1") -> dict[str, Any]:
    return {
        "apiVersion": "calyx.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {"leaseRef": {"name": "l1"}},
        "status": {"phase": "ignored on create"},
    }


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> int:
    return int(exc.value.status)


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(clock=lambda: T0)


def test_it_is_a_kube_api(kube: FakeKube) -> None:
    api: KubeApi = kube  # what mypy checks for the real Kube; here at least every name exists
    for name in KubeApi.__dict__:
        if not name.startswith("_"):
            assert callable(getattr(api, name)), name


def test_create_sets_server_fields_and_refuses_a_second_create(kube: FakeKube) -> None:
    obj = kube.create_custom(ROLLOUTS, NS, rollout())
    meta = obj["metadata"]
    assert meta["uid"] == "uid-r1" and meta["namespace"] == NS and meta["generation"] == 1
    assert meta["creationTimestamp"] == "2026-11-25T10:00:00Z"
    assert "status" not in obj, "status is the subresource's"
    with pytest.raises(ApiException) as exc:
        kube.create_custom(ROLLOUTS, NS, rollout())
    assert status_of(exc) == 409 and is_conflict(exc.value)
    assert kube.create_deployment(NS, deployment()) is not None
    assert kube.create_deployment(NS, deployment()) is None  # Kube absorbs AlreadyExists


def test_reads_are_copies_and_missing_objects_are_none_or_404(kube: FakeKube) -> None:
    kube.create_custom(ROLLOUTS, NS, rollout())
    got = kube.get_custom(ROLLOUTS, NS, "r1")
    assert got is not None
    got["spec"]["paused"] = True
    assert "paused" not in kube.get_custom(ROLLOUTS, NS, "r1")["spec"]  # type: ignore[index]
    assert kube.get_custom(ROLLOUTS, NS, "nope") is None
    assert kube.get_deployment(NS, "nope") is None
    with pytest.raises(ApiException) as exc:
        kube.patch_custom(ROLLOUTS, NS, "nope", {"spec": {"paused": True}})
    assert is_not_found(exc.value) and "not found" in api_message(exc.value)
    kube.delete_configmap(NS, "nope")  # Kube ignores 404 on these deletes
    kube.delete_job(NS, "nope")


def test_resource_version_and_generation(kube: FakeKube) -> None:
    obj = kube.create_custom(ROLLOUTS, NS, rollout())
    rv = obj["metadata"]["resourceVersion"]
    same = kube.patch_custom(ROLLOUTS, NS, "r1", {"spec": {"leaseRef": {"name": "l1"}}})
    assert same["metadata"]["resourceVersion"] == rv, "a no-op write changes nothing"
    meta = kube.patch_custom(ROLLOUTS, NS, "r1", {"metadata": {"annotations": {"a": "b"}}})
    assert int(meta["metadata"]["resourceVersion"]) > int(rv)
    assert meta["metadata"]["generation"] == 1, "metadata is not the spec"
    spec = kube.patch_custom(ROLLOUTS, NS, "r1", {"spec": {"paused": True}})
    assert spec["metadata"]["generation"] == 2
    st = kube.patch_custom_status(ROLLOUTS, NS, "r1", {"phase": "Progressing"})
    assert st["metadata"]["generation"] == 2 and st["status"] == {"phase": "Progressing"}


def test_status_subresource_is_separate_from_the_object(kube: FakeKube) -> None:
    kube.create_custom(ROLLOUTS, NS, rollout())
    kube.patch_custom_status(ROLLOUTS, NS, "r1", {"phase": "Progressing", "outbox": [{"id": 1}]})
    obj = kube.patch_custom(ROLLOUTS, NS, "r1", {"spec": {"paused": True}, "status": {"x": 1}})
    assert obj["status"] == {"phase": "Progressing", "outbox": [{"id": 1}]}
    obj = kube.patch_custom_status(ROLLOUTS, NS, "r1", {"outbox": None, "phase": "Paused"})
    assert obj["status"] == {"phase": "Paused"}, "merge patch: null removes a key"
    assert obj["spec"]["paused"] is True


def test_merge_patch_with_resource_version_is_a_compare_and_swap(kube: FakeKube) -> None:
    created = kube.create_deployment(NS, deployment())
    assert created is not None
    rv = created["metadata"]["resourceVersion"]
    assert kube.annotate_deployment(NS, "web", "calyx.io/claimed-by", "r1/u1", rv)
    assert not kube.annotate_deployment(NS, "web", "calyx.io/claimed-by", "r2/u2", rv)
    assert not kube.annotate_deployment(NS, "gone", "k", "v", rv)
    dep = kube.get_deployment(NS, "web")
    assert dep is not None
    assert dep["metadata"]["annotations"] == {"calyx.io/claimed-by": "r1/u1"}
    assert kube.annotate_deployment(
        NS, "web", "calyx.io/claimed-by", None, dep["metadata"]["resourceVersion"]
    )
    assert kube.get_deployment(NS, "web")["metadata"]["annotations"] == {}  # type: ignore[index]


def test_replace_with_resource_version_is_a_compare_and_swap(kube: FakeKube) -> None:
    cm = kube.create_configmap(NS, {"metadata": {"name": "ledger"}, "data": {"a": "1"}})
    stale = dict(cm)
    cm["data"] = {"a": "2"}
    kube.replace_configmap(NS, "ledger", cm)
    stale["data"] = {"a": "3"}
    with pytest.raises(ApiException) as exc:
        kube.replace_configmap(NS, "ledger", stale)
    assert status_of(exc) == 409
    assert kube.get_configmap(NS, "ledger")["data"] == {"a": "2"}  # type: ignore[index]


def test_immutable_configmap_refuses_data_changes(kube: FakeKube) -> None:
    body = {"metadata": {"name": "snap"}, "immutable": True, "data": {"k": "v"}}
    cm = kube.create_configmap(NS, body)
    for change in ({"data": {"k": "evil"}}, {"immutable": False}):
        with pytest.raises(ApiException) as exc:
            kube.replace_configmap(NS, "snap", {**cm, **change})
        assert status_of(exc) == 422 and "immutable" in api_message(exc.value)
    kube.create_configmap_if_absent(NS, {**body, "data": {"k": "other"}})  # 409 absorbed
    assert kube.get_configmap(NS, "snap")["data"] == {"k": "v"}  # type: ignore[index]
    kube.delete_configmap(NS, "snap")  # deleting is allowed
    assert kube.get_configmap(NS, "snap") is None


def test_strategic_merge_patch_merges_containers_by_name(kube: FakeKube) -> None:
    kube.create_deployment(NS, deployment())
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}}
    dep = kube.patch_deployment(NS, "web", patch, STRATEGIC)
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert containers == [
        {"name": "app", "image": "app:2", "ports": [{"containerPort": 80}]},
        {"name": "sidecar", "image": "proxy:1"},
    ]
    assert dep["metadata"]["generation"] == 2
    # The same patch as a JSON merge patch replaces the list: the sidecar would be gone.
    merged = merge_patch(deployment(), patch)
    assert merged["spec"]["template"]["spec"]["containers"] == [{"name": "app", "image": "app:2"}]
    new = strategic_merge_patch({"containers": [{"name": "a"}]}, {"containers": [{"name": "b"}]})
    assert new == {"containers": [{"name": "a"}, {"name": "b"}]}


def test_json_patch_replace_restores_a_template(kube: FakeKube) -> None:
    kube.create_deployment(NS, deployment(image="hand/edited:9"))
    template = deployment()["spec"]["template"]
    ops = [{"op": "replace", "path": "/spec/template", "value": template}]
    dep = kube.patch_deployment(NS, "web", ops, JSON_PATCH)
    assert dep["spec"]["template"] == template
    with pytest.raises(ApiException) as exc:
        kube.patch_deployment(
            NS, "web", [{"op": "replace", "path": "/nope/x", "value": 1}], JSON_PATCH
        )
    assert status_of(exc) == 422


def test_the_deployment_controller_settles_ready_deployments() -> None:
    kube = FakeKube(clock=lambda: T0)
    kube.create_deployment(NS, deployment(replicas=3))
    dep = kube.get_deployment(NS, "web")
    assert dep is not None
    assert dep["status"]["readyReplicas"] == 3 and dep["status"]["observedGeneration"] == 1
    kube.patch_deployment(NS, "web", {"spec": {"replicas": 5}}, MERGE)
    dep = kube.get_deployment(NS, "web")
    assert dep is not None and dep["status"]["availableReplicas"] == 5
    assert dep["status"]["observedGeneration"] == 2
    kube.ready = None  # controller off: the spec moves on, the status stays behind
    kube.patch_deployment(NS, "web", {"spec": {"replicas": 7}}, MERGE)
    dep = kube.get_deployment(NS, "web")
    assert dep is not None and dep["status"]["observedGeneration"] == 2
    kube.settle_deployment(NS, "web")
    assert kube.get_deployment(NS, "web")["status"]["readyReplicas"] == 7  # type: ignore[index]


def test_finalizers_hold_a_deleted_object_until_removed(kube: FakeKube) -> None:
    kube.create_custom(ROLLOUTS, NS, rollout())
    obj = kube.patch_custom(ROLLOUTS, NS, "r1", {"metadata": {"finalizers": ["calyx.io/rollback"]}})
    kube.delete_custom(ROLLOUTS, NS, "r1")
    held = kube.get_custom(ROLLOUTS, NS, "r1")
    assert held is not None and held["metadata"]["deletionTimestamp"] == "2026-11-25T10:00:00Z"
    with pytest.raises(ApiException) as exc:
        kube.patch_custom(ROLLOUTS, NS, "r1", {"metadata": {"finalizers": ["a", "b"]}})
    assert status_of(exc) == 422, "no new finalizers while being deleted"
    stale = obj["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as exc:
        kube.patch_custom(
            ROLLOUTS, NS, "r1", {"metadata": {"finalizers": [], "resourceVersion": stale}}
        )
    assert status_of(exc) == 409
    rv = held["metadata"]["resourceVersion"]
    kube.patch_custom(ROLLOUTS, NS, "r1", {"metadata": {"finalizers": [], "resourceVersion": rv}})
    assert kube.get_custom(ROLLOUTS, NS, "r1") is None
    assert kube.tombstones[(ROLLOUTS, NS, "r1")]["metadata"]["finalizers"] == []


def test_deleting_a_rollout_collects_what_it_owns(kube: FakeKube) -> None:
    r = kube.create_custom(ROLLOUTS, NS, rollout())
    owner = [{"kind": "Rollout", "name": "r1", "uid": r["metadata"]["uid"], "controller": True}]
    kube.create_deployment(
        NS,
        {**deployment("web-canary"), "metadata": {"name": "web-canary", "ownerReferences": owner}},
    )
    kube.create_configmap(NS, {"metadata": {"name": "r1-snapshot", "ownerReferences": owner}})
    kube.create_configmap(NS, {"metadata": {"name": "unrelated"}})
    kube.delete_custom(ROLLOUTS, NS, "r1")
    assert kube.get_deployment(NS, "web-canary") is None
    assert kube.get_configmap(NS, "r1-snapshot") is None
    assert kube.get_configmap(NS, "unrelated") is not None


def test_delete_deployment_now_takes_its_pods(kube: FakeKube) -> None:
    kube.create_deployment(NS, deployment("web-canary"))
    for i, track in enumerate(("canary", "canary", "stable")):
        labels = {"calyx.io/track": track, "calyx.io/rollout": "r1"}
        kube.create(PODS, NS, {"metadata": {"name": f"p{i}", "labels": labels}})
    kube.delete_deployment_now(NS, "web-canary", "calyx.io/track=canary,calyx.io/rollout=r1")
    assert kube.get_deployment(NS, "web-canary") is None
    assert [p["metadata"]["name"] for p in kube.list_objects(PODS, NS)] == ["p2"]
    kube.delete_deployment_now(NS, "web-canary", "calyx.io/track=canary")  # gone: no error
    assert kube.list_objects(DEPLOYMENTS) == []


def test_events_are_stored_by_name_and_a_repeat_is_refused(kube: FakeKube) -> None:
    recorder = EventRecorder(kube, instance="test")
    obj = kube.create_custom(ROLLOUTS, NS, rollout())
    recorder.emit(obj, "Normal", "DeployStarted", "go", name="r1.abc")
    recorder.emit(obj, "Normal", "DeployStarted", "go", name="r1.abc")  # replayed: absorbed
    recorder.emit(obj, "Warning", "Lossy", "unnamed")
    events = kube.events(NS)
    assert [e["reason"] for e in events] == ["DeployStarted", "Lossy"]
    assert events[0]["involvedObject"]["uid"] == "uid-r1"
    assert events[0]["reportingInstance"] == "test"
    with pytest.raises(ApiException) as exc:
        kube.create_event(NS, {"metadata": {"name": "r1.abc"}})
    assert status_of(exc) == 409
