"""pytest fixtures for end-to-end tests against a real Kubernetes API server.

Loaded by ``pytest_plugins = ["tests.cluster.plugin"]`` in tests/conftest.py.

* ``kube_cluster`` (session): by default a :class:`~calyx_dev.controlplane.LocalCluster`
  (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok on 127.0.0.1), built with
  ``python -m calyx_dev.build`` if not cached yet. With ``CALYX_TEST_CLUSTER=external`` it is
  the cluster in ``$KUBECONFIG`` instead (e.g. kind): nothing is built or started, ``audit_log`` is
  None, and the tests that need kwok or the audit log are skipped.
* ``kube_namespace`` (function): a fresh namespace (its ``default`` service account exists), deleted
  afterwards.

Environment:
  CALYX_TEST_CLUSTER=local|external   (default local)
  CALYX_TEST_BUILD=0                  do not build missing binaries; error out instead
  CALYX_TEST_KEEP=1                   keep the local cluster's data dir (logs, audit log)
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from calyx_dev import build as _build
from calyx_dev.controlplane import ClusterBase, ExternalCluster, LocalCluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "late: checks the session cluster over its whole life; runs after every other test",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``late`` tests last (stable order otherwise): a check that needs the cluster to have
    run for minutes then finds it has, instead of waiting for it."""
    items.sort(key=lambda item: "late" in item.keywords)


def _mode() -> str:
    mode = os.environ.get("CALYX_TEST_CLUSTER", "local").strip().lower() or "local"
    if mode not in ("local", "external"):
        raise pytest.UsageError(f"CALYX_TEST_CLUSTER must be 'local' or 'external', not {mode!r}")
    return mode


class _PytestCluster:
    """Thin proxy that turns "not available on this cluster" into pytest.skip."""

    def __init__(self, inner: ClusterBase):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"<kube_cluster {self._inner.kind} {self._inner.kubeconfig}>"

    @property
    def inner(self) -> ClusterBase:
        return self._inner

    def set_pod_ready(self, *args: Any, **kwargs: Any) -> None:
        self._skip_without_kwok()
        self._inner.set_pod_ready(*args, **kwargs)

    def set_pod_phase(self, *args: Any, **kwargs: Any) -> None:
        self._skip_without_kwok()
        self._inner.set_pod_phase(*args, **kwargs)

    def read_audit_events(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        if not self._inner.audit_log:
            pytest.skip(f"{self._inner.kind} cluster: no API server audit log")
        return self._inner.read_audit_events(*args, **kwargs)

    def _skip_without_kwok(self) -> None:
        if isinstance(self._inner, ExternalCluster) and not self._inner.has_kwok:
            pytest.skip("external cluster without kwok nodes: pod state cannot be driven")


@pytest.fixture(scope="session")
def kube_cluster(request: pytest.FixtureRequest) -> Iterator[_PytestCluster]:
    if _mode() == "external":
        yield _PytestCluster(ExternalCluster())
        return
    if not _build.is_built():
        if os.environ.get("CALYX_TEST_BUILD", "1") == "0":
            pytest.fail(
                f"control-plane binaries not built ({_build.bin_dir()}); "
                "run `python -m calyx_dev.build`"
            )
        print(
            "\n[calyx-cluster] binaries not cached: building (slow the first time)",
            file=sys.stderr,
            flush=True,
        )
        _build.build()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    capman = request.config.pluginmanager.get_plugin("capturemanager")

    def log(msg: str) -> None:
        if reporter is None or capman is None:
            return
        with capman.global_and_fixture_disabled():
            reporter.write_line(msg)

    cluster = LocalCluster(log=log, keep_data_dir=os.environ.get("CALYX_TEST_KEEP") == "1")
    cluster.start()
    try:
        yield _PytestCluster(cluster)
    finally:
        cluster.stop()


@pytest.fixture
def kube_namespace(kube_cluster: _PytestCluster) -> Iterator[str]:
    name = f"calyx-t-{uuid.uuid4().hex[:8]}"
    kube_cluster.create_namespace(name)
    try:
        yield name
    finally:
        kube_cluster.delete_namespace(name, wait=False)
