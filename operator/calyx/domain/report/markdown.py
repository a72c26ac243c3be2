"""``report.md``: the report as Markdown, rendered from ``report.json`` alone (so the CLI can show
either from a saved file).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calyx.domain.report.common import AUDIT_KEY, as_list, as_map

__all__ = ["render_markdown"]


def render_markdown(report: Mapping[str, Any]) -> str:
    """Human-readable Markdown, from ``report.json`` alone."""
    r = as_map(report.get("rollout"))
    lines: list[str] = [
        f"# Rollout {r.get('namespace')}/{r.get('name')}: {r.get('phase')}",
        "",
    ]
    if r.get("message"):
        lines += [f"> {_inline(r['message'])}", ""]
    target = as_map(report.get("target"))
    lines += [
        "| | |",
        "| --- | --- |",
        f"| Target | {_cell(target.get('kind', 'Deployment'))} "
        f"`{_code(target.get('name', '?'))}` |",
    ]
    for c in as_list(report.get("change")):
        lines.append(f"| Image `{_code(c.get('name'))}` | `{_code(c.get('image'))}` |")
    repl = as_map(report.get("replicas"))
    if repl.get("stable") is not None:
        lines.append(
            f"| Replicas | {repl.get('stable')} stable, {repl.get('canary') or 0} canary, "
            f"{repl.get('effectivePercent') or 0}% served by the canary |"
        )
    lines += [f"| Report generated | {_cell(report.get('generatedAt'))} |", ""]

    lines += _md_lease(as_map(report.get("lease")))
    lines += _md_risk(report.get("risk"))
    lines += _md_analysis(as_map(report.get("analysis")))
    lines += _md_tiers(as_list(report.get("tiers")), str(report.get("tiersSource") or ""))
    lines += _md_rollback(report.get("rollback"))
    lines += _md_decisions(as_list(report.get("decisions")))
    lines += _md_audit(as_map(report.get("audit")), str(r.get("name") or "<rollout>"))
    omissions = as_list(report.get("omissions"))
    if omissions:
        lines += ["## Left out", ""] + [f"- {_inline(o)}" for o in omissions] + [""]
    return "\n".join(lines)


def _md_lease(lease: Mapping[str, Any]) -> list[str]:
    lines = ["## Lease", ""]
    name = lease.get("name")
    if not lease.get("found"):
        lines += [f"leases.calyx.io `{_code(name)}` was not found (deleted?).", ""]
        if lease.get("digest"):
            lines += [f"Verified digest: `{lease['digest']}`", ""]
        return lines
    lines += [
        f"leases.calyx.io `{_code(name)}`, phase {_cell(lease.get('phase') or '?')}, "
        f"expires {_cell(lease.get('expiresAt'))}",
        "",
        f"**Intent:** {_inline(lease.get('intent') or '')}",
        "",
        f"**Digest:** `{lease.get('digest')}`",
    ]
    current = lease.get("currentDigest")
    if current and current != lease.get("digest"):
        lines.append(f"(the Lease's current digest is `{current}`)")
    c = as_map(lease.get("constraints"))
    lines += [
        "",
        f"**Constraints:** maxInitialWeight {c.get('maxInitialWeight')}%, "
        f"requireAnalysis {str(c.get('requireAnalysis')).lower()}",
        "",
    ]
    cosigners = as_list(lease.get("cosigners"))
    if cosigners:
        lines += [
            "| Cosigner | Role | Signed at | Valid | Reason |",
            "| --- | --- | --- | --- | --- |",
        ]
        for s in cosigners:
            lines.append(
                f"| {_cell(s.get('id'))} | {_cell(s.get('role'))} | {_cell(s.get('signedAt'))} "
                f"| {'yes' if s.get('valid') else 'no'} | {_cell(s.get('reason'))} |"
            )
        lines.append("")
    return lines


def _md_risk(risk: Any) -> list[str]:
    if not isinstance(risk, Mapping):
        return ["## Risk", "", "Not assessed.", ""]
    lines = ["## Risk", "", f"Score **{risk.get('score')}** / 100: **{risk.get('level')}**", ""]
    factors = as_list(risk.get("factors"))
    if factors:
        lines += ["| Factor | Points | Detail |", "| --- | ---: | --- |"]
        lines += [
            f"| {_cell(f.get('name'))} | {_cell(f.get('points'))} | {_cell(f.get('detail'))} |"
            for f in factors
        ]
        lines.append("")
    return lines


def _md_analysis(a: Mapping[str, Any]) -> list[str]:
    lines = ["## Analysis thresholds", ""]
    if a.get("error"):
        return [*lines, f"Invalid analysis spec: {_inline(a['error'])}", ""]
    metrics = as_list(a.get("metrics"))
    if not metrics:
        return [*lines, "No metric analysis configured.", ""]
    lines += [
        f"Every {a.get('intervalSeconds')} s over a {a.get('windowSeconds')} s window; "
        f"failureLimit {a.get('failureLimit')}; on breach: {a.get('onBreach')}; no data: roll "
        f"back after {a.get('noDataRollbackAfterSeconds')} s (0 = never).",
        "",
        "| Metric | Threshold | Query |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {_cell(m.get('name'))} | {_cell(m.get('threshold'))} | {_cell(m.get('query'))} |"
        for m in metrics
    ]
    return [*lines, ""]


def _md_tiers(tiers: list[Any], source: str) -> list[str]:
    src = {"spec": "from spec.tiers", "risk": "recommended by the risk level"}.get(source, source)
    lines = ["## Tiers", "", f"Tiers {src}." if src else "", ""]
    for t in tiers:
        t = as_map(t)
        approval = f", approval {t.get('approval')}" if t.get("approval") == "Manual" else ""
        by = f" (approved by {_inline(t['approvedBy'])})" if t.get("approvedBy") else ""
        lines += [
            f"### Tier {int(t.get('index') or 0) + 1}: {t.get('weight')}% "
            f"(soak {t.get('soakSeconds') or 0} s{approval}): {t.get('result')}{by}",
            "",
            f"Started {_cell(t.get('startedAt') or '-')}, completed "
            f"{_cell(t.get('completedAt') or '-')}",
            "",
        ]
        metrics = as_list(t.get("metrics"))
        if metrics:
            lines += [
                "| Metric | Canary | Baseline | Threshold | Verdict |",
                "| --- | ---: | ---: | --- | --- |",
            ]
            lines += [
                f"| {_cell(m.get('name'))} | {_num(m.get('canary'))} | {_num(m.get('baseline'))} "
                f"| {_cell(m.get('threshold'))} | {_cell(m.get('verdict'))} |"
                for m in metrics
            ]
            lines.append("")
    return lines


def _md_rollback(rb: Any) -> list[str]:
    if not isinstance(rb, Mapping):
        return []
    lines = [
        "## Rollback",
        "",
        f"**Trigger:** {_cell(rb.get('trigger'))}: {_inline(rb.get('reason') or '')}",
        "",
        "| Step | Time |",
        "| --- | --- |",
    ]
    for key, label in (
        ("breachAt", "breaching sample"),
        ("detectedAt", "breach detected"),
        ("revertedAt", "revert issued"),
        ("verifiedAt", "stable verified restored"),
    ):
        if rb.get(key):
            lines.append(f"| {label} | {_cell(rb[key])} |")
    lines.append("")
    timing = [
        f"{label} {_num(rb[key])} s"
        for key, label in (
            ("detectSeconds", "detection"),
            ("revertSeconds", "revert"),
            ("totalSeconds", "total"),
        )
        if rb.get(key) is not None
    ]
    if timing:
        lines += [", ".join(timing).capitalize() + ".", ""]
    return lines


def _md_decisions(decisions: list[Any]) -> list[str]:
    lines = ["## Decisions", ""]
    if not decisions:
        return [*lines, "None recorded.", ""]
    lines += ["| # | Time | Event | Reason | Message |", "| ---: | --- | --- | --- | --- |"]
    for d in decisions:
        d = as_map(d)
        warn = " ⚠" if d.get("type") == "Warning" else ""
        lines.append(
            f"| {_cell(d.get('seq'))} | {_cell(d.get('time'))} | `{_code(d.get('event'))}` "
            f"| {_cell(d.get('reason'))}{warn} | {_cell(d.get('message'))} |"
        )
    return [*lines, ""]


def _md_audit(a: Mapping[str, Any], name: str) -> list[str]:
    lines = [
        "## Audit chain",
        "",
        f"{a.get('records', 0)} record(s), head `{a.get('head')}`.",
        "",
    ]
    if a.get("dropped"):
        lines += [
            f"`{AUDIT_KEY}` holds records {a.get('firstSeq')}-{a.get('records')}; the "
            f"{a.get('dropped')} older ones were dropped for size. The kept tail verifies from "
            f"anchor `{a.get('anchor')}`; the full chain is in the operator's log.",
            "",
        ]
    return [*lines, f"Verify: `calyx audit verify {_code(name)}`", ""]


def _inline(value: Any) -> str:
    return " ".join(str(value).split())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return _inline(value).replace("\\", "\\\\").replace("|", "\\|")


def _code(value: Any) -> str:
    return _inline(value).replace("`", "'")


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}"
    return _cell(value)
