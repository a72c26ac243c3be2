"""The image's entry command, run for real (no Docker engine here: the image is emulated).

What the image is, rebuilt piece by piece from the Dockerfile:

* the ``calyx`` wheel (``pip wheel --no-deps``) installed with its dependencies into a fresh venv,
  without pip, like the builder stage's ``/opt/calyx`` (fixture ``image_venv``);
* the runtime stage's ``ENV`` with ``/opt/calyx`` mapped to that venv, and its exact
  ``ENTRYPOINT`` (parsed from the Dockerfile, so the two cannot drift);
* ``USER 65532``: when the tests run as root, the process drops to that uid, so the venv (owned
  by root) is really read-only for it, like ``readOnlyRootFilesystem``; the working directory is a
  ``chmod 555`` directory and ``HOME``/``TMPDIR`` a scratch directory, like the chart's emptyDir.

What the pod is, taken from the chart installed into the test cluster with ``helm install``: the
container's ``args`` and ``env`` (read back from the Deployment), and the credentials: a token of
the chart's ServiceAccount, so the operator runs with exactly the chart's least-privilege RBAC.

Then: ``/healthz`` answers, ``/metrics`` answers, a cosigned Lease is verified *by this process*
(its status patch shows up in the API server's audit log under the ServiceAccount), no request is
forbidden, nothing is written into the venv, and SIGTERM stops it cleanly.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from calyx.domain.signatures import (
    COSIGN_PREFIX,
    cosign_annotation_value,
    lease_statement,
    public_key_from_seed,
    sign_statement,
)
from calyx.domain.timefmt import format_time
from tests.e2e.harness import lease_body, utcnow
from tests.packaging.conftest import CHART, ROOT, ImageVenv, helm_env
from tests.packaging.dockerfile import parse

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGE_PREFIX = "/opt/calyx"  # where the Dockerfile installs the venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def _get(url: str, timeout: float = 2) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


# Keys only this test's trust store holds: another operator running in the same session (the e2e
# suite's, with its own trust store) rejects the Lease, so a Verified status patch can only come
# from the process under test.
PKG_SEEDS = {"pkg-human": os.urandom(32), "pkg-agent": os.urandom(32)}
PKG_ROLES = {"pkg-human": "human", "pkg-agent": "agent"}


def _public_key(name: str) -> str:
    return base64.b64encode(public_key_from_seed(PKG_SEEDS[name])).decode()


def _cosigned_lease(ns: str, name: str) -> dict[str, Any]:
    body = lease_body(ns, name, "checkout", {"app": "registry.example/checkout:2.3.1"}, signers=())
    now = format_time(utcnow())
    for signer, seed in PKG_SEEDS.items():
        role = PKG_ROLES[signer]
        statement = lease_statement(ns, name, body["spec"], signer, role, now)
        body["metadata"]["annotations"][COSIGN_PREFIX + signer] = cosign_annotation_value(
            role, now, sign_statement(statement, seed)
        )
    return body


def _snapshot(tree: Path) -> set[str]:
    return {str(p.relative_to(tree)) for p in tree.rglob("*")}


class Release:
    """The chart installed for real with helm into a test namespace, uninstalled afterwards."""

    def __init__(self, helm: str, cluster: Any, namespace: str, values: dict[str, Any]):
        self.helm = helm
        self.cluster = cluster
        self.namespace = namespace
        self.name = f"calyx-{namespace[-8:]}"  # contains "calyx": the full name is the release
        self.values = values
        self.notes = ""

    def _helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.helm, *args, "--kubeconfig", self.cluster.kubeconfig, "-n", self.namespace],
            capture_output=True,
            text=True,
            env=helm_env(),
            timeout=180,
        )
        assert proc.returncode == 0, f"helm {args[0]} failed:\n{proc.stderr}"
        return proc

    def install(self, workdir: Path) -> None:
        vf = workdir / "values.yaml"
        vf.write_text(yaml.safe_dump(self.values))
        out = self._helm("install", self.name, str(CHART), "--skip-crds", "-f", str(vf))
        self.notes = out.stdout

    def uninstall(self) -> None:
        self._helm("uninstall", self.name, "--wait")


@pytest.fixture
def release(helm: str, kube_cluster: Any, kube_namespace: str, tmp_path: Path) -> Iterator[Release]:
    kube_cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    for crd in ("leases.calyx.io", "rollouts.calyx.io"):
        kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    health = 8080 if _port_free(8080) else _free_port()
    rel = Release(
        helm,
        kube_cluster,
        kube_namespace,
        {
            "replicaCount": 0,  # the pod itself is this test's process
            "healthPort": health,
            "metrics": {"port": _free_port()},
            "operator": {"leaseRecheckSeconds": 1, "rolloutTickSeconds": 1},
            "trust": {
                "signers": [
                    {"id": sid, "role": PKG_ROLES[sid], "publicKey": _public_key(sid)}
                    for sid in PKG_SEEDS
                ]
            },
        },
    )
    rel.install(tmp_path)
    try:
        yield rel
    finally:
        rel.uninstall()


def _service_account_kubeconfig(cluster: Any, namespace: str, sa: str, path: Path) -> None:
    """A kubeconfig with the API server of ``cluster`` and a token of ServiceAccount ``sa``."""
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    admin = json.loads(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
    )
    server = admin["clusters"][0]["cluster"]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": server}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": "test", "user": sa, "namespace": namespace}}
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(cfg))


def test_entrypoint_serves_healthz_verifies_a_lease_and_stops_cleanly(
    image_venv: ImageVenv, release: Release, kube_cluster: Any
) -> None:
    ns = release.namespace
    df = parse(ROOT / "Dockerfile")
    entry = df.final.exec_form("ENTRYPOINT")
    assert entry, "Dockerfile has an exec-form ENTRYPOINT"
    assert df.final.exec_form("CMD") is None, "no CMD: the chart's args append to ENTRYPOINT"
    uid = int(df.final.all("USER")[-1].args.split(":")[0])

    # --- the pod, as the chart created it -------------------------------------------------------
    dep = json.loads(
        kube_cluster.kubectl("get", "deployment", release.name, "-n", ns, "-o", "json").stdout
    )
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sa = pod["serviceAccountName"]
    assert "command" not in container

    # --- the filesystem: venv read-only for uid 65532, HOME/TMPDIR on a scratch "emptyDir" ------
    as_root = os.geteuid() == 0
    drop = as_root and image_venv.unprivileged
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=image_venv.root))
    scratch.chmod(0o755)
    home = scratch / "tmp"  # the emptyDir mounted at /tmp
    home.mkdir()
    workdir = scratch / "ro"  # read-only working directory
    workdir.mkdir()
    workdir.chmod(0o555)
    kubeconfig = scratch / "kubeconfig"
    _service_account_kubeconfig(kube_cluster, ns, sa, kubeconfig)
    kubeconfig.chmod(0o600)
    if drop:
        for p in (home, kubeconfig):
            os.chown(p, uid, uid)

    def mapped(value: str) -> str:
        value = value.replace(IMAGE_PREFIX, str(image_venv.venv))
        return str(home) if value == "/tmp" else value

    env: dict[str, str] = {}
    for key, value in df.final.env().items():
        env[key] = mapped(value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin"))
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = mapped(item["value"])
        else:
            ref = item["valueFrom"]["fieldRef"]["fieldPath"]
            from_pod = {"metadata.namespace": ns, "metadata.name": f"{release.name}-7d9f8-x2x4q"}
            assert ref in from_pod, f"unsupported env source {item}"
            env[item["name"]] = from_pod[ref]
    env["KUBECONFIG"] = str(kubeconfig)
    assert env["PATH"].startswith(str(image_venv.bin) + ":")
    assert env["HOME"] == str(home) and env["TMPDIR"] == str(home)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    argv = [*entry, *container.get("args", [])]
    liveness = [a for a in argv if a.startswith("--liveness=")][-1].removeprefix("--liveness=")
    health_url = re.sub(r"//0\.0\.0\.0:", "//127.0.0.1:", liveness)
    metrics_url = f"http://127.0.0.1:{env['CALYX_METRICS_PORT']}/metrics"

    before = _snapshot(image_venv.venv)
    log_path = scratch / "operator.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=uid if drop else None,
            group=uid if drop else None,
            extra_groups=[] if drop else None,
        )
    try:

        def log_text() -> str:
            return log_path.read_text(errors="replace")

        def wait(what: str, check: Any, timeout: float = 60) -> Any:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"operator exited ({proc.returncode}):\n{log_text()}"
                result = check()
                if result:
                    return result
                time.sleep(0.2)
            raise AssertionError(f"timed out waiting for {what}; log:\n{log_text()[-6000:]}")

        wait("/healthz", lambda: _get(health_url)[0] == 200)
        ready_s = time.monotonic() - t0
        _, body = wait("/metrics", lambda: (r := _get(metrics_url))[0] == 200 and r)
        assert "calyx_" in body

        # a Lease cosigned by the two keys the chart's trust store holds is verified by *this*
        # process: its status patch is in the audit log under the chart's ServiceAccount
        lease = _cosigned_lease(ns, f"img-{uuid.uuid4().hex[:6]}")
        kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(lease))
        name = lease["metadata"]["name"]
        user = f"system:serviceaccount:{ns}:{sa}"

        def phase() -> str | None:
            got = json.loads(
                kube_cluster.kubectl("get", "leases.calyx.io", name, "-n", ns, "-o", "json").stdout
            )
            return (got.get("status") or {}).get("phase")

        if kube_cluster.audit_log:

            def verified_by_us() -> bool:
                patches = kube_cluster.read_audit_events(
                    "patch",
                    "leases.calyx.io/status",
                    namespace=ns,
                    name=name,
                    user=user,
                    succeeded=True,
                )
                return any('"Verified"' in json.dumps(e.get("requestObject")) for e in patches)

            wait("a Verified status patch by the chart's ServiceAccount", verified_by_us)
            refused = kube_cluster.read_audit_events(None, user=user, succeeded=False)
            assert not [e for e in refused if e.get("responseStatus", {}).get("code") == 403]
        else:  # external cluster: no audit log; no other operator shares these keys either
            wait("Lease Verified", lambda: phase() == "Verified")
        kube_cluster.kubectl("delete", "leases.calyx.io", name, "-n", ns, "--wait=false")
        time.sleep(2)  # a few sweeps and watch cycles with the least-privilege token
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            code = None
    text = log_path.read_text(errors="replace")
    print(f"\n[image-entry] healthy after {ready_s:.1f}s, as uid {uid if drop else os.geteuid()}")
    assert code == 0, f"not a clean stop (exit {code}):\n{text[-6000:]}"
    for bad in ("Forbidden", "forbidden", "(403)", "Not enough permissions"):
        assert bad not in text, f"{bad!r} in the operator log:\n{text[-6000:]}"
    assert _snapshot(image_venv.venv) == before, "the process wrote into the (read-only) image"
    assert not any(workdir.iterdir())
    if as_root and not drop:
        pytest.skip("no Python 3.11 usable by uid 65532 here: ran as root (checks above passed)")


def test_helm_install_prints_the_notes(release: Release) -> None:
    assert "Calyx 0.1.0 is installed in namespace" in release.notes
    assert "trusts 2 signer(s)" in release.notes


def test_wheel_carries_the_console_scripts(image_venv: ImageVenv) -> None:
    for script in ("calyx", "kubectl-calyx", "kopf"):
        assert (image_venv.bin / script).exists(), script
    assert not (image_venv.bin / "pip").exists(), "no pip in the runtime venv"
    out = subprocess.run(
        [str(image_venv.bin / "calyx"), "--help"], capture_output=True, text=True, check=True
    )
    assert "sign-lease" in out.stdout
