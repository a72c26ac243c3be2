"""Rollout report (docs/report.md): report.json, report.md, the ConfigMap size bound, and the
CLI verbs ``calyx report`` / ``calyx audit verify`` (offline with --file, and with a fake
cluster)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml

from calyx.cli import report_cmds
from calyx.cli.context import CliContext
from calyx.cli.errors import CliError
from calyx.domain import audit, report
from calyx.domain.report import build_report, configmap_body, configmap_data, render_markdown

NOW = dt.datetime(2026, 11, 25, 17, 30, tzinfo=dt.UTC)
T0 = dt.datetime(2026, 11, 25, 17, 0, tzinfo=dt.UTC)
DIGEST = "sha256:" + "ab" * 32


def rollout(**status_extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "RolledBack",
        "message": "rolled back (Breach): stable verified equal to the snapshot",
        "target": {"kind": "Deployment", "name": "checkout"},
        "change": {"containers": [{"name": "app", "image": "reg/checkout:2.3.1"}]},
        "leaseDigest": DIGEST,
        "currentTier": 1,
        "stableReplicas": 20,
        "canaryReplicas": 0,
        "effectivePercent": 0,
        "risk": {
            "score": 35,
            "level": "Medium",
            "factors": [
                {"name": "mutable-tag", "points": 15, "detail": "image of app is a tag"},
                {"name": "semver-major", "points": 20, "detail": "app 1.4.2 -> 2.3.1"},
            ],
        },
        "tiers": [
            {
                "weight": 5,
                "startedAt": "2026-11-25T17:00:00.000Z",
                "completedAt": "2026-11-25T17:02:00.000Z",
                "result": "Passed",
                "metrics": {
                    "errorRate": {"canary": 2, "baseline": 1, "threshold": "max 10‰",
                                  "verdict": "Pass"},
                    "tes": {"canary": 97.5, "baseline": 98, "verdict": "Pass"},
                },
            },
            {
                "weight": 25,
                "startedAt": "2026-11-25T17:02:00.000Z",
                "approvedBy": "alice",
                "metrics": {
                    "errorRate": {"canary": 23, "baseline": 1, "threshold": "max 10‰",
                                  "verdict": "Breach"},
                },
            },
            {"weight": 100},
        ],
        "lastAnalysis": {
            "time": "2026-11-25T17:03:10.000Z",
            "verdict": "Breach",
            "reason": "errorRate canary 23‰ > max 10‰ (baseline 1‰)",
            "values": {"errorRate": {"canary": 23, "baseline": 1, "threshold": "max 10‰",
                                     "verdict": "Breach"}},
        },
        "rollback": {
            "trigger": "Breach",
            "reason": "errorRate canary 23‰ > max 10‰",
            "breachAt": "2026-11-25T17:03:05.000Z",
            "detectedAt": "2026-11-25T17:03:10.120Z",
            "revertedAt": "2026-11-25T17:03:10.450Z",
            "verifiedAt": "2026-11-25T17:03:31.000Z",
            "detectSeconds": 5.12,
            "revertSeconds": 0.33,
        },
        "conditions": [
            {"type": "RolledBack", "status": "True", "reason": "Breach", "message": "m",
             "lastTransitionTime": "2026-11-25T17:03:31Z"},
        ],
    }  # fmt: skip
    status.update(status_extra)
    return {
        "apiVersion": "calyx.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "checkout-2-3-1", "namespace": "shop", "uid": "u-1", "generation": 2},
        "spec": {
            "leaseRef": {"name": "checkout-2-3-1"},
            "analysis": {
                "intervalSeconds": 5,
                "tes": {"maxDropPercent": 5},
                "errorRate": {"maxPermille": 10},
                "custom": [{"name": "p99-latency", "query": "q", "max": 300}],
            },
        },
        "status": status,
    }


LEASE = {
    "apiVersion": "calyx.io/v1alpha1",
    "kind": "Lease",
    "metadata": {"name": "checkout-2-3-1", "namespace": "shop"},
    "spec": {
        "intent": "INT-42: checkout 2.3.1 fixes cart | rounding",
        "targetRef": {"kind": "Deployment", "name": "checkout"},
        "change": {"containers": [{"name": "app", "image": "reg/checkout:2.3.1"}]},
        "constraints": {"maxInitialWeight": 5},
        "expiresAt": "2026-11-25T18:00:00Z",
    },
    "status": {
        "phase": "Consumed",
        "digest": DIGEST,
        "cosigners": [
            {"id": "alice", "role": "human", "signedAt": "2026-11-25T16:50:00Z", "valid": True},
            {"id": "sentinel", "role": "agent", "signedAt": "2026-11-25T16:51:00Z",
             "valid": True},
            {"id": "mallory", "role": "human", "signedAt": "2026-11-25T16:52:00Z",
             "valid": False, "reason": "signature does not verify"},
        ],
    },
}  # fmt: skip

EVENTS = [
    ("DeployStarted", "Normal", "canary checkout-canary started at 5% of checkout"),
    ("CanaryPromoted", "Normal", "tier 2/3: canary to 25% (lease re-verified)"),
    ("ThresholdBreached", "Warning", "errorRate canary 23‰ > max 10‰"),
    ("RolledBack", "Warning", "revert issued (Breach): errorRate canary 23‰ > max 10‰"),
    ("RollbackComplete", "Normal", "checkout restored and verified"),
]


def chain_of(n: int, message_pad: int = 0) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    obj = rollout()
    for i in range(n):
        reason, type_, message = EVENTS[i % len(EVENTS)]
        chain.append(
            audit.append(
                chain,
                time=T0 + dt.timedelta(seconds=i),
                event=None,
                reason=reason,
                type=type_,
                obj=obj,
                message=message + " " + "x" * message_pad,
                data={"i": i},
            )
        )
    return chain


# --- report.json -----------------------------------------------------------------------------


def test_report_json_holds_everything() -> None:
    chain = chain_of(5)
    rep, md = build_report(rollout=rollout(), lease=LEASE, chain=chain, now=NOW)
    assert rep["schema"] == "calyx.io/report/v1"
    assert rep["generatedAt"] == "2026-11-25T17:30:00.000Z"
    assert rep["rollout"]["phase"] == "RolledBack"
    assert rep["lease"]["intent"].startswith("INT-42")
    assert rep["lease"]["digest"] == DIGEST
    assert [c["id"] for c in rep["lease"]["cosigners"]] == ["alice", "sentinel", "mallory"]
    assert rep["lease"]["cosigners"][2] == {
        "id": "mallory", "role": "human", "signedAt": "2026-11-25T16:52:00Z", "valid": False,
        "reason": "signature does not verify",
    }  # fmt: skip
    assert rep["lease"]["constraints"] == {"maxInitialWeight": 5, "requireAnalysis": True}
    assert rep["risk"]["score"] == 35 and len(rep["risk"]["factors"]) == 2
    assert [m["name"] for m in rep["analysis"]["metrics"]] == ["tes", "errorRate", "p99-latency"]
    assert rep["analysis"]["intervalSeconds"] == 5
    # tiers from the risk recommendation (spec.tiers omitted, risk Medium -> 120 s soak)
    assert rep["tiersSource"] == "risk"
    assert [(t["weight"], t["soakSeconds"], t["result"]) for t in rep["tiers"]] == [
        (5, 120, "Passed"),
        (25, 120, "RolledBack"),
        (100, 0, "Pending"),
    ]
    t1 = rep["tiers"][1]
    assert t1["approvedBy"] == "alice"
    assert t1["metrics"] == [
        {"name": "errorRate", "canary": 23, "baseline": 1, "threshold": "max 10‰",
         "verdict": "Breach"},
    ]  # fmt: skip
    tes = rep["tiers"][0]["metrics"][1]
    assert tes["name"] == "tes" and tes["threshold"] == "max drop 5%"  # filled from the spec
    rb = rep["rollback"]
    assert rb["trigger"] == "Breach" and rb["detectSeconds"] == 5.12
    assert rb["revertSeconds"] == 0.33 and rb["totalSeconds"] == 26.0
    assert [d["event"] for d in rep["decisions"]] == [
        "deploy_event.STARTED",
        "deploy_event.CANARY_PROMOTED",
        "analysis_event.BREACH",
        "deploy_event.ROLLED_BACK",
        "rollback_event.COMPLETE",
    ]
    assert rep["decisions"][0]["time"] == "2026-11-25T17:00:00.000Z"
    assert rep["audit"] == {
        "key": "audit.jsonl", "head": chain[-1]["hash"], "records": 5, "kept": 5,
        "firstSeq": 1, "anchor": audit.GENESIS, "dropped": 0,
    }  # fmt: skip
    assert rep["omissions"] == []
    json.dumps(rep, allow_nan=False)
    assert md == render_markdown(rep)


def test_report_markdown_reads_well() -> None:
    chain = chain_of(5)
    _, md = build_report(rollout=rollout(), lease=LEASE, chain=chain, now=NOW)
    assert md.startswith("# Rollout shop/checkout-2-3-1: RolledBack\n")
    for text in (
        "**Intent:** INT-42: checkout 2.3.1 fixes cart | rounding",
        f"**Digest:** `{DIGEST}`",
        "| mallory | human | 2026-11-25T16:52:00Z | no | signature does not verify |",
        "Score **35** / 100: **Medium**",
        "| semver-major | 20 | app 1.4.2 -> 2.3.1 |",
        "| p99-latency | max 300 | custom |",
        "### Tier 2: 25% (soak 120 s): RolledBack (approved by alice)",
        "| errorRate | 23 | 1 | max 10‰ | Breach |",
        "| tes | 97.5 | 98 | max drop 5% | Pass |",
        "| revert issued | 2026-11-25T17:03:10.450Z |",
        "Detection 5.12 s, revert 0.33 s, total 26 s.",
        "| 3 | 2026-11-25T17:00:02.000Z | `analysis_event.BREACH` | ThresholdBreached ⚠ |",
        f"5 record(s), head `{chain[-1]['hash']}`.",
        "calyx audit verify checkout-2-3-1",
    ):
        assert text in md, text


def test_markdown_escapes_table_cells() -> None:
    obj = rollout()
    obj["status"]["risk"]["factors"][0]["detail"] = "a | b\nc"
    _, md = build_report(rollout=obj, lease=LEASE, chain=[], now=NOW)
    assert "| mutable-tag | 15 | a \\| b c |" in md
    assert "None recorded." in md


def test_minimal_rollout_and_missing_lease() -> None:
    obj = {
        "apiVersion": "calyx.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u"},
        "spec": {"leaseRef": {"name": "gone"}, "tiers": [{"weight": 50, "soakSeconds": 30},
                                                         {"weight": 100}]},
    }  # fmt: skip
    rep, md = build_report(rollout=obj, lease=None, chain=[], now=NOW)
    assert rep["rollout"]["phase"] == "Pending"
    assert rep["lease"] == {"name": "gone", "found": False, "digest": None}
    assert rep["risk"] is None and rep["rollback"] is None
    assert rep["tiersSource"] == "spec"
    assert [(t["weight"], t["soakSeconds"]) for t in rep["tiers"]] == [(50, 30), (100, 0)]
    assert rep["analysis"]["metrics"] == []
    assert rep["audit"]["records"] == 0 and rep["audit"]["head"] == audit.GENESIS
    assert "was not found" in md and "No metric analysis configured." in md


def test_invalid_analysis_is_reported_not_raised() -> None:
    obj = rollout()
    obj["spec"]["analysis"] = {"custom": [{"name": "x"}]}
    rep, md = build_report(rollout=obj, lease=LEASE, chain=[], now=NOW)
    assert "custom[0].query: required field is missing" in rep["analysis"]["error"]
    assert "Invalid analysis spec" in md


def test_status_tiers_win_when_they_differ_from_the_plan() -> None:
    obj = rollout(tiers=[{"weight": 10, "result": "Passed"}, {"weight": 100}])
    rep, _ = build_report(rollout=obj, lease=LEASE, chain=[], now=NOW)
    assert rep["tiersSource"] == "status"
    assert [t["weight"] for t in rep["tiers"]] == [10, 100]


def test_a_status_field_that_does_not_validate_is_reported_as_absent() -> None:
    """The status is read as the planner reads it (load_status): a top-level field that does
    not validate is absent, the rest is reported, and the report is still written."""
    obj = rollout(
        currentTier="two",
        rollback={"reason": "no trigger"},
        lastAnalysis={"time": "yesterday", "verdict": "Pass"},
        tiers=[{"weight": 5, "startedAt": "soon"}],
        newerOperatorField={"x": 1},
    )
    rep, md = build_report(rollout=obj, lease=LEASE, chain=[], now=NOW)
    assert rep["currentTier"] is None and rep["rollback"] is None and rep["lastAnalysis"] is None
    assert rep["tiersSource"] == "risk" and rep["tiers"][0]["startedAt"] is None
    assert rep["rollout"]["phase"] == "RolledBack" and rep["lease"]["digest"] == DIGEST
    assert rep["conditions"][0]["lastTransitionTime"] == "2026-11-25T17:03:31Z"  # as stored
    assert "## Rollback" not in md


# --- the ConfigMap ---------------------------------------------------------------------------


def test_configmap_data_and_body() -> None:
    chain = chain_of(5)
    rep, md = build_report(rollout=rollout(), lease=LEASE, chain=chain, now=NOW)
    data = configmap_data(rep, md, chain)
    assert sorted(data) == ["audit.jsonl", "report.json", "report.md"]
    assert json.loads(data["report.json"]) == rep
    assert data["report.md"] == md
    assert audit.parse_jsonl(data["audit.jsonl"]) == chain
    body = configmap_body(rollout(), data)
    assert body["metadata"]["name"] == "checkout-2-3-1-report"
    assert body["metadata"]["labels"]["calyx.io/rollout"] == "checkout-2-3-1"
    assert "ownerReferences" not in body["metadata"]  # the audit trail outlives the Rollout
    owned = configmap_body(rollout(), data, owned=True)
    assert owned["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def _cm_size(body: dict[str, Any]) -> int:
    return len(json.dumps(body, ensure_ascii=False).encode("utf-8"))


@pytest.mark.parametrize("pad", [0, 100, 900])
def test_huge_rollout_stays_under_one_mib(pad: int) -> None:
    obj = rollout()
    custom = [{"name": f"metric-{i}", "query": "q" * 4000, "max": i} for i in range(10)]
    obj["spec"]["analysis"]["custom"] = custom
    obj["spec"]["tiers"] = [{"weight": w, "soakSeconds": 60} for w in range(10, 100, 10)] + [
        {"weight": 100}
    ]
    many = {f"metric-{i}": {"canary": 1.5, "baseline": 1.25, "threshold": f"max {i}",
                            "verdict": "Pass"} for i in range(10)}  # fmt: skip
    obj["status"]["tiers"] = [
        {"weight": t["weight"], "startedAt": "2026-11-25T17:00:00.000Z", "metrics": many}
        for t in obj["spec"]["tiers"]
    ]
    obj["status"]["message"] = "m" * 50_000
    lease = copy.deepcopy(LEASE)
    lease["spec"]["intent"] = "i" * 2048
    lease["status"]["cosigners"] = [
        {"id": f"s{i}", "role": "human", "signedAt": "x", "valid": False, "reason": "r" * 500}
        for i in range(64)
    ]
    chain = chain_of(3000, message_pad=pad)
    rep, md = build_report(rollout=obj, lease=lease, chain=chain, now=NOW)
    data = configmap_data(rep, md, chain)
    body = configmap_body(obj, data)
    assert _cm_size(body) < 1024 * 1024

    stored = json.loads(data["report.json"])
    kept = audit.parse_jsonl(data["audit.jsonl"])
    section = stored["audit"]
    assert section["records"] == 3000 and section["head"] == chain[-1]["hash"]
    assert section["kept"] == len(kept) and section["dropped"] == 3000 - len(kept) > 0
    assert kept[-1] == chain[-1]
    # the kept tail verifies from the anchor the report names
    r = audit.verify(kept, anchor=section["anchor"], start_seq=section["firstSeq"])
    assert r.ok and r.head == chain[-1]["hash"]
    assert section["anchor"] == chain[section["dropped"] - 1]["hash"]
    # and the report says what it left out
    assert any(o.startswith("audit:") for o in stored["omissions"])
    assert len(stored["decisions"]) == min(len(kept), report.MAX_DECISIONS)
    if len(kept) > report.MAX_DECISIONS:
        assert any(o.startswith("decisions:") for o in stored["omissions"])
    assert "were dropped for size" in data["report.md"]


def test_tight_budget_shrinks_the_tail_and_keeps_the_report_consistent() -> None:
    chain = chain_of(200, message_pad=500)
    rep, md = build_report(rollout=rollout(), lease=LEASE, chain=chain, now=NOW)
    data = configmap_data(rep, md, chain, budget_bytes=120_000)
    assert sum(len(v.encode()) for v in data.values()) <= 120_000
    stored = json.loads(data["report.json"])
    kept = audit.parse_jsonl(data["audit.jsonl"])
    assert 0 < len(kept) < 200
    assert stored["audit"]["kept"] == len(kept)
    assert stored["audit"]["firstSeq"] == kept[0]["seq"]
    assert all(d["seq"] >= kept[0]["seq"] for d in stored["decisions"])
    assert f"holds records {kept[0]['seq']}-200" in data["report.md"]
    assert audit.verify(kept, anchor=stored["audit"]["anchor"], start_seq=kept[0]["seq"]).ok


# --- CLI -------------------------------------------------------------------------------------


class FakeKube:
    def __init__(self, configmaps: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.configmaps = configmaps

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.configmaps.get((namespace, name))


def ctx_with(data: dict[str, str] | None) -> CliContext:
    cms = {}
    if data is not None:
        cms[("shop", "checkout-2-3-1-report")] = {"kind": "ConfigMap", "data": data}
    return cast(CliContext, SimpleNamespace(kube=FakeKube(cms), namespace="shop"))


def args(**kw: Any) -> SimpleNamespace:
    base = {"name": "checkout-2-3-1", "file": None, "format": "md", "expect_head": None}
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def stored() -> tuple[list[dict[str, Any]], dict[str, str]]:
    chain = chain_of(5)
    rep, md = build_report(rollout=rollout(), lease=LEASE, chain=chain, now=NOW)
    return chain, configmap_data(rep, md, chain)


def test_cli_report_from_the_cluster(stored: tuple[list[dict[str, Any]], dict[str, str]]) -> None:
    _, data = stored
    out = report_cmds.cmd_report(ctx_with(data), args())
    assert out.startswith("# Rollout shop/checkout-2-3-1: RolledBack")
    out = report_cmds.cmd_report(ctx_with(data), args(format="json"))
    assert json.loads(out)["rollout"]["name"] == "checkout-2-3-1"


def test_cli_report_not_found_is_one_line() -> None:
    with pytest.raises(CliError) as err:
        report_cmds.cmd_report(ctx_with(None), args())
    assert "no report for rollout" in str(err.value) and "\n" not in str(err.value)


def test_cli_audit_verify_from_the_cluster(
    stored: tuple[list[dict[str, Any]], dict[str, str]],
) -> None:
    chain, data = stored
    text, ok = report_cmds.cmd_audit_verify(ctx_with(data), args())
    assert ok
    assert text.splitlines()[:2] == [
        "audit chain ok: 5 record(s), seq 1-5",
        f"head {chain[-1]['hash']}",
    ]
    text, ok = report_cmds.cmd_audit_verify(ctx_with(data), args(expect_head=chain[-1]["hash"]))
    assert ok and "head matches the expected head" in text
    text, ok = report_cmds.cmd_audit_verify(ctx_with(data), args(expect_head=chain[-2]["hash"]))
    assert not ok and "MISMATCH: expected head" in text


def test_cli_audit_verify_broken(stored: tuple[list[dict[str, Any]], dict[str, str]]) -> None:
    _, data = stored
    lines = data["audit.jsonl"].splitlines()
    del lines[2]
    broken = {**data, "audit.jsonl": "\n".join(lines) + "\n"}
    text, ok = report_cmds.cmd_audit_verify(ctx_with(broken), args())
    assert not ok
    assert text.startswith("audit chain BROKEN at line 3, seq 4: ")
    assert "missing before it" in text


def test_cli_audit_verify_notices_truncation_at_the_end(
    stored: tuple[list[dict[str, Any]], dict[str, str]],
) -> None:
    """Dropping the newest record keeps the chain consistent; report.json's head catches it."""
    _, data = stored
    lines = data["audit.jsonl"].splitlines()[:-1]
    cut = {**data, "audit.jsonl": "\n".join(lines) + "\n"}
    text, ok = report_cmds.cmd_audit_verify(ctx_with(cut), args())
    assert not ok and "MISMATCH: report.json names head" in text


def test_cli_offline_files(
    tmp_path: Path, stored: tuple[list[dict[str, Any]], dict[str, str]]
) -> None:
    chain, data = stored
    (tmp_path / "report.json").write_text(data["report.json"])
    (tmp_path / "audit.jsonl").write_text(data["audit.jsonl"])
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": data}
    (tmp_path / "cm.yaml").write_text(yaml.safe_dump(cm, allow_unicode=True))
    (tmp_path / "one.jsonl").write_text(audit.to_jsonl(chain[:1]))
    offline = ctx_with(None)

    out = report_cmds.cmd_report(offline, args(name=None, file=str(tmp_path / "report.json")))
    assert out == data["report.md"].rstrip("\n")  # re-rendered from report.json
    out = report_cmds.cmd_report(
        offline, args(name=None, file=str(tmp_path / "cm.yaml"), format="json")
    )
    assert json.loads(out) == json.loads(data["report.json"])

    text, ok = report_cmds.cmd_audit_verify(offline, args(file=str(tmp_path / "audit.jsonl")))
    assert ok and "5 record(s)" in text
    text, ok = report_cmds.cmd_audit_verify(offline, args(file=str(tmp_path / "cm.yaml")))
    assert ok
    text, ok = report_cmds.cmd_audit_verify(offline, args(file=str(tmp_path / "one.jsonl")))
    assert ok and "1 record(s)" in text

    with pytest.raises(CliError, match=r"no audit\.jsonl"):
        report_cmds.cmd_audit_verify(offline, args(file=str(tmp_path / "report.json")))
    with pytest.raises(CliError, match="cannot read"):
        report_cmds.cmd_report(offline, args(file=str(tmp_path / "missing.json")))
    (tmp_path / "junk.txt").write_text("[1, 2]\n")
    with pytest.raises(CliError, match="neither a report"):
        report_cmds.cmd_report(offline, args(file=str(tmp_path / "junk.txt")))


def test_cli_verifies_a_stored_tail(tmp_path: Path) -> None:
    chain = chain_of(3000, message_pad=900)
    rep, md = build_report(rollout=rollout(), lease=LEASE, chain=chain, now=NOW)
    data = configmap_data(rep, md, chain)
    text, ok = report_cmds.cmd_audit_verify(ctx_with(data), args())
    assert ok, text
    assert "tail only: records 1-" in text and "report.json's anchor" in text
    # the tail alone (no report.json) still verifies internally, and says so
    (tmp_path / "audit.jsonl").write_text(data["audit.jsonl"])
    text, ok = report_cmds.cmd_audit_verify(
        ctx_with(None), args(file=str(tmp_path / "audit.jsonl"))
    )
    assert ok and "its first record's prev" in text
    # a report whose anchor does not match the tail is caught
    bad = json.loads(data["report.json"])
    bad["audit"]["anchor"] = audit.GENESIS
    text, ok = report_cmds.cmd_audit_verify(
        ctx_with({**data, "report.json": json.dumps(bad)}), args()
    )
    assert not ok and "does not match the anchor" in text
