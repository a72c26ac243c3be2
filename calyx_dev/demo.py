"""``calyx demo``: the whole story on this machine, in about a minute, leaving nothing behind.

It starts a local Kubernetes control plane (building it from source on the first run), real
Prometheus, a traffic simulator and the operator, then plays two changes through the real user
flow (``calyx keygen``, ``trust add``, ``lease create``, ``sign-lease``, ``kubectl apply``):

* **A**: a good change, cosigned by a human key and an agent key, goes 5 % → 25 % → 100 %;
* **B**: a change whose image starts failing at 25 % breaches its error-rate threshold and is
  rolled back to the stable snapshot.

Last, it labels the namespace ``calyx.io/guard=enforce`` and shows the API server refusing a
``kubectl set image`` made beside Calyx (the chart's admission guard, docs/security-guard.md).

It prints ``kubectl get crollout -w``-style rows and the Events as they arrive, then each
rollout's report and audit-chain verification, and tears everything down (also on Ctrl-C or
SIGTERM), checking that every process it started is gone. docs/demo.md describes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from calyx.adapters.kube import LEASES, ROLLOUTS, Kube
from calyx.api.common import API_VERSION
from calyx.cli.errors import CliError
from calyx.domain.report import JSON_KEY, configmap_name
from calyx.domain.rollout_plan import TERMINAL
from calyx_dev import build as _build
from calyx_dev.demo_scenario import OPERATOR_NS, DemoStack
from calyx_dev.guard import INSTALL_YAML, enable_guard
from calyx_dev.prometheus import prometheus_binary
from calyx_dev.workloads import sample_deployment

__all__ = ["run_demo"]

NAMESPACE = "shop"
APP = "checkout"
REPLICAS = 10
IMAGE_REPO = "registry.example/checkout"
V1, V2, V3 = f"{IMAGE_REPO}:2.3.0", f"{IMAGE_REPO}:2.3.1", f"{IMAGE_REPO}:2.4.0"
HUMAN, AGENT = "alice", "sentinel"
BAD_ERROR_RATIO = 0.2
#: measured on the reference machine (docs/testing.md): cold build, rebuild with warm Go caches
COLD_BUILD = "about 6-7 min on 2 cores (380 s measured), less with more cores"
CACHE_SIZE = "5.7 GiB of Go caches and binaries"

ANALYSIS: dict[str, Any] = {
    "intervalSeconds": 2,
    "windowSeconds": 10,
    "failureLimit": 1,
    "tes": {"maxDropPercent": 5},
    "errorRate": {"maxPermille": 10},
    "cpu": {"maxPercent": 90},
    "memory": {"maxPercent": 90},
}


class DemoFailed(Exception):
    """A scenario did not end as expected; the message says how."""


class _Interrupted(KeyboardInterrupt):
    """SIGTERM / SIGHUP, unwound like Ctrl-C so that every ``finally`` runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ------------------------------------------------------------------------------------------------
# output


@dataclass
class _Out:
    stream: TextIO
    t0: float = field(default_factory=time.monotonic)

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def section(self, title: str) -> None:
        self.line()
        self.line(f"== {title}  [{self.elapsed()}]")

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:5.1f}s"

    def block(self, text: str, indent: str = "  ") -> None:
        for ln in text.rstrip("\n").splitlines():
            self.line(indent + ln)


# ------------------------------------------------------------------------------------------------
# pre-flight and build


def _preflight(out: _Out, build: bool) -> None:
    prom = prometheus_binary()
    if prom is None:
        raise CliError(
            "calyx demo needs a real Prometheus binary: `sudo apt-get install prometheus` "
            "(or `make system-deps`), or set CALYX_PROMETHEUS=/path/to/prometheus"
        )
    if shutil.which("openssl") is None:
        raise CliError(
            "calyx demo needs `openssl` for the local cluster's certificates: "
            "`sudo apt-get install openssl` (or `make system-deps`)"
        )
    out.line(f"  prometheus     {prom} ({_first_line([prom, '--version'])})")
    bins = _build.bin_dir()
    versions = (
        f"Kubernetes {_build.K8S_VERSION}, etcd {_build.ETCD_VERSION}, kwok {_build.KWOK_VERSION}"
    )
    if _build.is_built():
        out.line(f"  control plane  {versions}: built, in {bins}")
        return
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if not build:
        raise CliError(
            f"the control-plane binaries are not built ({bins}); run `make cluster-binaries` "
            f"({COLD_BUILD}) or drop --no-build"
        )
    if go is None:
        raise CliError(
            "the first run builds the local control plane from source and needs Go >= 1.26 "
            "on PATH (or /usr/local/go); see https://go.dev/dl/"
        )
    warm = _dir_has_files(_build.cache_root() / "gocache")
    estimate = (
        "the Go build cache is warm, so probably under a minute (22 s measured)"
        if warm
        else COLD_BUILD
    )
    out.line(f"  control plane  not built yet: the first run builds {versions} from source")
    out.line(f"                 with {_first_line([go, 'version'])}: {estimate};")
    out.line(f"                 {CACHE_SIZE} under {_build.cache_root()} (later runs: seconds)")
    free = shutil.disk_usage(_existing_parent(_build.cache_root())).free / 2**30
    if free < 7:
        out.line(f"  warning: only {free:.1f} GiB free there; the build needs about 6 GiB")
    _build_with_progress(out)


def _first_line(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "version unknown"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0].split(" (")[0] if text else "version unknown"


def _dir_has_files(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except OSError:
        return False


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _build_with_progress(out: _Out) -> None:
    """Run the builder (it prints its steps); a ticker prints the elapsed time meanwhile."""
    t0 = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(30):
            m, s = divmod(int(time.monotonic() - t0), 60)
            out.line(f"  ... still building: {m}:{s:02d} elapsed (a cold build takes ~6:20 here)")

    ticker = threading.Thread(target=tick, name="calyx-demo-build-ticker", daemon=True)
    ticker.start()
    try:
        _build.build()
    except SystemExit as exc:  # the builder reports failures as SystemExit("message")
        raise CliError(f"building the control plane failed: {exc}") from None
    finally:
        done.set()
        ticker.join(1)
    m, s = divmod(int(time.monotonic() - t0), 60)
    out.line(f"  control plane built in {m}:{s:02d}; later runs reuse {_build.bin_dir()}")


# ------------------------------------------------------------------------------------------------
# running CLI verbs and kubectl the way a user would


class _Shell:
    def __init__(self, out: _Out, stack: DemoStack, workdir: Path) -> None:
        self.out, self.stack, self.workdir = out, stack, workdir

    def calyx(self, *argv: str, redirect: str | None = None) -> str:
        """``calyx <argv>`` in-process (the real CLI) against the demo cluster; with
        ``redirect`` its output goes to that file in the work dir, as ``> file`` would."""
        from calyx.cli import main as cli_main  # main imports this module for the verb

        shown = " ".join(_quote(self._short(a)) for a in argv)
        self.out.line(f"  $ calyx {shown}" + (f" > {redirect}" if redirect else ""))
        full = [*argv, "--kubeconfig", self.stack.kubeconfig] if _needs_cluster(argv) else argv
        try:
            text, code = cli_main.run(list(full))
        except CliError as exc:
            raise DemoFailed(f"`calyx {shown}` failed: {exc}") from None
        if redirect:
            (self.workdir / redirect).write_text(text + "\n")
        else:
            self.out.block(text, "    ")
        if code != 0:
            raise DemoFailed(f"`calyx {shown}` exited {code}")
        return text

    def kubectl(self, *argv: str, input: str | None = None, show: bool = True) -> str:
        assert self.stack.cluster is not None
        if show:
            self.out.line("  $ kubectl " + " ".join(_quote(a) for a in argv))
        proc = self.stack.cluster.kubectl(*argv, input=input)
        if show:
            self.out.block(proc.stdout, "    ")
        return proc.stdout

    def apply(self, obj: Mapping[str, Any], filename: str) -> None:
        """Write ``obj`` as YAML into the work dir and ``kubectl apply -f`` it."""
        (self.workdir / filename).write_text(yaml.safe_dump(dict(obj), sort_keys=False))
        self.apply_file(filename)

    def apply_file(self, filename: str) -> None:
        self.out.line(f"  $ kubectl apply -f {filename}")
        assert self.stack.cluster is not None
        proc = self.stack.cluster.kubectl("apply", "-f", str(self.workdir / filename))
        self.out.block(proc.stdout, "    ")

    def _short(self, arg: str) -> str:
        prefix = str(self.workdir) + os.sep
        return arg[len(prefix) :] if arg.startswith(prefix) else arg


def _needs_cluster(argv: Sequence[str]) -> bool:
    return bool(argv) and argv[0] != "keygen"


def _quote(arg: str) -> str:
    return f'"{arg}"' if (" " in arg or not arg) else arg


# ------------------------------------------------------------------------------------------------
# objects


def _rollout(name: str, lease: str, soak_25: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "leaseRef": {"name": lease},
            "tiers": [
                {"weight": 5, "soakSeconds": 5},
                {"weight": 25, "soakSeconds": soak_25},
                {"weight": 100},
            ],
            "analysis": ANALYSIS,
            "onBreach": "Rollback",
        },
    }


# ------------------------------------------------------------------------------------------------
# watching a rollout like `kubectl get crollout -w`, plus its Events


class _Watcher:
    HEADER = f"{'TIME':>7}  {'NAME':<16} {'PHASE':<18} {'WEIGHT':>6} {'EFFECTIVE':>9} {'RISK':<7}"

    def __init__(self, out: _Out, kube: Kube, t0: float | None) -> None:
        self.out, self.kube, self.t0 = out, kube, t0
        self.seen_events: set[str] = set()
        self.last_row: tuple[Any, ...] | None = None
        self.last_verdict: str | None = None

    def stamp(self) -> str:
        """Seconds since the Rollout was applied ("" when not watching one)."""
        return "" if self.t0 is None else f"{time.monotonic() - self.t0:6.1f}s"

    def events(self, kinds: Sequence[str] = ("Lease", "Rollout")) -> int:
        """Print the new Events about Calyx objects (in the order the API server stored them);
        returns how many were printed."""
        try:
            items = self.kube.core.list_namespaced_event(NAMESPACE).items or []
        except Exception:
            return 0
        evs = [self.kube._plain(e) for e in items]
        evs.sort(key=lambda e: _int(e["metadata"].get("resourceVersion")))
        printed = 0
        for e in evs:
            name = e["metadata"]["name"]
            inv = e.get("involvedObject") or {}
            if name in self.seen_events or inv.get("kind") not in kinds:
                continue
            self.seen_events.add(name)
            printed += 1
            kind = "clease" if inv.get("kind") == "Lease" else "crollout"
            self.out.line(
                f"{self.prefix()}event {e.get('type', ''):<7} {kind}/{inv.get('name')} "
                f"{e.get('reason', '')}: {e.get('message', '')}"
            )
        return printed

    def prefix(self) -> str:
        """Indent of the lines under a watch row: a time column while watching a Rollout."""
        stamp = self.stamp()
        return f"  {stamp:>7}    " if stamp else "    "

    def watch(
        self,
        name: str,
        timeout: float,
        on_status: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        self.out.line(f"  $ kubectl get crollout {name} -n {NAMESPACE} -w   (and its Events)")
        self.out.line("  " + self.HEADER)
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while True:
            obj = self.kube.get_custom(ROLLOUTS, NAMESPACE, name) or {}
            status = obj.get("status") or {}
            self._row(name, status)
            self.events()
            if on_status is not None:
                on_status(status)
            if status.get("phase") in TERMINAL:
                time.sleep(0.5)  # the terminal transition's Event follows the status write
                self.events()
                return status
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"rollout {name} did not finish within {timeout:.0f}s: phase "
                    f"{status.get('phase')}, {status.get('message', '')}"
                )
            time.sleep(0.4)

    def _row(self, name: str, st: Mapping[str, Any]) -> None:
        risk = st.get("risk") or {}
        row = (
            st.get("phase") or "Pending",
            st.get("currentWeight", ""),
            st.get("effectivePercent", ""),
            risk.get("level") or "",
        )
        la = st.get("lastAnalysis") or {}
        verdict = la.get("verdict")
        if row != self.last_row:
            self.last_row = row
            msg = st.get("message") or ""
            self.out.line(
                f"  {self.stamp():>7}  {name:<16} {row[0]:<18} {row[1]!s:>6} {row[2]!s:>9} "
                f"{row[3]:<7}{'  ' + msg if msg else ''}"
            )
        if verdict and verdict != self.last_verdict:
            self.last_verdict = verdict
            self.out.line(f"{self.prefix()}analysis {verdict}: {_values(la)}")


def _values(analysis: Mapping[str, Any]) -> str:
    parts = []
    for metric, v in sorted((analysis.get("values") or {}).items()):
        if not isinstance(v, Mapping):
            continue
        parts.append(f"{metric} {_num(v.get('canary'))}/{_num(v.get('baseline'))}")
    text = ", ".join(parts) + " (canary/baseline)" if parts else ""
    reason = str(analysis.get("reason") or analysis.get("message") or "")
    if analysis.get("verdict") == "Pass" or not reason:
        return text
    return f"{text}; {reason[:160]}{'...' if len(reason) > 160 else ''}"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return "-" if value is None else str(value)


# ------------------------------------------------------------------------------------------------
# the scenarios


@dataclass
class _Result:
    name: str
    phase: str | None = None
    ok: bool = False
    detail: str = ""


class _Demo:
    def __init__(self, out: _Out, stack: DemoStack, workdir: Path) -> None:
        self.out, self.stack, self.workdir = out, stack, workdir
        self.sh = _Shell(out, stack, workdir)
        assert stack.kube is not None and stack.sim is not None
        self.kube: Kube = stack.kube
        self.sim = stack.sim
        self.results: list[_Result] = []
        self._seen: set[str] = set()  # Events already printed

    # -- helpers ---------------------------------------------------------------------------------

    def _deploy(self) -> Mapping[str, Any]:
        return self.kube.get_deployment(NAMESPACE, APP) or {}

    def _stable_image(self) -> str:
        d = self._deploy()
        return str(d["spec"]["template"]["spec"]["containers"][0]["image"]) if d else "?"

    def _stable_settled(self, image: str) -> bool:
        d = self._deploy()
        if not d:
            return False
        st = d.get("status") or {}
        return (
            self._stable_image() == image
            and st.get("observedGeneration") == d["metadata"].get("generation")
            and st.get("updatedReplicas") == REPLICAS
            and st.get("readyReplicas") == REPLICAS
            and st.get("replicas") == REPLICAS
        )

    def _wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise DemoFailed(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.3)

    def _lease(self, name: str, image: str, intent: str, presign: bool) -> None:
        """Author and cosign a Lease: live (``--apply`` then ``sign-lease NAME``) or, with
        ``presign``, as a pipeline would for Git (``sign-lease -f``, then ``kubectl apply``)."""
        create = ["lease", "create", name, "-n", NAMESPACE, "--target", APP,
                  "--image", f"app={image}", "--intent", intent, "--expires-in", "1h"]  # fmt: skip
        keys = {s: str(self.workdir / f"{s}.key") for s in (HUMAN, AGENT)}
        if presign:
            filename = f"{name}-lease.yaml"
            path = str(self.workdir / filename)
            self.sh.calyx(*create, redirect=filename)
            self.sh.calyx("sign-lease", "-f", path, "--key", keys[HUMAN], "--signer", HUMAN)
            self.sh.calyx(
                "sign-lease", "-f", path, "--key", keys[AGENT], "--signer", AGENT, "--role", "agent"
            )
            self.sh.apply_file(filename)
        else:
            self.sh.calyx(*create, "--apply")
            self.sh.calyx("sign-lease", name, "-n", NAMESPACE, "--key", keys[HUMAN],
                          "--signer", HUMAN)  # fmt: skip
            self.sh.calyx("sign-lease", name, "-n", NAMESPACE, "--key", keys[AGENT],
                          "--signer", AGENT, "--role", "agent")  # fmt: skip

        def verified() -> bool:
            obj = self.kube.get_custom(LEASES, NAMESPACE, name) or {}
            return (obj.get("status") or {}).get("phase") == "Verified"

        self._wait(f"lease {name} to be Verified by the operator", verified, 30)
        watcher = _Watcher(self.out, self.kube, None)
        watcher.seen_events = self._seen
        deadline = time.monotonic() + 5  # the Verified2Key Event follows the status write
        printed = watcher.events(kinds=("Lease",))
        while printed < 3 and time.monotonic() < deadline:  # Cosigned x2, Verified2Key
            time.sleep(0.2)
            printed += watcher.events(kinds=("Lease",))
        self.sh.kubectl("get", "clease", name, "-n", NAMESPACE)
        self.sh.calyx("verify-lease", name, "-n", NAMESPACE)

    # -- setup -----------------------------------------------------------------------------------

    def setup(self) -> None:
        self.out.section("the workload and the two keys")
        self.out.line(f"  (in {self.workdir}, with export KUBECONFIG={self.stack.kubeconfig})")
        for image in (V1, V2, V3):
            self.sim.set_profile(image, error_ratio=0.001, tes=100.0, cpu_cores=0.05)
        self.sh.apply(sample_deployment(NAMESPACE, APP, REPLICAS, V1), "checkout.yaml")
        self._wait(
            f"deployment {APP}: {REPLICAS}/{REPLICAS} pods ready",
            lambda: self._stable_settled(V1),
            90,
        )
        self.out.line(f"    {REPLICAS}/{REPLICAS} pods Ready on kwok nodes, serving {V1}")
        self.sh.calyx("keygen", str(self.workdir / f"{HUMAN}.key"))
        self.sh.calyx("keygen", str(self.workdir / f"{AGENT}.key"))
        for signer, role in ((HUMAN, "human"), (AGENT, "agent")):
            self.sh.calyx(
                "trust", "add", signer, "--role", role,
                "--key", str(self.workdir / f"{signer}.key"),
                "--operator-namespace", OPERATOR_NS,
            )  # fmt: skip

    # -- A ---------------------------------------------------------------------------------------

    def scenario_a(self) -> _Result:
        res = _Result("A")
        self.results.append(res)
        name = "checkout-2-3-1"
        self.out.section(f"scenario A: {V2} - a good change goes to 100 %")
        self._lease(name, V2, "INT-42: checkout 2.3.1 fixes cart rounding", presign=False)
        self.sh.apply(_rollout(name, name, soak_25=5), f"{name}-rollout.yaml")
        watcher = _Watcher(self.out, self.kube, time.monotonic())
        watcher.seen_events = self._seen
        st = watcher.watch(name, timeout=180)
        res.phase = st.get("phase")
        if res.phase != "Completed":
            raise DemoFailed(f"scenario A ended {res.phase}, not Completed: {st.get('message')}")
        self._wait(f"{APP} settled on {V2}", lambda: self._stable_settled(V2), 60)
        canary = self.kube.get_deployment(NAMESPACE, f"{APP}-canary")
        if canary is not None:
            raise DemoFailed("scenario A: the canary Deployment still exists after promotion")
        res.ok = True
        res.detail = f"Completed: {NAMESPACE}/{APP} runs {V2} on {REPLICAS}/{REPLICAS} pods"
        self.out.line(f"  => {res.detail}; canary removed")
        return res

    # -- B ---------------------------------------------------------------------------------------

    def scenario_b(self) -> _Result:
        res = _Result("B")
        self.results.append(res)
        name = "checkout-2-4-0"
        self.out.section(f"scenario B: {V3} - a change that breaks at 25 % is rolled back")
        self.out.line(
            "  (this time the pipeline pre-signs the Lease file for Git, then applies it)"
        )
        self._lease(name, V3, "INT-57: checkout 2.4.0 new payment client", presign=True)
        self.sh.apply(_rollout(name, name, soak_25=60), f"{name}-rollout.yaml")
        watcher = _Watcher(self.out, self.kube, time.monotonic())
        watcher.seen_events = self._seen
        flipped = False

        def inject(st: Mapping[str, Any]) -> None:
            nonlocal flipped
            if not flipped and st.get("currentWeight") == 25 and st.get("phase") == "Progressing":
                flipped = True
                self.sim.set_profile(V3, error_ratio=BAD_ERROR_RATIO)
                self.out.line(
                    f"{watcher.prefix()}[traffic sim] {V3} now answers "
                    f"{BAD_ERROR_RATIO:.0%} of its requests with HTTP 500 "
                    "(the bug shows under load)"
                )

        st = watcher.watch(name, timeout=150, on_status=inject)
        res.phase = st.get("phase")
        if res.phase != "RolledBack":
            raise DemoFailed(f"scenario B ended {res.phase}, not RolledBack: {st.get('message')}")
        rb = st.get("rollback") or {}
        self._wait(f"{APP} back on {V2}", lambda: self._stable_settled(V2), 60)
        if self.kube.get_deployment(NAMESPACE, f"{APP}-canary") is not None:
            raise DemoFailed("scenario B: the canary Deployment still exists after the rollback")
        self.out.line(f"  => RolledBack ({rb.get('trigger')}): {rb.get('reason')}")
        self.out.line(
            f"     rollback timings: detectSeconds={rb.get('detectSeconds')} (first breaching "
            "sample to the rollback decision, incl. failureLimit confirmation), "
            f"revertSeconds={rb.get('revertSeconds')} (decision to revert issued)"
        )
        res.ok = rb.get("trigger") == "Breach"
        res.detail = (
            f"RolledBack on a breach; stable {NAMESPACE}/{APP} back on {V2} "
            f"({REPLICAS}/{REPLICAS} ready), canary removed"
        )
        self.out.line(f"     {res.detail}")
        if not res.ok:
            raise DemoFailed(f"scenario B rolled back for {rb.get('trigger')}, not a Breach")
        return res

    # -- reports ---------------------------------------------------------------------------------

    def reports(self) -> bool:
        self.out.section("reports and audit chains")
        ok = True
        for name, phase in (("checkout-2-3-1", "Completed"), ("checkout-2-4-0", "RolledBack")):
            report = self._report(name, phase)
            self.out.line(f"  $ calyx report {name} -n {NAMESPACE}   (summary of report.json)")
            self.out.block(_summary(report), "    ")
            try:
                self.sh.calyx("audit", "verify", name, "-n", NAMESPACE)
            except DemoFailed as exc:
                self.out.line(f"  !! {exc}")
                ok = False
        return ok

    # -- the admission guard ---------------------------------------------------------------------

    def guard(self) -> None:
        """One denied ``kubectl set image``: with the chart's ValidatingAdmissionPolicies and the
        namespace labelled ``calyx.io/guard=enforce``, the API server itself refuses a pod-template
        change that does not come from Calyx, even from cluster-admin (docs/security-guard.md)."""
        self.out.section("the admission guard: no change beside Calyx")
        if not INSTALL_YAML.exists():
            self.out.line(f"  (skipped: {INSTALL_YAML} not found; run from a checkout)")
            return
        assert self.stack.cluster is not None
        self.out.line(f"  $ kubectl label namespace {NAMESPACE} calyx.io/guard=enforce")
        self.out.line("    (ValidatingAdmissionPolicies from manifests/install.yaml applied first)")
        enable_guard(self.stack.cluster, NAMESPACE)
        argv = ["set", "image", f"deployment/{APP}", f"app={IMAGE_REPO}:2.4.1-hotfix"]
        self.out.line(f"  $ kubectl {' '.join(argv)} -n {NAMESPACE}   (as cluster-admin)")
        proc = self.stack.cluster.kubectl(*argv, "-n", NAMESPACE, check=False)
        if proc.returncode == 0:
            raise DemoFailed("the guard let `kubectl set image` through in an enforced namespace")
        for line in proc.stderr.strip().splitlines():
            self.out.block(textwrap.fill(line, 96, subsequent_indent="  "), "    ")
        if self._stable_image() != V2:
            raise DemoFailed(
                f"{NAMESPACE}/{APP} changed to {self._stable_image()} despite the guard"
            )
        self.out.line(f"  => denied by the API server; {NAMESPACE}/{APP} still runs {V2}")

    def _report(self, name: str, phase: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def ready() -> bool:
            cm = self.kube.get_configmap(NAMESPACE, configmap_name(name)) or {}
            text = (cm.get("data") or {}).get(JSON_KEY)
            if not text:
                return False
            doc = json.loads(text)
            found.update(doc)
            return bool((doc.get("rollout") or {}).get("phase") == phase)

        self._wait(f"report of {name} ({phase})", ready, 30)
        return found


def _summary(report: Mapping[str, Any]) -> str:
    r = report.get("rollout") or {}
    lines = [f"{r.get('namespace')}/{r.get('name')}: {r.get('phase')}"]
    lease = report.get("lease") or {}
    signers = ", ".join(
        f"{c.get('id')} ({c.get('role')}{'' if c.get('valid', True) else ', INVALID'})"
        for c in lease.get("cosigners") or []
        if isinstance(c, Mapping)
    )
    lines.append(
        f"lease {lease.get('name')} {str(lease.get('digest') or '')[:23]}... "
        f"cosigned by {signers or '-'}"
    )
    risk = report.get("risk") or {}
    if risk:
        factors = ", ".join(
            f"{f.get('name')} +{f.get('points')}"
            for f in risk.get("factors") or []
            if isinstance(f, Mapping)
        )
        lines.append(f"risk {risk.get('score')} ({risk.get('level')}): {factors or 'no factors'}")
    for t in report.get("tiers") or []:
        metrics = "  ".join(
            f"{m.get('name')} {_num(m.get('canary'))}/{_num(m.get('baseline'))}"
            f"{'' if m.get('verdict') in (None, 'Pass') else ' ' + str(m.get('verdict'))}"
            for m in t.get("metrics") or []
        )
        lines.append(
            f"tier {t.get('index', 0) + 1} {t.get('weight'):>3}%  {t.get('result', ''):<10} "
            f"{metrics}"
        )
    rb = report.get("rollback")
    if rb:
        lines.append(
            f"rollback {rb.get('trigger')}: detect {rb.get('detectSeconds')}s, revert "
            f"{rb.get('revertSeconds')}s, breach to verified {rb.get('totalSeconds')}s"
        )
    decisions = report.get("decisions") or []
    reasons = [str(d.get("reason") or d.get("event") or "") for d in decisions]
    lines.append(f"{len(decisions)} decisions: {' > '.join(r for r in reasons if r)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# entry point


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`_Interrupted` (main thread only), restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Let teardown finish: ignore Ctrl-C / SIGTERM / SIGHUP meanwhile (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_demo(*, keep: bool = False, build: bool = True, stream: TextIO | None = None) -> int:
    """``calyx demo [--keep] [--no-build]``; prints as it goes and returns the exit code.

    0: scenario A Completed and scenario B RolledBack with the stable Deployment restored, and
    nothing left running. 1: anything else (the reason is printed). 128 + signal number when
    interrupted (130 for Ctrl-C), after tearing everything down.
    """
    out = _Out(stream or sys.stdout)
    out.line("calyx demo: two-key canary rollouts on a throw-away local Kubernetes control plane")
    out.section("pre-flight")
    try:
        _preflight(out, build)
    except CliError as exc:
        print(f"error: {exc}", file=stream or sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        out.line("interrupted")
        return 130

    workdir = Path(tempfile.mkdtemp(prefix="calyx-demo-"))
    stack = DemoStack(workdir, NAMESPACE, log=lambda m: out.line("  " + m))
    code = 1
    failure = ""
    results: list[_Result] = []
    with _signals_as_interrupt():
        try:
            out.section(f"starting the environment (127.0.0.1 only; temp dir {workdir})")
            stack.start()
            demo = _Demo(out, stack, workdir)
            results = demo.results
            demo.setup()
            demo.scenario_a()
            demo.scenario_b()
            audit_ok = demo.reports()
            demo.guard()
            code = 0 if audit_ok else 1
            if not audit_ok:
                failure = "an audit chain did not verify"
            if keep:
                _hold(out, stack)
        except DemoFailed as exc:
            failure = str(exc)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, _Interrupted) else signal.SIGINT
            failure = f"interrupted ({signal.Signals(signum).name})"
            code = 128 + signum
        except Exception as exc:  # report it in one line, and still tear down
            failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            with _no_interrupts():
                log_tail = stack.operator_log_tail() if failure and code == 1 else ""
                leftovers = _teardown(out, stack, workdir)
    if leftovers:
        failure = failure or leftovers
        code = code or 1
    total = time.monotonic() - out.t0
    out.line()
    if code == 0:
        a, b = results[0], results[1]
        out.line(
            f"calyx demo: OK in {total:.0f}s total - A {a.phase}, B {b.phase} "
            "(stable restored), nothing left running"
        )
    else:
        if log_tail:
            out.line("  last lines of the operator's log:")
            out.block(log_tail, "    ")
        out.line(f"calyx demo: FAILED after {total:.0f}s: {failure}")
    return code


def _hold(out: _Out, stack: DemoStack) -> None:
    out.section("--keep: everything stays up until you press Ctrl-C")
    out.line(f"  export KUBECONFIG={stack.kubeconfig}")
    assert stack.cluster is not None
    out.line(f"  alias kubectl={stack.cluster.kubectl_path}")
    out.line(f"  kubectl get crollout,clease -n {NAMESPACE}")
    out.line(f"  calyx report checkout-2-4-0 -n {NAMESPACE}")
    assert stack.prom is not None
    out.line(f"  Prometheus UI: {stack.prom.url}   operator log: {stack.operator_log_path()}")
    out.line("  (the processes die with this command: Ctrl-C or `kill <pid>` stops and cleans up;")
    out.line(f"   this is pid {os.getpid()})")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


def _teardown(out: _Out, stack: DemoStack, workdir: Path) -> str:
    out.section("teardown")
    pids = stack.pids()
    t0 = time.monotonic()
    stack.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    alive = stack.survivors()
    left = [str(d) for d in stack.leftover_dirs()] + ([str(workdir)] if workdir.exists() else [])
    if alive or left:
        msg = f"left behind: pids {alive} dirs {left}"
        out.line(f"  !! {msg}")
        return msg
    out.line(
        f"  stopped operator, Prometheus, traffic simulator and control plane in "
        f"{time.monotonic() - t0:.1f}s; all {len(pids)} processes gone, temp dirs removed"
    )
    return ""
