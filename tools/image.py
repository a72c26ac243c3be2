#!/usr/bin/env python3
"""Build the operator image from the Dockerfile without Docker, and run it (docs/install.md).

No container registry is reachable here, and no Docker engine runs, so:

1. **Base**: ``mmdebstrap --variant=minbase`` makes a Debian bookworm root filesystem with
   ``python3`` and ``python3-venv`` from Debian's packages (documentation, man pages and locales
   left out, like the slim images), which ``buildah`` imports as the local image
   ``localhost/calyx-base:bookworm-<key>``.
2. **Image**: ``buildah bud --isolation chroot --network host`` builds the project's Dockerfile
   with ``--build-arg PYTHON_IMAGE=<that base>`` (the Dockerfile's default stays the upstream
   ``python:3.11-slim-bookworm``, so ``docker build`` elsewhere is unchanged). The builder stage's
   ``pip`` reaches PyPI with the host's CA bundle, mounted read-only with a ``pip.conf`` naming it
   (neither ends up in the image: the runtime stage copies only ``/opt/calyx``).

Both are cached under ``${CALYX_CACHE:-~/.cache/calyx}/image/``: containers storage of its own
(``storage/``, so nothing touches the machine's ``/var/lib/containers``), a record per build
(``base-<key>.json``, ``image-<key>.json``). The base key is a hash of its recipe (suite, mirrors,
packages, options); the image key a hash of the base image's id and of every file of the build
context (the Dockerfile, ``.dockerignore`` and what it lets through). A build whose key is cached
returns at once. Old images are pruned (the newest few are kept).

    python3 tools/image.py            build if needed; print the image reference (alone on stdout)
    python3 tools/image.py --json     the same, with a JSON record (ref, id, size, timings, store)
    python3 tools/image.py --print    print the reference if built, else exit 1 (never builds)
    python3 tools/image.py --archive x.tar  also write a docker-archive (kind load image-archive)
    python3 tools/image.py --force    rebuild the image (the base stays cached)

``store_args()`` (``buildah --root … --runroot …``) reach the images by hand, e.g.
``buildah $(python3 tools/image.py --store-args) images``.

Environment: ``CALYX_CACHE`` (cache root), ``CALYX_DEBIAN_MIRROR``, ``CALYX_IMAGE_STORAGE_DRIVER``
(default ``overlay``; ``vfs`` where overlay mounts are refused).
Exit codes: 0 ok, 1 not built (``--print``), 3 buildah or mmdebstrap missing, other: failure.

Standard library only, so any Python 3.11 runs it; imported by tests/packaging/test_image_build.py
and bench/image_startup.py.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CALYX_CACHE") or Path.home() / ".cache" / "calyx")
IMAGE_DIR = CACHE / "image"

# ---- the base root filesystem: its recipe is its cache key ------------------------------------

SUITE = "bookworm"
MIRROR = os.environ.get("CALYX_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# python3-venv: ensurepip (the builder stage makes /opt/calyx with `python3 -m venv`).
BASE_PACKAGES = ("python3", "python3-venv")
# Like the slim images: no documentation (but the copyright files), man pages or translations.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
BASE_RECIPE_VERSION = 1  # bump to rebuild every cached base


def base_sources() -> list[str]:
    security = MIRROR.rstrip("/").removesuffix("/debian") + "/debian-security"
    return [
        f"deb {MIRROR} {SUITE} main",
        f"deb {MIRROR} {SUITE}-updates main",
        f"deb {security} {SUITE}-security main",
    ]


def base_key() -> str:
    recipe = {
        "version": BASE_RECIPE_VERSION,
        "suite": SUITE,
        "sources": base_sources(),
        "variant": "minbase",
        "packages": BASE_PACKAGES,
        "dpkg": DPKG_OPTIONS,
        "env": BASE_ENV,
        "arch": os.uname().machine,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


# ---- buildah and its storage ------------------------------------------------------------------


class ImageError(RuntimeError):
    pass


class ToolMissing(ImageError):
    pass


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class Store:
    """Containers storage of our own under the cache (images, layers, working containers)."""

    root: Path = IMAGE_DIR / "storage"
    runroot: Path = IMAGE_DIR / "run"
    driver: str = os.environ.get("CALYX_IMAGE_STORAGE_DRIVER", "overlay")

    def args(self) -> list[str]:
        return [
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            self.driver,
        ]

    def prepare(self) -> None:
        """The run root holds mount state that a reboot makes stale: start it afresh then."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = self.runroot / ".boot_id"
        if self.runroot.exists() and (not stamp.exists() or stamp.read_text() != _boot_id()):
            shutil.rmtree(self.runroot, ignore_errors=True)
        self.runroot.mkdir(parents=True, exist_ok=True)
        stamp.write_text(_boot_id())


def buildah_path() -> str:
    found = shutil.which("buildah")
    if not found:
        raise ToolMissing("buildah not found (Debian package buildah; `make system-deps`)")
    return found


def buildah(
    store: Store, *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [buildah_path(), *store.args(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise ImageError(f"buildah {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def inspect_image(store: Store, ref: str) -> dict[str, Any] | None:
    proc = buildah(store, "inspect", "--type", "image", ref, check=False)
    if proc.returncode != 0:
        return None
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def image_config(store: Store, ref: str) -> dict[str, Any]:
    """The OCI image config's ``config`` (Entrypoint, Cmd, User, Env, Labels, WorkingDir, …)."""
    data = inspect_image(store, ref)
    if data is None:
        raise ImageError(f"no image {ref}")
    config: dict[str, Any] = data["OCIv1"].get("config") or {}
    return config


def image_size(store: Store, ref: str) -> int:
    """Bytes of all layers (uncompressed tar sizes from the stored manifest)."""
    data = inspect_image(store, ref)
    if data is None:
        raise ImageError(f"no image {ref}")
    manifest = json.loads(data["Manifest"])
    return sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    with open(IMAGE_DIR / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _log(msg: str, out: IO[str] | None) -> None:
    if out is not None:
        print(f"tools/image.py: {msg}", file=out, flush=True)


# ---- records ---------------------------------------------------------------------------------


@dataclass
class Built:
    """One cached image (or base): what the CLI prints with --json and the tests read."""

    ref: str
    id: str
    key: str
    size_bytes: int
    build_seconds: float  # of the build that made it (0 for an imported record)
    built_at: str
    base_ref: str = ""
    cached: bool = False  # this call found it in the cache
    seconds: float = 0.0  # this call's duration
    store_args: list[str] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)


def _record_path(kind: str, key: str) -> Path:
    return IMAGE_DIR / f"{kind}-{key}.json"


def _read_record(store: Store, kind: str, key: str, ref: str) -> Built | None:
    path = _record_path(kind, key)
    if not path.exists():
        return None
    data = inspect_image(store, ref)
    if data is None:
        return None
    try:
        built = Built(**json.loads(path.read_text()))
    except (TypeError, ValueError):
        return None
    return built if built.id == data["FromImageID"] else None


def _write_record(kind: str, built: Built) -> None:
    record = asdict(built)
    for transient in ("cached", "seconds", "store_args"):
        record.pop(transient)
    path = _record_path(kind, built.key)
    path.write_text(json.dumps(record, indent=2) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- the base --------------------------------------------------------------------------------


def ensure_base(store: Store | None = None, *, log: IO[str] | None = sys.stderr) -> Built:
    """The mmdebstrap base image, built and imported once per recipe."""
    store = store or Store()
    store.prepare()
    key = base_key()
    ref = f"localhost/calyx-base:{SUITE}-{key}"
    t0 = time.monotonic()
    with _locked("base"):
        found = _read_record(store, "base", key, ref)
        if found:
            found.cached, found.seconds = True, time.monotonic() - t0
            return found
        mmdebstrap = shutil.which("mmdebstrap")
        if not mmdebstrap:
            raise ToolMissing(
                "mmdebstrap not found (Debian package mmdebstrap; `make system-deps`)"
            )
        buildah_path()
        IMAGE_DIR.mkdir(parents=True, exist_ok=True)
        tar = IMAGE_DIR / f"base-{key}.tar.partial"
        _log(
            f"making the base ({SUITE}, {', '.join(BASE_PACKAGES)}) with mmdebstrap",
            log,
        )
        cmd = [
            mmdebstrap,
            "--variant=minbase",
            "--format=tar",
            f"--include={','.join(BASE_PACKAGES)}",
            '--aptopt=Acquire::Retries "3"',
            *(f"--dpkgopt={opt}" for opt in DPKG_OPTIONS),
            SUITE,
            str(tar),
            *base_sources(),
        ]
        steps: dict[str, float] = {}
        try:
            s0 = time.monotonic()
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL
            )
            if proc.returncode != 0:
                raise ImageError(f"mmdebstrap failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            steps["mmdebstrap"] = time.monotonic() - s0
            s0 = time.monotonic()
            ctr = buildah(
                store, "from", "--name", f"calyx-base-{uuid.uuid4().hex[:8]}", "scratch"
            ).stdout.strip()
            try:
                buildah(store, "add", ctr, str(tar), "/", timeout=600)
                config: list[str] = ["--cmd", '["python3"]']
                for name, value in BASE_ENV.items():
                    config += ["--env", f"{name}={value}"]
                config += [
                    "--label",
                    f"io.calyx.base=mmdebstrap {SUITE} minbase {' '.join(BASE_PACKAGES)} ({key})",
                ]
                buildah(store, "config", *config, ctr)
                image_id = buildah(
                    store, "commit", "--rm", "-q", ctr, ref, timeout=600
                ).stdout.strip()
            except BaseException:
                buildah(store, "rm", ctr, check=False)
                raise
            steps["import"] = time.monotonic() - s0
        finally:
            tar.unlink(missing_ok=True)
        built = Built(
            ref=ref,
            id=image_id.splitlines()[-1],
            key=key,
            size_bytes=image_size(store, ref),
            build_seconds=round(time.monotonic() - t0, 1),
            built_at=_now(),
            steps={k: round(v, 1) for k, v in steps.items()},
        )
        _write_record("base", built)
        _prune(store, "localhost/calyx-base:", keep={ref})
        _log(f"base {ref} ({built.size_bytes / 1e6:.0f} MB) in {built.build_seconds:.0f}s", log)
        built.seconds = time.monotonic() - t0
        return built


# ---- the build context -----------------------------------------------------------------------


def _dockerignore(root: Path) -> list[tuple[bool, str]]:
    path = root / ".dockerignore"
    if not path.exists():
        return []
    out: list[tuple[bool, str]] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        out.append((negate, pattern.strip("/")))
    return out


def _ignored(rel: str, patterns: Sequence[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent directories) wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, pattern in patterns:
        alternatives = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(p, alt) for p in prefixes for alt in alternatives):
            ignored = not negate
    return ignored


def _may_reinclude(rel_dir: str, patterns: Sequence[tuple[bool, str]]) -> bool:
    return any(
        negate and (any(c in pattern for c in "*?[") or pattern.startswith(rel_dir + "/"))
        for negate, pattern in patterns
    )


def context_files(root: Path = REPO) -> list[str]:
    """Files the Docker build context holds: everything ``.dockerignore`` lets through."""
    patterns = _dockerignore(root)
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not _ignored(rel, patterns):
                out.append(rel)
        # skip directories that are ignored and that no negation can re-include (.venv, .git, …)
        dirnames[:] = [
            d
            for d in dirnames
            if not _ignored(d if rel_dir == "." else f"{rel_dir}/{d}", patterns)
            or _may_reinclude(d if rel_dir == "." else f"{rel_dir}/{d}", patterns)
        ]
    return sorted(out)


def stage_context(root: Path, dest: Path) -> str:
    """Copy the build context (plus Dockerfile and .dockerignore) into ``dest``; its hash."""
    digest = hashlib.sha256()
    files = sorted({*context_files(root), "Dockerfile", ".dockerignore"})
    for rel in files:
        src = root / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        target.write_bytes(data)
        mode = 0o755 if os.access(src, os.X_OK) else 0o644
        target.chmod(mode)
        digest.update(f"{rel}\0{mode:o}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def project_version(root: Path = REPO) -> str:
    import tomllib

    return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])


def _ca_bundle() -> Path | None:
    for cand in (
        os.environ.get("PIP_CERT"),
        os.environ.get("REQUESTS_CA_BUNDLE"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


# ---- the image -------------------------------------------------------------------------------

BUILD_CA = "/etc/calyx-build/ca.crt"  # where the builder stage sees the host's CA bundle


def ensure_image(
    root: Path = REPO,
    store: Store | None = None,
    *,
    force: bool = False,
    log: IO[str] | None = sys.stderr,
) -> Built:
    """The project's Dockerfile built on the mmdebstrap base; cached by its inputs."""
    store = store or Store()
    t0 = time.monotonic()
    base = ensure_base(store, log=log)
    version = project_version(root)
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="context-", dir=IMAGE_DIR))
    try:
        inputs = stage_context(root, staging)
        key = hashlib.sha256(f"{base.id}\0{inputs}".encode()).hexdigest()[:12]
        ref = f"localhost/calyx:{version}-{key}"
        with _locked("image"):
            found = None if force else _read_record(store, "image", key, ref)
            if found:
                found.cached, found.seconds = True, time.monotonic() - t0
                found.store_args = store.args()
                return found
            cmd = [
                "bud",
                "--isolation",
                "chroot",
                "--network",
                "host",
                "--pull=never",
                "--layers=false",
                "--build-arg",
                f"PYTHON_IMAGE={base.ref}",
                "--label",
                f"io.calyx.inputs={key}",
                "-f",
                str(staging / "Dockerfile"),
                "-t",
                ref,
            ]
            ca = _ca_bundle()
            if ca is not None:
                pip_conf = IMAGE_DIR / "pip.conf"
                pip_conf.write_text(f"[global]\ncert = {BUILD_CA}\n")
                cmd += ["-v", f"{ca}:{BUILD_CA}:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro"]
            cmd.append(str(staging))
            _log(f"building {ref} from the Dockerfile on {base.ref} (buildah bud)", log)
            s0 = time.monotonic()
            proc = subprocess.run(
                [buildah_path(), *store.args(), *cmd],
                capture_output=True,
                text=True,
                timeout=1800,
                stdin=subprocess.DEVNULL,
            )
            if proc.returncode != 0:
                tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
                raise ImageError(f"buildah bud failed ({proc.returncode}):\n{tail}")
            bud_seconds = time.monotonic() - s0
            data = inspect_image(store, ref)
            assert data is not None
            buildah(store, "tag", ref, f"localhost/calyx:{version}-dev")
            built = Built(
                ref=ref,
                id=data["FromImageID"],
                key=key,
                size_bytes=image_size(store, ref),
                build_seconds=round(bud_seconds, 1),
                built_at=_now(),
                base_ref=base.ref,
                steps={"base": round(base.seconds, 1), "bud": round(bud_seconds, 1)},
            )
            _write_record("image", built)
            _prune(store, f"localhost/calyx:{version}-", keep={ref}, newest=3)
            built.seconds = time.monotonic() - t0
            built.store_args = store.args()
            _log(f"built {ref} ({built.size_bytes / 1e6:.0f} MB) in {bud_seconds:.0f}s", log)
            return built
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _prune(store: Store, prefix: str, *, keep: set[str], newest: int = 1) -> None:
    """Remove images named ``prefix…`` but the ``newest`` (always keeping ``keep``)."""
    proc = buildah(store, "images", "--json", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return
    images = sorted(json.loads(proc.stdout), key=lambda i: i.get("created", 0), reverse=True)
    kept = 0
    for image in images:
        names = [n for n in image.get("names") or [] if n.startswith(prefix)]
        if not names:
            continue
        if kept < newest or keep & set(names):
            kept += 1
            continue
        if not any(n.endswith("-dev") for n in names):
            buildah(store, "rmi", image["id"], check=False)
            for name in names:
                key = name.rsplit("-", 1)[-1]
                kind = "base" if "calyx-base" in name else "image"
                _record_path(kind, key).unlink(missing_ok=True)


def export_archive(store: Store, ref: str, path: Path, name: str) -> None:
    """A docker-archive tarball (``docker load`` / ``kind load image-archive``)."""
    path.unlink(missing_ok=True)
    buildah(store, "push", ref, f"docker-archive:{path}:{name}", timeout=600)


# ---- running it ------------------------------------------------------------------------------


class Container:
    """A working container of an image, run with ``buildah run --isolation chroot``.

    ``buildah run`` runs the command it is given (not the image's ENTRYPOINT: pass that from
    ``image_config``), as the image's USER, with the image's Env and the host's network.
    ``buildah`` does not forward signals: stop the command by signalling ``entry_pid()``.
    """

    def __init__(self, ref: str, store: Store | None = None):
        self.ref = ref
        self.store = store or Store()
        self.name = f"calyx-run-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._mount: Path | None = None

    def __enter__(self) -> Container:
        self.store.prepare()
        _remove_orphans(self.store)
        buildah(self.store, "from", "--pull=never", "--name", self.name, self.ref)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        buildah(self.store, "rm", self.name, check=False)

    def mount(self) -> Path:
        """The container's root filesystem (overlay ``merged``) on the host."""
        if self._mount is None:
            self._mount = Path(buildah(self.store, "mount", self.name).stdout.strip())
        return self._mount

    def upper(self) -> Path | None:
        """What the container wrote (overlay ``diff``), if the storage driver has one."""
        diff = self.mount().parent / "diff"
        return diff if diff.is_dir() else None

    def command(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        volumes: Sequence[tuple[Path, str, str]] = (),
        user: str | None = None,
        workdir: str | None = None,
    ) -> list[str]:
        cmd = [
            buildah_path(),
            *self.store.args(),
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
        ]
        for key, value in (env or {}).items():
            cmd += ["--env", f"{key}={value}"]
        for host, target, options in volumes:  # options: "ro" or "rw"
            cmd += ["-v", f"{host}:{target}:{options}"]
        if user is not None:
            cmd += ["--user", user]
        if workdir is not None:
            cmd += ["--workingdir", workdir]
        return [*cmd, self.name, "--", *argv]

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv, **kw),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def start(self, argv: Sequence[str], *, log: IO[bytes], **kw: Any) -> subprocess.Popen[bytes]:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            self.command(argv, **kw),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self.proc

    def entry_pid(self, timeout: float = 30) -> int:
        """The pid of the command itself, below buildah's chroot helpers (``buildah`` re-executed
        from a memfd as ``buildah-chroot-runtime`` and ``buildah-chroot-exec``)."""
        assert self.proc is not None
        me = str(Path(buildah_path()).resolve())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ImageError(f"buildah run exited ({self.proc.returncode})")
            for pid in _descendants(self.proc.pid):
                with contextlib.suppress(OSError):
                    exe = os.readlink(f"/proc/{pid}/exe")
                    if exe != me and not exe.startswith("/memfd:buildah"):
                        return pid
            time.sleep(0.05)
        raise ImageError("the command did not start under buildah run")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal the command (as a kubelet would), wait for buildah run; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ImageError, ProcessLookupError):
                os.kill(self.entry_pid(timeout=2), sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                for pid in _descendants(self.proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait(10)
                return None
        return self.proc.returncode


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    """Descendants of ``pid``, parents before children."""
    tree = _children()
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = sorted(tree.get(todo.pop(0), []))
        out += kids
        todo += kids
    return out


def _remove_orphans(store: Store) -> None:
    """Working containers of runs whose process is gone (a killed test session)."""
    proc = buildah(store, "containers", "--json", check=False)
    if proc.returncode != 0 or not proc.stdout.strip() or proc.stdout.strip() == "null":
        return
    for ctr in json.loads(proc.stdout):
        name = str(ctr.get("containername", ""))
        parts = name.split("-")
        if (
            name.startswith("calyx-run-")
            and len(parts) >= 4
            and parts[2].isdigit()
            and not Path(f"/proc/{parts[2]}").exists()
        ):
            buildah(store, "rm", name, check=False)


# ---- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the build record as JSON")
    parser.add_argument("--print", action="store_true", help="only print the reference if built")
    parser.add_argument("--force", action="store_true", help="rebuild the image (not the base)")
    parser.add_argument("--store-args", action="store_true", help="print buildah's storage flags")
    parser.add_argument("--archive", type=Path, help="also write a docker-archive tarball here")
    parser.add_argument("--tag", default="", help="name inside --archive (default calyx:VERSION)")
    args = parser.parse_args(argv)
    store = Store()
    if args.store_args:
        print(" ".join(store.args()))
        return 0
    try:
        if args.print:
            store.prepare()
            base = _read_record(
                store, "base", base_key(), f"localhost/calyx-base:{SUITE}-{base_key()}"
            )
            if base is None:
                print("tools/image.py: base not built", file=sys.stderr)
                return 1
            with tempfile.TemporaryDirectory(dir=IMAGE_DIR) as tmp:
                inputs = stage_context(REPO, Path(tmp))
            key = hashlib.sha256(f"{base.id}\0{inputs}".encode()).hexdigest()[:12]
            ref = f"localhost/calyx:{project_version()}-{key}"
            found = _read_record(store, "image", key, ref)
            if found is None:
                print(f"tools/image.py: {ref} not built", file=sys.stderr)
                return 1
            print(found.ref)
            return 0
        built = ensure_image(force=args.force)
    except ToolMissing as exc:
        print(f"tools/image.py: {exc}", file=sys.stderr)
        return 3
    except (ImageError, subprocess.TimeoutExpired) as exc:
        print(f"tools/image.py: {exc}", file=sys.stderr)
        return 2
    if args.archive:
        name = args.tag or f"calyx:{project_version()}"
        export_archive(store, built.ref, args.archive.resolve(), name)
        print(f"tools/image.py: wrote {args.archive} ({name})", file=sys.stderr)
    state = "cached" if built.cached else "built"
    print(
        f"tools/image.py: {state} {built.ref} ({built.size_bytes / 1e6:.0f} MB) in "
        f"{built.seconds:.1f}s; storage: buildah {' '.join(store.args())}",
        file=sys.stderr,
    )
    print(json.dumps(asdict(built), indent=2) if args.json else built.ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
