"""The admission guard on the real API server (issue 11, docs/security-guard.md).

The chart is installed with ``helm install`` (its ValidatingAdmissionPolicies, bindings,
ServiceAccount and RBAC); the operator's pod is not started (``replicaCount: 0``): where a test
needs the operator, it runs as a process with a token of the chart's ServiceAccount, so the
policies see exactly the identity they were rendered for. People are real users with client
certificates signed through the CSR API (tests/e2e/guard_support.py):

* ``dev``: the built-in ``edit`` ClusterRole in the test namespaces, what developers get;
* ``oncall``: the same, and member of the break-glass group ``calyx:break-glass``.

Each test labels its own namespaces, so the policies never act on another test's objects.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from calyx.adapters.kube import Kube
from calyx.cli.main import run as calyx
from calyx.domain.guard import GUARD_LABEL, MESSAGE_PREFIX
from calyx_dev.guard import disable_guard, enable_guard, guard_objects
from calyx_dev.operator_process import OperatorProcess, free_port
from calyx_dev.trafficsim import PodInfo, TrafficSim
from tests.e2e.guard_support import (
    User,
    audit_since,
    grant,
    helm_binary,
    make_user,
    wait_guard_active,
)
from tests.e2e.harness import (
    deployment,
    deployment_body,
    lease_body,
    replicas_of,
    rollout_body,
    signers_yaml,
    wait_for,
    wait_phase,
)
from tests.e2e.plugin import apply_obj
from tests.packaging.test_image_entry import Release, _service_account_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BREAK_GLASS = "calyx:break-glass"
IMG1, IMG2, IMG3 = "reg.example/shop:1", "reg.example/shop:2", "reg.example/shop:3"
GC = "system:serviceaccount:kube-system:generic-garbage-collector"
DEPLOYMENT_CONTROLLER = "system:serviceaccount:kube-system:deployment-controller"


@dataclass
class Guard:
    cluster: Any
    release: Release
    op_ns: str
    operator_user: str  # system:serviceaccount:<op_ns>:<sa>
    sa_kubeconfig: Path
    dev: User
    oncall: User
    workdir: Path

    @property
    def deployments_policy(self) -> str:
        return f"{self.release.name}-guard-deployments"

    @property
    def configmaps_policy(self) -> str:
        return f"{self.release.name}-guard-configmaps"

    def as_operator(self, *args: str, input: str | None = None) -> None:
        """kubectl with the chart ServiceAccount's token (what the operator is)."""
        proc = subprocess.run(
            [self.cluster.kubectl_path, "--kubeconfig", str(self.sa_kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def guard(calyx_crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    cluster = calyx_crds
    helm = helm_binary()
    workdir = tmp_path_factory.mktemp("guard")
    op_ns = cluster.create_namespace(f"calyx-g-{uuid.uuid4().hex[:8]}")
    release = Release(
        helm,
        cluster,
        op_ns,
        {
            "replicaCount": 0,  # the operator, when a test needs it, is a process with the SA token
            "metrics": {"port": free_port()},
            "operator": {"leaseRecheckSeconds": 1, "rolloutTickSeconds": 1},
            "trust": {"signers": yaml.safe_load(signers_yaml(["alice", "sentinel"]))},
        },
    )
    release.install(workdir)
    try:
        sa = release.name  # the chart's full name: the release name contains "calyx"
        sa_kubeconfig = workdir / "sa.kubeconfig"
        _service_account_kubeconfig(cluster, op_ns, sa, sa_kubeconfig)
        yield Guard(
            cluster=cluster,
            release=release,
            op_ns=op_ns,
            operator_user=f"system:serviceaccount:{op_ns}:{sa}",
            sa_kubeconfig=sa_kubeconfig,
            dev=make_user(cluster, "dev", ["developers"], workdir),
            oncall=make_user(cluster, "oncall", ["developers", BREAK_GLASS], workdir),
            workdir=workdir,
        )
    finally:
        release.uninstall()
        cluster.delete_namespace(op_ns)


def _team_namespace(g: Guard, label: str | None) -> str:
    """A namespace with Deployment ``checkout`` (created before it opts in, as a team would),
    ``edit`` for dev and oncall, and the guard label (then waits until the API server acts)."""
    ns = g.cluster.create_namespace(f"calyx-t-{uuid.uuid4().hex[:8]}")
    apply_obj(g.cluster, deployment_body(ns, "checkout", 2, IMG1))
    for user in (g.dev, g.oncall):
        grant(g.cluster, ns, "edit", user=user.name)
    if label:
        g.cluster.kubectl("label", "namespace", ns, f"{GUARD_LABEL}={label}")
    if label == "enforce":
        wait_guard_active(g.dev, ns)
    return ns


@pytest.fixture
def enforced_ns(guard: Guard) -> Iterator[str]:
    ns = _team_namespace(guard, "enforce")
    yield ns
    guard.cluster.delete_namespace(ns)


@pytest.fixture
def plain_ns(guard: Guard) -> Iterator[str]:
    ns = _team_namespace(guard, None)
    yield ns
    guard.cluster.delete_namespace(ns)


def _template(cluster: Any, ns: str, name: str = "checkout") -> dict[str, Any]:
    return dict(cluster.kubectl_json("get", "deployment", name, "-n", ns)["spec"]["template"])


def _editor(workdir: Path, sed: str) -> dict[str, str]:
    """An environment whose KUBE_EDITOR applies ``sed`` to the file ``kubectl edit`` opens."""
    script = workdir / f"editor-{uuid.uuid4().hex[:6]}.sh"
    script.write_text(f"#!/bin/sh\nsed -i '{sed}' \"$1\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return dict(os.environ, KUBE_EDITOR=str(script))


def _denied(res: subprocess.CompletedProcess[str], *phrases: str) -> str:
    assert res.returncode != 0, f"expected a denial, got success: {res.stdout}{res.stderr}"
    assert MESSAGE_PREFIX in res.stderr, res.stderr
    for phrase in phrases:
        assert phrase in res.stderr, f"{phrase!r} not in: {res.stderr}"
    return res.stderr


def _ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, res.stderr
    return res


def _snapshot_cm(ns: str, name: str = "r1-snapshot", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"calyx.io/managed-by": "calyx", **labels},
        },
        "data": {"snapshot.json": '{"spec": {"replicas": 2}}'},
    }


# ------------------------------------------------------------------------------------ demo


SHIPPED_POLICY = "ValidatingAdmissionPolicy 'calyx-guard-deployments'"


def test_demo_step_denies_set_image_with_the_shipped_manifest(kube_cluster: Any) -> None:
    """What `make demo` shows (calyx_dev.guard): the policies of manifests/install.yaml,
    applied without Helm, make the API server refuse even cluster-admin's `kubectl set image`.
    First in the module: before the module's release adds its own policies beside them."""
    objs = {f"{o['kind']}/{o['metadata']['name']}" for o in guard_objects()}
    assert {
        "ValidatingAdmissionPolicy/calyx-guard-deployments",
        "ValidatingAdmissionPolicy/calyx-guard-configmaps",
        "ValidatingAdmissionPolicyBinding/calyx-guard-deployments",
    } <= objs
    assert not any(o.endswith("operator-namespace") for o in objs), (
        "the demo's operator is not the chart's ServiceAccount: its namespace stays unbound"
    )
    ns = kube_cluster.create_namespace(f"calyx-t-{uuid.uuid4().hex[:8]}")
    try:
        apply_obj(kube_cluster, deployment_body(ns, "checkout", 1, IMG1))
        enable_guard(kube_cluster, ns)
        # A release uninstalled by the module before (test_gitops) leaves its policies in the
        # API server's admission cache for a moment; they deny too, with their own operator's
        # name. Retrying a denied write changes nothing, so ask until the shipped policy answers.
        deadline = time.monotonic() + 30
        while True:
            res = kube_cluster.kubectl(
                "set",
                "image",
                "deployment/checkout",
                "app=reg.example/shop:hotfix",
                "-n",
                ns,
                check=False,
            )
            if res.returncode == 0 or SHIPPED_POLICY in res.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        _denied(res, "system:serviceaccount:calyx-system:calyx")
        scaled = kube_cluster.kubectl("scale", "deployment/checkout", "--replicas=2", "-n", ns)
        assert scaled.returncode == 0
    finally:
        disable_guard(kube_cluster, ns)
        kube_cluster.delete_namespace(ns)
    text = textwrap.shorten(res.stderr, 400)
    assert SHIPPED_POLICY in text, text


# ------------------------------------------------------------------------------- Deployments


def test_developer_cannot_change_or_create_pod_templates(guard: Guard, enforced_ns: str) -> None:
    ns, dev, cluster = enforced_ns, guard.dev, guard.cluster
    before = _template(cluster, ns)
    since = audit_since()

    msg = _denied(
        dev.kubectl("set", "image", "deployment/checkout", "app=evil.example/shop:6", "-n", ns),
        f"dev may not change the pod template (spec.template) of Deployment {ns}/checkout",
        "Lease",
        "calyx sign-lease",
        "Scaling (kubectl scale, HPAs) stays allowed",
        BREAK_GLASS,
        "docs/security-guard.md",
        guard.operator_user,
    )
    assert f"ValidatingAdmissionPolicy '{guard.deployments_policy}'" in msg
    # `kubectl edit`, with an editor that changes the image
    _denied(
        dev.kubectl(
            "edit",
            "deployment/checkout",
            "-n",
            ns,
            env=_editor(guard.workdir, "s#reg.example/shop:1#evil.example/shop:7#"),
        ),
        "may not change the pod template",
    )
    _denied(
        dev.kubectl("rollout", "restart", "deployment/checkout", "-n", ns),
        "may not change the pod template",
    )
    _denied(
        dev.kubectl("create", "deployment", "sidecar", "--image=evil.example/miner:1", "-n", ns),
        f"Deployment {ns}/sidecar may not be created by dev",
        "Create it before the namespace opts in",
    )
    # `kubectl apply` of the manifest with another image (what a GitOps sync would send)
    body = deployment_body(ns, "checkout", 2, "evil.example/shop:8")
    _denied(
        dev.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(body)
        ),
        "may not change the pod template",
    )
    # It is the API server, not RBAC: cluster-admin (system:masters) is refused too.
    admin = cluster.kubectl(
        "set", "image", "deployment/checkout", "app=evil.example/shop:9", "-n", ns, check=False
    )
    _denied(admin, "calyx-admin may not change the pod template")

    assert _template(cluster, ns) == before, "a denied request changed the Deployment"
    assert cluster.kubectl("get", "deployment", "sidecar", "-n", ns, check=False).returncode != 0
    refused = cluster.read_audit_events(
        resource="deployments", namespace=ns, user="dev", since=since, succeeded=False
    )
    assert len(refused) >= 5, [e["verb"] for e in refused]
    for ev in refused:
        assert ev["responseStatus"]["code"] == 403
        assert MESSAGE_PREFIX in ev["responseStatus"]["message"]


def test_scaling_and_metadata_stay_free(guard: Guard, enforced_ns: str) -> None:
    ns, dev, cluster = enforced_ns, guard.dev, guard.cluster
    before = _template(cluster, ns)
    since = audit_since()
    _ok(dev.kubectl("scale", "deployment/checkout", "--replicas=4", "-n", ns))
    # what an HPA does: read the scale subresource, write it back with new replicas
    apps = client.AppsV1Api(dev.api_client())
    for _ in range(5):  # like an HPA, retry when the Deployment changed since the read (409)
        scale = apps.read_namespaced_deployment_scale("checkout", ns)
        scale.spec.replicas = 5
        try:
            apps.replace_namespaced_deployment_scale("checkout", ns, scale)
            break
        except ApiException as exc:
            if exc.status != 409:
                raise
    assert cluster.kubectl_json("get", "deployment", "checkout", "-n", ns)["spec"]["replicas"] == 5
    # spec.replicas on the main resource, and the Deployment's own labels and annotations
    _ok(dev.kubectl("patch", "deployment", "checkout", "-n", ns, "-p", '{"spec":{"replicas":3}}'))
    _ok(dev.kubectl("label", "deployment", "checkout", "team=payments", "-n", ns))
    _ok(dev.kubectl("annotate", "deployment", "checkout", "owner=dev@example.com", "-n", ns))
    got = cluster.kubectl_json("get", "deployment", "checkout", "-n", ns)
    assert got["spec"]["replicas"] == 3
    assert got["metadata"]["labels"]["team"] == "payments"
    assert got["spec"]["template"] == before
    writes = cluster.read_audit_events(
        resource="deployments/scale", namespace=ns, user="dev", since=since, succeeded=True
    )
    assert {e["verb"] for e in writes} >= {"patch", "update"}, [e["verb"] for e in writes]
    wait_for(
        "3 replicas ready",
        lambda: (
            (deployment(Kube(cluster.api_client()), ns, "checkout") or {})
            .get("status", {})
            .get("readyReplicas")
            == 3
        ),
        timeout=60,
    )


# -------------------------------------------------------------------------------- ConfigMaps


def test_calyx_configmaps_are_protected(guard: Guard, enforced_ns: str) -> None:
    ns, dev, cluster = enforced_ns, guard.dev, guard.cluster
    guard.as_operator("create", "-f", "-", input=json.dumps(_snapshot_cm(ns)))
    original = cluster.kubectl_json("get", "configmap", "r1-snapshot", "-n", ns)["data"]
    _ok(dev.kubectl("create", "configmap", "mine", "--from-literal=a=1", "-n", ns))

    _denied(
        dev.kubectl(
            "edit",
            "configmap",
            "r1-snapshot",
            "-n",
            ns,
            env=_editor(guard.workdir, "s#replicas#replicaz#"),
        ),
        f"dev may not change ConfigMap {ns}/r1-snapshot",
        "delete the Rollout",
    )
    # removing the label is a change of a labelled object (the old object carries it)
    _denied(
        dev.kubectl("label", "configmap", "r1-snapshot", "calyx.io/managed-by-", "-n", ns),
        "may not change ConfigMap",
    )
    _denied(
        dev.kubectl("delete", "configmap", "r1-snapshot", "-n", ns),
        f"dev may not delete ConfigMap {ns}/r1-snapshot",
    )
    # `kubectl delete --all` (one DELETE each) and a deletecollection: admission runs per item
    dev.kubectl("delete", "configmap", "--all", "-n", ns)
    core = client.CoreV1Api(dev.api_client())
    with pytest.raises(ApiException) as err:
        core.delete_collection_namespaced_config_map(ns)
    assert err.value.status == 403 and MESSAGE_PREFIX in str(err.value.body)
    # planting state: a labelled ConfigMap, or one owned by a Rollout without the label
    _denied(
        dev.kubectl("create", "-f", "-", input=json.dumps(_snapshot_cm(ns, "r2-snapshot"))),
        f"dev may not create ConfigMap {ns}/r2-snapshot",
    )
    owned = _snapshot_cm(ns, "r3-snapshot")
    owned["metadata"]["labels"] = {}
    owned["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "calyx.io/v1alpha1",
            "kind": "Rollout",
            "name": "r3",
            "uid": str(uuid.uuid4()),
            "controller": True,
        }
    ]
    _denied(dev.kubectl("create", "-f", "-", input=json.dumps(owned)), "may not create")
    # the developer's own ConfigMap went with `delete --all`: the guard does not overreach
    assert cluster.kubectl("get", "cm", "mine", "-n", ns, check=False).returncode != 0
    _ok(dev.kubectl("create", "configmap", "mine", "--from-literal=a=1", "-n", ns))
    _denied(
        dev.kubectl("label", "configmap", "mine", "calyx.io/managed-by=calyx", "-n", ns),
        "may not change ConfigMap",
    )

    assert cluster.kubectl_json("get", "configmap", "r1-snapshot", "-n", ns)["data"] == original
    for planted in ("r2-snapshot", "r3-snapshot"):
        assert cluster.kubectl("get", "cm", planted, "-n", ns, check=False).returncode != 0
    _ok(dev.kubectl("patch", "configmap", "mine", "-n", ns, "-p", '{"data":{"a":"2"}}'))
    _ok(dev.kubectl("delete", "configmap", "mine", "-n", ns))


def test_operator_namespace_state_is_protected_without_a_label(guard: Guard) -> None:
    """guard.protectOperatorNamespace: the ledger's namespace is never labelled, yet Calyx's
    ConfigMaps there are the operator's alone."""
    cluster, dev, ns = guard.cluster, guard.dev, guard.op_ns
    grant(cluster, ns, "edit", user="dev")
    guard.as_operator("create", "-f", "-", input=json.dumps(_snapshot_cm(ns, "calyx-ledger-t")))
    wait_for(
        "the operator-namespace binding to act",
        lambda: dev.kubectl(
            "delete", "configmap", "calyx-ledger-t", "-n", ns, "--dry-run=server"
        ).stderr.count(MESSAGE_PREFIX),
        timeout=30,
    )
    _denied(dev.kubectl("delete", "configmap", "calyx-ledger-t", "-n", ns), "may not delete")
    # ... and only ConfigMaps: Deployments there (the operator's own) are left to RBAC and Helm
    _ok(dev.kubectl("create", "deployment", "x", f"--image={IMG1}", "-n", ns))


# ---------------------------------------------------------------------------- break-glass


def test_break_glass_is_allowed_and_audited(guard: Guard, enforced_ns: str) -> None:
    ns, oncall, cluster = enforced_ns, guard.oncall, guard.cluster
    guard.as_operator("create", "-f", "-", input=json.dumps(_snapshot_cm(ns)))
    since = audit_since()
    _ok(
        oncall.kubectl(
            "set", "image", "deployment/checkout", "app=reg.example/shop:hotfix", "-n", ns
        )
    )
    _ok(oncall.kubectl("create", "deployment", "debug", f"--image={IMG1}", "-n", ns))
    _ok(oncall.kubectl("delete", "configmap", "r1-snapshot", "-n", ns))
    tpl = _template(cluster, ns)
    assert tpl["spec"]["containers"][0]["image"] == "reg.example/shop:hotfix"

    (patch,) = cluster.read_audit_events(
        verbs=["patch"],
        resource="deployments",
        subresource="",
        namespace=ns,
        name="checkout",
        user="oncall",
        since=since,
        succeeded=True,
    )
    assert BREAK_GLASS in patch["user"]["groups"]
    assert "impersonatedUser" not in patch, "a real user, not an impersonation"
    key = f"{guard.deployments_policy}/break-glass"
    assert patch["annotations"][key] == (
        f"oncall used break-glass group {BREAK_GLASS} to change the pod template of "
        f"Deployment {ns}/checkout"
    )
    (delete,) = cluster.read_audit_events(
        verbs=["delete"],
        resource="configmaps",
        namespace=ns,
        name="r1-snapshot",
        user="oncall",
        since=since,
        succeeded=True,
    )
    assert (
        "used break-glass group" in delete["annotations"][f"{guard.configmaps_policy}/break-glass"]
    )
    # a change that is not the template's is no break-glass act: no annotation
    _ok(
        oncall.kubectl(
            "patch", "deployment", "checkout", "-n", ns, "-p", '{"metadata":{"labels":{"x":"y"}}}'
        )
    )
    (label,) = cluster.read_audit_events(
        verbs=["patch"],
        resource="deployments",
        namespace=ns,
        name="checkout",
        user="oncall",
        since=since,
        succeeded=True,
    )[1:]
    assert key not in (label.get("annotations") or {})


# ------------------------------------------------------------------- not opted in, warn mode


def test_namespace_without_the_label_is_unaffected(guard: Guard, plain_ns: str) -> None:
    ns, dev = plain_ns, guard.dev
    guard.as_operator("create", "-f", "-", input=json.dumps(_snapshot_cm(ns)))
    _ok(dev.kubectl("set", "image", "deployment/checkout", "app=reg.example/shop:dev", "-n", ns))
    _ok(dev.kubectl("rollout", "restart", "deployment/checkout", "-n", ns))
    _ok(dev.kubectl("create", "deployment", "side", f"--image={IMG1}", "-n", ns))
    _ok(dev.kubectl("label", "configmap", "r1-snapshot", "x=y", "-n", ns))
    res = _ok(dev.kubectl("delete", "configmap", "r1-snapshot", "-n", ns))
    assert MESSAGE_PREFIX not in res.stderr


def test_warn_mode_allows_with_a_warning(guard: Guard, plain_ns: str) -> None:
    ns, dev, cluster = plain_ns, guard.dev, guard.cluster
    cluster.kubectl("label", "namespace", ns, f"{GUARD_LABEL}=warn")

    def warned() -> bool:
        res = dev.kubectl(
            "set",
            "image",
            "deployment/checkout",
            "app=reg.example/shop:w",
            "-n",
            ns,
            "--dry-run=server",
        )
        return res.returncode == 0 and MESSAGE_PREFIX in res.stderr

    wait_for("a warning from the warn binding", warned, timeout=30, interval=0.3)
    since = audit_since()
    res = _ok(
        dev.kubectl("set", "image", "deployment/checkout", "app=reg.example/shop:w", "-n", ns)
    )
    assert "Warning:" in res.stderr and "may not change the pod template" in res.stderr
    assert _template(cluster, ns)["spec"]["containers"][0]["image"] == "reg.example/shop:w"
    (ev,) = [
        e
        for e in cluster.read_audit_events(
            verbs=["patch"],
            resource="deployments",
            subresource="",
            namespace=ns,
            user="dev",
            since=since,
        )
        if "dryRun" not in e["requestURI"]
    ]
    failures = ev["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
    assert guard.deployments_policy in failures and "Warn" in failures


# ------------------------------------------------------------------------------------- CLI


def test_guard_status(guard: Guard, enforced_ns: str, plain_ns: str) -> None:
    admin = ["--kubeconfig", guard.cluster.kubeconfig]
    text, code = calyx(["guard", "status", "-n", enforced_ns, *admin])
    assert code == 0, text
    assert f"namespace {enforced_ns}: label {GUARD_LABEL}=enforce" in text
    assert "probe (server-side dry run of a Deployment create as you): denied" in text
    for policy, binding in (
        (guard.deployments_policy, guard.deployments_policy),
        (guard.configmaps_policy, guard.configmaps_policy),
    ):
        row = next(ln for ln in text.splitlines() if f" {binding} " in ln and "Deny" in ln)
        assert " yes " in row and (policy in row), row
    assert f"exempt: operator {guard.operator_user}" in text
    assert f"break-glass group {BREAK_GLASS}" in text
    assert text.rstrip().endswith(
        f"ENFORCED: pod templates and Calyx's ConfigMaps in {enforced_ns} change only through Calyx"
    )

    text, code = calyx(["guard", "status", "-n", plain_ns, *admin])
    assert code == 1, text
    assert "the guard does not act here" in text and "probe" in text and ": allowed" in text
    assert f"kubectl label namespace {plain_ns} {GUARD_LABEL}=enforce" in text

    # a developer cannot read cluster-scoped policies; the dry-run probe still answers
    text, code = calyx(
        ["guard", "status", "-n", enforced_ns, "--kubeconfig", str(guard.dev.kubeconfig)]
    )
    assert code == 0, text
    assert "you: dev (groups: developers)" in text
    assert "may not read validatingadmissionpolicies" in text
    assert MESSAGE_PREFIX in text  # the denial the probe got


def test_guard_status_reports_a_missing_binding(guard: Guard, enforced_ns: str) -> None:
    name = guard.configmaps_policy
    saved = guard.cluster.kubectl_json("get", "validatingadmissionpolicybinding", name)
    guard.cluster.kubectl("delete", "validatingadmissionpolicybinding", name)
    try:
        text, code = calyx(
            ["guard", "status", "-n", enforced_ns, "--kubeconfig", guard.cluster.kubeconfig]
        )
        assert code == 1, text
        assert f"no Deny binding of the configmaps policy selects namespace {enforced_ns}" in text
    finally:
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            saved["metadata"].pop(key, None)
        saved.pop("status", None)
        guard.cluster.kubectl("create", "-f", "-", input=json.dumps(saved))


# --------------------------------------------------------------- the operator under the guard


@pytest.fixture
def sim_sees_cluster_pods(traffic_sim: TrafficSim, kube: Kube) -> Iterator[TrafficSim]:
    """The simulator serves metrics for the live pods of app=checkout (restored afterwards)."""

    def source() -> list[PodInfo]:
        out = []
        for p in kube.core.list_pod_for_all_namespaces(label_selector="app=checkout").items:
            if p.metadata.deletion_timestamp or p.status.phase != "Running":
                continue
            c = p.spec.containers[0]
            out.append(PodInfo(p.metadata.name, p.metadata.namespace, c.image, c.name))
        return out

    previous = traffic_sim._pods_source
    traffic_sim.set_pods_source(source)
    yield traffic_sim
    traffic_sim.set_pods_source(previous)


@pytest.mark.prometheus
def test_signed_rollout_and_breach_rollback_under_the_guard(
    guard: Guard,
    kube: Kube,
    no_operator: None,
    prometheus: Any,
    sim_sees_cluster_pods: TrafficSim,
    tmp_path: Path,
) -> None:
    """In an enforced namespace the operator, as the chart's ServiceAccount, still does its
    whole job: a rollout to 100 %, a rollback on a real breach, and garbage collection of a
    deleted Rollout's ConfigMaps. The guard refuses it nothing."""
    cluster, sim = guard.cluster, sim_sees_cluster_pods
    ns = _team_namespace(guard, None)
    tag = uuid.uuid4().hex[:6]
    stable, good, bad = (f"{i}-{tag}" for i in (IMG1, IMG2, IMG3))
    for image in (stable, good, bad):
        sim.set_profile(image, tes=100.0, error_ratio=0.001, cpu_cores=0.05)
    apply_obj(cluster, deployment_body(ns, "checkout", 8, stable))
    wait_for(
        "stable ready",
        lambda: (
            (deployment(kube, ns, "checkout") or {}).get("status", {}).get("readyReplicas") == 8
        ),
        timeout=60,
    )
    cluster.kubectl("label", "namespace", ns, f"{GUARD_LABEL}=enforce")
    wait_guard_active(guard.dev, ns)
    since = audit_since()
    op = OperatorProcess(str(guard.sa_kubeconfig), tmp_path, env={"CALYX_NAMESPACE": guard.op_ns})
    op.start()
    try:
        analysis = {
            "intervalSeconds": 2,
            "windowSeconds": 10,
            "prometheusURL": prometheus.url,
            "failureLimit": 1,
            "errorRate": {"maxPermille": 10},
            "tes": {"maxDropPercent": 5},
        }
        # 1. a signed change to 100 %
        apply_obj(cluster, lease_body(ns, "l2", "checkout", {"app": good}))
        apply_obj(
            cluster,
            rollout_body(
                ns,
                "r2",
                "l2",
                analysis=analysis,
                tiers=[
                    {"weight": 5, "soakSeconds": 4},
                    {"weight": 25, "soakSeconds": 4},
                    {"weight": 100},
                ],
            ),
        )
        wait_phase(kube, ns, "r2", "Completed", timeout=150)
        assert _template(cluster, ns)["spec"]["containers"][0]["image"] == good

        # 2. the next one breaches at 25 % and is rolled back to the snapshot
        apply_obj(cluster, lease_body(ns, "l3", "checkout", {"app": bad}))
        apply_obj(
            cluster,
            rollout_body(
                ns,
                "r3",
                "l3",
                analysis=analysis,
                tiers=[
                    {"weight": 5, "soakSeconds": 4},
                    {"weight": 25, "soakSeconds": 600},
                    {"weight": 100},
                ],
            ),
        )
        wait_for("tier 25 %", lambda: replicas_of(kube, ns, "checkout-canary") == 3, timeout=90)
        sim.set_profile(bad, error_ratio=0.2)
        st = wait_phase(kube, ns, "r3", "RolledBack", timeout=90)
        assert st["rollback"]["trigger"] == "Breach", st["rollback"]
        assert _template(cluster, ns)["spec"]["containers"][0]["image"] == good
        assert deployment(kube, ns, "checkout-canary") is None

        # 3. a deleted Rollout's ConfigMaps go with it (the garbage collector is allowed)
        for cm in ("r2-snapshot",):
            assert kube.get_configmap(ns, cm) is not None
        cluster.kubectl("delete", "crollout", "r2", "-n", ns, "--wait=false")
        wait_for(
            "r2-snapshot garbage-collected",
            lambda: kube.get_configmap(ns, "r2-snapshot") is None,
            timeout=60,
        )
        gc = cluster.read_audit_events(
            verbs=["delete"],
            resource="configmaps",
            namespace=ns,
            name="r2-snapshot",
            since=since,
            succeeded=True,
        )
        assert [e["user"]["username"] for e in gc] == [GC], gc
    finally:
        op.stop()
        log = op.log_text()
        cluster.delete_namespace(ns)

    # Nothing the operator asked for was refused, by RBAC or by the guard ...
    refused = [
        (e["verb"], e["objectRef"], (e.get("responseStatus") or {}).get("message"))
        for e in cluster.read_audit_events(user=guard.operator_user, since=since, succeeded=False)
        if (e.get("responseStatus") or {}).get("code") == 403
    ]
    assert refused == [], refused
    assert MESSAGE_PREFIX not in log and "(403)" not in log, log[-3000:]
    # ... and the Deployments in the namespace were created and patched by the operator alone
    # (the deployment controller updates their revision annotation).
    writers = {
        e["user"]["username"]
        for e in cluster.read_audit_events(
            verbs=["create", "patch", "update"],
            resource="deployments",
            subresource="",
            namespace=ns,
            since=since,
            succeeded=True,
        )
    }
    assert writers - {DEPLOYMENT_CONTROLLER} == {guard.operator_user}, writers


def test_enforced_namespace_can_be_deleted(guard: Guard) -> None:
    """The namespace controller empties a namespace being deleted, Calyx's ConfigMaps included."""
    ns = _team_namespace(guard, "enforce")
    guard.as_operator("create", "-f", "-", input=json.dumps(_snapshot_cm(ns)))
    guard.cluster.kubectl("delete", "namespace", ns, "--timeout=60s")
    assert guard.cluster.kubectl("get", "namespace", ns, check=False).returncode != 0
