"""The GitOps flow of docs/gitops.md, replayed on the real API server with server-side apply
under a GitOps tool's own ServiceAccount (what Argo CD and Flux do), the chart installed by Helm
and the operator running as the chart's ServiceAccount.

A Git repository holds the target Deployment, a pre-signed Lease and its Rollout; the tool
applies them in one sync; Calyx promotes the new image; then the tool syncs the *same* Git
manifest again. The tests show what each documented setting does to the promoted image:

* plain re-apply: a conflict with the operator's field manager (nothing changes);
* forced re-apply, the tools' default: the promotion is reverted (the failure mode to avoid);
* remedy 1, the pipeline commits the promoted image after ``DeployCompleted``: a no-op;
* remedy 2, Argo CD ``ignoreDifferences`` on the image with ``RespectIgnoreDifferences=true``
  (the tool sends the live image in place of Git's): a no-op;
* in a namespace guarded by ``calyx.io/guard=enforce`` the forced revert is refused by the API
  server, and both remedies still go through.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from calyx.adapters.kube import Kube
from calyx.domain.guard import GUARD_LABEL, MESSAGE_PREFIX
from calyx_dev.operator_process import OperatorProcess, free_port
from tests.e2e.guard_support import User, helm_binary, wait_guard_active
from tests.e2e.harness import (
    deployment,
    deployment_body,
    lease_body,
    rollout_body,
    signers_yaml,
    wait_for,
    wait_phase,
)
from tests.packaging.test_image_entry import Release, _service_account_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIELD_MANAGER = "argocd-controller"  # Argo CD's; Flux's kustomize-controller behaves the same
GIT_IMAGE = "reg.example/checkout:1.0.0"
NEW_IMAGE = "reg.example/checkout@sha256:" + "f" * 64
FAST = [{"weight": 5, "soakSeconds": 1}, {"weight": 100}]
IGNORE_PATH = ".spec.template.spec.containers[].image"  # docs/gitops.md's jqPathExpression


@dataclass
class GitOpsRig:
    cluster: Any
    op_ns: str
    operator_user: str
    gitops_ns: str
    tool: User  # the GitOps tool's ServiceAccount, with its token
    workdir: Path


def _sa_user(cluster: Any, ns: str, sa: str, workdir: Path) -> User:
    path = workdir / f"{sa}.kubeconfig"
    _service_account_kubeconfig(cluster, ns, sa, path)
    return User(f"system:serviceaccount:{ns}:{sa}", (), path, cluster.kubectl_path)


@pytest.fixture(scope="module")
def rig(calyx_crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitOpsRig]:
    """The chart installed (guard policies included), and the GitOps tool's ServiceAccount."""
    cluster = calyx_crds
    workdir = tmp_path_factory.mktemp("gitops")
    op_ns = cluster.create_namespace(f"calyx-o-{uuid.uuid4().hex[:8]}")
    gitops_ns = cluster.create_namespace(f"argocd-{uuid.uuid4().hex[:8]}")
    release = Release(
        helm_binary(),
        cluster,
        op_ns,
        {
            "replicaCount": 0,  # the operator is this test's process, with the chart SA's token
            "metrics": {"port": free_port()},
            "operator": {"leaseRecheckSeconds": 1, "rolloutTickSeconds": 1},
            "trust": {"signers": yaml.safe_load(signers_yaml(["alice", "sentinel"]))},
        },
    )
    release.install(workdir)
    cluster.kubectl("create", "serviceaccount", "argocd-application-controller", "-n", gitops_ns)
    try:
        yield GitOpsRig(
            cluster=cluster,
            op_ns=op_ns,
            operator_user=f"system:serviceaccount:{op_ns}:{release.name}",
            gitops_ns=gitops_ns,
            tool=_sa_user(cluster, gitops_ns, "argocd-application-controller", workdir),
            workdir=workdir,
        )
    finally:
        release.uninstall()
        cluster.delete_namespace(op_ns)
        cluster.delete_namespace(gitops_ns)


@pytest.fixture
def chart_operator(rig: GitOpsRig, no_operator: None, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator as the chart's ServiceAccount (the shared admin one is paused)."""
    sa = rig.operator_user.rsplit(":", 1)[1]
    kubeconfig = tmp_path / "operator.kubeconfig"
    _service_account_kubeconfig(rig.cluster, rig.op_ns, sa, kubeconfig)
    op = OperatorProcess(str(kubeconfig), tmp_path, env={"CALYX_NAMESPACE": rig.op_ns})
    op.start()
    try:
        yield op
    finally:
        op.stop()


def team_namespace(rig: GitOpsRig) -> str:
    """A namespace the GitOps tool may deploy to (an app project's destination)."""
    ns = rig.cluster.create_namespace(f"calyx-t-{uuid.uuid4().hex[:8]}")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "gitops", "namespace": ns},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]},
            {"apiGroups": ["calyx.io"], "resources": ["leases", "rollouts"], "verbs": ["*"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "gitops", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gitops"},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": "argocd-application-controller",
                "namespace": rig.gitops_ns,
            }
        ],
    }
    for obj in (role, binding):
        rig.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    return ns


def git_repo(ns: str, image: str = GIT_IMAGE) -> dict[str, dict[str, Any]]:
    """What the application's Git directory holds: the Deployment as its team wrote it, and a
    Lease pre-signed by both keys (calyx sign-lease -f) committed together with its Rollout."""
    dep = deployment_body(ns, "checkout", 4, image)
    lease = lease_body(
        ns, "checkout-2", "checkout", {"app": NEW_IMAGE}, constraints={"requireAnalysis": False}
    )
    rollout = rollout_body(ns, "checkout-2", "checkout-2", tiers=FAST)
    return {"deployment": dep, "lease": lease, "rollout": rollout}


def sync(rig: GitOpsRig, *objs: dict[str, Any], force: bool = True) -> Any:
    """One sync of the tool: server-side apply of the desired objects under its field manager
    (``--force-conflicts`` is what Argo CD's ServerSideApply=true and Flux do)."""
    args = ["apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-"]
    if force:
        args.insert(2, "--force-conflicts")
    items = {"apiVersion": "v1", "kind": "List", "items": list(objs)}
    return rig.tool.kubectl(*args, input=json.dumps(items))


def respect_ignore_differences(
    desired: dict[str, Any], live: dict[str, Any], path: str
) -> dict[str, Any]:
    """What Argo CD sends with ``RespectIgnoreDifferences=true``: the desired manifest with every
    field matched by an ignoreDifferences path (``.a.b[].c``, the jqPathExpressions subset the
    docs use) replaced by its live value; list items are paired by name, as containers are
    keyed."""
    out = json.loads(json.dumps(desired))
    parts = path.replace("[]", ".*").strip(".").split(".")

    def walk(want: Any, have: Any, rest: list[str]) -> None:
        head, tail = rest[0], rest[1:]
        if head == "*":
            by_name = {i.get("name"): i for i in have}
            for item in want:
                if item.get("name") in by_name:
                    walk(item, by_name[item["name"]], tail)
            return
        if not tail:
            want[head] = have[head]
            return
        walk(want[head], have[head], tail)

    walk(out, live, parts)
    return out


def image_of(kube: Kube, ns: str) -> str:
    dep = deployment(kube, ns, "checkout") or {}
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def deploy_through_git(rig: GitOpsRig, kube: Kube, ns: str) -> dict[str, dict[str, Any]]:
    repo = git_repo(ns)
    res = sync(rig, repo["deployment"])
    assert res.returncode == 0, res.stderr
    wait_for(
        "stable ready",
        lambda: (
            (deployment(kube, ns, "checkout") or {}).get("status", {}).get("readyReplicas") == 4
        ),
        timeout=60,
    )
    return repo


def template_of(kube: Kube, ns: str) -> dict[str, Any]:
    return dict((deployment(kube, ns, "checkout") or {})["spec"]["template"])


def promote(rig: GitOpsRig, kube: Kube, ns: str, repo: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The commit with the pre-signed Lease and its Rollout, synced; returns the promoted pod
    template (a sync that changes nothing in it starts no new pods)."""
    res = sync(rig, repo["deployment"], repo["lease"], repo["rollout"])
    assert res.returncode == 0, res.stderr
    wait_phase(kube, ns, "checkout-2", "Completed", timeout=90)
    assert image_of(kube, ns) == NEW_IMAGE
    dep = deployment(kube, ns, "checkout") or {}
    owners = {
        m["manager"]
        for m in dep["metadata"]["managedFields"]
        if "f:image" in json.dumps(m.get("fieldsV1", {}))
    }
    assert "calyx-operator" in owners, owners
    return dict(dep["spec"]["template"])


def test_resync_after_promotion(rig: GitOpsRig, kube: Kube, chart_operator: Any) -> None:
    ns = team_namespace(rig)
    try:
        repo = deploy_through_git(rig, kube, ns)
        promoted = promote(rig, kube, ns, repo)

        # a plain server-side apply of the unchanged Git manifest: a conflict, nothing changes
        res = sync(rig, repo["deployment"], force=False)
        assert res.returncode != 0
        assert "conflict" in res.stderr.lower() and "calyx-operator" in res.stderr, res.stderr
        assert image_of(kube, ns) == NEW_IMAGE

        # remedy 2: ignoreDifferences on the image + RespectIgnoreDifferences=true
        live = deployment(kube, ns, "checkout") or {}
        desired = respect_ignore_differences(repo["deployment"], live, IGNORE_PATH)
        res = sync(rig, desired)
        assert res.returncode == 0, res.stderr
        assert image_of(kube, ns) == NEW_IMAGE
        assert template_of(kube, ns) == promoted

        # remedy 1: the pipeline commits the promoted image after DeployCompleted
        res = sync(rig, git_repo(ns, image=NEW_IMAGE)["deployment"])
        assert res.returncode == 0, res.stderr
        assert image_of(kube, ns) == NEW_IMAGE
        assert template_of(kube, ns) == promoted

        # without a remedy, a forced sync of the old Git manifest reverts the promotion
        res = sync(rig, repo["deployment"])
        assert res.returncode == 0, res.stderr
        assert image_of(kube, ns) == GIT_IMAGE, "the failure mode docs/gitops.md warns about"
    finally:
        rig.cluster.delete_namespace(ns)


def test_resync_in_a_guarded_namespace(rig: GitOpsRig, kube: Kube, chart_operator: Any) -> None:
    """With calyx.io/guard=enforce the API server refuses the revert; the remedies pass."""
    ns = team_namespace(rig)
    try:
        repo = deploy_through_git(rig, kube, ns)  # created before the namespace opts in
        rig.cluster.kubectl("label", "namespace", ns, f"{GUARD_LABEL}=enforce")
        wait_guard_active(rig.tool, ns)  # the tool is not exempt: its dry-run create is denied
        promoted = promote(rig, kube, ns, repo)

        res = sync(rig, repo["deployment"])  # forced, the old image
        assert res.returncode != 0, "the guard must refuse the revert"
        assert MESSAGE_PREFIX in res.stderr and rig.tool.name in res.stderr, res.stderr
        assert image_of(kube, ns) == NEW_IMAGE

        live = deployment(kube, ns, "checkout") or {}
        res = sync(rig, respect_ignore_differences(repo["deployment"], live, IGNORE_PATH))
        assert res.returncode == 0, res.stderr
        res = sync(rig, git_repo(ns, image=NEW_IMAGE)["deployment"])
        assert res.returncode == 0, res.stderr
        assert image_of(kube, ns) == NEW_IMAGE
        assert template_of(kube, ns) == promoted

        # scaling from Git stays free under the guard
        scaled = git_repo(ns, image=NEW_IMAGE)["deployment"]
        scaled["spec"]["replicas"] = 6
        res = sync(rig, scaled)
        assert res.returncode == 0, res.stderr
        assert (deployment(kube, ns, "checkout") or {})["spec"]["replicas"] == 6
    finally:
        rig.cluster.kubectl("label", "namespace", ns, f"{GUARD_LABEL}-", check=False)
        rig.cluster.delete_namespace(ns)
