"""The operator image, built from the Dockerfile and run for real, without Docker.

``tools/image.py`` builds the Dockerfile with ``buildah bud`` on a Debian bookworm + python3 base
made by ``mmdebstrap`` (both cached under ``~/.cache/calyx/image``; docs/install.md). Here:

* the image's config is the Dockerfile's: ENTRYPOINT, USER, ENV, ports; its base is that
  mmdebstrap image and its inputs label is the key of the tree it was built from;
* the image holds the runtime only: the ``calyx`` wheel and its dependencies, byte-compiled, in
  ``/opt/calyx``; no pip, no test or lint tooling, no compiler, no ``kubernetes.aio``;
* its root filesystem runs as the operator (``buildah run --isolation chroot`` with the host's
  network, which works here where ``podman run`` does not): the *image config's* Entrypoint and
  User, the chart's ``args`` and ``env`` read back from the Deployment ``helm install`` created,
  and a token of the chart's ServiceAccount. The process is checked from ``/proc``: not root, its
  root directory is the container's root filesystem, its interpreter and the compiled extensions
  it maps are the image's files, no file of this checkout is visible to it. It rolls a Rollout out
  to 100 % and rolls the next one back (tests/packaging/test_rbac_rollout.py's scenario), every
  write in the audit log under the ServiceAccount and none refused; SIGTERM stops it with exit 0;
  it writes nothing into the image.
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from tests.packaging.conftest import ROOT
from tests.packaging.dockerfile import Dockerfile, parse
from tests.packaging.test_image_entry import Release, _free_port, _service_account_kubeconfig
from tests.packaging.test_rbac_rollout import _signers, assert_done_by, roll_out_and_roll_back
from tools import image as image_tool

SITE = "opt/calyx/lib/python3.11/site-packages"  # the venv's site-packages, relative to /
# Development tooling that must never be in the runtime image (pyproject's `test` extra and
# build tools); matched against top-level names in site-packages and in the venv's bin/.
DEV_TOOLS = (
    "pip",
    "setuptools",
    "wheel",
    "pytest",
    "_pytest",
    "hypothesis",
    "mypy",
    "ruff",
    "importlinter",
    "lupa",
    "tests",
)


def _required() -> bool:
    """In CI (and with CALYX_REQUIRE_IMAGE=1) missing buildah/mmdebstrap fails, not skips."""
    return bool(os.environ.get("CI") or os.environ.get("CALYX_REQUIRE_IMAGE"))


@pytest.fixture(scope="session")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of the build inputs (the tree may change while the suite runs)."""
    root = tmp_path_factory.mktemp("image-context")
    image_tool.stage_context(ROOT, root)
    return root


@pytest.fixture(scope="session")
def built_image(build_root: Path) -> image_tool.Built:
    """The image of this checkout: built once, or found in the cache (a cold build takes ~1.5 min:
    the mmdebstrap base ~40 s, ``buildah bud`` ~45 s; warm, well under a second)."""
    try:
        built = image_tool.ensure_image(build_root, log=sys.stderr)
    except image_tool.ToolMissing as exc:
        if _required():
            pytest.fail(f"{exc} (CI installs it with .ci/system-deps.sh)")
        pytest.skip(str(exc))
    print(
        f"\n[image] {'cached' if built.cached else 'built'} {built.ref} "
        f"({built.size_bytes / 1e6:.0f} MB) in {built.seconds:.1f}s",
        file=sys.stderr,
    )
    return built


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(ROOT / "Dockerfile")


@pytest.fixture
def container(built_image: image_tool.Built) -> Iterator[image_tool.Container]:
    with image_tool.Container(built_image.ref) as ctr:
        yield ctr


def _env_list(env: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in env)


# ------------------------------------------------------------------------------ what was built


def test_image_config_is_the_dockerfiles(
    built_image: image_tool.Built, dockerfile: Dockerfile
) -> None:
    store = image_tool.Store()
    cfg = image_tool.image_config(store, built_image.ref)
    final = dockerfile.final
    assert cfg["Entrypoint"] == final.exec_form("ENTRYPOINT")
    assert not cfg.get("Cmd"), "no CMD: the chart's args append to the ENTRYPOINT"
    assert cfg["User"] == final.all("USER")[-1].args == "65532:65532"
    env = _env_list(cfg["Env"])
    base_env = _env_list(image_tool.image_config(store, built_image.base_ref)["Env"])
    for key, value in final.env().items():
        assert env[key] == value.replace("$PATH", base_env["PATH"]), key
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "9100/tcp"}
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == "calyx"
    assert labels["io.calyx.base"].startswith("mmdebstrap bookworm minbase python3")
    assert labels["io.calyx.inputs"] == built_image.key
    # the same base under both stages: the venv's interpreter is the base's
    assert built_image.base_ref.startswith("localhost/calyx-base:bookworm-")


def test_image_holds_the_runtime_only(container: image_tool.Container, build_root: Path) -> None:
    root = container.mount()
    site = root / SITE
    venv = root / "opt" / "calyx"
    # the wheel of this project, with its console scripts and dependencies, byte-compiled
    (dist,) = site.glob("calyx-*.dist-info")
    assert dist.name == f"calyx-{image_tool.project_version()}.dist-info"
    record = (dist / "RECORD").read_text()
    assert "calyx/handlers/operator.py" in record
    # ... built from the sources under test: every module is byte for byte the checkout's
    sources = sorted((build_root / "operator" / "calyx").rglob("*.py"))
    assert len(sources) > 20
    for src in sources:
        rel = src.relative_to(build_root / "operator")
        assert (site / rel).read_bytes() == src.read_bytes(), rel
    for script in ("kopf", "calyx", "kubectl-calyx"):
        assert (venv / "bin" / script).is_file(), script
    for pkg in ("calyx", "kopf", "kubernetes", "pydantic", "nacl"):
        assert (site / pkg).is_dir(), pkg
    assert list((site / "calyx" / "handlers" / "__pycache__").glob("operator.cpython-311.pyc")), (
        "bytecode is compiled at build time (the image runs with readOnlyRootFilesystem)"
    )
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()
    assert (root / "usr" / "bin" / "python3.11").is_file()
    # no development tooling
    present = {p.name.split("-")[0].split(".")[0].lower() for p in site.iterdir()}
    present |= {p.name for p in (venv / "bin").iterdir()}
    assert not present & set(DEV_TOOLS), sorted(present & set(DEV_TOOLS))
    assert not (site / "kubernetes" / "aio").exists()
    for compiler in ("gcc", "cc", "g++", "make", "git"):
        assert not (root / "usr" / "bin" / compiler).exists(), compiler
    # the development tooling (local cluster, simulator, demo) lives outside the package
    assert not (site / "calyx" / "devenv").exists()
    assert not (site / "calyx" / "cli" / "demo.py").exists()
    assert not (site / "calyx_dev").exists()


# ------------------------------------------------------------------------------ run for real


def _get(url: str, timeout: float = 2) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def _ids(pid: int, field: str) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _same_file(a: Path, b: Path) -> bool:
    sa, sb = a.stat(), b.stat()
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _tree(path: Path | None) -> set[str]:
    if path is None:
        return set()
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.e2e
@pytest.mark.slow
def test_image_runs_as_the_operator_rolls_out_and_back(
    built_image: image_tool.Built,
    container: image_tool.Container,
    helm: str,
    calyx_crds: Any,
    kube: Kube,
    no_operator: None,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    cluster = calyx_crds
    op_ns = kube_namespace
    app_ns = cluster.create_namespace(f"{op_ns}-app")
    cfg = image_tool.image_config(container.store, built_image.ref)
    uid, gid = (int(v) for v in cfg["User"].split(":"))
    rel = Release(
        helm,
        cluster,
        op_ns,
        {
            "replicaCount": 0,  # the pod is this test's container
            "healthPort": _free_port(),
            "metrics": {"port": _free_port()},
            "operator": {"leaseRecheckSeconds": 1, "rolloutTickSeconds": 1},
            "trust": {"signers": _signers()},
        },
    )
    rel.install(tmp_path)
    try:
        # --- the pod as the chart made it: args, env, ServiceAccount -------------------------
        dep = cluster.kubectl_json("get", "deployment", rel.name, "-n", op_ns)
        pod = dep["spec"]["template"]["spec"]
        (spec,) = pod["containers"]
        assert "command" not in spec, "the chart runs the image's ENTRYPOINT"
        sa = pod["serviceAccountName"]
        env: dict[str, str] = {}
        for item in spec["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            else:  # the downward API, as the kubelet would fill it in for this "pod"
                field = item["valueFrom"]["fieldRef"]["fieldPath"]
                pod_fields = {"metadata.namespace": op_ns, "metadata.name": f"{rel.name}-image"}
                assert field in pod_fields, f"unsupported env source {item}"
                env[item["name"]] = pod_fields[field]
        env["KUBECONFIG"] = "/etc/calyx-test/kubeconfig"
        secrets = tmp_path / "secrets"  # the token, readable by the image's user only
        secrets.mkdir()
        _service_account_kubeconfig(cluster, op_ns, sa, secrets / "kubeconfig")
        emptydir = tmp_path / "emptydir"  # the chart's emptyDir on /tmp
        emptydir.mkdir()
        for path in (secrets, secrets / "kubeconfig", emptydir):
            os.chown(path, uid, gid)
            path.chmod(0o700 if path.is_dir() else 0o600)
        volumes = [(secrets, "/etc/calyx-test", "ro"), (emptydir, "/tmp", "rw")]
        argv = [*cfg["Entrypoint"], *spec.get("args", [])]
        liveness = [a for a in argv if a.startswith("--liveness=")][-1].removeprefix("--liveness=")
        health_url = re.sub(r"//0\.0\.0\.0:", "//127.0.0.1:", liveness)

        # what a command leaves in the container's own layer (buildah's /etc/hosts, mount points)
        probe = container.run(["true"], volumes=volumes)
        assert probe.returncode == 0, probe.stderr
        baseline = _tree(container.upper())

        # --- start: no --user, no entrypoint of our own: the image config's -----------------
        log_path = tmp_path / "operator.log"
        t0 = time.monotonic()
        with open(log_path, "wb") as log:
            proc = container.start(argv, log=log, env=env, volumes=volumes)

        def log_text() -> str:
            return log_path.read_text(errors="replace")

        def wait(what: str, check: Any, timeout: float = 60) -> Any:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"exited ({proc.returncode}):\n{log_text()[-6000:]}"
                if result := check():
                    return result
                time.sleep(0.2)
            raise AssertionError(f"timed out waiting for {what}; log:\n{log_text()[-6000:]}")

        pid = container.entry_pid()
        wait("/healthz", lambda: _get(health_url) == 200)
        ready_s = time.monotonic() - t0

        # --- who and what is running ----------------------------------------------------------
        assert _ids(pid, "Uid") == [uid] * 4, "the image's USER, not root"
        assert _ids(pid, "Gid") == [gid] * 4
        assert uid != 0
        # buildah chroots into a private bind mount of the container's root filesystem: the
        # same directory (device and inode) as the container's mount seen from here
        rootfs = container.mount()
        proc_root = Path(f"/proc/{pid}/root")  # the process's root, readable from the host
        assert _same_file(proc_root, rootfs), "chrooted in the image's root filesystem"
        assert _same_file(Path(f"/proc/{pid}/exe"), rootfs / "usr/bin/python3.11")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        # kopf is a script: the kernel runs its shebang, the venv's python, with the script's path
        assert [c.decode() for c in cmdline[1:]] == ["/opt/calyx/bin/kopf", *argv[1:]], cmdline
        assert cmdline[0].decode().startswith("/opt/calyx/bin/python")
        proc_env = dict(
            item.decode().split("=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        image_env = _env_list(cfg["Env"])
        for key in ("PATH", "HOME", "USER", "PYTHONDONTWRITEBYTECODE"):
            assert proc_env[key] == image_env[key], key
        assert "PYTHONPATH" not in proc_env
        # the code doing the work is the image's: this checkout is not even visible in there,
        # and every shared object the process maps is a file of its root filesystem, the
        # compiled extensions among them from the image's site-packages
        assert not (proc_root / ROOT.relative_to("/")).exists()
        prefix = os.readlink(proc_root)  # its root's path in its own mount namespace
        mapped = {
            line.split(None, 5)[5]
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if len(line.split(None, 5)) == 6 and ".so" in line
        }
        assert mapped and all(m.startswith(prefix + "/") for m in mapped), sorted(mapped)
        extensions = {m.removeprefix(prefix) for m in mapped if f"/{SITE}/" in m}
        assert any("/pydantic_core/" in m for m in extensions), sorted(mapped)
        assert all(
            _same_file(proc_root / m.lstrip("/"), rootfs / m.lstrip("/")) for m in extensions
        )

        # --- the work: a rollout to 100 % and a rollback, under the chart's ServiceAccount ----
        roll_out_and_roll_back(cluster, kube, app_ns)
        assert_done_by(cluster, kube, op_ns, f"system:serviceaccount:{op_ns}:{sa}", log_text())

        # --- a clean stop, as a kubelet would: SIGTERM to the entrypoint ----------------------
        code = container.stop()
        assert code == 0, f"not a clean stop (exit {code}):\n{log_text()[-6000:]}"
        assert _tree(container.upper()) == baseline, "the process wrote into the image"
        print(f"\n[image-build] {built_image.ref}: healthy {ready_s:.1f}s after start", flush=True)
    finally:
        container.stop()
        rel.uninstall()
        cluster.delete_namespace(app_ns)


def test_a_warm_build_reuses_the_cache(built_image: image_tool.Built, build_root: Path) -> None:
    """The same inputs again: the cached image, found without building (what keeps CI fast)."""
    again = image_tool.ensure_image(build_root, log=None)
    assert again.cached and again.ref == built_image.ref and again.id == built_image.id
    assert again.seconds < 10, again.seconds


def test_build_context_is_what_dockerignore_lets_through(tmp_path: Path) -> None:
    files = image_tool.context_files(ROOT)
    assert {"pyproject.toml", "operator/calyx/__init__.py"} <= set(files)
    assert "operator/calyx/handlers/operator.py" in files
    for rel in files:
        assert rel in ("pyproject.toml", "README.md") or rel.startswith("operator/"), rel
        assert "__pycache__" not in rel and not rel.endswith(".pyc") and ".egg-info" not in rel
    # the key follows the content: one changed byte in the context, another key
    a, b = tmp_path / "a", tmp_path / "b"
    first = image_tool.stage_context(ROOT, a)
    assert image_tool.stage_context(a, b) == first, "staging is stable"
    target = b / "operator" / "calyx" / "__init__.py"
    target.write_text(target.read_text() + "\n")
    assert image_tool.stage_context(b, tmp_path / "c") != first
