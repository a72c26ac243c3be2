"""The operator image: its size, what building it costs, how fast it starts (docs/performance.md).

    .venv/bin/python bench/image_startup.py                 # sizes, warm reuse, 5 starts per mode
    .venv/bin/python bench/image_startup.py --cold          # also a cold build in a scratch cache
    .venv/bin/python bench/image_startup.py --runs 10 --json out.json

**Image.** ``tools/image.py`` builds (or finds cached) the image of this checkout: the Dockerfile
on an mmdebstrap Debian bookworm + python3 base, with buildah. Reported: the size of its layers
(uncompressed, as ``docker images`` shows it) and of the base; what a registry would store and a
node pull (the layers gzip-compressed, ``buildah push --compression-format gzip`` to an OCI
layout); the biggest packages in ``/opt/calyx``; the warm reuse time (the cache lookup a CI run
makes); with ``--cold``, a cold build (base + image) into a scratch cache.

**Start-up.** A local control plane (``LocalCluster``), the CRDs, a trust store, and before each
start a fresh namespace with one cosigned Lease. The operator is started, stopped with SIGTERM and
started again, alternating two modes:

* ``image``: the image's root filesystem with its config's Entrypoint and User, under
  ``buildah run --isolation chroot`` (host network), as tests/packaging/test_image_build.py runs it;
* ``host``: the same ``kopf run`` command from the development venv, as a plain process (as the
  benchmark's user, root here), for comparison.

From the moment the process is started (``Popen``) it measures: ``/healthz`` answering 200 (Kopf
is up: the chart's liveness probe), and the Lease's ``status.phase`` becoming ``Verified`` (the
first reconcile), polled through the API every 20 ms; and the time SIGTERM takes to stop it.
``buildah run`` of ``true`` in the same container gives the runtime's own overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "operator")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from tools import image as image_tool  # noqa: E402

UID = 65532
SITE = "opt/calyx/lib/python3.11/site-packages"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"min {min(values):.2f} / median {statistics.median(values):.2f} / max {max(values):.2f} s"
        f" (n={len(values)})"
    )


# ---- sizes and builds ------------------------------------------------------------------------


def compressed_size(store: image_tool.Store, ref: str) -> int:
    """Bytes of the image's layers gzip-compressed, as pushed to a registry."""
    with tempfile.TemporaryDirectory(prefix="calyx-oci-") as tmp:
        image_tool.buildah(
            store, "push", "--compression-format", "gzip", ref, f"oci:{tmp}/oci", timeout=600
        )
        index = json.loads((Path(tmp) / "oci" / "index.json").read_text())
        digest = index["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.loads((Path(tmp) / "oci" / "blobs" / "sha256" / digest).read_text())
        return sum(int(layer["size"]) for layer in manifest["layers"])


def biggest_packages(ref: str, n: int = 6) -> list[tuple[str, int]]:
    with image_tool.Container(ref) as ctr:
        site = ctr.mount() / SITE
        sizes = []
        for entry in site.iterdir():
            if entry.is_dir():
                total = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
                sizes.append((entry.name, total))
        total_venv = sum(
            p.stat().st_size for p in (ctr.mount() / "opt" / "calyx").rglob("*") if p.is_file()
        )
    return [("/opt/calyx (all)", total_venv), *sorted(sizes, key=lambda s: -s[1])[:n]]


def cold_build() -> dict[str, Any]:
    """Base + image from nothing, in a scratch cache (the real cache is left alone)."""
    scratch = Path(tempfile.mkdtemp(prefix="calyx-cold-cache-"))
    env = {**os.environ, "CALYX_CACHE": str(scratch)}
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(REPO / "tools" / "image.py"), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        total = time.monotonic() - t0
        if proc.returncode != 0:
            raise SystemExit(f"cold build failed:\n{proc.stderr[-3000:]}")
        built = json.loads(proc.stdout)
        base = json.loads(next((scratch / "image").glob("base-*.json")).read_text())
        return {
            "total_s": round(total, 1),
            "base_s": base["build_seconds"],
            "base_steps": base["steps"],
            "bud_s": built["build_seconds"],
        }
    finally:
        store = ["--root", str(scratch / "image" / "storage")]
        store += ["--runroot", str(scratch / "image" / "run")]
        subprocess.run(["buildah", *store, "rmi", "--all", "--force"], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


# ---- start-up --------------------------------------------------------------------------------


class Run:
    """One operator start against ``cluster`` in ``mode`` ("image" or "host")."""

    def __init__(
        self, cluster: Any, custom: Any, mode: str, ref: str, work: Path, run_no: int
    ) -> None:
        self.cluster, self.custom, self.mode, self.ref = cluster, custom, mode, ref
        self.work = work / f"{mode}-{run_no}"
        self.work.mkdir(parents=True)
        self.ns = f"img-start-{mode}-{run_no}"
        self.health_port = _free_port()

    def lease(self) -> None:
        from tests.e2e.harness import lease_body

        self.cluster.create_namespace(self.ns)
        body = lease_body(self.ns, "l1", "checkout", {"app": "reg.example/checkout:2"})
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(body))

    def phase(self) -> str | None:
        obj = self.custom.get_namespaced_custom_object(
            "calyx.io", "v1alpha1", self.ns, "leases", "l1"
        )
        return str((obj.get("status") or {}).get("phase") or "") or None

    def measure(self, timeout: float = 90) -> dict[str, float]:
        self.lease()
        argv_tail = [f"--liveness=http://0.0.0.0:{self.health_port}/healthz"]
        env = {
            "CALYX_NAMESPACE": "calyx-system",
            "CALYX_METRICS_PORT": str(_free_port()),
            "POD_NAME": f"bench-{self.mode}",  # one identity: a restart in place
        }
        log_path = self.work / "operator.log"
        out: dict[str, float] = {}
        with open(log_path, "wb") as log:
            if self.mode == "image":
                out |= self._run_image(argv_tail, env, log, timeout)
            else:
                out |= self._run_host(argv_tail, env, log, timeout)
        return out

    def _wait(self, proc: subprocess.Popen[bytes], t0: float, timeout: float) -> dict[str, float]:
        health = f"http://127.0.0.1:{self.health_port}/healthz"
        out: dict[str, float] = {}
        deadline = t0 + timeout
        while time.monotonic() < deadline and ("healthz_s" not in out or "verified_s" not in out):
            if proc.poll() is not None:
                log = (self.work / "operator.log").read_text(errors="replace")
                raise SystemExit(
                    f"{self.mode}: operator exited ({proc.returncode}):\n{log[-3000:]}"
                )
            now = time.monotonic()
            if "healthz_s" not in out and _get(health) == 200:
                out["healthz_s"] = now - t0
            if "verified_s" not in out and self.phase() == "Verified":
                out["verified_s"] = now - t0
            time.sleep(0.02)
        if len(out) < 2:
            log = (self.work / "operator.log").read_text(errors="replace")
            raise SystemExit(f"{self.mode}: not ready within {timeout}s: {out}\n{log[-3000:]}")
        return out

    def _exit(self, code: int | None) -> float:
        """The exit status after SIGTERM; anything but 0 is reported with the log's tail."""
        if code != 0:
            tail = (self.work / "operator.log").read_text(errors="replace")[-1500:]
            print(f"  {self.mode}: exit {code} after SIGTERM; log tail:\n{tail}", flush=True)
        return float(-1 if code is None else code)

    def _kubeconfig(self) -> Path:
        secrets = self.work / "secrets"
        secrets.mkdir()
        target = secrets / "kubeconfig"
        # certificates inline: the files the admin kubeconfig names are not inside the image
        flat = self.cluster.kubectl("config", "view", "--raw", "--flatten", "--minify").stdout
        target.write_text(flat)
        target.chmod(0o600)
        for p in (secrets, target):
            os.chown(p, UID, UID)
        return secrets

    def _run_image(
        self, argv_tail: list[str], env: dict[str, str], log: IO[bytes], timeout: float
    ) -> dict[str, float]:
        cfg = image_tool.image_config(image_tool.Store(), self.ref)
        tmp = self.work / "emptydir"
        tmp.mkdir()
        os.chown(tmp, UID, UID)
        volumes = [(self._kubeconfig(), "/etc/calyx-bench", "ro"), (tmp, "/tmp", "rw")]
        env = {**env, "KUBECONFIG": "/etc/calyx-bench/kubeconfig"}
        with image_tool.Container(self.ref) as ctr:
            t0 = time.monotonic()
            noop = ctr.run(["true"], volumes=volumes)
            overhead = time.monotonic() - t0
            assert noop.returncode == 0, noop.stderr
            t0 = time.monotonic()
            proc = ctr.start([*cfg["Entrypoint"], *argv_tail], log=log, env=env, volumes=volumes)
            out = self._wait(proc, t0, timeout)
            t1 = time.monotonic()
            code = ctr.stop()
            out["stop_s"] = time.monotonic() - t1
            out["exit_code"] = self._exit(code)
        out["runtime_overhead_s"] = overhead
        return out

    def _run_host(
        self, argv_tail: list[str], env: dict[str, str], log: IO[bytes], timeout: float
    ) -> dict[str, float]:
        cfg = image_tool.image_config(image_tool.Store(), self.ref)
        entry = list(cfg["Entrypoint"])
        entry[0] = str(REPO / ".venv" / "bin" / entry[0])
        full_env = {
            "PATH": f"{REPO / '.venv' / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.work),
            "TMPDIR": str(self.work),
            "USER": "calyx",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "KUBECONFIG": self.cluster.kubeconfig,
            **env,
        }
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [*entry, *argv_tail],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.work,
        )
        try:
            out = self._wait(proc, t0, timeout)
            t1 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
            out["stop_s"] = time.monotonic() - t1
            out["exit_code"] = self._exit(code)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return out

    def cleanup(self) -> None:
        """The operator is stopped: drop the Lease's finalizer, delete the namespace."""
        self.cluster.kubectl(
            "patch",
            "leases.calyx.io",
            "l1",
            "-n",
            self.ns,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        self.cluster.delete_namespace(self.ns)


def startup(ref: str, runs: int) -> dict[str, dict[str, list[float]]]:
    from kubernetes import client

    from calyx_dev.controlplane import LocalCluster
    from tests.e2e.harness import trust_configmap

    results: dict[str, dict[str, list[float]]] = {"image": {}, "host": {}}
    work = Path(tempfile.mkdtemp(prefix="calyx-bench-image-"))
    work.chmod(0o755)
    cluster = LocalCluster()
    cluster.start()
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("leases.calyx.io", "rollouts.calyx.io"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        cluster.create_namespace("calyx-system")
        trust = trust_configmap(["alice", "sentinel"])
        cluster.kubectl("apply", "-f", "-", input=json.dumps(trust))
        custom = client.CustomObjectsApi(cluster.api_client())
        for i in range(runs):
            for mode in ("image", "host"):
                run = Run(cluster, custom, mode, ref, work, i)
                got = run.measure()
                run.cleanup()
                print(
                    f"  {mode:5} run {i + 1}: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in sorted(got.items()) if k != "exit_code")
                    + f", exit {got['exit_code']:.0f}",
                    flush=True,
                )
                for key, value in got.items():
                    results[mode].setdefault(key, []).append(value)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="starts per mode")
    parser.add_argument("--cold", action="store_true", help="also time a cold build")
    parser.add_argument("--no-startup", action="store_true", help="sizes and builds only")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    store = image_tool.Store()
    report: dict[str, Any] = {"load_before": os.getloadavg()}

    # a snapshot of the build context: the checkout may change while this runs
    snapshot = Path(tempfile.mkdtemp(prefix="calyx-bench-context-"))
    image_tool.stage_context(REPO, snapshot)
    built = image_tool.ensure_image(snapshot)
    base = image_tool.ensure_base(log=None)
    warm = []
    for _ in range(3):
        t0 = time.monotonic()
        again = image_tool.ensure_image(snapshot, log=None)
        warm.append(time.monotonic() - t0)
        assert again.cached
    shutil.rmtree(snapshot, ignore_errors=True)
    report["image"] = {
        "ref": built.ref,
        "size_bytes": built.size_bytes,
        "base_size_bytes": base.size_bytes,
        "compressed_bytes": compressed_size(store, built.ref),
        "base_compressed_bytes": compressed_size(store, base.ref),
        "bud_s": built.build_seconds,
        "base_build_s": base.build_seconds,
        "base_steps": base.steps,
        "warm_reuse_s": warm,
        "biggest": biggest_packages(built.ref),
    }
    img = report["image"]
    print(f"image {built.ref}")
    print(
        f"  size {img['size_bytes'] / 1e6:.0f} MB uncompressed "
        f"(base {img['base_size_bytes'] / 1e6:.0f} MB, /opt/calyx layer "
        f"{(img['size_bytes'] - img['base_size_bytes']) / 1e6:.0f} MB); "
        f"gzip {img['compressed_bytes'] / 1e6:.0f} MB "
        f"(base {img['base_compressed_bytes'] / 1e6:.0f} MB)"
    )
    print("  biggest: " + ", ".join(f"{n} {s / 1e6:.1f} MB" for n, s in img["biggest"]))
    print(
        f"  last cold builds recorded: base {img['base_build_s']:.0f} s {img['base_steps']}, "
        f"buildah bud {img['bud_s']:.0f} s"
    )
    print(f"  warm reuse (cache lookup): {_stats(warm)}")
    if args.cold:
        print("cold build in a scratch cache …", flush=True)
        report["cold"] = cold_build()
        print(f"  cold: {report['cold']}")
    if not args.no_startup:
        print(f"start-up, {args.runs} runs per mode (load {os.getloadavg()[0]:.1f}):", flush=True)
        report["startup"] = startup(built.ref, args.runs)
        for mode, values in report["startup"].items():
            for key in ("healthz_s", "verified_s", "stop_s", "runtime_overhead_s"):
                if key in values:
                    print(f"  {mode:5} {key:19} {_stats(values[key])}")
            unclean = [c for c in values.get("exit_code", []) if c != 0]
            print(f"  {mode:5} unclean stops       {len(unclean)} of {len(values['exit_code'])}")
    report["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
