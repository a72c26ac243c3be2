"""The environment ``calyx demo`` plays in: a local control plane, real Prometheus, the traffic
simulator and the operator, all on loopback with free ports and temporary directories.

    stack = DemoStack(workdir, log=print)
    try:
        stack.start()          # cluster (~5 s warm), CRDs, Prometheus, simulator, operator
        ...
    finally:
        stack.stop()           # operator, Prometheus, simulator, cluster; temp dirs removed
        assert not stack.survivors()

The simulator serves metrics for exactly the pods that exist in the demo namespace, by image, so
"the new image is bad" is one :meth:`TrafficSim.set_profile` call.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calyx.adapters.kube import Kube
from calyx.api.crdgen import crd_manifests
from calyx_dev.controlplane import LocalCluster, pid_alive
from calyx_dev.operator_process import OPERATOR_NS, OperatorProcess
from calyx_dev.prometheus import PrometheusServer
from calyx_dev.trafficsim import PodInfo, TrafficSim

__all__ = ["OPERATOR_NS", "DemoStack", "pid_alive"]


class DemoStack:
    """Everything the demo needs, started in order and stopped in reverse."""

    def __init__(
        self,
        workdir: Path,
        namespace: str,
        log: Callable[[str], None],
        app_label: str = "checkout",
    ) -> None:
        self.workdir = workdir
        self.namespace = namespace
        self.app_label = app_label
        self.log = log
        self.cluster: LocalCluster | None = None
        self.sim: TrafficSim | None = None
        self.prom: PrometheusServer | None = None
        self.operator: OperatorProcess | None = None
        self.kube: Kube | None = None
        self._sim_kube: Kube | None = None
        self._pids: list[int] = []
        self._dirs: list[Path] = []

    # -- start -----------------------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        self.cluster = LocalCluster(nodes=3)
        self.cluster.start()
        self._pids += self.cluster.pids()
        if self.cluster.data_dir is not None:
            self._dirs.append(self.cluster.data_dir)
        self.kube = Kube(self.cluster.api_client())
        self.log(
            f"control plane  {self.cluster.server}  (etcd, kube-apiserver, controller-manager, "
            f"scheduler, kwok with 3 nodes; up in {time.monotonic() - t0:.1f}s)"
        )

        t0 = time.monotonic()
        self._install_crds()
        self.cluster.create_namespace(OPERATOR_NS)
        self.cluster.create_namespace(self.namespace)
        self.log(
            "CRDs           leases.calyx.io, rollouts.calyx.io Established; namespaces "
            f"{OPERATOR_NS}, {self.namespace} ({time.monotonic() - t0:.1f}s)"
        )

        self._sim_kube = Kube(self.cluster.api_client())  # the simulator's own HTTP thread
        self.sim = TrafficSim(pods_source=self._cluster_pods).start()
        self.log(
            f"traffic sim    {self.sim.url}/metrics  (per-pod requests, errors, TES, CPU, memory "
            f"for the pods of namespace {self.namespace}, by image)"
        )

        t0 = time.monotonic()
        (self.workdir / "prometheus").mkdir(parents=True, exist_ok=True)
        self.prom = PrometheusServer([self.sim.address], workdir=self.workdir / "prometheus")
        self.prom.start()
        if self.prom._proc is not None:
            self._pids.append(self.prom._proc.pid)
        self.prom.wait_for('up{job="traffic-sim"} == 1', timeout=30)
        self.log(
            f"prometheus     {self.prom.url}  (real Prometheus, scraping the simulator every 1s; "
            f"ready in {time.monotonic() - t0:.1f}s)"
        )

        log_dir = self.workdir / "operator"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.operator = OperatorProcess(
            self.cluster.kubeconfig, log_dir, env={"CALYX_PROMETHEUS_URL": self.prom.url}
        )
        self.operator.start()
        if self.operator.proc is not None:
            self._pids.append(self.operator.proc.pid)
        self.log(
            f"operator       kopf run -m calyx.handlers.operator (pid {self._pids[-1]}, "
            f"namespace {OPERATOR_NS}, log {self.operator.log_path})"
        )

    def _install_crds(self) -> None:
        assert self.cluster is not None
        items = list(crd_manifests().values())
        self.cluster.kubectl(
            "apply",
            "--server-side",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        for crd in items:
            self.cluster.kubectl(
                "wait",
                "--for=condition=Established",
                f"crd/{crd['metadata']['name']}",
                "--timeout=60s",
            )

    def _cluster_pods(self) -> list[PodInfo]:
        """Running, not terminating pods of the demo app, as the simulator should see them."""
        kube = self._sim_kube
        if kube is None:
            return []
        try:
            pods = kube.core.list_namespaced_pod(
                self.namespace, label_selector=f"app={self.app_label}"
            ).items
        except Exception:  # the cluster is going away: no pods, no error in the HTTP thread
            return []
        out = []
        for p in pods:
            if p.metadata.deletion_timestamp or p.status.phase != "Running":
                continue
            c = p.spec.containers[0]
            out.append(PodInfo(p.metadata.name, p.metadata.namespace, c.image, c.name))
        return out

    # -- stop ------------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> str:
        assert self.cluster is not None
        return self.cluster.kubeconfig

    def pids(self) -> list[int]:
        """Every process the stack started (cluster components, Prometheus, operator)."""
        return list(self._pids)

    def stop(self) -> None:
        """Stop everything, in reverse order; never raises. Idempotent."""
        if self.operator is not None:
            with contextlib.suppress(Exception):
                self.operator.stop()
        if self.prom is not None:
            with contextlib.suppress(Exception):
                self.prom.close()
        if self.sim is not None:
            with contextlib.suppress(Exception):
                self.sim.stop()
        for kube in (self._sim_kube, self.kube):
            if kube is not None:
                with contextlib.suppress(Exception):
                    kube.api.close()
        self._sim_kube = None
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.stop()
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)

    def survivors(self, wait: float = 5.0) -> list[int]:
        """Pids the stack started that are still alive (after waiting up to ``wait`` s)."""
        deadline = time.monotonic() + wait
        while True:
            alive = [pid for pid in self._pids if pid_alive(pid)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)

    def operator_log_path(self) -> Path | None:
        return self.operator.log_path if self.operator is not None else None

    def operator_log_tail(self, lines: int = 15) -> str:
        """The operator log's last lines (for a failure report), or ""."""
        path = self.operator_log_path()
        try:
            text = path.read_text(errors="replace") if path else ""
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def leftover_dirs(self) -> list[Path]:
        return [d for d in self._dirs if d.exists()]

    def info(self) -> dict[str, Any]:
        return {
            "kubeconfig": self.cluster.kubeconfig if self.cluster else None,
            "prometheus": self.prom.url if self.prom else None,
            "simulator": self.sim.url if self.sim else None,
        }
