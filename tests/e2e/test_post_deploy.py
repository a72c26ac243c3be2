"""Post-deploy validation with a real Job (issue 6): the Job controller runs it, kwok drives its
pod to Succeeded or Failed (annotation ``calyx.test/phase`` on the pod template), or leaves it
running forever."""

from __future__ import annotations

from typing import Any

import pytest

from calyx.adapters.kube import Kube
from tests.e2e.harness import deployment, reasons, wait_phase
from tests.e2e.test_rollouts import IMG1, IMG2, assert_restored, setup

pytestmark = [pytest.mark.e2e]
TIERS = [{"weight": 5, "soakSeconds": 1}, {"weight": 100}]


def job_template(phase: str | None) -> dict[str, Any]:
    annotations = {"calyx.test/phase": phase} if phase else {}
    return {
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "smoke", "image": "reg.example/smoke:1"}],
                },
            },
        }
    }


def test_validation_job_succeeds_and_completes(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    setup(
        trust,
        kube,
        ns,
        replicas=4,
        tiers=TIERS,
        postDeploy={"jobTemplate": job_template("Succeeded"), "timeoutSeconds": 60},
    )
    st = wait_phase(kube, ns, "r1", "Completed", timeout=90)
    assert st["validation"]["result"] == "Succeeded"
    rs = reasons(kube, ns, "r1")
    assert rs.count("ValidationStarted") == 1 and rs.count("ValidationPassed") == 1
    assert rs.count("DeployCompleted") == 1
    job = kube.get_job(ns, "r1-validate")
    assert job is not None and job["metadata"]["ownerReferences"][0]["name"] == "r1"
    image = deployment(kube, ns, "checkout")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == IMG2


@pytest.mark.parametrize(
    ("phase", "timeout", "result"), [("Failed", 60, "Failed"), (None, 8, "TimedOut")]
)
def test_validation_failure_or_timeout_restores_the_snapshot(
    kube: Kube,
    trust: Any,
    running_operator: Any,
    kube_namespace: str,
    phase: str | None,
    timeout: int,
    result: str,
) -> None:
    ns = kube_namespace
    setup(
        trust,
        kube,
        ns,
        replicas=4,
        tiers=TIERS,
        postDeploy={"jobTemplate": job_template(phase), "timeoutSeconds": timeout},
    )
    wait_phase(kube, ns, "r1", "Validating", timeout=90)
    st = wait_phase(kube, ns, "r1", "RolledBack", timeout=60)
    assert st["validation"]["result"] == result
    assert st["rollback"]["trigger"] == "PostDeployFailed"
    assert_restored(kube, ns, max_revert_seconds=None)
    stable = deployment(kube, ns, "checkout")
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == IMG1
    if result == "TimedOut":
        assert kube.get_job(ns, "r1-validate") is None or kube.get_job(ns, "r1-validate")[
            "metadata"
        ].get("deletionTimestamp")
    assert "DeployCompleted" not in reasons(kube, ns, "r1")
