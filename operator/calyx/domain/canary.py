"""Pure builders for the objects a Rollout writes: the snapshot and the canary Deployment.

Kept apart from the planner so the exact bytes of the rollback pack and the canary's shape are
testable on their own (DESIGN §4).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

TRACK_LABEL = "calyx.io/track"
ROLLOUT_LABEL = "calyx.io/rollout"
DIGEST_ANNOTATION = "calyx.io/lease-digest"
SNAPSHOT_KEY = "deployment.json"


def canary_name(target: str) -> str:
    return f"{target}-canary"


def snapshot_name(rollout: str) -> str:
    return f"{rollout}-snapshot"


def _stable_json(obj: object) -> bytes:
    """Key-sorted compact JSON (a Deployment never holds floats, but be total anyway)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_of(obj: object) -> str:
    return hashlib.sha256(_stable_json(obj)).hexdigest()


def template_sha(deployment: Mapping[str, Any]) -> str:
    """Identity of a Deployment's pod template: what 'restored' is checked against."""
    return sha256_of((deployment.get("spec") or {}).get("template") or {})


def snapshot_document(target: Mapping[str, Any]) -> dict[str, Any]:
    """What is saved of the target before the first mutation: enough to restore it exactly."""
    meta = target.get("metadata") or {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            k: meta[k]
            for k in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "generation",
                "labels",
                "annotations",
            )
            if k in meta
        },
        "spec": copy.deepcopy(dict(target.get("spec") or {})),
        "templateSha256": template_sha(target),
    }


def snapshot_configmap(
    rollout: Mapping[str, Any], target: Mapping[str, Any]
) -> tuple[dict[str, Any], str]:
    """The ConfigMap body and the sha256 of its payload (recorded in ``status.snapshot``)."""
    doc = snapshot_document(target)
    payload = _stable_json(doc).decode()
    meta = rollout["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": snapshot_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {ROLLOUT_LABEL: meta["name"], "app.kubernetes.io/managed-by": "calyx"},
            "ownerReferences": [owner_reference(rollout)],
        },
        "data": {SNAPSHOT_KEY: payload},
    }
    return body, hashlib.sha256(payload.encode()).hexdigest()


def read_snapshot(cm: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The saved document and the sha256 of its payload as stored."""
    payload = str((cm.get("data") or {}).get(SNAPSHOT_KEY) or "")
    doc = json.loads(payload) if payload else {}
    return doc, hashlib.sha256(payload.encode()).hexdigest()


def owner_reference(rollout: Mapping[str, Any]) -> dict[str, Any]:
    meta = rollout["metadata"]
    return {
        "apiVersion": "calyx.io/v1alpha1",
        "kind": "Rollout",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def missing_containers(target: Mapping[str, Any], images: Sequence[Mapping[str, str]]) -> list[str]:
    names = {c.get("name") for c in _containers(target)}
    return [str(i["name"]) for i in images if i["name"] not in names]


def _containers(deployment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = (deployment.get("spec") or {}).get("template", {}).get("spec") or {}
    return list(spec.get("containers") or [])


def images_applied(deployment: Mapping[str, Any], images: Sequence[Mapping[str, str]]) -> bool:
    current = {c.get("name"): c.get("image") for c in _containers(deployment)}
    return all(current.get(i["name"]) == i["image"] for i in images)


def canary_deployment(
    rollout: Mapping[str, Any],
    target: Mapping[str, Any],
    images: Sequence[Mapping[str, str]],
    replicas: int,
    lease_digest: str,
) -> dict[str, Any]:
    """The target's spec with the Lease's images and the track/rollout labels (DESIGN §4).

    Its selector adds the track label, so its ReplicaSets never adopt stable pods, while the
    Service that selects the target's labels serves both: the documented Kubernetes canary
    pattern, no mesh required.
    """
    meta = target["metadata"]
    rname = rollout["metadata"]["name"]
    spec = copy.deepcopy(dict(target.get("spec") or {}))
    spec.pop("paused", None)
    spec["replicas"] = replicas
    selector = spec.setdefault("selector", {})
    selector.setdefault("matchLabels", {})[TRACK_LABEL] = "canary"
    tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
    tmeta.setdefault("labels", {}).update({TRACK_LABEL: "canary", ROLLOUT_LABEL: rname})
    wanted = {i["name"]: i["image"] for i in images}
    for c in spec["template"].get("spec", {}).get("containers", []):
        if c.get("name") in wanted:
            c["image"] = wanted[c["name"]]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": canary_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {**(meta.get("labels") or {}), TRACK_LABEL: "canary", ROLLOUT_LABEL: rname},
            "annotations": {DIGEST_ANNOTATION: lease_digest},
            "ownerReferences": [owner_reference(rollout)],
        },
        "spec": spec,
    }


def deployment_settled(dep: Mapping[str, Any]) -> bool:
    """The Deployment controller finished rolling out its current template and all of it is
    available: observedGeneration caught up, every replica updated, ready and available, and
    no old pods left."""
    meta, spec, st = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    want = int(spec.get("replicas", 1))
    return (
        int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(st.get("updatedReplicas") or 0) == want
        and int(st.get("availableReplicas") or 0) == want
        and int(st.get("readyReplicas") or 0) == want
        and int(st.get("replicas") or 0) == want
    )


def job_name(rollout: str) -> str:
    return f"{rollout}-validate"


def validation_job(rollout: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """The post-deploy Job from ``spec.postDeploy.jobTemplate``, owned by the Rollout so it is
    garbage-collected with it (its pods stay inspectable until then)."""
    meta = rollout["metadata"]
    tmeta = dict(template.get("metadata") or {})
    labels = {**(tmeta.get("labels") or {}), ROLLOUT_LABEL: meta["name"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [owner_reference(rollout)],
        },
        "spec": copy.deepcopy(dict(template["spec"])),
    }


def job_outcome(job: Mapping[str, Any]) -> str | None:
    """ "Succeeded", "Failed" (per the Job's own conditions) or None while it runs."""
    st = job.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if c.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    return None
