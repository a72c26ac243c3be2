"""Build (or find cached) the binaries of the test control plane.

Everything comes from the Go module proxy, compiled with this machine's Go:

* ``kube-apiserver``, ``kube-controller-manager``, ``kube-scheduler``, ``kubectl`` from
  ``k8s.io/kubernetes`` at :data:`K8S_VERSION`. The main module is a tiny generated ``go.mod``
  that requires ``k8s.io/kubernetes`` and ``replace``s every ``k8s.io/*`` staging module with its
  published ``v0.<minor>.<patch>`` (the upstream go.mod points them at ``./staging/...``, which the
  proxy does not serve as modules).
* ``etcd`` from ``go.etcd.io/etcd/server/v3`` at :data:`ETCD_VERSION` -- the version that
  Kubernetes itself pins (``build/dependencies.yaml``), built in the same module graph.
* ``kwok`` from ``sigs.k8s.io/kwok/cmd/kwok`` at :data:`KWOK_VERSION` (its own module graph).

Binaries land in ``~/.cache/calyx/<versions-key>/bin`` (override the root with ``CALYX_CACHE``).
The Go build cache and module cache live in ``~/.cache/calyx/gocache`` and ``~/.cache/calyx/gomod``
so that a rebuild (e.g. after deleting ``bin``) is fast and the whole thing is removable with one
``rm -rf``.

Entry point (idempotent, a no-op when the binaries are cached)::

    python -m calyx_dev.build            # build if needed, print the bin dir
    python -m calyx_dev.build --print    # only print the bin dir (exit 1 if not built)
    python -m calyx_dev.build --clean-go-caches   # after building, drop gocache/gomod
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

K8S_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.0"
KWOK_VERSION = "v0.8.0"

K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
BINARIES = (*K8S_COMMANDS, "etcd", "kwok")

GO_BUILD_FLAGS = ["-trimpath", "-ldflags=-s -w", "-p", str(min(os.cpu_count() or 2, 2))]


def cache_root() -> Path:
    return Path(os.environ.get("CALYX_CACHE", Path.home() / ".cache" / "calyx"))


def go_version() -> str:
    out = subprocess.run([go_exe(), "env", "GOVERSION"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def go_exe() -> str:
    found = shutil.which("go")
    if found:
        return found
    if Path("/usr/local/go/bin/go").exists():
        return "/usr/local/go/bin/go"
    raise SystemExit(
        "calyx cluster build: no Go toolchain found (need go on PATH or /usr/local/go)"
    )


def versions_key() -> str:
    return f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"


def bin_dir() -> Path:
    return cache_root() / versions_key() / "bin"


def is_built(directory: Path | None = None) -> bool:
    directory = directory or bin_dir()
    return all(
        (directory / name).is_file() and os.access(directory / name, os.X_OK) for name in BINARIES
    )


def _log(msg: str) -> None:
    print(f"[calyx-build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    root = cache_root()
    env.setdefault("GOCACHE", str(root / "gocache"))
    env.setdefault("GOMODCACHE", str(root / "gomod"))
    env["GOTOOLCHAIN"] = "local"  # never try to download another toolchain
    env["CGO_ENABLED"] = env.get("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env.setdefault("GOMAXPROCS", "2")
    gobin = str(Path(go_exe()).parent)
    env["PATH"] = gobin + os.pathsep + env.get("PATH", "")
    return env


def _run(step: str, argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    _log(f"{step}: {' '.join(argv)}  (in {cwd})")
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env)
    dt = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"calyx cluster build: step {step!r} failed (exit {proc.returncode}) after {dt:.0f}s"
        )
    _log(f"{step}: done in {dt:.0f}s")
    return dt


def _staging_modules(env: dict[str, str], workdir: Path) -> list[str]:
    """The k8s.io/* modules that k8s.io/kubernetes requires *and* replaces with ./staging/..."""
    out = subprocess.run(
        [go_exe(), "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text()
    replaced = set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, re.M))
    required = set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+v0\.0\.0\b", gomod, re.M))
    return sorted(replaced & required)


def _k8s_build_flags() -> list[str]:
    """GO_BUILD_FLAGS plus the version stamps that hack/lib/version.sh would set (so that
    `kubectl version` and the API server's /version report the real release)."""
    major, minor, _patch = K8S_VERSION.removeprefix("v").split(".")
    stamps = {
        "gitVersion": K8S_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    xs = [
        f"-X {pkg}.{var}={val}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for var, val in stamps.items()
    ]
    flags = [f for f in GO_BUILD_FLAGS if not f.startswith("-ldflags")]
    return [*flags, "-ldflags=-s -w " + " ".join(xs)]


def _k8s_gomod(staging: list[str]) -> str:
    minor_patch = K8S_VERSION.removeprefix("v1.")
    lines = [
        "// Generated by calyx_dev/build.py -- do not edit.",
        "module calyx.test/controlplane",
        "",
        "go 1.26",
        "",
        "require (",
        f"\tk8s.io/kubernetes {K8S_VERSION}",
        f"\tgo.etcd.io/etcd/server/v3 {ETCD_VERSION}",
        ")",
        "",
        "replace (",
    ]
    lines += [f"\t{mod} => {mod} v0.{minor_patch}" for mod in staging]
    lines += [")", ""]
    return "\n".join(lines)


def build(force: bool = False) -> Path:
    target = bin_dir()
    if is_built(target) and not force:
        return target
    lock_path = target.parent / "build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        if not _try_lock(lock):
            _log(f"another build holds {lock_path}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
            if is_built(target) and not force:
                return target
        return _build_locked(target)


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _build_locked(target: Path) -> Path:
    go = go_exe()
    env = _go_env()
    gv = go_version()
    _log(f"building {versions_key()} with {gv} into {target}")
    _log(f"GOCACHE={env['GOCACHE']} GOMODCACHE={env['GOMODCACHE']}")
    timings: dict[str, float] = {}
    t_all = time.monotonic()

    work = cache_root() / versions_key() / "src"
    k8s_dir = work / "k8s"
    k8s_dir.mkdir(parents=True, exist_ok=True)
    tmp_bin = target.with_name("bin.partial")
    shutil.rmtree(tmp_bin, ignore_errors=True)
    tmp_bin.mkdir(parents=True)

    # 1. main module for kubernetes + etcd
    (k8s_dir / "go.mod").write_text("module calyx.test/controlplane\n\ngo 1.26\n")
    t0 = time.monotonic()
    staging = _staging_modules(env, k8s_dir)
    (k8s_dir / "go.mod").write_text(_k8s_gomod(staging))
    timings["resolve"] = time.monotonic() - t0
    _log(
        f"go.mod: k8s.io/kubernetes {K8S_VERSION} + {len(staging)} staging replaces "
        f"({timings['resolve']:.0f}s)"
    )

    k8s_pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS]
    etcd_pkg = "go.etcd.io/etcd/server/v3"
    timings["build-k8s+etcd"] = _run(
        "go build kube-apiserver kube-controller-manager kube-scheduler kubectl etcd",
        [go, "build", *_k8s_build_flags(), "-o", str(tmp_bin) + "/", *k8s_pkgs, etcd_pkg],
        k8s_dir,
        env,
    )
    # go build names the etcd main package after its import path's last element ("v3")
    for candidate in ("v3", "server"):
        if (tmp_bin / candidate).exists():
            (tmp_bin / candidate).rename(tmp_bin / "etcd")

    # 2. kwok, in its own module graph (its go.mod has no replace directives)
    kwok_env = dict(env, GOBIN=str(tmp_bin))
    timings["build-kwok"] = _run(
        "go install kwok",
        [go, "install", *GO_BUILD_FLAGS, f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
        work,
        kwok_env,
    )

    missing = [b for b in BINARIES if not (tmp_bin / b).is_file()]
    if missing:
        raise SystemExit(
            f"calyx cluster build: missing after build: {missing} (have {os.listdir(tmp_bin)})"
        )
    shutil.rmtree(target, ignore_errors=True)
    tmp_bin.rename(target)
    total = time.monotonic() - t_all
    size = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    (target.parent / "build-info.json").write_text(
        json.dumps(
            {
                "k8s": K8S_VERSION,
                "etcd": ETCD_VERSION,
                "kwok": KWOK_VERSION,
                "go": gv,
                "seconds": {k: round(v, 1) for k, v in timings.items()}
                | {"total": round(total, 1)},
                "bin_mib": round(size, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    _log(f"all built in {total:.0f}s; binaries {size:.0f} MiB in {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m calyx_dev.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--print", action="store_true", help="only print the bin dir; exit 1 if not built"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument(
        "--clean-go-caches",
        action="store_true",
        help="after a successful build, delete the Go build and module caches (saves disk)",
    )
    args = parser.parse_args(argv)
    if args.print:
        print(bin_dir())
        return 0 if is_built() else 1
    if is_built() and not args.force:
        _log(f"cached: {bin_dir()}")
    else:
        build(force=args.force)
    if args.clean_go_caches:
        for sub in ("gocache", "gomod"):
            path = cache_root() / sub
            if path.exists():
                subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
                shutil.rmtree(path, ignore_errors=True)
                _log(f"removed {path}")
    print(bin_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
