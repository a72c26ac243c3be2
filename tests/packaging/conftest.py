"""Fixtures for the packaging tests: a helm binary, chart rendering, and the image's venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "calyx"


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the pinned helm, built from the Go module proxy on first use (tools/helm.sh)."""
    if os.environ.get("CALYX_HELM"):
        return os.environ["CALYX_HELM"]
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "helm.sh")], capture_output=True, text=True, timeout=1200
    )
    if proc.returncode == 3:
        pytest.skip(f"helm unavailable: {proc.stderr.strip()}")
    if proc.returncode != 0:
        pytest.fail(f"tools/helm.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def helm_env(tmp: Path | None = None) -> dict[str, str]:
    """Hermetic helm: its config/cache/data homes in a throw-away directory."""
    base = tmp or Path(tempfile.gettempdir()) / "calyx-helm-home"
    env = dict(os.environ)
    env["HELM_CONFIG_HOME"] = str(base / "config")
    env["HELM_CACHE_HOME"] = str(base / "cache")
    env["HELM_DATA_HOME"] = str(base / "data")
    return env


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm, *args], capture_output=True, text=True, env=helm_env(), cwd=ROOT, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def render(
    helm: str,
    values: dict[str, Any] | None = None,
    *,
    release: str = "calyx",
    namespace: str = "calyx-system",
    extra: tuple[str, ...] = (),
    tmp: Path | None = None,
) -> list[dict[str, Any]]:
    """``helm template`` the chart with ``values`` (a dict written to a values file)."""
    args = ["template", release, str(CHART), "--namespace", namespace, *extra]
    if values is not None:
        directory = Path(tempfile.mkdtemp(dir=tmp))
        vf = directory / "values.yaml"
        vf.write_text(yaml.safe_dump(values))
        args += ["-f", str(vf)]
    out = run_helm(helm, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, got {len(hits)}"
    return hits[0]


# ------------------------------------------------------------------------------ the image's venv


def _world_usable(path: Path) -> bool:
    """Whether an unprivileged uid can reach ``path`` (every parent o+x, the file o+rx)."""
    path = path.resolve()
    if not path.exists() or (path.stat().st_mode & 0o005) != 0o005:
        return False
    return all(p.stat().st_mode & 0o001 for p in path.parents)


def _image_python() -> str | None:
    """A Python 3.11 that an unprivileged user can run and that can make a venv.

    The image runs as uid 65532; when the tests run as root they drop to that uid, which needs an
    interpreter outside root's home. Returns None when there is none (the test then runs as the
    current user, and says so).
    """
    candidates = [
        getattr(sys, "_base_executable", sys.executable),
        "/usr/bin/python3.11",
        "/usr/local/bin/python3.11",
    ]
    for cand in candidates:
        if not cand or not Path(cand).exists() or not _world_usable(Path(cand)):
            continue
        probe = subprocess.run(
            [cand, "-c", "import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 11)"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return cand
    return None


@dataclass
class ImageVenv:
    """The wheel installed into a fresh venv, like the image's /opt/calyx."""

    root: Path  # world-readable scratch dir holding everything below
    venv: Path
    wheel: Path
    unprivileged: bool  # venv's interpreter usable by uid 65532

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _trim_like_the_image(venv: Path) -> None:
    """Replay the builder stage's clean-up (``pip uninstall -y ...``, ``rm -rf /opt/calyx/...``)."""
    from tests.packaging.dockerfile import parse

    runs = " ".join(i.args for i in parse(ROOT / "Dockerfile").stages[0].all("RUN"))
    for step in (s.strip() for s in runs.split("&&")):
        words = step.split()
        if words[:1] == ["/opt/calyx/bin/pip"] and words[1:3] == ["uninstall", "-y"]:
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", *words[3:]],
                check=True,
                env=_without_pythonpath(),
            )
        elif words[:2] == ["rm", "-rf"]:
            for target in words[2:]:
                assert target.startswith("/opt/calyx/"), f"unexpected rm in the Dockerfile: {step}"
                path = venv / target.removeprefix("/opt/calyx/")
                assert path.exists(), f"{step}: {path} does not exist (stale clean-up?)"
                shutil.rmtree(path)


def _without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="session")
def image_venv() -> Iterator[ImageVenv]:
    """Build the wheel (like the Dockerfile's builder stage) and install it into a new venv."""
    root = Path(tempfile.mkdtemp(prefix="calyx-image-"))
    root.chmod(0o755)
    try:
        src = root / "src"
        src.mkdir()
        # build from a copy: `pip wheel .` writes build/ and *.egg-info next to the sources
        shutil.copy2(ROOT / "pyproject.toml", src)
        if (ROOT / "README.md").exists():
            shutil.copy2(ROOT / "README.md", src)
        shutil.copytree(
            ROOT / "operator",
            src / "operator",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        )
        wheels = root / "wheels"
        t0 = time.monotonic()
        built = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "-q",
                "--wheel-dir",
                str(wheels),
                str(src),
            ],
            cwd=src,
            capture_output=True,
            text=True,
        )
        assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}\n{built.stderr}"
        (wheel,) = wheels.glob("calyx-*.whl")
        python = _image_python()
        venv = root / "venv"
        subprocess.run([python or sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                str(wheel),
            ],
            check=True,
            # A PYTHONPATH reaching a source checkout (its calyx.egg-info) made pip find calyx
            # "already satisfied" and install nothing into the venv.
            env=_without_pythonpath(),
        )
        _trim_like_the_image(venv)
        print(
            f"\n[packaging] wheel {wheel.name} {wheel.stat().st_size / 1024:.0f} KiB, "
            f"venv {_du(venv) / 2**20:.0f} MiB, built in {time.monotonic() - t0:.0f}s",
            file=sys.stderr,
        )
        yield ImageVenv(root=root, venv=venv, wheel=wheel, unprivileged=python is not None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
