"""A real Kubernetes control plane on loopback, for tests: etcd + kube-apiserver +
kube-controller-manager + kube-scheduler + kwok (fake nodes and kubelets). No Docker.

    from calyx_dev.controlplane import LocalCluster
    with LocalCluster() as cluster:          # ~10 s warm start
        cluster.kubectl("get", "nodes")

Binaries come from :mod:`calyx_dev.build` (``python -m calyx_dev.build``).

Every process runs in its own process group with ``PR_SET_PDEATHSIG=SIGKILL`` (so it dies with the
Python process even on ``kill -9``), is registered for ``atexit`` and SIGTERM/SIGHUP cleanup, and
:meth:`LocalCluster.stop` kills the groups (TERM, then KILL), checks that none of them survives and
removes the data directory. Data directories of clusters whose owner process died are swept at
the next start.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calyx.domain.timefmt import parse_stamp
from calyx_dev import build as _build

HERE = Path(__file__).resolve().parent
KWOK_CONFIG = HERE / "kwok-stages.yaml"
DATA_DIR_PREFIX = "calyx-cluster-"

#: pod annotations understood by the kwok stages in kwok-stages.yaml
READY_ANNOTATION = "calyx.test/ready"
PHASE_ANNOTATION = "calyx.test/phase"

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")

#: node Lease duration kwok sets and renews (every quarter of it), like a kubelet's default
NODE_LEASE_SECONDS = 40

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  # status writes of the built-in workload controllers are frequent: metadata only
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
    resources:
      - group: "apps"
        resources: ["deployments/status", "replicasets/status"]
  # every other write to the workloads Calyx manages, its snapshots and its own resources
  - level: Request
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
    resources:
      - group: "apps"
        resources: ["deployments", "deployments/scale", "replicasets", "replicasets/scale"]
      - group: ""
        resources: ["configmaps"]
      - group: "calyx.io"
  # reads by the ServiceAccounts of namespace calyx-reads, metadata only: the e2e test of the
  # operator's watch caches runs an operator as one and counts its GETs (tests/e2e/test_cache.py)
  - level: Metadata
    verbs: ["get", "list"]
    userGroups: ["system:serviceaccounts:calyx-reads"]
  - level: None
"""


# ----------------------------------------------------------------------------------------------
# process bookkeeping shared by all clusters of this Python process


_LIVE: set[LocalCluster] = set()
_LIVE_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False


def _cleanup_all() -> None:
    with _LIVE_LOCK:
        clusters = list(_LIVE)
    for cluster in clusters:
        with contextlib.suppress(Exception):  # best effort at exit
            cluster.stop()


def _on_signal(signum: int, frame: Any) -> None:  # pragma: no cover - exercised by hand
    _cleanup_all()
    previous = _PREVIOUS_HANDLERS.get(signum)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_PREVIOUS_HANDLERS: dict[int, Any] = {}


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_cleanup_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)
            if previous in (signal.SIG_IGN,):
                continue
            _PREVIOUS_HANDLERS[sig] = previous if callable(previous) else None
            signal.signal(sig, _on_signal)
    # SIGINT raises KeyboardInterrupt, which unwinds through `with` / fixture finalizers.


def die_with_parent() -> None:
    """preexec_fn: die with the parent (Linux), even if it is SIGKILLed.

    Linux ties PR_SET_PDEATHSIG to the *thread* that forked: start processes from a thread that
    lives as long as they should (the main thread, as the fixtures and ``calyx demo`` do)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def sweep_stale_data_dirs(parent: Path | None = None) -> list[Path]:
    """Remove data dirs (and kill process groups) left by clusters whose owner process died."""
    parent = parent or Path(tempfile.gettempdir())
    removed = []
    for d in parent.glob(DATA_DIR_PREFIX + "*"):
        owner = d / "owner.pid"
        try:
            pid = int(owner.read_text())
        except (OSError, ValueError):
            if time.time() - d.stat().st_mtime < 120:  # being created right now
                continue
            pid = -1
        if pid > 0 and pid_alive(pid):
            continue
        for pgid_file in d.glob("pids/*.pgid"):
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int(pgid_file.read_text()), signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


# ----------------------------------------------------------------------------------------------
# audit log


def read_audit_events(
    path: str | os.PathLike[str],
    verbs: Iterable[str] | str | None = WRITE_VERBS,
    resource: str | None = None,
    *,
    group: str | None = None,
    subresource: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
    user: str | None = None,
    since: str | None = None,
    succeeded: bool | None = None,
) -> list[dict[str, Any]]:
    """Audit events (``audit.k8s.io/v1`` Event dicts, stage ``ResponseComplete``) from a JSON log.

    ``verbs``: iterable or single verb; ``None`` for all (default: the write verbs).
    ``resource``: ``"deployments"`` matches the resource and all its subresources;
    ``"deployments/scale"`` only that subresource; ``"rollouts.calyx.io"`` also fixes the group.
    ``group``: API group (``""`` is core). ``subresource``: ``""`` for the main resource only.
    ``since``: RFC 3339 timestamp; only events whose request was received at or after it.
    ``succeeded``: True → only 2xx responses, False → only failed ones.
    """
    if isinstance(verbs, str):
        verbs = (verbs,)
    verb_set = set(verbs) if verbs is not None else None
    if resource and "/" in resource:
        resource, subresource = resource.split("/", 1)
    if resource and "." in resource:
        resource, group = resource.split(".", 1)
    since_ts = _parse_ts(since) if since else None
    out = []
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:  # a line being written right now
                continue
            if ev.get("stage") != "ResponseComplete":
                continue
            if verb_set is not None and ev.get("verb") not in verb_set:
                continue
            ref = ev.get("objectRef") or {}
            if resource is not None and ref.get("resource") != resource:
                continue
            if group is not None and ref.get("apiGroup", "") != group:
                continue
            if subresource is not None and ref.get("subresource", "") != subresource:
                continue
            if namespace is not None and ref.get("namespace") != namespace:
                continue
            if name is not None and ref.get("name") != name:
                continue
            if user is not None and (ev.get("user") or {}).get("username") != user:
                continue
            if (
                since_ts is not None
                and _parse_ts(ev.get("requestReceivedTimestamp", "")) < since_ts
            ):
                continue
            if succeeded is not None:
                code = (ev.get("responseStatus") or {}).get("code", 0)
                if (200 <= code < 300) != succeeded:
                    continue
            out.append(ev)
    return out


def _parse_ts(value: str) -> float:
    parsed = parse_stamp(value)
    return 0.0 if parsed is None else parsed.timestamp()


# ----------------------------------------------------------------------------------------------
# cluster objects


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; unlike CalledProcessError its message includes stderr."""

    def __str__(self) -> str:
        cmd = " ".join(str(a) for a in self.cmd[3:]) if isinstance(self.cmd, list) else self.cmd
        return f"kubectl {cmd} exited {self.returncode}: {(self.stderr or '').strip()}"


class ClusterBase:
    """What tests get from the ``kube_cluster`` fixture (local or external)."""

    kubeconfig: str
    audit_log: str | None = None
    kubectl_path: str
    kind: str = "base"

    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG set to this cluster (for subprocesses, e.g. the operator)."""
        return dict(os.environ, KUBECONFIG=self.kubeconfig)

    def kubectl(
        self, *args: str, input: str | bytes | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster (text output); raises on failure if check."""
        argv = [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args]
        if isinstance(input, bytes):
            input = input.decode()
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def api_client(self) -> Any:
        """A fresh ``kubernetes.client.ApiClient`` for this cluster."""
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 60,
        interval: float = 0.25,
        what: str = "condition",
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = predicate()
            except subprocess.CalledProcessError as exc:
                last = exc.stderr
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
            time.sleep(interval)

    # -- pod state helpers (kwok) -------------------------------------------------------------

    def _require_kwok(self) -> None:
        pass

    def set_pod_ready(
        self, namespace: str, pod_name: str, ready: bool, timeout: float = 30
    ) -> None:
        """Make a Running pod (Not)Ready and wait until its Ready condition says so."""
        self._require_kwok()
        self.wait_for(
            lambda: self._pod_phase(namespace, pod_name) == "Running",
            timeout,
            what=f"pod {namespace}/{pod_name} Running",
        )
        value = "true" if ready else "false"
        self.kubectl(
            "annotate",
            "--overwrite",
            "-n",
            namespace,
            "pod",
            pod_name,
            f"{READY_ANNOTATION}={value}",
        )
        want = "True" if ready else "False"
        self.wait_for(
            lambda: self._pod_condition(namespace, pod_name, "Ready") == want,
            timeout,
            what=f"pod {namespace}/{pod_name} Ready={want}",
        )

    def set_pod_phase(self, namespace: str, pod_name: str, phase: str, timeout: float = 30) -> None:
        """Terminate a Running pod as ``Succeeded`` (exit 0) or ``Failed`` (exit 1); wait for it."""
        if phase not in ("Succeeded", "Failed"):
            raise ValueError(f"phase must be Succeeded or Failed, not {phase!r}")
        self._require_kwok()
        self.wait_for(
            lambda: self._pod_phase(namespace, pod_name) in ("Running", phase),
            timeout,
            what=f"pod {namespace}/{pod_name} Running",
        )
        self.kubectl(
            "annotate",
            "--overwrite",
            "-n",
            namespace,
            "pod",
            pod_name,
            f"{PHASE_ANNOTATION}={phase}",
        )
        self.wait_for(
            lambda: self._pod_phase(namespace, pod_name) == phase,
            timeout,
            what=f"pod {namespace}/{pod_name} phase {phase}",
        )

    def _pod_phase(self, namespace: str, pod_name: str) -> str:
        return self.kubectl(
            "get", "-n", namespace, "pod", pod_name, "-o", "jsonpath={.status.phase}"
        ).stdout

    def _pod_condition(self, namespace: str, pod_name: str, ctype: str) -> str:
        return self.kubectl(
            "get",
            "-n",
            namespace,
            "pod",
            pod_name,
            "-o",
            f'jsonpath={{.status.conditions[?(@.type=="{ctype}")].status}}',
        ).stdout

    def read_audit_events(
        self,
        verbs: Iterable[str] | str | None = WRITE_VERBS,
        resource: str | None = None,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """See :func:`read_audit_events`. Raises RuntimeError when the cluster has no audit log."""
        if not self.audit_log:
            raise RuntimeError(f"{self.kind} cluster has no audit log")
        return read_audit_events(self.audit_log, verbs, resource, **filters)

    # -- namespaces ------------------------------------------------------------------------------

    def create_namespace(self, name: str, timeout: float = 30) -> str:
        self.kubectl("create", "namespace", name)
        # pods are rejected until the service-account controller made "default"
        self.wait_for(
            lambda: (
                self.kubectl("get", "-n", name, "serviceaccount", "default", check=False).returncode
                == 0
            ),
            timeout,
            what=f"serviceaccount {name}/default",
        )
        return name

    def delete_namespace(self, name: str, wait: bool = False) -> None:
        self.kubectl(
            "delete", "namespace", name, "--ignore-not-found", f"--wait={str(wait).lower()}"
        )


class ExternalCluster(ClusterBase):
    """Any cluster reachable through $KUBECONFIG (e.g. kind). No audit log, no kwok."""

    kind = "external"

    def __init__(self, kubeconfig: str | None = None, kubectl_path: str | None = None):
        kubeconfig = (
            kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        )
        self.kubeconfig = kubeconfig.split(os.pathsep)[0]
        if kubectl_path is None:
            built = _build.bin_dir() / "kubectl"
            kubectl_path = str(built) if built.exists() else (shutil.which("kubectl") or "kubectl")
        self.kubectl_path = kubectl_path
        self.audit_log = None
        self.has_kwok = self._detect_kwok()

    def _detect_kwok(self) -> bool:
        proc = self.kubectl(
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].metadata.annotations.kwok\\.x-k8s\\.io/node}",
            check=False,
        )
        return "fake" in proc.stdout

    def _require_kwok(self) -> None:
        if not self.has_kwok:
            raise NotImplementedError(
                "pod state helpers need kwok-managed nodes (not available on this cluster)"
            )


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)

    def mark(self, step: str, t0: float) -> None:
        self.steps[step] = round(time.monotonic() - t0, 2)


class LocalCluster(ClusterBase):
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1."""

    kind = "local"

    def __init__(
        self,
        bin_dir: str | os.PathLike[str] | None = None,
        nodes: int = 3,
        node_capacity: dict[str, str] | None = None,
        log: Any = None,
        keep_data_dir: bool = False,
    ):
        self.bin_dir = Path(bin_dir) if bin_dir else _build.bin_dir()
        self.node_count = nodes
        self.node_capacity = node_capacity or {"cpu": "32", "memory": "256Gi", "pods": "1000"}
        self.keep_data_dir = keep_data_dir
        self._log_fn = log or (lambda msg: None)
        self.procs: list[_Proc] = []
        self.ports: dict[str, int] = {}
        self.data_dir: Path | None = None
        self.timings = Timings()
        self.kubectl_path = str(self.bin_dir / "kubectl")
        self.kubeconfig = ""
        self.audit_log = None
        self.server = ""
        self._stopped = False

    # -- context manager ---------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __hash__(self) -> int:
        return id(self)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 90, attempts: int = 2) -> LocalCluster:
        """Start everything and wait until nodes are Ready; retried once from scratch (a port
        picked as free can be taken by someone else before the component binds it)."""
        if not _build.is_built(self.bin_dir):
            raise RuntimeError(
                f"control-plane binaries missing in {self.bin_dir}: run `python -m calyx_dev.build`"
            )
        _install_handlers()
        sweep_stale_data_dirs()
        for attempt in range(1, attempts + 1):
            self._stopped = False
            self.procs, self.ports, self.timings = [], {}, Timings()
            t_start = time.monotonic()
            self.data_dir = Path(tempfile.mkdtemp(prefix=DATA_DIR_PREFIX))
            (self.data_dir / "owner.pid").write_text(str(os.getpid()))
            (self.data_dir / "pids").mkdir()
            (self.data_dir / "logs").mkdir()
            with _LIVE_LOCK:
                _LIVE.add(self)
            try:
                self._start(timeout, t_start)
            except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
                self._dump_logs_tail()
                self.stop()
                if attempt == attempts:
                    raise
                self._log(f"start attempt {attempt} failed ({exc}); retrying")
                continue
            except BaseException:
                self.stop()
                raise
            break
        self.timings.steps["total"] = round(time.monotonic() - t_start, 2)
        self._log(
            f"cluster up in {self.timings.steps['total']:.1f}s: {self.server} ({self.data_dir})"
        )
        return self

    def _start(self, timeout: float, t_start: float) -> None:
        d = self.data_dir
        assert d is not None
        deadline = t_start + timeout
        for key in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler"):
            self.ports[key] = free_port()
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"

        t0 = time.monotonic()
        pki = _make_pki(d / "pki")
        self.timings.mark("certs", t0)
        self.kubeconfig = str(d / "admin.kubeconfig")
        for name, user in (
            ("admin", "admin"),
            ("controller-manager", "controller-manager"),
            ("scheduler", "scheduler"),
        ):
            _write_kubeconfig(d / f"{name}.kubeconfig", self.server, pki, user)
        (d / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self.audit_log = str(d / "audit.log")

        t0 = time.monotonic()
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                "--name=calyx",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=calyx={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ],
        )
        self._wait_http(
            f"{etcd_url}/health", deadline, "etcd", ok=lambda body: b'"health":"true"' in body
        )
        self.timings.mark("etcd", t0)

        t0 = time.monotonic()
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={pki['apiserver.crt']}",
                f"--tls-private-key-file={pki['apiserver.key']}",
                f"--client-ca-file={pki['ca.crt']}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki['sa.pub']}",
                f"--service-account-signing-key-file={pki['sa.key']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",  # loopback is not a valid endpoint IP
                "--allow-privileged=true",
                f"--audit-policy-file={d / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=0",
                "--audit-log-maxbackup=0",
                "--profiling=false",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
                "--v=1",
            ],
        )
        self._wait_http(f"{self.server}/readyz", deadline, "kube-apiserver", tls=pki)
        self.timings.mark("apiserver", t0)

        t0 = time.monotonic()
        kc = {n: str(d / f"{n}.kubeconfig") for n in ("controller-manager", "scheduler", "admin")}
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kc['controller-manager']}",
                f"--authentication-kubeconfig={kc['controller-manager']}",
                f"--authorization-kubeconfig={kc['controller-manager']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--service-account-private-key-file={pki['sa.key']}",
                f"--root-ca-file={pki['ca.crt']}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki['ca.crt']}",
                f"--cluster-signing-key-file={pki['ca.key']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--v=1",
            ],
        )
        sched_cfg = d / "scheduler-config.yaml"
        sched_cfg.write_text(
            textwrap.dedent(f"""\
            apiVersion: kubescheduler.config.k8s.io/v1
            kind: KubeSchedulerConfiguration
            clientConnection:
              kubeconfig: {kc["scheduler"]}
              qps: 200
              burst: 400
            leaderElection:
              leaderElect: false
            """)
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--config={sched_cfg}",
                f"--authentication-kubeconfig={kc['scheduler']}",
                f"--authorization-kubeconfig={kc['scheduler']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                "--v=1",
            ],
        )
        self._spawn(
            "kwok",
            [
                f"--config={KWOK_CONFIG}",
                f"--kubeconfig={kc['admin']}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=10.127.0.1",
                "--cidr=10.128.0.0/12",
                # kwok renews each node's Lease in kube-node-lease every duration/4 (10 s), as a
                # kubelet does. Without it (kwok's own default is 0, i.e. off: only kwokctl sets
                # 40) nothing renews the leases, the node lifecycle controller marks every node
                # NotReady after its 50 s grace period, and their pods NotReady with them.
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            ],
        )
        self._create_nodes()
        self._wait_http(
            f"https://127.0.0.1:{self.ports['controller-manager']}/healthz",
            deadline,
            "kube-controller-manager",
            tls=pki,
        )
        self._wait_http(
            f"https://127.0.0.1:{self.ports['scheduler']}/healthz",
            deadline,
            "kube-scheduler",
            tls=pki,
        )
        self.timings.mark("controllers", t0)

        t0 = time.monotonic()
        remaining = max(5.0, deadline - time.monotonic())
        self.wait_for(self._nodes_ready, remaining, what="kwok nodes Ready")
        self.wait_for(
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            max(5.0, deadline - time.monotonic()),
            what="serviceaccount default/default",
        )
        self.timings.mark("nodes+sa", t0)

    def _create_nodes(self) -> None:
        cap = self.node_capacity
        docs = []
        for i in range(self.node_count):
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"kwok-node-{i}",
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "kubernetes.io/hostname": f"kwok-node-{i}",
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                            "topology.kubernetes.io/zone": f"zone-{i % 3}",
                        },
                    },
                    "spec": {},
                    "status": {
                        "allocatable": dict(cap),
                        "capacity": dict(cap),
                        # kwok keeps what is set here (else it reports "kwok-v0.8.0")
                        "nodeInfo": {
                            "kubeletVersion": _build.K8S_VERSION,
                            "kubeProxyVersion": _build.K8S_VERSION,
                            "containerRuntimeVersion": f"kwok://{_build.KWOK_VERSION}",
                            "kernelVersion": f"kwok-{_build.KWOK_VERSION}",
                            "osImage": "kwok",
                            "operatingSystem": "linux",
                            "architecture": "amd64",
                            "machineID": f"kwok-node-{i}",
                            "systemUUID": f"kwok-node-{i}",
                            "bootID": f"kwok-node-{i}",
                        },
                    },
                }
            )
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        )

    def _nodes_ready(self) -> bool:
        out = self.kubectl(
            "get",
            "nodes",
            "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        ).stdout.split()
        for proc in self.procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"{proc.name} exited with {proc.popen.returncode}; see {proc.log}"
                )
        return len(out) == self.node_count and all(s == "True" for s in out)

    def _spawn(self, name: str, args: Sequence[str]) -> _Proc:
        assert self.data_dir is not None
        log = self.data_dir / "logs" / f"{name}.log"
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=die_with_parent,
                env={k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
                | {"HOME": str(self.data_dir)},
            )
        (self.data_dir / "pids" / f"{name}.pgid").write_text(str(popen.pid))
        proc = _Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def _wait_http(
        self,
        url: str,
        deadline: float,
        what: str,
        tls: dict[str, str] | None = None,
        ok: Callable[[bytes], bool] = lambda body: body.strip() == b"ok",
    ) -> None:
        ctx = None
        if url.startswith("https"):
            ctx = (
                ssl.create_default_context(cafile=tls["ca.crt"])
                if tls
                else ssl.create_default_context()
            )
            if tls:
                ctx.load_cert_chain(tls["admin.crt"], tls["admin.key"])
            if "127.0.0.1:" + str(self.ports.get("apiserver")) not in url:
                ctx.check_hostname = False  # self-signed serving certs of cm / scheduler
                ctx.verify_mode = ssl.CERT_NONE
        last = ""
        while True:
            for proc in self.procs:
                if proc.popen.poll() is not None:
                    raise RuntimeError(
                        f"{proc.name} exited with {proc.popen.returncode} "
                        f"while waiting for {what}; see {proc.log}"
                    )
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    body = resp.read()
                    if ok(body):
                        return
                    last = body[:200].decode(errors="replace")
            except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not healthy at {url}: {last}")
            time.sleep(0.1)

    def stop(self, grace: float = 5) -> None:
        """Stop every process group in reverse start order (clients, API server, etcd): SIGTERM,
        then SIGKILL after ``grace`` seconds; reap them; delete the data dir."""
        if self._stopped:
            return
        self._stopped = True
        for proc in reversed(self.procs):
            _signal_group(proc.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(grace)
            _signal_group(proc.popen.pid, signal.SIGKILL)  # stragglers, grandchildren if any
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self.data_dir and not self.keep_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self._log(f"cluster stopped ({self.server})")

    @property
    def log_dir(self) -> Path | None:
        """Component logs (etcd.log, kube-apiserver.log, ...); gone after stop() unless kept."""
        return self.data_dir / "logs" if self.data_dir else None

    def pids(self) -> list[int]:
        return [p.popen.pid for p in self.procs]

    def _dump_logs_tail(self, lines: int = 15) -> None:
        for proc in self.procs:
            try:
                text = proc.log.read_text(errors="replace").splitlines()
                tail = [ln for ln in text if "configmap_cafile_content" not in ln][-lines:]
            except OSError:
                continue
            self._log(f"--- last lines of {proc.name} ---\n" + "\n".join(tail))

    def _log(self, msg: str) -> None:
        self._log_fn(f"[calyx-cluster] {msg}")


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ----------------------------------------------------------------------------------------------
# PKI with the openssl CLI (EC P-256: fast to generate)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr}")


def _make_pki(pki: Path) -> dict[str, str]:
    if not shutil.which("openssl"):
        raise RuntimeError("openssl is required to create the test cluster's certificates")
    pki.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=calyx-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=pki,
    )

    def leaf(name: str, subj: str, server: bool) -> None:
        _openssl(
            "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=pki
        )
        ext = pki / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
        if server:
            lines.append("extendedKeyUsage=serverAuth,clientAuth")
            lines.append(
                "subjectAltName=IP:127.0.0.1,IP:" + SERVICE_IP + ",DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
            )
        else:
            lines.append("extendedKeyUsage=clientAuth")
        ext.write_text("\n".join(lines) + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "3650",
            "-extfile",
            ext.name,
            cwd=pki,
        )

    leaf("apiserver", "/CN=kube-apiserver", server=True)
    leaf("admin", "/O=system:masters/CN=calyx-admin", server=False)
    leaf("controller-manager", "/CN=system:kube-controller-manager", server=False)
    leaf("scheduler", "/CN=system:kube-scheduler", server=False)
    # service-account token signing key pair
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-out",
        "sa.key",
        cwd=pki,
    )
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    return {f.name: str(f) for f in pki.iterdir()}


def _write_kubeconfig(path: Path, server: str, pki: dict[str, str], user: str) -> None:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "calyx-local",
                "cluster": {"server": server, "certificate-authority": pki["ca.crt"]},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": pki[f"{user}.crt"],
                    "client-key": pki[f"{user}.key"],
                },
            }
        ],
        "contexts": [
            {
                "name": "calyx-local",
                "context": {"cluster": "calyx-local", "user": user, "namespace": "default"},
            }
        ],
        "current-context": "calyx-local",
    }
    path.write_text(json.dumps(cfg, indent=2) + "\n")  # JSON is valid YAML


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m calyx_dev.controlplane [--hold]``: start a cluster, print its kubeconfig, and
    (with --hold) keep it until Ctrl-C; handy for poking at it with kubectl."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m calyx_dev.controlplane")
    parser.add_argument("--hold", action="store_true", help="keep running until interrupted")
    args = parser.parse_args(argv)
    cluster = LocalCluster(log=print)
    with cluster:
        print(json.dumps(cluster.timings.steps))
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"alias kubectl={cluster.kubectl_path}")
        if args.hold:
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
