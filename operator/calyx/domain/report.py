"""The rollout report: ``report.json``, ``report.md`` and ``audit.jsonl`` (docs/report.md,
docs/audit.md).

Every Rollout gets ConfigMap ``<rollout>-report``. It answers, long after the Events expired:
what was authorized (intent, lease digest, cosigners), how risky it looked, how each tier's
metrics compared with the thresholds, every decision with its time, how fast a rollback was,
and the audit chain that backs it all (docs/report.md documents every field).

``report.md`` is rendered from ``report.json`` alone (:func:`render_markdown`), so the CLI can show
either from a saved file. A ConfigMap holds at most 1 MiB: the audit chain in it is a contiguous
*tail* of the newest records that still verifies from its anchor (the hash of the record before
it), decisions and messages are capped, and the report itself says what was left out.

Pure: the clock is passed in, nothing is read or written here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from calyx.domain import audit
from calyx.domain.analysis import AnalysisError, parse_analysis
from calyx.domain.canary import MANAGED_BY, ROLLOUT_LABEL, owner_reference
from calyx.domain.risk import recommended_tiers
from calyx.domain.timefmt import format_time_ms, parse_stamp

__all__ = [
    "AUDIT_KEY",
    "CONFIGMAP_LIMIT_BYTES",
    "JSON_KEY",
    "MD_KEY",
    "SCHEMA",
    "build_report",
    "configmap_body",
    "configmap_data",
    "configmap_name",
    "render_markdown",
]

SCHEMA: Final = "calyx.io/report/v1"
JSON_KEY: Final = "report.json"
MD_KEY: Final = "report.md"
AUDIT_KEY: Final = "audit.jsonl"

CONFIGMAP_LIMIT_BYTES: Final = 1024 * 1024
"""The API server's limit for a whole ConfigMap object (etcd value)."""

DATA_BUDGET_BYTES: Final = 900 * 1024
"""What the three data keys may use together; the rest is left for metadata."""

MAX_AUDIT_RECORDS: Final = 1000
MAX_AUDIT_BYTES: Final = 384 * 1024
MAX_DECISIONS: Final = 300
MAX_DECISION_MESSAGE: Final = 240
MAX_TEXT: Final = 2048

_DEFAULT_TIERS_LEVEL: Final = "Low"


def configmap_name(rollout_name: str) -> str:
    """``<rollout>-report``."""
    return f"{rollout_name}-report"


# --------------------------------------------------------------------------------------------
# report.json
# --------------------------------------------------------------------------------------------


def build_report(
    *,
    rollout: Mapping[str, Any],
    lease: Mapping[str, Any] | None,
    chain: Sequence[Mapping[str, Any]],
    now: dt.datetime,
    max_audit_records: int = MAX_AUDIT_RECORDS,
    max_audit_bytes: int = MAX_AUDIT_BYTES,
) -> tuple[dict[str, Any], str]:
    """``(report.json as a dict, report.md)`` for a Rollout.

    ``rollout`` and ``lease`` are the whole objects as read from the API server (``lease`` None
    when it is gone); ``chain`` is the audit chain as stored (possibly already a tail) including
    the newest records. The report describes the same tail :func:`configmap_data` stores.
    """
    kept = audit.tail(chain, max_records=max_audit_records, max_bytes=max_audit_bytes)
    report = _report(rollout, lease, chain, kept, now)
    return report, render_markdown(report)


def _report(
    rollout: Mapping[str, Any],
    lease: Mapping[str, Any] | None,
    chain: Sequence[Mapping[str, Any]],
    kept: audit.Tail,
    now: dt.datetime,
) -> dict[str, Any]:
    meta = _map(rollout.get("metadata"))
    spec = _map(rollout.get("spec"))
    status = _map(rollout.get("status"))
    omissions: list[str] = []

    thresholds = _thresholds(spec)
    tiers, source = _tiers(spec, status, thresholds)
    decisions = [_decision(r) for r in kept.records]
    if len(decisions) > MAX_DECISIONS:
        omissions.append(
            f"decisions: only the newest {MAX_DECISIONS} of the {len(decisions)} records in "
            f"{AUDIT_KEY} are listed"
        )
        decisions = decisions[-MAX_DECISIONS:]
    if kept.dropped:
        omissions.append(_audit_omission(kept))

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "generatedAt": format_time_ms(now),
        "rollout": {
            "namespace": str(meta.get("namespace") or ""),
            "name": str(meta.get("name") or ""),
            "uid": str(meta.get("uid") or ""),
            "generation": meta.get("generation"),
            "phase": status.get("phase") or "Pending",
            "message": _clip(str(status.get("message") or "")),
        },
        "target": _map(status.get("target")) or None,
        "change": [
            {"name": str(c.get("name")), "image": str(c.get("image"))}
            for c in _list(_map(status.get("change")).get("containers"))
            if isinstance(c, Mapping)
        ],
        "lease": _lease(spec, status, lease),
        "risk": _risk(status.get("risk")),
        "analysis": thresholds,
        "tiersSource": source,
        "tiers": tiers,
        "currentTier": status.get("currentTier"),
        "replicas": {
            "stable": status.get("stableReplicas"),
            "canary": status.get("canaryReplicas"),
            "effectivePercent": status.get("effectivePercent"),
        },
        "lastAnalysis": _last_analysis(status.get("lastAnalysis")),
        "rollback": _rollback(status.get("rollback")),
        "conditions": [
            {
                "type": str(c.get("type")),
                "status": str(c.get("status")),
                "reason": str(c.get("reason") or ""),
                "message": _clip(str(c.get("message") or "")),
                "lastTransitionTime": c.get("lastTransitionTime"),
            }
            for c in _list(status.get("conditions"))
            if isinstance(c, Mapping)
        ],
        "decisions": decisions,
        "audit": _audit_section(chain, kept),
        "omissions": omissions,
    }
    safe: dict[str, Any] = _json_safe(report)
    return safe


def _lease(
    spec: Mapping[str, Any], status: Mapping[str, Any], lease: Mapping[str, Any] | None
) -> dict[str, Any]:
    name = str(_map(spec.get("leaseRef")).get("name") or "")
    verified = status.get("leaseDigest")
    out: dict[str, Any] = {"name": name, "found": lease is not None, "digest": verified}
    if lease is None:
        return out
    lspec, lstatus = _map(lease.get("spec")), _map(lease.get("status"))
    constraints = _map(lspec.get("constraints"))
    max_initial = constraints.get("maxInitialWeight")
    require = constraints.get("requireAnalysis")
    current = lstatus.get("digest")
    out.update(
        {
            "intent": _clip(str(lspec.get("intent") or ""), MAX_TEXT),
            "digest": verified or current,
            "currentDigest": current,
            "phase": lstatus.get("phase"),
            "expiresAt": lspec.get("expiresAt"),
            "constraints": {
                "maxInitialWeight": max_initial if isinstance(max_initial, int) else 5,
                "requireAnalysis": require if isinstance(require, bool) else True,
            },
            "cosigners": [
                {
                    "id": str(c.get("id") or ""),
                    "role": str(c.get("role") or ""),
                    "signedAt": str(c.get("signedAt") or ""),
                    "valid": bool(c.get("valid")),
                    "reason": _clip(str(c.get("reason") or "")),
                }
                for c in _list(lstatus.get("cosigners"))
                if isinstance(c, Mapping)
            ],
        }
    )
    return out


def _risk(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    return {
        "score": raw.get("score"),
        "level": raw.get("level"),
        "factors": [
            {
                "name": str(f.get("name") or ""),
                "points": f.get("points"),
                "detail": _clip(str(f.get("detail") or "")),
            }
            for f in _list(raw.get("factors"))
            if isinstance(f, Mapping)
        ],
    }


def _thresholds(spec: Mapping[str, Any]) -> dict[str, Any]:
    try:
        settings = parse_analysis(_map(spec.get("analysis")), spec.get("onBreach") or "Rollback")
    except AnalysisError as exc:
        return {"error": _clip(str(exc)), "metrics": []}
    return {
        "intervalSeconds": settings.interval_seconds,
        "windowSeconds": settings.window_seconds,
        "failureLimit": settings.failure_limit,
        "noDataRollbackAfterSeconds": settings.no_data_rollback_after_seconds,
        "onBreach": settings.on_breach,
        "metrics": [
            {
                "name": m.name,
                "kind": m.kind,
                "limit": m.limit,
                "threshold": m.threshold_text,
                "query": "custom" if m.query is not None else "default",
            }
            for m in settings.metrics
        ],
    }


def _tiers(
    spec: Mapping[str, Any], status: Mapping[str, Any], thresholds: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    planned: Sequence[Mapping[str, Any]] = [
        t for t in _list(spec.get("tiers")) if isinstance(t, Mapping)
    ]
    source = "spec"
    if not planned:
        level = _map(status.get("risk")).get("level")
        source = "risk" if isinstance(level, str) else "default"
        planned = recommended_tiers(level if isinstance(level, str) else _DEFAULT_TIERS_LEVEL)
    observed = [t for t in _list(status.get("tiers")) if isinstance(t, Mapping)]
    if observed and [t.get("weight") for t in observed] != [t.get("weight") for t in planned]:
        source = "status"  # status is what actually ran
        planned = observed
    texts = {m["name"]: m["threshold"] for m in thresholds.get("metrics", [])}
    out = []
    for i, plan in enumerate(planned):
        seen: Mapping[str, Any] = observed[i] if i < len(observed) else {}
        metrics = []
        for name, sample in sorted(_map(seen.get("metrics")).items()):
            sample = _map(sample)
            threshold = sample.get("threshold")
            metrics.append(
                {
                    "name": str(name),
                    "canary": sample.get("canary"),
                    "baseline": sample.get("baseline"),
                    "threshold": threshold if threshold is not None else texts.get(name),
                    "verdict": sample.get("verdict"),
                }
            )
        out.append(
            {
                "index": i,
                "weight": plan.get("weight"),
                "soakSeconds": plan.get("soakSeconds", 0),
                "approval": plan.get("approval", "Auto"),
                "startedAt": seen.get("startedAt"),
                "completedAt": seen.get("completedAt"),
                "result": seen.get("result") or _unrecorded_result(seen, status),
                "approvedBy": seen.get("approvedBy"),
                "metrics": metrics,
            }
        )
    return out, source


def _unrecorded_result(tier: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """A tier without a recorded result: started ones end the way the rollout ended."""
    if not tier.get("startedAt"):
        return "Pending"
    return {"RollingBack": "RolledBack", "RolledBack": "RolledBack", "Failed": "Failed"}.get(
        str(status.get("phase")), "Running"
    )


def _last_analysis(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    values = []
    for name, sample in sorted(_map(raw.get("values")).items()):
        sample = _map(sample)
        values.append(
            {
                "name": str(name),
                "canary": sample.get("canary"),
                "baseline": sample.get("baseline"),
                "threshold": sample.get("threshold"),
                "verdict": sample.get("verdict"),
            }
        )
    return {
        "time": raw.get("time"),
        "verdict": raw.get("verdict"),
        "reason": _clip(str(raw.get("reason") or raw.get("message") or "")),
        "values": values,
    }


_ROLLBACK_FIELDS: Final = (
    "trigger",
    "reason",
    "breachAt",
    "detectedAt",
    "revertedAt",
    "verifiedAt",
    "detectSeconds",
    "revertSeconds",
)


def _rollback(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    out = {k: raw.get(k) for k in _ROLLBACK_FIELDS}
    out["reason"] = _clip(str(out["reason"] or ""))
    total = _seconds_between(raw.get("breachAt") or raw.get("detectedAt"), raw.get("verifiedAt"))
    out["totalSeconds"] = total
    return out


def _seconds_between(start: Any, end: Any) -> float | None:
    try:
        a, b = _parse(start), _parse(end)
    except ValueError:
        return None
    if a is None or b is None:
        return None
    return round(max(0.0, (b - a).total_seconds()), 3)


def _parse(value: Any) -> dt.datetime | None:
    return parse_stamp(value) if isinstance(value, str) else None


def _audit_section(chain: Sequence[Mapping[str, Any]], kept: audit.Tail) -> dict[str, Any]:
    return {
        "key": AUDIT_KEY,
        "head": audit.head(chain),
        "records": _last_seq(chain),
        "kept": len(kept.records),
        "firstSeq": kept.dropped + 1 if kept.records else None,
        "anchor": kept.anchor,
        "dropped": kept.dropped,
    }


def _audit_omission(kept: audit.Tail) -> str:
    return (
        f"audit: the {kept.dropped} oldest record(s) (seq 1-{kept.dropped}) are not in "
        f"{AUDIT_KEY} (size limit); the kept tail verifies from anchor {kept.anchor}, and the "
        "dropped records are in the operator's log"
    )


def _decision(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "seq": rec.get("seq"),
        "time": rec.get("time"),
        "event": rec.get("event"),
        "reason": rec.get("reason"),
        "type": rec.get("type"),
        "message": _clip(str(rec.get("message") or ""), MAX_DECISION_MESSAGE),
    }


def _last_seq(chain: Sequence[Mapping[str, Any]]) -> int:
    if not chain:
        return 0
    seq = chain[-1].get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else len(chain)


# --------------------------------------------------------------------------------------------
# ConfigMap
# --------------------------------------------------------------------------------------------


def configmap_data(
    report_json: Mapping[str, Any],
    report_md: str,
    chain: Sequence[Mapping[str, Any]],
    *,
    max_audit_records: int = MAX_AUDIT_RECORDS,
    max_audit_bytes: int = MAX_AUDIT_BYTES,
    budget_bytes: int = DATA_BUDGET_BYTES,
) -> dict[str, str]:
    """``data`` of ConfigMap ``<rollout>-report``: ``report.json``, ``report.md``, ``audit.jsonl``.

    The audit chain is cut to the tail the report describes; if the three keys together would
    still exceed ``budget_bytes`` the tail is shortened further (the report's ``audit`` section
    and markdown are updated to match) and, as a last resort, the markdown is cut. The result
    always fits, and always says what it left out.
    """
    report = dict(report_json)
    md = report_md
    limit = max_audit_bytes
    while True:
        kept = audit.tail(chain, max_records=max_audit_records, max_bytes=limit)
        if _audit_section_differs(report, kept):
            report = _with_tail(report, chain, kept)
            md = render_markdown(report)
        data = {
            JSON_KEY: _dump(report),
            MD_KEY: md,
            AUDIT_KEY: audit.to_jsonl(kept.records),
        }
        size = sum(len(v.encode("utf-8")) for v in data.values())
        if size <= budget_bytes:
            return data
        if kept.records and limit > 1024:
            limit = min(limit, len(data[AUDIT_KEY].encode("utf-8"))) // 2
            continue
        # Nothing left to trim from the chain: cut the prose, then the decision list.
        room = budget_bytes - len(data[JSON_KEY].encode()) - len(data[AUDIT_KEY].encode())
        note = "\n\n… (report.md cut to fit the ConfigMap size limit; see report.json)\n"
        if room > len(note) + 1024:
            cut = md.encode("utf-8")[: room - len(note.encode())].decode("utf-8", "ignore")
            data[MD_KEY] = cut + note
            return data
        report = dict(report)
        report["decisions"] = []
        report["omissions"] = [*report.get("omissions", []), "decisions: omitted to fit"]
        md = _MD_FALLBACK.format(name=report.get("rollout", {}).get("name", ""))
        data = {JSON_KEY: _dump(report), MD_KEY: md, AUDIT_KEY: data[AUDIT_KEY]}
        return data


_MD_FALLBACK: Final = "# Rollout {name}\n\nThe report is too large to render; see report.json.\n"


def _audit_section_differs(report: Mapping[str, Any], kept: audit.Tail) -> bool:
    section = _map(report.get("audit"))
    return section.get("kept") != len(kept.records) or section.get("dropped") != kept.dropped


def _with_tail(
    report: Mapping[str, Any], chain: Sequence[Mapping[str, Any]], kept: audit.Tail
) -> dict[str, Any]:
    out = dict(report)
    out["audit"] = _audit_section(chain, kept)
    first = kept.dropped + 1
    out["decisions"] = [
        d for d in _list(report.get("decisions")) if isinstance(d, Mapping) and _ge(d, first)
    ]
    omissions = [o for o in _list(report.get("omissions")) if not str(o).startswith("audit:")]
    if kept.dropped:
        omissions.append(_audit_omission(kept))
    out["omissions"] = omissions
    return out


def _ge(decision: Mapping[str, Any], first: int) -> bool:
    seq = decision.get("seq")
    return isinstance(seq, int) and seq >= first


def configmap_body(
    rollout: Mapping[str, Any], data: Mapping[str, str], *, owned: bool = False
) -> dict[str, Any]:
    """The whole ConfigMap ``<rollout>-report`` to create or replace.

    Not owned by the Rollout by default: the audit trail must outlive the Rollout (and Events);
    delete it with ``kubectl delete configmap -l calyx.io/rollout=<name>``. ``owned=True`` adds an
    owner reference so Kubernetes garbage-collects it with the Rollout.
    """
    meta = _map(rollout.get("metadata"))
    metadata: dict[str, Any] = {
        "name": configmap_name(str(meta.get("name"))),
        "namespace": str(meta.get("namespace")),
        "labels": {
            ROLLOUT_LABEL: str(meta.get("name")),
            **MANAGED_BY,
            "app.kubernetes.io/component": "report",
        },
    }
    if owned:
        metadata["ownerReferences"] = [owner_reference(rollout)]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(data)}


# --------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------


def render_markdown(report: Mapping[str, Any]) -> str:
    """Human-readable Markdown, from ``report.json`` alone."""
    r = _map(report.get("rollout"))
    lines: list[str] = [
        f"# Rollout {r.get('namespace')}/{r.get('name')}: {r.get('phase')}",
        "",
    ]
    if r.get("message"):
        lines += [f"> {_inline(r['message'])}", ""]
    target = _map(report.get("target"))
    lines += [
        "| | |",
        "| --- | --- |",
        f"| Target | {_cell(target.get('kind', 'Deployment'))} "
        f"`{_code(target.get('name', '?'))}` |",
    ]
    for c in _list(report.get("change")):
        lines.append(f"| Image `{_code(c.get('name'))}` | `{_code(c.get('image'))}` |")
    repl = _map(report.get("replicas"))
    if repl.get("stable") is not None:
        lines.append(
            f"| Replicas | {repl.get('stable')} stable, {repl.get('canary') or 0} canary, "
            f"{repl.get('effectivePercent') or 0}% served by the canary |"
        )
    lines += [f"| Report generated | {_cell(report.get('generatedAt'))} |", ""]

    lines += _md_lease(_map(report.get("lease")))
    lines += _md_risk(report.get("risk"))
    lines += _md_analysis(_map(report.get("analysis")))
    lines += _md_tiers(_list(report.get("tiers")), str(report.get("tiersSource") or ""))
    lines += _md_rollback(report.get("rollback"))
    lines += _md_decisions(_list(report.get("decisions")))
    lines += _md_audit(_map(report.get("audit")), str(r.get("name") or "<rollout>"))
    omissions = _list(report.get("omissions"))
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
    c = _map(lease.get("constraints"))
    lines += [
        "",
        f"**Constraints:** maxInitialWeight {c.get('maxInitialWeight')}%, "
        f"requireAnalysis {str(c.get('requireAnalysis')).lower()}",
        "",
    ]
    cosigners = _list(lease.get("cosigners"))
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
    factors = _list(risk.get("factors"))
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
    metrics = _list(a.get("metrics"))
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
        t = _map(t)
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
        metrics = _list(t.get("metrics"))
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
        d = _map(d)
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


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _clip(text: str, limit: int = 1024) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _dump(report: Mapping[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=1, sort_keys=False, allow_nan=False)
