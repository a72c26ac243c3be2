#!/usr/bin/env python3
"""Build the krew plugin archive for ``kubectl-calyx`` and render its manifest.

The archive (``kubectl-calyx-v<version>.tar.gz``) holds the launcher ``plugins/krew/kubectl-calyx``
(version stamped in) and the calyx wheel; it is the same for every OS and architecture, so each
platform of the manifest points at it. The manifest is ``plugins/krew/calyx.yaml`` with
``${VERSION}``, ``${HOMEPAGE}``, ``${URI}``, ``${SHA256}`` and ``${WHEEL}`` filled in.

The archive is reproducible: entries sorted, owner root, mtime 0, gzip without a timestamp, so
the same wheel gives the same sha256.

Usage::

    python tools/krew_manifest.py --homepage https://git.example/calyx \\
        --uri-base https://git.example/calyx/releases/download/v0.1.0 [--out dist/krew]

docs/cli.md ("kubectl plugin and krew") describes the release step; tests/packaging/test_krew.py
builds, validates and runs the result.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import shutil
import string
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "plugins" / "krew"
LAUNCHER = PLUGIN_DIR / "kubectl-calyx"
TEMPLATE = PLUGIN_DIR / "calyx.yaml"


def project_version() -> str:
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def build_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps`` from a copy of the sources (a build in place would leave build/
    and *.egg-info in the checkout)."""
    with tempfile.TemporaryDirectory(prefix="calyx-krew-src-") as tmp:
        src = Path(tmp)
        shutil.copy2(ROOT / "pyproject.toml", src)
        if (ROOT / "README.md").exists():
            shutil.copy2(ROOT / "README.md", src)
        shutil.copytree(
            ROOT / "operator",
            src / "operator",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        )
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest), str(src)],
            check=True,
            cwd=src,
        )
    (wheel,) = dest.glob("calyx-*.whl")
    return wheel


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def build_archive(wheel: Path, version: str, out: Path) -> Path:
    """The plugin archive: the launcher (0755, version stamped) and the wheel (0644)."""
    launcher = LAUNCHER.read_text().replace("@VERSION@", f"v{version}").encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in sorted(
            [("kubectl-calyx", launcher, 0o755), (wheel.name, wheel.read_bytes(), 0o644)]
        ):
            _add(tar, name, data, mode)
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"kubectl-calyx-v{version}.tar.gz"
    with archive.open("wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return archive


def render_manifest(*, version: str, homepage: str, uri: str, sha256: str, wheel: str) -> str:
    return string.Template(TEMPLATE.read_text()).substitute(
        VERSION=f"v{version}", HOMEPAGE=homepage, URI=uri, SHA256=sha256, WHEEL=wheel
    )


def build(homepage: str, uri_base: str, out: Path, wheel: Path | None = None) -> dict[str, Path]:
    """Archive + manifest in ``out``; returns their paths (and the wheel's)."""
    version = project_version()
    out.mkdir(parents=True, exist_ok=True)
    if wheel is None:
        wheel = build_wheel(out / "wheel")
    archive = build_archive(wheel, version, out)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    manifest = out / "calyx.yaml"
    manifest.write_text(
        render_manifest(
            version=version,
            homepage=homepage,
            uri=f"{uri_base.rstrip('/')}/{archive.name}",
            sha256=digest,
            wheel=wheel.name,
        )
    )
    return {"archive": archive, "manifest": manifest, "wheel": wheel}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--homepage", required=True, help="the project's home page")
    p.add_argument("--uri-base", required=True, help="where the release archive is published")
    p.add_argument("--out", default=str(ROOT / "dist" / "krew"), help="output directory")
    p.add_argument("--wheel", help="use this wheel instead of building one")
    args = p.parse_args(argv)
    paths = build(
        args.homepage, args.uri_base, Path(args.out), Path(args.wheel) if args.wheel else None
    )
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
