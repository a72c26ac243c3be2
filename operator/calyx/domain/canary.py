"""Pure builders for the objects a Rollout writes: the snapshot and the canary Deployment.

Kept apart from the planner so the exact bytes of the rollback pack and the canary's shape are
testable on their own (docs/design.md §Canary math).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from calyx.api.common import API_VERSION

TRACK_LABEL = "calyx.io/track"
ROLLOUT_LABEL = "calyx.io/rollout"
DIGEST_ANNOTATION = "calyx.io/lease-digest"
SNAPSHOT_KEY = "deployment.json"
MANAGED_BY_LABEL = "calyx.io/managed-by"
"""Marks the ConfigMaps only the operator may change (snapshot, report, ledger): the admission
guard protects what carries it (docs/security.md)."""
MANAGED_BY = {MANAGED_BY_LABEL: "calyx", "app.kubernetes.io/managed-by": "calyx"}
CLAIM_ANNOTATION = "calyx.io/claimed-by"
"""On the target Deployment: ``<rollout-name>/<rollout-uid>`` of the one Rollout changing it."""


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
            "labels": {ROLLOUT_LABEL: meta["name"], **MANAGED_BY},
            "ownerReferences": [owner_reference(rollout)],
        },
        # Immutable: nobody edits a rollback pack in place; a replaced one fails the sha256
        # check against status.snapshot (docs/security.md).
        "immutable": True,
        "data": {SNAPSHOT_KEY: payload},
    }
    return body, hashlib.sha256(payload.encode()).hexdigest()


def read_snapshot(cm: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The saved document and the sha256 of its payload as stored (``{}`` if unparseable:
    the sha256 still identifies what is there, and a check against status fails on it)."""
    payload = str((cm.get("data") or {}).get(SNAPSHOT_KEY) or "")
    try:
        doc = json.loads(payload) if payload else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    return doc, hashlib.sha256(payload.encode()).hexdigest()


def trusted_snapshot(
    cm: Mapping[str, Any] | None, recorded_sha256: str | None
) -> tuple[dict[str, Any] | None, str]:
    """The snapshot document if its payload is exactly the one recorded in
    ``status.snapshot.sha256`` (which only the operator can write), else ``(None, why)``.

    The document's own ``templateSha256`` is never trusted: whoever rewrites a payload can
    recompute it. What the stable is restored to and compared against is the payload's
    ``spec.template``, hashed here.
    """
    if cm is None:
        return None, "the snapshot ConfigMap is missing"
    if not recorded_sha256:
        return None, "no snapshot digest was recorded in status"
    doc, sha = read_snapshot(cm)
    if sha != recorded_sha256:
        return None, (
            f"snapshot payload sha256 {sha[:12]}… differs from the recorded {recorded_sha256[:12]}…"
        )
    if not isinstance((doc.get("spec") or {}).get("template"), dict):
        return None, "the snapshot payload has no pod template"
    return doc, ""


def snapshot_template_sha(doc: Mapping[str, Any]) -> str:
    """sha256 of the pod template saved in a snapshot document (computed, not read)."""
    return sha256_of((doc.get("spec") or {}).get("template") or {})


def snapshot_matches(doc: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """Whether a snapshot document is a faithful copy of the live target's pod template: the
    check made before recording a snapshot found in the cluster (it may have been written by
    someone else under the reserved name before the operator got to it)."""
    return (
        (doc.get("metadata") or {}).get("uid") == (target.get("metadata") or {}).get("uid")
        and snapshot_template_sha(doc) == template_sha(target)
        and doc.get("templateSha256") == template_sha(target)
    )


def owned_by(obj: Mapping[str, Any] | None, uid: str) -> bool:
    """Whether ``obj``'s controller ownerReference is the object with ``uid``."""
    for ref in (obj or {}).get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") == uid:
            return True
    return False


def claim_value(rollout: Mapping[str, Any]) -> str:
    meta = rollout["metadata"]
    return f"{meta['name']}/{meta['uid']}"


def claim_of(target: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """``(rollout name, rollout uid)`` from the target's claim annotation, or None."""
    raw = ((target or {}).get("metadata", {}).get("annotations") or {}).get(CLAIM_ANNOTATION)
    if not raw or "/" not in raw:
        return None
    name, _, uid = str(raw).rpartition("/")
    return name, uid


def owner_reference(rollout: Mapping[str, Any]) -> dict[str, Any]:
    meta = rollout["metadata"]
    return {
        "apiVersion": API_VERSION,
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
    """The target's spec with the Lease's images and the track/rollout labels (docs/design.md
    §Canary math).

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
