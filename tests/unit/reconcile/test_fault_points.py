"""The e2e fault hook (tests/support/faults.py): the operator process dies at the named point,
once per marker file; production wiring has no hook unless the harness loads the module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCRIPT = """
from tests.support.faults import exit_after
hook = exit_after("CreateCanary", {marker!r})
hook("WriteSnapshot")
hook("Announce:CreateCanary")
hook("CreateCanary")
print("survived")
"""


def _run(marker: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(marker=str(marker))],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'operator'}:{REPO}"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_exits_137_at_the_point_then_never_again(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    first = _run(marker)
    assert first.returncode == 137 and "survived" not in first.stdout
    assert marker.read_text() == "CreateCanary"
    second = _run(marker)  # the restarted operator, same environment
    assert second.returncode == 0 and "survived" in second.stdout


def test_installed_only_when_the_environment_names_a_point() -> None:
    from calyx.handlers import operator
    from tests.support import faults

    assert operator.FAULTS is None, "production wiring: no hook"
    assert faults.install({}) is None and operator.FAULTS is None
    try:
        hook = faults.install({faults.POINT_ENV: "CreateCanary", faults.MARKER_ENV: "/nonexistent"})
        assert hook is not None and operator.FAULTS is hook
    finally:
        operator.FAULTS = None
