"""``report.json``: the report built from the Rollout, its Lease and the audit chain.

It answers, long after the Events expired: what was authorized (intent, lease digest,
cosigners), how risky it looked, how each tier's metrics compared with the thresholds, every
decision with its time, how fast a rollback was, and the audit chain that backs it all
(docs/report.md documents every field). Free texts and the decision list are capped here; the
whole ConfigMap is fitted into its size limit by :mod:`calyx.domain.report.fit`.

The Rollout's status is read once into :class:`~calyx.api.rollout.RolloutStatus`, the way the
planner reads it (:func:`~calyx.domain.rollout_plan.load_status`: unknown fields ignored, a
top-level field that does not validate read as absent), and its times are written as the
operator records them (milliseconds). The conditions stay in their stored form, as in the
planner. The report's own keys (docs/report.md) are spelled here; the spec and the Lease are
read as stored, tolerantly, since the report is written whatever state they are in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError

from calyx.api.lease import DEFAULT_MAX_INITIAL_WEIGHT, DEFAULT_REQUIRE_ANALYSIS
from calyx.api.rollout import (
    DEFAULT_ON_BREACH,
    AnalysisStatus,
    MetricSample,
    Risk,
    RollbackStatus,
    RolloutStatus,
    TierStatus,
)
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
from calyx.domain.rollout_plan import load_status
from calyx.domain.timefmt import format_time_ms

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
    stored = as_map(rollout.get("status"))
    status = _load_status(stored)
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
            "phase": status.phase or "Pending",
            "message": clip(status.message or ""),
        },
        "target": (
            {"kind": status.target.kind, "name": status.target.name} if status.target else None
        ),
        "change": [
            {"name": c.name, "image": c.image}
            for c in (status.change.containers if status.change else [])
        ],
        "lease": _lease(spec, status, lease),
        "risk": _risk(status.risk),
        "analysis": thresholds,
        "tiersSource": source,
        "tiers": tiers,
        "currentTier": status.current_tier,
        "replicas": {
            "stable": status.stable_replicas,
            "canary": status.canary_replicas,
            "effectivePercent": status.effective_percent,
        },
        "lastAnalysis": _last_analysis(status.last_analysis),
        "rollback": _rollback(status.rollback),
        "conditions": _conditions(stored),
        "decisions": decisions,
        "audit": audit_section(chain, kept),
        "omissions": omissions,
    }
    safe: dict[str, Any] = _json_safe(report)
    return safe


def _load_status(stored: Mapping[str, Any]) -> RolloutStatus:
    """The Rollout's status read once, as the planner reads it (:func:`load_status`: unknown
    fields ignored, a top-level field that does not validate read as absent); a status that
    cannot be read at all is reported as empty, since a report must always be written."""
    try:
        return load_status(stored)
    except ValidationError:
        return RolloutStatus()


def _conditions(stored: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conditions, read in their stored (wire) form as the planner keeps them
    (``rollout_plan.WIRE_KEYS``)."""
    return [
        {
            "type": str(c.get("type")),
            "status": str(c.get("status")),
            "reason": str(c.get("reason") or ""),
            "message": clip(str(c.get("message") or "")),
            "lastTransitionTime": c.get("lastTransitionTime"),
        }
        for c in as_list(stored.get("conditions"))
        if isinstance(c, Mapping)
    ]


def _time(value: dt.datetime | None) -> str | None:
    """A status time as the operator records it (milliseconds, ``Z``)."""
    return format_time_ms(value) if value is not None else None


def _lease(
    spec: Mapping[str, Any], status: RolloutStatus, lease: Mapping[str, Any] | None
) -> dict[str, Any]:
    name = str(as_map(spec.get("leaseRef")).get("name") or "")
    verified = status.lease_digest
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


def _risk(risk: Risk | None) -> dict[str, Any] | None:
    if risk is None:
        return None
    return {
        "score": risk.score,
        "level": risk.level,
        "factors": [
            {"name": f.name, "points": f.points, "detail": clip(f.detail)}
            for f in risk.factors or []
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
    spec: Mapping[str, Any], status: RolloutStatus, thresholds: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    planned: Sequence[Mapping[str, Any]] = [
        t for t in as_list(spec.get("tiers")) if isinstance(t, Mapping)
    ]
    source = "spec"
    if not planned:
        level = status.risk.level if status.risk is not None else None
        source = "risk" if level is not None else "default"
        planned = recommended_tiers(level or _DEFAULT_TIERS_LEVEL)
    # (weight, soakSeconds, approval) as planned: spec tiers (or the recommendation) as written.
    rows = [(t.get("weight"), t.get("soakSeconds", 0), t.get("approval", "Auto")) for t in planned]
    observed = status.tiers or []
    if observed and [t.weight for t in observed] != [w for w, _, _ in rows]:
        source = "status"  # status is what actually ran
        rows = [(t.weight, 0, "Auto") for t in observed]
    texts = {m["name"]: m["threshold"] for m in thresholds.get("metrics", [])}
    out = []
    for i, (weight, soak, approval) in enumerate(rows):
        seen = observed[i] if i < len(observed) else None
        out.append(
            {
                "index": i,
                "weight": weight,
                "soakSeconds": soak,
                "approval": approval,
                "startedAt": _time(seen.started_at) if seen else None,
                "completedAt": _time(seen.completed_at) if seen else None,
                "result": (seen.result if seen else None) or _unrecorded_result(seen, status),
                "approvedBy": seen.approved_by if seen else None,
                "metrics": _samples(seen.metrics if seen else None, texts),
            }
        )
    return out, source


def _samples(
    samples: Mapping[str, MetricSample] | None, texts: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Metric values by name; a sample without its threshold text takes the spec's (``texts``)."""
    return [
        {
            "name": name,
            "canary": sample.canary,
            "baseline": sample.baseline,
            "threshold": (
                sample.threshold
                if sample.threshold is not None or texts is None
                else texts.get(name)
            ),
            "verdict": sample.verdict,
        }
        for name, sample in sorted((samples or {}).items(), key=lambda item: item[0])
    ]


def _unrecorded_result(tier: TierStatus | None, status: RolloutStatus) -> str:
    """A tier without a recorded result: started ones end the way the rollout ended."""
    if tier is None or tier.started_at is None:
        return "Pending"
    return {"RollingBack": "RolledBack", "RolledBack": "RolledBack", "Failed": "Failed"}.get(
        str(status.phase), "Running"
    )


def _last_analysis(analysis: AnalysisStatus | None) -> dict[str, Any] | None:
    if analysis is None:
        return None
    return {
        "time": _time(analysis.time),
        "verdict": analysis.verdict,
        "reason": clip(analysis.reason),
        "values": _samples(analysis.values),
    }


def _rollback(rollback: RollbackStatus | None) -> dict[str, Any] | None:
    if rollback is None:
        return None
    return {
        "trigger": rollback.trigger,
        "reason": clip(rollback.reason),
        "breachAt": _time(rollback.breach_at),
        "detectedAt": _time(rollback.detected_at),
        "revertedAt": _time(rollback.reverted_at),
        "verifiedAt": _time(rollback.verified_at),
        "detectSeconds": rollback.detect_seconds,
        "revertSeconds": rollback.revert_seconds,
        "totalSeconds": _seconds_between(
            rollback.breach_at or rollback.detected_at, rollback.verified_at
        ),
    }


def _seconds_between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


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
