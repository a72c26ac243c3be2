"""The krew plugin: manifest validated offline with krew's own rules, the archive built for real,
installed the way krew lays it out, found by the real kubectl and run.

krew's rules (sigs.k8s.io/krew internal/index/validation): apiVersion and kind, a safe plugin name
equal to the file name, a one-line shortDescription, a semver version with a ``v``, at least one
platform, and per platform a uri, a lowercase hex sha256, a bin, non-empty file operations and a
selector on ``os``/``arch`` only. Beyond them: the sha256 is the archive's, and after the file
operations ``bin`` exists and is executable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.packaging.conftest import ROOT

pytestmark = pytest.mark.slow  # builds a wheel and a venv

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
SAFE_NAME = re.compile(r"^[\w-]+$")
WINDOWS_FORBIDDEN = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10))}
WINDOWS_FORBIDDEN |= {f"LPT{i}" for i in range(1, 10)}
SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
SHA256 = re.compile(r"^[a-f0-9]{64}$")
HOMEPAGE = "https://calyx.example/docs"
URI_BASE = "https://calyx.example/releases/download/v0.1.0"


def krew_problems(manifest: dict[str, Any], file_name: str) -> list[str]:
    """krew's ValidatePlugin, rule for rule; an empty list means valid."""
    out = []
    name = file_name.removesuffix(".yaml")
    if manifest.get("apiVersion") != API_VERSION:
        out.append(f"apiVersion {manifest.get('apiVersion')!r}")
    if manifest.get("kind") != "Plugin":
        out.append(f"kind {manifest.get('kind')!r}")
    if not SAFE_NAME.match(name) or name.upper() in WINDOWS_FORBIDDEN:
        out.append(f"unsafe plugin name {name!r}")
    if (manifest.get("metadata") or {}).get("name") != name:
        out.append(f"metadata.name is not {name!r}")
    spec = manifest.get("spec") or {}
    short = spec.get("shortDescription") or ""
    if not short or "\n" in short or "\r" in short:
        out.append("shortDescription must be one non-empty line")
    if not SEMVER.match(str(spec.get("version") or "")):
        out.append(f"version {spec.get('version')!r} is not semver with a v")
    platforms = spec.get("platforms") or []
    if not platforms:
        out.append("no platform")
    for i, p in enumerate(platforms):
        where = f"platforms[{i}]"
        if not p.get("uri"):
            out.append(f"{where}: uri")
        if not SHA256.match(str(p.get("sha256") or "")):
            out.append(f"{where}: sha256 {p.get('sha256')!r}")
        if not p.get("bin"):
            out.append(f"{where}: bin")
        files = p.get("files")
        if files is not None and (
            not files or any(not f.get("from") or not f.get("to") for f in files)
        ):
            out.append(f"{where}: files")
        sel = p.get("selector")
        if not sel or (not sel.get("matchLabels") and not sel.get("matchExpressions")):
            out.append(f"{where}: empty selector")
        else:
            keys = set(sel.get("matchLabels") or {}) | {
                e["key"] for e in sel.get("matchExpressions") or []
            }
            if keys - {"os", "arch"}:
                out.append(f"{where}: selector keys {sorted(keys)}")
    return out


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "krew_manifest", ROOT / "tools" / "krew_manifest.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    out = tmp_path_factory.mktemp("krew")
    yield _tool().build(HOMEPAGE, URI_BASE, out)


def test_the_template_itself_is_only_missing_release_values() -> None:
    text = (ROOT / "plugins" / "krew" / "calyx.yaml").read_text()
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))
    assert placeholders == {"VERSION", "HOMEPAGE", "URI", "SHA256", "WHEEL"}


def test_rendered_manifest_passes_krew_validation(release: dict[str, Path]) -> None:
    manifest = yaml.safe_load(release["manifest"].read_text())
    assert krew_problems(manifest, release["manifest"].name) == []
    spec = manifest["spec"]
    assert spec["version"] == "v0.1.0"
    assert spec["homepage"] == HOMEPAGE
    assert len(spec["shortDescription"]) <= 50, "krew-index keeps it short"
    digest = hashlib.sha256(release["archive"].read_bytes()).hexdigest()
    oses = set()
    for p in spec["platforms"]:
        assert p["sha256"] == digest
        assert p["uri"] == f"{URI_BASE}/{release['archive'].name}"
        oses.add((p["selector"]["matchLabels"]["os"], p["selector"]["matchLabels"]["arch"]))
    assert oses == {
        ("linux", "amd64"),
        ("linux", "arm64"),
        ("darwin", "amd64"),
        ("darwin", "arm64"),
    }


def test_the_validator_catches_what_krew_refuses(release: dict[str, Path]) -> None:
    good = yaml.safe_load(release["manifest"].read_text())
    for path, value, problem in [
        (("spec", "version"), "0.1.0", "semver"),
        (("spec", "shortDescription"), "two\nlines", "shortDescription"),
        (("metadata", "name"), "kubectl-calyx", "metadata.name"),
    ]:
        bad = yaml.safe_load(yaml.safe_dump(good))
        bad[path[0]][path[1]] = value
        assert any(problem in p for p in krew_problems(bad, "calyx.yaml")), path
    bad = yaml.safe_load(yaml.safe_dump(good))
    bad["spec"]["platforms"][0]["sha256"] = "ABC"
    bad["spec"]["platforms"][1]["selector"] = {"matchLabels": {"distro": "debian"}}
    problems = krew_problems(bad, "calyx.yaml")
    assert any("sha256" in p for p in problems) and any("selector keys" in p for p in problems)


def test_archive_is_reproducible(release: dict[str, Path], tmp_path: Path) -> None:
    again = _tool().build(HOMEPAGE, URI_BASE, tmp_path, wheel=release["wheel"])
    assert again["archive"].read_bytes() == release["archive"].read_bytes()


def install_like_krew(release: dict[str, Path], root: Path) -> Path:
    """Unpack, apply the platform's file operations, link ``bin`` into krew's bin dir."""
    manifest = yaml.safe_load(release["manifest"].read_text())
    (platform,) = [
        p
        for p in manifest["spec"]["platforms"]
        if p["selector"]["matchLabels"] == {"os": "linux", "arch": "amd64"}
    ]
    unpacked = root / "download"
    with tarfile.open(release["archive"]) as tar:
        tar.extractall(unpacked, filter="data")
    store = root / "store" / "calyx" / manifest["spec"]["version"]
    store.mkdir(parents=True)
    for op in platform["files"]:
        for src in unpacked.glob(op["from"]):
            shutil.copy2(src, store / op["to"] / src.name)
    binary = store / platform["bin"]
    assert binary.exists() and os.access(binary, os.X_OK), "bin is an executable after files ops"
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl-calyx").symlink_to(binary)
    return bin_dir


def test_installed_plugin_runs_under_the_real_kubectl(
    release: dict[str, Path], tmp_path: Path
) -> None:
    """kubectl finds the plugin on PATH and runs it; the launcher builds its private venv from
    the bundled wheel on first use. The wheel's dependencies come from this test run's own venv
    (PYTHONPATH) instead of a package index, so the test needs no network; the wheel itself is
    installed into the launcher's venv, and it is that copy which runs."""
    from calyx_dev import build as cluster_build

    kubectl = cluster_build.bin_dir() / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not built yet (python -m calyx_dev.build)")
    bin_dir = install_like_krew(release, tmp_path)
    site = next(p for p in sys.path if p.endswith("site-packages") and ".venv" in p)
    base_python = getattr(sys, "_base_executable", sys.executable)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "CALYX_PYTHON": base_python,
        "CALYX_KREW_PIP_ARGS": "--no-deps --no-index",
        "PYTHONPATH": site,
    }
    listed = subprocess.run(
        [str(kubectl), "plugin", "list"], capture_output=True, text=True, env=env
    )
    assert str(bin_dir / "kubectl-calyx") in listed.stdout, listed.stdout + listed.stderr
    first = subprocess.run(
        [str(kubectl), "calyx", "--version"], capture_output=True, text=True, env=env, timeout=300
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "calyx 0.1.0"
    assert "first run" in first.stderr
    venv = tmp_path / "home" / ".local" / "share" / "calyx-krew" / "v0.1.0"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import calyx; print(calyx.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert where.stdout.startswith(str(venv)), "the wheel's copy runs, not the checkout's"
    second = subprocess.run(
        [str(kubectl), "calyx", "completion", "bash"], capture_output=True, text=True, env=env
    )
    assert second.returncode == 0, second.stderr
    assert "first run" not in second.stderr, "installed once"
    assert "complete -F _calyx calyx kubectl-calyx" in second.stdout


def test_launcher_refuses_an_old_python(release: dict[str, Path], tmp_path: Path) -> None:
    bin_dir = install_like_krew(release, tmp_path)
    fake = tmp_path / "python-old"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    proc = subprocess.run(
        [str(bin_dir / "kubectl-calyx"), "--version"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CALYX_PYTHON": str(fake)},
    )
    assert proc.returncode == 1
    assert "needs Python 3.11" in proc.stderr
