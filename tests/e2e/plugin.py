"""Fixtures for Calyx end-to-end tests: CRDs, trust store, and a live operator process (plugin)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx_dev.operator_process import OPERATOR_NS, OperatorProcess
from tests.e2e.harness import REPO, trust_configmap, wait_for


@pytest.fixture(scope="session")
def calyx_crds(kube_cluster: Any) -> Any:
    kube_cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for crd in ("leases.calyx.io", "rollouts.calyx.io"):
        kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    res = kube_cluster.kubectl("get", "namespace", OPERATOR_NS, check=False)
    if res.returncode != 0:
        kube_cluster.create_namespace(OPERATOR_NS)
    return kube_cluster


@pytest.fixture(scope="session")
def kube(calyx_crds: Any) -> Kube:
    return Kube(calyx_crds.api_client())


def apply_obj(cluster: Any, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(obj))


@pytest.fixture
def trust(calyx_crds: Any) -> Iterator[Any]:
    """The default trust store: alice, bob (human), sentinel, watcher (agent)."""
    calyx_crds.kubectl(
        "delete", "configmap", "calyx-trust", "-n", OPERATOR_NS, "--ignore-not-found"
    )
    apply_obj(calyx_crds, trust_configmap(["alice", "bob", "sentinel", "watcher"]))
    yield calyx_crds


@pytest.fixture(scope="session")
def operator(
    calyx_crds: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_dir: Path = tmp_path_factory.mktemp("operator")
    op = OperatorProcess(calyx_crds.kubeconfig, log_dir)
    op.start()
    _SHARED.append(op)
    try:
        yield op
    finally:
        _SHARED.remove(op)
        op.stop()


_SHARED: list[OperatorProcess] = []


@pytest.fixture
def no_operator() -> Iterator[None]:
    """For tests that write Calyx objects by hand: pause the shared operator if this session
    started one (without starting it otherwise), and bring it back afterwards."""
    paused = [op for op in _SHARED if op.alive()]
    for op in paused:
        op.stop()
    try:
        yield
    finally:
        for op in paused:
            op.start()


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    """The shared operator, restarted if an earlier test killed it."""
    if not operator.alive():
        operator.start()
    wait_for("operator process", operator.alive, timeout=5)
    return operator
