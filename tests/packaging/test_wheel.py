"""The wheel ships the operator and the CLI, and no development tooling (docs/architecture.md):
no local control plane, traffic simulator, Prometheus launcher or demo driver in an artifact that
runs next to signing keys."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = out.glob("calyx-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_the_wheel_has_the_product(wheel_names: list[str]) -> None:
    for module in (
        "calyx/handlers/operator.py",
        "calyx/reconcile/rollout.py",
        "calyx/domain/rollout_plan.py",
        "calyx/cli/main.py",
        "calyx/py.typed",
    ):
        assert module in wheel_names, module


def test_the_wheel_has_no_development_tooling(wheel_names: list[str]) -> None:
    dev = [
        n
        for n in wheel_names
        if n.startswith(("calyx/devenv/", "calyx_dev/", "tests/"))
        or n == "calyx/cli/demo.py"
        or n.endswith("kwok-stages.yaml")
    ]
    assert dev == [], dev


def test_installed_cli_explains_where_the_demo_lives(tmp_path: Path) -> None:
    """Outside a source checkout, `calyx demo` says what to do in one line."""
    code = (
        "import sys, importlib, pathlib\n"
        "import calyx.cli.main as m\n"
        "m.Path = lambda *_: pathlib.Path('/nonexistent/a/b/c/d')\n"  # no checkout around it
        "sys.modules.pop('calyx_dev', None)\n"
        f"sys.path[:] = [p for p in sys.path if p not in ('', '.', {str(ROOT)!r})]\n"
        "sys.exit(m.main(['demo']))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "operator")},
    )  # fmt: skip
    assert res.returncode != 0
    assert "source checkout" in res.stderr and "make demo" in res.stderr, res.stderr
