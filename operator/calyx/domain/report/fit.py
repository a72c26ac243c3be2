"""Fitting the report into its ConfigMap, ``<rollout>-report``: at most 1 MiB for the whole object.

The audit chain in it is a contiguous *tail* of the newest records that still verifies from its
anchor (the hash of the record before it); when the three keys together would still exceed the
budget the tail is shortened further, then the Markdown is cut, and the report says what was left
out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from calyx.domain import audit
from calyx.domain.canary import MANAGED_BY, ROLLOUT_LABEL, owner_reference
from calyx.domain.report.build import audit_omission, audit_section
from calyx.domain.report.common import (
    AUDIT_KEY,
    JSON_KEY,
    MAX_AUDIT_BYTES,
    MAX_AUDIT_RECORDS,
    MD_KEY,
    as_list,
    as_map,
)
from calyx.domain.report.markdown import render_markdown

__all__ = [
    "CONFIGMAP_LIMIT_BYTES",
    "DATA_BUDGET_BYTES",
    "configmap_body",
    "configmap_data",
    "configmap_name",
]

CONFIGMAP_LIMIT_BYTES: Final = 1024 * 1024
"""The API server's limit for a whole ConfigMap object (etcd value)."""

DATA_BUDGET_BYTES: Final = 900 * 1024
"""What the three data keys may use together; the rest is left for metadata."""


def configmap_name(rollout_name: str) -> str:
    """``<rollout>-report``."""
    return f"{rollout_name}-report"


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
    section = as_map(report.get("audit"))
    return section.get("kept") != len(kept.records) or section.get("dropped") != kept.dropped


def _with_tail(
    report: Mapping[str, Any], chain: Sequence[Mapping[str, Any]], kept: audit.Tail
) -> dict[str, Any]:
    out = dict(report)
    out["audit"] = audit_section(chain, kept)
    first = kept.dropped + 1
    out["decisions"] = [
        d for d in as_list(report.get("decisions")) if isinstance(d, Mapping) and _ge(d, first)
    ]
    omissions = [o for o in as_list(report.get("omissions")) if not str(o).startswith("audit:")]
    if kept.dropped:
        omissions.append(audit_omission(kept))
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
    meta = as_map(rollout.get("metadata"))
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


def _dump(report: Mapping[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=1, sort_keys=False, allow_nan=False)
