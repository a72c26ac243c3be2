"""The alerting rules: `promtool check rules` and `promtool test rules` (Debian's promtool)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "calyx" / "files" / "calyx.rules.yaml"
RULE_TESTS = Path(__file__).with_name("calyx_rules_test.yaml")
ALERTS = {
    "CalyxRollbackHappened",
    "CalyxRolloutStuck",
    "CalyxLeaseExpiresDuringRollout",
    "CalyxOperatorDown",
    "CalyxNoLeader",
    "CalyxAnalysisNoData",
    "CalyxObjectMetricsFailing",
}


def promtool() -> str:
    path = os.environ.get("CALYX_PROMTOOL") or shutil.which("promtool")
    if path is None:
        if os.environ.get("CALYX_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("promtool not installed (Debian package prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus, or .ci/system-deps.sh)")
    return path


def test_promtool_check_rules() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    rules = yaml.safe_load(RULES.read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert names == ALERTS
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {a["alertname"] for t in cases for a in t["alert_rule_test"] if a["exp_alerts"]}
    quiet = {a["alertname"] for t in cases for a in t["alert_rule_test"] if not a["exp_alerts"]}
    assert fired == ALERTS, f"never seen firing: {ALERTS - fired}"
    assert quiet == ALERTS, f"never seen quiet: {ALERTS - quiet}"


def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: a threshold moved makes promtool report the difference."""
    broken = RULES.read_text().replace(") > 1800", ") > 2700")
    assert broken != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = ["rules.yaml"]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tests))
    proc = subprocess.run(
        [promtool(), "test", "rules", "t.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode != 0
    assert "CalyxRolloutStuck" in proc.stdout + proc.stderr
