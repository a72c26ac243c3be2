"""The chart's RBAC is sufficient: the operator, authenticated as the chart's ServiceAccount,
takes a Rollout to 100 % and rolls another one back, with no request refused (issue 7).

The shared admin-credential operator of the e2e suite is stopped for the duration, so every
action here is provably done with the least-privilege token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx_dev.operator_process import OperatorProcess, free_port
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
IMG1, IMG2, IMG3 = "reg.example/shop:1", "reg.example/shop:2", "reg.example/shop:3"


def _signers() -> list[dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(signers_yaml(["alice", "sentinel"])))


def test_chart_service_account_can_roll_out_and_roll_back(
    helm: str,
    calyx_crds: Any,
    kube: Kube,
    operator: OperatorProcess,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    cluster = calyx_crds
    op_ns = kube_namespace
    app_ns = cluster.create_namespace(f"{op_ns}-app")
    operator.stop()
    rel = Release(
        helm,
        cluster,
        op_ns,
        {
            "replicaCount": 0,  # this test runs the operator process itself, with the SA's token
            "metrics": {"port": free_port()},
            "operator": {"leaseRecheckSeconds": 1, "rolloutTickSeconds": 1},
            "trust": {"signers": _signers()},
        },
    )
    rel.install(tmp_path)
    sa_op: OperatorProcess | None = None
    try:
        sas = json.loads(
            cluster.kubectl("get", "serviceaccounts", "-n", op_ns, "-o", "json").stdout
        )["items"]
        sa = next(s["metadata"]["name"] for s in sas if s["metadata"]["name"] != "default")
        kubeconfig = tmp_path / "sa.kubeconfig"
        _service_account_kubeconfig(cluster, op_ns, sa, kubeconfig)
        sa_op = OperatorProcess(str(kubeconfig), tmp_path, env={"CALYX_NAMESPACE": op_ns})
        sa_op.start()

        roll_out_and_roll_back(cluster, kube, app_ns)
        assert_done_by(
            cluster, kube, op_ns, f"system:serviceaccount:{op_ns}:{sa}", sa_op.log_text()
        )
    finally:
        if sa_op is not None:
            sa_op.stop()
        rel.uninstall()
        cluster.delete_namespace(app_ns)
        operator.start()


def roll_out_and_roll_back(cluster: Any, kube: Kube, app_ns: str) -> None:
    """With an operator running: a Rollout of ``checkout`` in ``app_ns`` to 100 %, then a second
    Rollout, force-rolled back at 25 % (the stable Deployment keeps the first one's image)."""
    # 1. A full rollout to 100 %.
    apply_obj(cluster, deployment_body(app_ns, "checkout", 8, IMG1))
    wait_for(
        "stable ready",
        lambda: (
            (deployment(kube, app_ns, "checkout") or {}).get("status", {}).get("readyReplicas") == 8
        ),
        timeout=60,
    )
    apply_obj(
        cluster,
        lease_body(app_ns, "l2", "checkout", {"app": IMG2}, constraints={"requireAnalysis": False}),
    )
    apply_obj(
        cluster,
        rollout_body(
            app_ns,
            "r2",
            "l2",
            tiers=[
                {"weight": 5, "soakSeconds": 2},
                {"weight": 25, "soakSeconds": 2},
                {"weight": 100},
            ],
        ),
    )
    wait_phase(kube, app_ns, "r2", "Completed", timeout=120)

    # 2. A rollback of the next change.
    apply_obj(
        cluster,
        lease_body(app_ns, "l3", "checkout", {"app": IMG3}, constraints={"requireAnalysis": False}),
    )
    apply_obj(
        cluster,
        rollout_body(
            app_ns,
            "r3",
            "l3",
            tiers=[
                {"weight": 5, "soakSeconds": 2},
                {"weight": 25, "soakSeconds": 600},
                {"weight": 100},
            ],
        ),
    )
    wait_for("canary", lambda: replicas_of(kube, app_ns, "checkout-canary") == 3, timeout=60)
    kube.patch_custom(
        "rollouts",
        app_ns,
        "r3",
        {"metadata": {"annotations": {"calyx.io/force-rollback": "rbac"}}},
    )
    wait_phase(kube, app_ns, "r3", "RolledBack", timeout=60)
    stable = deployment(kube, app_ns, "checkout")
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == IMG2


def assert_done_by(cluster: Any, kube: Kube, op_ns: str, user: str, log: str) -> None:
    """The API server's audit log shows writes by ``user`` and no request of it refused; the
    operator's ``log`` has no 403 either; the ledger exists in the operator's namespace."""
    writes = cluster.read_audit_events(user=user)
    assert writes, f"the audit log shows no write by {user}"
    refused = [
        e
        for e in cluster.read_audit_events(user=user, succeeded=False)
        if (e.get("responseStatus") or {}).get("code") == 403
    ]
    assert refused == [], [(e["verb"], e["objectRef"]) for e in refused]
    # HTTP 403 as the kubernetes client and Kopf log it (a bare "403" also occurs in hashes)
    assert "(403)" not in log and "Forbidden" not in log, log[-3000:]
    assert kube.get_configmap(op_ns, "calyx-ledger") is not None
