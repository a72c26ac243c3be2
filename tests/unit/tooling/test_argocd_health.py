"""The Argo CD health script, executed by a real Lua 5.1 interpreter (Argo CD's dialect, via
lupa) against Lease and Rollout objects captured from real runs (tests/fixtures/status/, made by
tests/e2e/capture_status_fixtures.py), plus the edge cases a GitOps tool meets: no status yet, a
status for an older generation, an operator that writes no kstatus conditions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

from calyx.domain.kstatus import kstatus_conditions

ROOT = Path(__file__).resolve().parents[3]
FILES = ROOT / "charts" / "calyx" / "files"
SCRIPT = (FILES / "argocd-health.lua").read_text()
FIXTURES = ROOT / "tests" / "fixtures" / "status"
KEYS = (
    "resource.customizations.health.calyx.io_Lease",
    "resource.customizations.health.calyx.io_Rollout",
)

# file -> (Argo CD health, a word the message must contain)
EXPECTED = {
    "lease-verified.json": ("Healthy", "cosigned by"),
    "lease-consumed.json": ("Healthy", "consumed by Rollout"),
    "lease-rejected.json": ("Degraded", "agent"),
    "lease-expired.json": ("Degraded", "expired"),
    "rollout-completed.json": ("Healthy", "new images"),
    "rollout-progressing.json": ("Progressing", "5%"),
    "rollout-waitingforlease.json": ("Progressing", "waiting for lease"),
    "rollout-paused.json": ("Suspended", "paused"),
    "rollout-waitingforapproval.json": ("Suspended", "approval"),
    "rollout-rolledback.json": ("Degraded", "rolled back"),
    "rollout-failed.json": ("Degraded", "consumed"),
}


def health(obj: dict[str, Any] | None) -> dict[str, str]:
    """Run the script as Argo CD does: the object as global ``obj``, the chunk returns ``hs``."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    assert lua.eval("_VERSION") == "Lua 5.1"
    lua.globals().obj = lua.table_from(obj or {}, recursive=True)
    hs = lua.execute(SCRIPT)
    return {"status": str(hs["status"]), "message": str(hs["message"] or "")}


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def without_kstatus(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    conds = out["status"].get("conditions") or []
    out["status"]["conditions"] = [
        c for c in conds if c["type"] not in ("Ready", "Reconciling", "Stalled")
    ]
    return out


def test_every_captured_fixture_is_expected() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_objects(name: str) -> None:
    obj = fixture(name)
    want, word = EXPECTED[name]
    got = health(obj)
    assert got["status"] == want, got
    assert word in got["message"], got
    # the captured objects carry kstatus conditions for the generation they show
    conds = {c["type"]: c for c in obj["status"]["conditions"]}
    assert {"Ready", "Reconciling", "Stalled"} <= set(conds), name
    assert all(
        conds[t]["observedGeneration"] == obj["metadata"]["generation"]
        for t in ("Ready", "Reconciling", "Stalled")
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_phase_fallback_agrees_on_real_objects(name: str) -> None:
    """An older operator writes no kstatus conditions: the phase gives the same answer."""
    got = health(without_kstatus(fixture(name)))
    assert got["status"] == EXPECTED[name][0], got


def test_conditions_win_over_the_phase() -> None:
    obj = fixture("rollout-completed.json")
    obj["status"]["conditions"] = kstatus_conditions(
        "Rollout",
        "Failed",
        obj["metadata"]["generation"],
        "2026-11-25T10:00:00Z",
        obj["status"]["conditions"],
        "made up",
    )
    assert health(obj) == {"status": "Degraded", "message": "made up"}


def test_conditions_for_another_generation_are_not_trusted() -> None:
    """Conditions observed for an older spec fall back to the phase (when status itself has no
    observedGeneration to say it is stale)."""
    obj = fixture("rollout-completed.json")
    obj["status"]["conditions"] = kstatus_conditions(
        "Rollout", "Failed", 1, "2026-11-25T10:00:00Z", [], "stale"
    )
    obj["metadata"]["generation"] = 2
    obj["status"].pop("observedGeneration")
    assert health(obj)["status"] == "Healthy"


def test_status_for_an_older_generation_is_progressing() -> None:
    obj = fixture("rollout-completed.json")
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    got = health(obj)
    assert got["status"] == "Progressing"
    assert "observe generation" in got["message"]


@pytest.mark.parametrize("kind", ["Lease", "Rollout"])
def test_no_status_yet_is_progressing(kind: str) -> None:
    obj = {"apiVersion": "calyx.io/v1alpha1", "kind": kind, "metadata": {"generation": 1}}
    assert health(obj)["status"] == "Progressing"


# Phases the capture does not stop in (transient), by phase alone and through kstatus.
TRANSIENT = [
    ("Lease", "Pending", "Progressing"),
    ("Rollout", "Promoting", "Progressing"),
    ("Rollout", "Validating", "Progressing"),
    ("Rollout", "RollingBack", "Progressing"),
]


@pytest.mark.parametrize(("kind", "phase", "want"), TRANSIENT)
def test_transient_phases(kind: Any, phase: str, want: str) -> None:
    obj = {"kind": kind, "metadata": {"generation": 3}, "status": {"phase": phase}}
    assert health(obj)["status"] == want
    obj["status"]["observedGeneration"] = 3
    obj["status"]["conditions"] = kstatus_conditions(
        kind, phase, 3, "2026-11-25T10:00:00Z", [], "busy"
    )
    assert health(obj) == {"status": want, "message": "busy"}


def test_the_argocd_snippets_carry_the_script_verbatim() -> None:
    cm = yaml.safe_load((FILES / "argocd-cm-health.yaml").read_text())
    values = yaml.safe_load((FILES / "argocd-helm-values.yaml").read_text())
    for data in (cm["data"], values["configs"]["cm"]):
        assert set(data) == set(KEYS)
        assert all(v == SCRIPT for v in data.values()), "snippet drifted from argocd-health.lua"


def test_a_lua_error_is_not_swallowed() -> None:
    """The interpreter is real: a broken script raises (Argo CD would show the error)."""
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from({}, recursive=True)
    with pytest.raises(lua51.LuaError):
        lua.execute(SCRIPT.replace("return hs\nend", "return hs[nil].x\nend", 1))
