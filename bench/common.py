"""Shared helpers for the Calyx benchmarks: statistics, raw watches, and the whole environment.

The environment is what the end-to-end tests use (tests/e2e, tests/prom/plugin.py), started by
hand so a benchmark is one ``python bench/<name>.py`` away:

* a local control plane (``LocalCluster``: etcd, kube-apiserver, controller-manager, scheduler,
  kwok nodes whose pods become Running + Ready with fake IPs);
* the traffic simulator, fed the cluster's ``app=checkout`` pods from a **watch** (not a list per
  scrape: at 1000+ pods a list every second would load the 2-core machine more than the operator);
* a real Prometheus scraping it every second;
* the operator as a real ``kopf run`` process (``OperatorProcess``).

Every timestamp is wall-clock (``time.time()``) on one machine, the same clock the API server
and the operator stamp with. Bounded waits only; everything started is stopped in ``close()``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "operator")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from calyx.domain.timefmt import parse_stamp  # noqa: E402
from calyx_dev.operator_process import OPERATOR_NS, OperatorProcess, free_port  # noqa: E402
from calyx_dev.trafficsim import PodInfo, TrafficSim  # noqa: E402

# ---- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between closest ranks (numpy's
    default, Hyndman-Fan type 7); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Iterable[float | None]) -> dict[str, float]:
    """n, min, p50, p95, max and mean of the values that are not None/NaN."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        nan = math.nan
        return {"n": 0, "min": nan, "p50": nan, "p95": nan, "max": nan, "mean": nan}
    return {
        "n": len(xs),
        "min": min(xs),
        "p50": percentile(xs, 50),
        "p95": percentile(xs, 95),
        "max": max(xs),
        "mean": sum(xs) / len(xs),
    }


def fmt(x: float, digits: int = 3) -> str:
    return "—" if math.isnan(x) else f"{x:.{digits}f}"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A Markdown table (pastes into docs/performance.md as it is)."""
    cells = [[str(c) for c in header], *([str(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def parse_time(stamp: str | None) -> float | None:
    """RFC 3339 (``Z`` or offset, optional fraction) to unix seconds."""
    parsed = parse_stamp(stamp)
    return None if parsed is None else parsed.timestamp()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def metric_sum(text: str, name: str, label_filter: str = "") -> float:
    """Sum of every sample of ``name`` in a Prometheus text exposition whose label set matches
    the regex ``label_filter`` (anywhere in ``{...}``)."""
    total = 0.0
    for m in _SAMPLE.finditer(text):
        if m.group(1) != name:
            continue
        if label_filter and not re.search(label_filter, m.group(2) or ""):
            continue
        with contextlib.suppress(ValueError):
            total += float(m.group(3))
    return total


def machine_load() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} CPUs"


# ---- /proc sampling --------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


#: Python processes told apart by their command line (first match wins).
PYTHON_ROLES = (("kopf", "operator"), ("trafficsim", "trafficsim"), ("bench/", "benchmark"))


def cpu_by_process() -> dict[str, float]:
    """utime + stime of every live user-space process, summed by name (``kube-apiserver``,
    ``etcd``, ...; Python processes by :data:`PYTHON_ROLES`): where a saturated machine's CPU
    goes."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                head, tail = fh.read().rsplit(")", 1)
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if not cmdline:  # a kernel thread
            continue
        name = head.split("(", 1)[1]
        if name.startswith("python"):
            name = next((role for hint, role in PYTHON_ROLES if hint in cmdline), "python")
        fields = tail.split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine from /proc/stat (all CPUs)."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return (total - idle) / ticks, total / ticks


class ProcSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread."""

    def __init__(self, pid_fn: Callable[[], int | None], interval: float = 0.5) -> None:
        self.pid_fn = pid_fn
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def start(self) -> ProcSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            pid = self.pid_fn()
            if pid is None:
                continue
            with contextlib.suppress(OSError):
                self.samples.append((time.time(), rss_bytes(pid)))

    def between(self, t0: float, t1: float) -> list[int]:
        return [rss for t, rss in self.samples if t0 <= t <= t1]


# ---- raw watches -----------------------------------------------------------------------------


class RawWatch:
    """List + watch of one collection as plain JSON dicts, in a thread, reconnecting.

    ``on_event(type, obj, received_at)`` is called for every object of the initial list
    (type ``SYNC``) and every watch event, with ``received_at = time.time()`` taken as soon as
    the event's line has arrived. Plain JSON instead of the client's model objects:
    deserialising thousands of pods into models would cost seconds of CPU on the machine whose
    load we measure.
    """

    def __init__(
        self,
        api_client: Any,
        path: str,
        on_event: Callable[[str, dict[str, Any], float], None],
        label_selector: str = "",
        name: str = "watch",
    ) -> None:
        self.api = api_client
        self.path = path
        self.on_event = on_event
        self.label_selector = label_selector
        self._stop = threading.Event()
        self.synced = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> RawWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
        self._thread.join(timeout=5)

    def _get(self, **query: Any) -> Any:
        """GET ``path`` with ``query``: the urllib3 response, not read yet (streamable)."""
        params = [(k, v) for k, v in query.items() if v not in (None, "")]
        method, url, headers, _, _ = self.api.param_serialize(
            "GET",
            self.path,
            query_params=params,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        timeout = None if "watch" in query else 60
        resp = self.api.call_api(method, url, header_params=headers, _request_timeout=timeout)
        raw = resp.response
        if raw.status != 200:
            body = raw.data[:300]
            raise RuntimeError(f"GET {self.path}: HTTP {raw.status}: {body!r}")
        return raw

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = json.loads(self._get(labelSelector=self.label_selector).data)
                now = time.time()
                rv = listing["metadata"]["resourceVersion"]
                for item in listing.get("items", []):
                    self.on_event("SYNC", item, now)
                self.synced.set()
                while rv is not None and not self._stop.is_set():
                    rv = self._stream(rv)
            except Exception as exc:  # keep watching; a benchmark must not die on a blip
                if not self._stop.is_set():
                    import traceback

                    traceback.print_exc()
                    print(f"[watch {self.path}] {type(exc).__name__}: {exc}", file=sys.stderr)
                    self._stop.wait(0.5)

    def _stream(self, rv: str) -> str | None:
        """Follow the watch from ``rv``; the last resourceVersion, or None to relist."""
        resp = self._get(
            labelSelector=self.label_selector,
            watch="true",
            resourceVersion=rv,
            allowWatchBookmarks="true",
            timeoutSeconds=240,
        )
        self._resp = resp
        buf = b""
        try:
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    received = time.time()
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        return None  # 410 Gone: relist
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if ev.get("type") != "BOOKMARK":
                        self.on_event(ev["type"], obj, received)
        finally:
            self._resp = None
            resp.release_conn()
        return rv


class PodCache:
    """The ``app=checkout`` pods of the cluster, kept by a watch: the simulator's pod source
    (Running and not being deleted, as in tests/e2e/test_analysis.py)."""

    def __init__(self, api_client: Any, label_selector: str = "app=checkout") -> None:
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self.watch = RawWatch(
            api_client, "/api/v1/pods", self._on_event, label_selector, name="pod-cache"
        )

    def _on_event(self, kind: str, pod: dict[str, Any], _: float) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        running = (pod.get("status") or {}).get("phase") == "Running"
        with self._lock:
            if kind == "DELETED" or meta.get("deletionTimestamp") or not running:
                self._pods.pop(key, None)
            else:
                c = pod["spec"]["containers"][0]
                self._pods[key] = PodInfo(meta["name"], meta["namespace"], c["image"], c["name"])

    def __call__(self) -> list[PodInfo]:
        with self._lock:
            return list(self._pods.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._pods)


# ---- objects ---------------------------------------------------------------------------------


def service_body(ns: str, app: str = "checkout") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "namespace": ns},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def analysis_spec(
    prom_url: str, interval: int, window: int, failure_limit: int, **extra: Any
) -> dict[str, Any]:
    """All four built-in metrics with their default thresholds."""
    return {
        "intervalSeconds": interval,
        "windowSeconds": window,
        "prometheusURL": prom_url,
        "failureLimit": failure_limit,
        "tes": {"maxDropPercent": 5},
        "errorRate": {"maxPermille": 10},
        "cpu": {"maxPercent": 90},
        "memory": {"maxPercent": 90},
        **extra,
    }


# ---- the environment -------------------------------------------------------------------------


class Env:
    """Cluster + CRDs + trust store + simulator + Prometheus + operator; ``close()`` stops all."""

    def __init__(
        self,
        operator_env: Mapping[str, str] | None = None,
        log: Callable[[str], None] = print,
        nodes: int = 3,
    ) -> None:
        """``nodes``: kwok nodes of 1,000 pods each; a benchmark with more pods needs more."""
        self.log = log
        self.nodes = nodes
        self.operator_env = dict(operator_env or {})
        self.cluster: Any = None
        self.sim: TrafficSim | None = None
        self.prom: Any = None
        self.op: OperatorProcess | None = None
        self.pods: PodCache | None = None
        self.api: Any = None
        self.workdir = Path(tempfile.mkdtemp(prefix="calyx-bench-"))
        self.timings: dict[str, float] = {}

    def __enter__(self) -> Env:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Env:
        from kubernetes import client

        from calyx.api.crdgen import crd_manifests
        from calyx_dev.controlplane import LocalCluster
        from calyx_dev.prometheus import PrometheusServer
        from tests.e2e.harness import trust_configmap

        t = time.monotonic()
        self.cluster = LocalCluster(nodes=self.nodes)
        self.cluster.start()
        self.timings["cluster_start_s"] = round(time.monotonic() - t, 2)
        self.log(f"cluster up in {self.timings['cluster_start_s']} s: {self.cluster.server}")
        self.api = self.cluster.api_client()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.discovery = client.DiscoveryV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        ext = client.ApiextensionsV1Api(self.api)
        for crd in crd_manifests().values():
            ext.create_custom_resource_definition(crd)
        for crd in ("leases.calyx.io", "rollouts.calyx.io"):
            self.cluster.kubectl(
                "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s"
            )
        self.create_namespace(OPERATOR_NS)
        self.core.create_namespaced_config_map(
            OPERATOR_NS, trust_configmap(["alice", "bob", "sentinel", "watcher"])
        )
        self.pods = PodCache(self.api)
        self.pods.watch.start()
        self.sim = TrafficSim(pods_source=self.pods).start()
        (self.workdir / "prom").mkdir()
        self.prom = PrometheusServer([self.sim.address], workdir=self.workdir / "prom")
        self.prom.start()
        self.prom.wait_for('up{job="traffic-sim"} == 1', timeout=30)
        env = {
            "CALYX_ROLLOUT_TICK_SECONDS": "0.5",
            "CALYX_METRICS_PORT": str(free_port()),
            "CALYX_PROMETHEUS_URL": self.prom.url,
            **self.operator_env,
        }
        (self.workdir / "operator").mkdir()
        self.op = OperatorProcess(self.cluster.kubeconfig, self.workdir / "operator", env=env)
        self.op.metrics_port = int(env["CALYX_METRICS_PORT"])
        self.op.start()
        self.wait("operator /metrics", self.operator_metrics_up, timeout=60)
        self.log(f"operator pid {self.operator_pid()} up; prometheus {self.prom.url}")
        return self

    def close(self) -> None:
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("operator", lambda: self.op and self.op.stop()),
            ("prometheus", lambda: self.prom and self.prom.close()),
            ("simulator", lambda: self.sim and self.sim.stop()),
            ("pod watch", lambda: self.pods and self.pods.watch.stop()),
            ("cluster", lambda: self.cluster and self.cluster.stop()),
        ]
        for what, fn in steps:
            try:
                fn()
            except Exception as exc:
                print(f"stopping {what} failed: {exc}", file=sys.stderr)
        if os.environ.get("CALYX_TEST_KEEP"):
            print(f"kept {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def wait(what: str, pred: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = pred()
            except RuntimeError:
                raise
            except Exception as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    def operator_pid(self) -> int | None:
        return self.op.proc.pid if self.op and self.op.proc and self.op.alive() else None

    def operator_metrics(self) -> str:
        import urllib.request

        assert self.op is not None
        url = f"http://127.0.0.1:{self.op.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def operator_metrics_up(self) -> bool:
        if self.op is None or not self.op.alive():
            tail = self.op.log_text()[-3000:] if self.op else ""
            raise RuntimeError("operator exited:\n" + tail)
        try:
            self.operator_metrics()
            return True
        except OSError:
            return False

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})
        self.wait(
            f"serviceaccount {name}/default",
            lambda: (
                self.core.list_namespaced_service_account(
                    name, field_selector="metadata.name=default"
                ).items
            ),
            timeout=30,
        )

    def create(self, obj: Mapping[str, Any]) -> None:
        """Create a Deployment, Service, ConfigMap, Lease or Rollout from a dict."""
        ns = obj["metadata"]["namespace"]
        kind = obj["kind"]
        if kind == "Deployment":
            self.apps.create_namespaced_deployment(ns, obj)
        elif kind == "Service":
            self.core.create_namespaced_service(ns, obj)
        elif kind == "ConfigMap":
            self.core.create_namespaced_config_map(ns, obj)
        elif kind in ("Lease", "Rollout"):
            plural = "leases" if kind == "Lease" else "rollouts"
            self.custom.create_namespaced_custom_object("calyx.io", "v1alpha1", ns, plural, obj)
        else:
            raise ValueError(kind)

    def rollout(self, ns: str, name: str = "r1") -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "calyx.io", "v1alpha1", ns, "rollouts", name
        )
        return obj

    def ready_replicas(self, ns: str, name: str) -> int:
        try:
            d = self.apps.read_namespaced_deployment_status(name, ns)
        except Exception:
            return -1
        return int(d.status.ready_replicas or 0)

    def prom_query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        result: list[dict[str, Any]] = self.prom.api("/api/v1/query", **params)["result"]
        return result


def versions() -> dict[str, str]:
    """Versions of what the benchmarks run (for docs/performance.md)."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    from calyx_dev import build

    out = {"python": platform.python_version()}
    for dist in ("kopf", "kubernetes", "prometheus-api-client"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    try:
        first = subprocess.run(
            ["prometheus", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[0]
        out["prometheus"] = first.split()[2]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    out["kubernetes-binaries"] = build.K8S_VERSION
    out["etcd"] = build.ETCD_VERSION
    out["kwok"] = build.KWOK_VERSION
    return out
