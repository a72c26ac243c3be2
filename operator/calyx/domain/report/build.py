"""``report.json``: the report built from the Rollout, its Lease and the audit chain.

It answers, long after the Events expired: what was authorized (intent, lease digest,
cosigners), how risky it looked, how each tier's metrics compared with the thresholds, every
decision with its time, how fast a rollback was, and the audit chain that backs it all
(docs/report.md documents every field). Free texts and the decision list are capped here; the
whole ConfigMap is fitted into its size limit by :mod:`calyx.domain.report.fit`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from calyx.api.lease import DEFAULT_MAX_INITIAL_WEIGHT, DEFAULT_REQUIRE_ANALYSIS
from calyx.api.rollout import DEFAULT_ON_BREACH
from calyx.domain import audit
from calyx.domain.analysis import AnalysisError, parse_analysis
from calyx.domain.report.common import (
    AUDIT_KEY,
    MAX_AUDIT_BYTES,
    MAX_AUDIT_RECORDS,
    SCHEMA,
    as_list,
    as_map,
    clip,
)
from calyx.domain.report.markdown import render_markdown
from calyx.domain.risk import recommended_tiers
from calyx.domain.timefmt import format_time_ms, parse_stamp

__all__ = [
    "MAX_DECISIONS",
    "MAX_DECISION_MESSAGE",
    "MAX_TEXT",
    "audit_omission",
    "audit_section",
    "build_report",
]

MAX_DECISIONS: Final = 300
MAX_DECISION_MESSAGE: Final = 240
MAX_TEXT: Final = 2048

_DEFAULT_TIERS_LEVEL: Final = "Low"


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
    meta = as_map(rollout.get("metadata"))
    spec = as_map(rollout.get("spec"))
    status = as_map(rollout.get("status"))
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
        omissions.append(audit_omission(kept))

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "generatedAt": format_time_ms(now),
        "rollout": {
            "namespace": str(meta.get("namespace") or ""),
            "name": str(meta.get("name") or ""),
            "uid": str(meta.get("uid") or ""),
            "generation": meta.get("generation"),
            "phase": status.get("phase") or "Pending",
            "message": clip(str(status.get("message") or "")),
        },
        "target": as_map(status.get("target")) or None,
        "change": [
            {"name": str(c.get("name")), "image": str(c.get("image"))}
            for c in as_list(as_map(status.get("change")).get("containers"))
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
                "message": clip(str(c.get("message") or "")),
                "lastTransitionTime": c.get("lastTransitionTime"),
            }
            for c in as_list(status.get("conditions"))
            if isinstance(c, Mapping)
        ],
        "decisions": decisions,
        "audit": audit_section(chain, kept),
        "omissions": omissions,
    }
    safe: dict[str, Any] = _json_safe(report)
    return safe


def _lease(
    spec: Mapping[str, Any], status: Mapping[str, Any], lease: Mapping[str, Any] | None
) -> dict[str, Any]:
    name = str(as_map(spec.get("leaseRef")).get("name") or "")
    verified = status.get("leaseDigest")
    out: dict[str, Any] = {"name": name, "found": lease is not None, "digest": verified}
    if lease is None:
        return out
    lspec, lstatus = as_map(lease.get("spec")), as_map(lease.get("status"))
    constraints = as_map(lspec.get("constraints"))
    max_initial = constraints.get("maxInitialWeight")
    require = constraints.get("requireAnalysis")
    current = lstatus.get("digest")
    out.update(
        {
            "intent": clip(str(lspec.get("intent") or ""), MAX_TEXT),
            "digest": verified or current,
            "currentDigest": current,
            "phase": lstatus.get("phase"),
            "expiresAt": lspec.get("expiresAt"),
            "constraints": {
                "maxInitialWeight": (
                    max_initial if isinstance(max_initial, int) else DEFAULT_MAX_INITIAL_WEIGHT
                ),
                "requireAnalysis": (
                    require if isinstance(require, bool) else DEFAULT_REQUIRE_ANALYSIS
                ),
            },
            "cosigners": [
                {
                    "id": str(c.get("id") or ""),
                    "role": str(c.get("role") or ""),
                    "signedAt": str(c.get("signedAt") or ""),
                    "valid": bool(c.get("valid")),
                    "reason": clip(str(c.get("reason") or "")),
                }
                for c in as_list(lstatus.get("cosigners"))
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
                "detail": clip(str(f.get("detail") or "")),
            }
            for f in as_list(raw.get("factors"))
            if isinstance(f, Mapping)
        ],
    }


def _thresholds(spec: Mapping[str, Any]) -> dict[str, Any]:
    try:
        settings = parse_analysis(
            as_map(spec.get("analysis")), spec.get("onBreach") or DEFAULT_ON_BREACH
        )
    except AnalysisError as exc:
        return {"error": clip(str(exc)), "metrics": []}
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
        t for t in as_list(spec.get("tiers")) if isinstance(t, Mapping)
    ]
    source = "spec"
    if not planned:
        level = as_map(status.get("risk")).get("level")
        source = "risk" if isinstance(level, str) else "default"
        planned = recommended_tiers(level if isinstance(level, str) else _DEFAULT_TIERS_LEVEL)
    observed = [t for t in as_list(status.get("tiers")) if isinstance(t, Mapping)]
    if observed and [t.get("weight") for t in observed] != [t.get("weight") for t in planned]:
        source = "status"  # status is what actually ran
        planned = observed
    texts = {m["name"]: m["threshold"] for m in thresholds.get("metrics", [])}
    out = []
    for i, plan in enumerate(planned):
        seen: Mapping[str, Any] = observed[i] if i < len(observed) else {}
        metrics = []
        for name, sample in sorted(as_map(seen.get("metrics")).items()):
            sample = as_map(sample)
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
    for name, sample in sorted(as_map(raw.get("values")).items()):
        sample = as_map(sample)
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
        "reason": clip(str(raw.get("reason") or raw.get("message") or "")),
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
    out["reason"] = clip(str(out["reason"] or ""))
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


def audit_section(chain: Sequence[Mapping[str, Any]], kept: audit.Tail) -> dict[str, Any]:
    return {
        "key": AUDIT_KEY,
        "head": audit.head(chain),
        "records": _last_seq(chain),
        "kept": len(kept.records),
        "firstSeq": kept.dropped + 1 if kept.records else None,
        "anchor": kept.anchor,
        "dropped": kept.dropped,
    }


def audit_omission(kept: audit.Tail) -> str:
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
        "message": clip(str(rec.get("message") or ""), MAX_DECISION_MESSAGE),
    }


def _last_seq(chain: Sequence[Mapping[str, Any]]) -> int:
    if not chain:
        return 0
    seq = chain[-1].get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else len(chain)


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
