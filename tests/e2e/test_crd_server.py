"""The generated CRDs on a real API server: accepted objects, server-side rejections, kubectl UX.

Needs the ``kube_cluster`` / ``kube_namespace`` fixtures (tests/cluster/plugin.py).
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from calyx.api import LeaseObject, LeaseStatus, RolloutObject, RolloutStatus
from calyx.api.crdgen import LEASE_IMMUTABLE_MESSAGE

pytestmark = pytest.mark.e2e

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
CRD_NAMES = ("leases.calyx.io", "rollouts.calyx.io")

LEASE: dict[str, Any] = {
    "apiVersion": "calyx.io/v1alpha1",
    "kind": "Lease",
    "metadata": {"name": "checkout-2-3-1"},
    "spec": {
        "intent": "INT-42: checkout 2.3.1 fixes cart rounding",
        "targetRef": {"kind": "Deployment", "name": "checkout"},
        "change": {"containers": [{"name": "app", "image": "registry.example/checkout@sha256:ab"}]},
        "constraints": {"maxInitialWeight": 5, "requireAnalysis": True},
        "expiresAt": "2026-11-25T18:00:00Z",
    },
}

ROLLOUT: dict[str, Any] = {
    "apiVersion": "calyx.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "checkout-2-3-1"},
    "spec": {
        "leaseRef": {"name": "checkout-2-3-1"},
        "tiers": [
            {"weight": 5, "soakSeconds": 120},
            {"weight": 25, "soakSeconds": 300, "approval": "Manual"},
            {"weight": 100},
        ],
        "analysis": {
            "tes": {"maxDropPercent": 5},
            "errorRate": {"maxPermille": 10},
            "cpu": {"maxPercent": 90},
            "memory": {"maxPercent": 90},
            "custom": [{"name": "p99-latency", "query": "histogram_quantile(0.99, x)", "max": 300}],
        },
        "postDeploy": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "smoke", "image": "curlimages/curl:8"}],
                        }
                    }
                }
            },
            "timeoutSeconds": 300,
        },
    },
}


@pytest.fixture(scope="module")
def crds(kube_cluster: Any) -> Iterator[Any]:
    """Install crds/ (server-side apply, idempotent) and wait until Established."""
    for name in CRD_NAMES:
        kube_cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR / f"{name}.yaml")
        )
    for name in CRD_NAMES:
        kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    yield kube_cluster


def create(
    cluster: Any, ns: str, obj: dict[str, Any], *args: str, check: bool = False
) -> subprocess.CompletedProcess[str]:
    proc: subprocess.CompletedProcess[str] = cluster.kubectl(
        "create", "-n", ns, *args, "-f", "-", input=json.dumps(obj), check=check
    )
    return proc


def rejected(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode != 0, f"expected a rejection, got: {proc.stdout}"
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in: {proc.stderr}"
    return proc.stderr


def get(cluster: Any, ns: str, resource: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.kubectl_json("get", "-n", ns, resource)
    return obj


def rollout_with(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(ROLLOUT)
    obj["spec"].update(spec)
    return obj


def lease_with(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(LEASE)
    obj["spec"].update(spec)
    return obj


# --------------------------------------------------------------------------------------------
# Accepted objects
# --------------------------------------------------------------------------------------------


def test_valid_lease_is_stored_exactly_as_written(crds: Any, kube_namespace: str) -> None:
    create(crds, kube_namespace, LEASE, check=True)
    stored = get(crds, kube_namespace, "leases.calyx.io/checkout-2-3-1")
    # No server-side defaults: the signed spec is what the author wrote.
    assert stored["spec"] == LEASE["spec"]
    obj = LeaseObject.model_validate(stored)
    assert obj.spec.signed_dict() == LEASE["spec"]

    minimal = lease_with()
    minimal["metadata"]["name"] = "minimal"
    del minimal["spec"]["constraints"]
    create(crds, kube_namespace, minimal, check=True)
    assert get(crds, kube_namespace, "clease/minimal")["spec"] == minimal["spec"]


def test_valid_rollout_gets_schema_defaults(crds: Any, kube_namespace: str) -> None:
    create(crds, kube_namespace, ROLLOUT, check=True)
    stored = get(crds, kube_namespace, "rollouts.calyx.io/checkout-2-3-1")
    spec = stored["spec"]
    assert spec["paused"] is False and spec["onBreach"] == "Rollback"
    assert spec["tiers"][2] == {"weight": 100, "soakSeconds": 0, "approval": "Auto"}
    analysis = spec["analysis"]
    assert (analysis["intervalSeconds"], analysis["windowSeconds"]) == (10, 30)
    assert analysis["failureLimit"] == 1
    assert analysis["noData"] == {"rollbackAfterSeconds": 120}
    # The stored object parses with the strict models, and equals the code-defaulted spec.
    obj = RolloutObject.model_validate(stored)
    assert obj.spec == RolloutObject.model_validate(ROLLOUT).spec

    minimal = {**ROLLOUT, "metadata": {"name": "minimal"}, "spec": {"leaseRef": {"name": "x"}}}
    create(crds, kube_namespace, minimal, check=True)
    spec = get(crds, kube_namespace, "crollout/minimal")["spec"]
    assert "tiers" not in spec  # chosen from the risk score
    assert spec["analysis"]["intervalSeconds"] == 10


def test_status_subresource_accepts_model_output(
    crds: Any, kube_namespace: str, no_operator: None
) -> None:
    create(crds, kube_namespace, LEASE, check=True)
    create(crds, kube_namespace, ROLLOUT, check=True)
    lease_status = LeaseStatus.model_validate(
        {
            "phase": "Verified",
            "digest": "sha256:" + "0" * 64,
            "cosigners": [
                {"id": "alice", "role": "human", "signedAt": "2026-11-25T09:00:00Z", "valid": True}
            ],
            "conditions": [
                {
                    "type": "Verified",
                    "status": "True",
                    "reason": "Verified2Key",
                    "message": "1 human, 1 agent",
                    "lastTransitionTime": "2026-11-25T09:00:01Z",
                    "observedGeneration": 1,
                }
            ],
            "observedGeneration": 1,
        }
    )
    rollout_status = RolloutStatus.model_validate(
        {
            "phase": "Progressing",
            "target": {"kind": "Deployment", "name": "checkout"},
            "leaseDigest": "sha256:" + "0" * 64,
            "currentTier": 1,
            "currentWeight": 25,
            "effectivePercent": 26,
            "canaryReplicas": 7,
            "stableReplicas": 20,
            "risk": {"score": 34, "level": "Medium", "factors": [{"name": "tag", "points": 15}]},
            "tiers": [
                {
                    "weight": 5,
                    "result": "Passed",
                    "startedAt": "2026-11-25T10:00:00Z",
                    "metrics": {"tes": {"canary": 0.97, "baseline": 0.98, "verdict": "Pass"}},
                }
            ],
            "lastAnalysis": {"time": "2026-11-25T10:03:00.25Z", "verdict": "Pass"},
            "rollback": {"trigger": "Breach", "detectSeconds": 0.5},
        }
    )
    for resource, status in (
        ("leases.calyx.io/checkout-2-3-1", lease_status),
        ("rollouts.calyx.io/checkout-2-3-1", rollout_status),
    ):
        # Replace the whole status and read the object as stored by *this* write (an operator
        # running in the same session may write status too).
        out = crds.kubectl(
            "patch", "-n", kube_namespace, resource, "--subresource=status", "--type=json",
            "-p", json.dumps([{"op": "add", "path": "/status", "value": status.to_patch()}]),
            "-o", "json",
        ).stdout  # fmt: skip
        stored = json.loads(out)["status"]
        assert stored == status.to_patch()
        assert type(status).model_validate(stored) == status

    rollout_row = {"PHASE": "Progressing", "LEASE": "checkout-2-3-1", "WEIGHT": "25"}
    rollout_row |= {"EFFECTIVE": "26", "RISK": "Medium"}
    assert_printer_row(
        crds,
        kube_namespace,
        "crollout/checkout-2-3-1",
        ["NAME", "PHASE", "LEASE", "WEIGHT", "EFFECTIVE", "RISK", "AGE"],
        {
            "PHASE": ".status.phase",
            "LEASE": ".spec.leaseRef.name",
            "WEIGHT": ".status.currentWeight",
            "EFFECTIVE": ".status.effectivePercent",
            "RISK": ".status.risk.level",
        },
        rollout_row,
    )
    assert_printer_row(
        crds,
        kube_namespace,
        "clease/checkout-2-3-1",
        ["NAME", "PHASE", "TARGET", "EXPIRES", "AGE"],
        {"PHASE": ".status.phase", "TARGET": ".spec.targetRef.name", "EXPIRES": ".spec.expiresAt"},
        {"PHASE": "Verified", "TARGET": "checkout", "EXPIRES": "2026-11-25T18:00:00Z"},
    )


def _lookup(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(node, dict) or part not in node:
            return "<none>"
        node = node[part]
    return str(node)


def assert_printer_row(
    cluster: Any,
    ns: str,
    resource: str,
    header: list[str],
    paths: dict[str, str],
    expected: dict[str, str],
) -> None:
    """The table columns show the object's fields. Read table and object at the same
    resourceVersion; expect ``expected`` unless something else (an operator) changed status."""
    for _ in range(20):
        before = get(cluster, ns, resource)
        lines = cluster.kubectl("get", "-n", ns, resource).stdout.splitlines()
        after = get(cluster, ns, resource)
        if before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]:
            break
    assert lines[0].split() == header
    cells = dict(zip(header, lines[1].split(), strict=False))
    assert cells["NAME"] == after["metadata"]["name"]
    for column, path in paths.items():
        assert cells[column] == _lookup(after, path), column
    status_writers = {
        m.get("manager")
        for m in after["metadata"].get("managedFields", [])
        if m.get("subresource") == "status"
    }
    if status_writers <= {"kubectl-patch"}:  # nobody else wrote status: exact values
        assert {c: cells[c] for c in expected} == expected


# --------------------------------------------------------------------------------------------
# Server-side rejections
# --------------------------------------------------------------------------------------------


def test_lease_spec_is_immutable_but_annotations_are_not(crds: Any, kube_namespace: str) -> None:
    create(crds, kube_namespace, LEASE, check=True)
    proc = crds.kubectl(
        "patch", "-n", kube_namespace, "leases.calyx.io/checkout-2-3-1", "--type=merge",
        "-p", json.dumps({"spec": {"expiresAt": "2026-12-25T18:00:00Z"}}),
        check=False,
    )  # fmt: skip
    rejected(proc, LEASE_IMMUTABLE_MESSAGE)
    # Cosigning adds annotations after creation: that must keep working.
    crds.kubectl(
        "annotate", "-n", kube_namespace, "leases.calyx.io/checkout-2-3-1",
        'cosign.calyx.io/alice={"role":"human","signedAt":"2026-11-25T09:00:00Z","sig":"AA=="}',
    )  # fmt: skip
    stored = get(crds, kube_namespace, "leases.calyx.io/checkout-2-3-1")
    assert stored["spec"] == LEASE["spec"]
    assert "cosign.calyx.io/alice" in stored["metadata"]["annotations"]


def test_rollout_lease_ref_is_immutable(crds: Any, kube_namespace: str) -> None:
    create(crds, kube_namespace, ROLLOUT, check=True)
    proc = crds.kubectl(
        "patch", "-n", kube_namespace, "rollouts.calyx.io/checkout-2-3-1", "--type=merge",
        "-p", json.dumps({"spec": {"leaseRef": {"name": "other"}}}),
        check=False,
    )  # fmt: skip
    rejected(proc, "leaseRef is immutable")
    # Other fields (e.g. pause / resume) stay mutable.
    crds.kubectl(
        "patch", "-n", kube_namespace, "rollouts.calyx.io/checkout-2-3-1", "--type=merge",
        "-p", json.dumps({"spec": {"paused": True}}),
    )  # fmt: skip


@pytest.mark.parametrize(
    "tiers, needles",
    [
        (
            [{"weight": 25}, {"weight": 5}, {"weight": 100}],
            ["spec.tiers", "tier weights must be strictly increasing"],
        ),
        (
            [{"weight": 5}, {"weight": 5}, {"weight": 100}],
            ["tier weights must be strictly increasing"],
        ),
        ([{"weight": 5}, {"weight": 50}], ["the last tier must have weight 100"]),
        (
            [{"weight": 5}, {"weight": 101}],
            ["spec.tiers[1].weight", "less than or equal to 100"],
        ),
        ([{"weight": 0}, {"weight": 100}], ["spec.tiers[0].weight", "greater than or equal to 1"]),
        ([{"weight": 5.5}, {"weight": 100}], ["spec.tiers[0].weight", "integer"]),
        ([{"weight": "5"}, {"weight": 100}], ["spec.tiers[0].weight", "integer"]),
        ([], ["spec.tiers", "should have at least 1 items"]),
        (
            [{"weight": 5, "approval": "manual"}, {"weight": 100}],
            ["spec.tiers[0].approval", "Unsupported value"],
        ),
    ],
    ids=[
        "decreasing",
        "repeated",
        "last-not-100",
        "weight-101",
        "weight-0",
        "float",
        "string",
        "empty",
        "bad-approval",
    ],
)
def test_bad_tiers_are_rejected(
    crds: Any, kube_namespace: str, tiers: list[dict[str, Any]], needles: list[str]
) -> None:
    rejected(create(crds, kube_namespace, rollout_with(tiers=tiers)), *needles)


def test_integral_floats_reach_the_server_as_integers(crds: Any, kube_namespace: str) -> None:
    """kubectl converts YAML `5.0` to JSON `5` before sending: the server (and so the operator)
    never sees it. Only tools reading files directly (e.g. `calyx sign-lease -f`) can, and the
    strict models reject it there."""
    manifest = yaml.safe_dump(rollout_with(tiers=[{"weight": 5}, {"weight": 100}]))
    manifest = manifest.replace("weight: 5\n", "weight: 5.0\n")
    assert "weight: 5.0" in manifest
    crds.kubectl("create", "-n", kube_namespace, "-f", "-", input=manifest)
    stored = get(crds, kube_namespace, "crollout/checkout-2-3-1")
    assert stored["spec"]["tiers"][0]["weight"] == 5
    assert isinstance(stored["spec"]["tiers"][0]["weight"], int)


def test_max_tiers_accepted_and_eleven_rejected(crds: Any, kube_namespace: str) -> None:
    ten = [{"weight": w} for w in (1, 2, 3, 5, 10, 20, 30, 50, 75, 100)]
    create(crds, kube_namespace, rollout_with(tiers=ten), check=True)
    eleven = [{"weight": w} for w in (1, 2, 3, 4, 5, 10, 20, 30, 50, 75, 100)]
    obj = rollout_with(tiers=eleven)
    obj["metadata"]["name"] = "eleven"
    rejected(create(crds, kube_namespace, obj), "spec.tiers", "must have at most 10 items")
    # The CEL index list reaches the last adjacent pair of a 10-tier list.
    last_pair = [{"weight": w} for w in (1, 2, 3, 5, 10, 20, 30, 50, 100, 100)]
    obj = rollout_with(tiers=last_pair)
    obj["metadata"]["name"] = "last-pair"
    rejected(create(crds, kube_namespace, obj), "tier weights must be strictly increasing")


def test_other_rollout_rejections(crds: Any, kube_namespace: str) -> None:
    bad_interval = rollout_with(analysis={"intervalSeconds": 0})
    rejected(
        create(crds, kube_namespace, bad_interval),
        "spec.analysis.intervalSeconds",
        "greater than or equal to 1",
    )
    long_name = copy.deepcopy(ROLLOUT)
    long_name["metadata"]["name"] = "r" * 64
    rejected(create(crds, kube_namespace, long_name), "at most 63 characters")
    no_job_spec = rollout_with(postDeploy={"jobTemplate": {"metadata": {}}})
    rejected(create(crds, kube_namespace, no_job_spec), "spec.postDeploy.jobTemplate.spec")


@pytest.mark.parametrize(
    "expires_at, needles",
    [
        ("tomorrow", ["spec.expiresAt", "date-time"]),
        ("2026-13-25T18:00:00Z", ["spec.expiresAt", "date-time"]),
        ("2026-11-25T18:00:00+02:00", ["spec.expiresAt", "should match"]),
    ],
    ids=["not-a-date", "month-13", "not-utc"],
)
def test_bad_expires_at_is_rejected(
    crds: Any, kube_namespace: str, expires_at: str, needles: list[str]
) -> None:
    rejected(create(crds, kube_namespace, lease_with(expiresAt=expires_at)), *needles)


def test_other_lease_rejections(crds: Any, kube_namespace: str) -> None:
    rejected(
        create(crds, kube_namespace, lease_with(targetRef={"kind": "StatefulSet", "name": "x"})),
        "spec.targetRef.kind",
        "Unsupported value",
    )
    rejected(
        create(crds, kube_namespace, lease_with(change={"containers": []})),
        "spec.change.containers",
    )
    dup = [{"name": "app", "image": "a:1"}, {"name": "app", "image": "b:1"}]
    rejected(
        create(crds, kube_namespace, lease_with(change={"containers": dup})),
        "spec.change.containers[1]",
        "Duplicate value",
    )
    missing = lease_with()
    del missing["spec"]["intent"]
    rejected(create(crds, kube_namespace, missing), "spec.intent", "Required value")
    rejected(
        create(crds, kube_namespace, lease_with(constraints={"maxInitialWeight": 5.5})),
        "spec.constraints.maxInitialWeight",
        "integer",
    )


def test_unknown_fields_rejected_by_strict_field_validation(crds: Any, kube_namespace: str) -> None:
    typo = lease_with(intnet="typo")
    # kubectl's default --validate=strict asks the server to reject unknown fields...
    rejected(create(crds, kube_namespace, typo), 'unknown field "spec.intnet"')
    # ...without it the server prunes them (structural schema): the operator must not rely on
    # the server for extra="forbid".
    create(crds, kube_namespace, typo, "--validate=false", check=True)
    assert "intnet" not in get(crds, kube_namespace, "clease/checkout-2-3-1")["spec"]


# --------------------------------------------------------------------------------------------
# kubectl UX
# --------------------------------------------------------------------------------------------


def test_category_and_short_names(crds: Any, kube_namespace: str) -> None:
    create(crds, kube_namespace, LEASE, check=True)
    create(crds, kube_namespace, ROLLOUT, check=True)
    out = crds.kubectl("get", "calyx", "-n", kube_namespace, "-o", "name").stdout.split()
    assert sorted(out) == [
        "lease.calyx.io/checkout-2-3-1",
        "rollout.calyx.io/checkout-2-3-1",
    ]
    for short, kind in (("clease", "Lease"), ("crollout", "Rollout")):
        items = crds.kubectl_json("get", short, "-n", kube_namespace)["items"]
        assert [(i["apiVersion"], i["kind"]) for i in items] == [("calyx.io/v1alpha1", kind)]
    # `kubectl explain` shows the model docstrings.
    explain = crds.kubectl("explain", "rollouts.calyx.io.spec.analysis.intervalSeconds").stdout
    assert "minimum 1" in explain


def test_crd_files_are_what_the_server_has(crds: Any) -> None:
    for name in CRD_NAMES:
        local = yaml.safe_load((CRD_DIR / f"{name}.yaml").read_text())
        live = crds.kubectl_json("get", f"crd/{name}")
        assert live["spec"]["names"] == local["spec"]["names"]
        live_schema = live["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert live_schema == local["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        conditions = {c["type"]: c["status"] for c in live["status"]["conditions"]}
        assert conditions.get("NamesAccepted") == "True"
        assert conditions.get("NonStructuralSchema") is None
