"""``calyx report`` and ``calyx audit verify``: read ConfigMap ``<rollout>-report``.

Both also work offline with ``--file``: a saved ``report.json`` / ``audit.jsonl``, or the whole
ConfigMap as ``kubectl get configmap <rollout>-report -o yaml`` (or ``-o json``) prints it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from calyx.cli.context import CliContext
from calyx.cli.errors import CliError
from calyx.cli.yamlio import KubeSafeLoader
from calyx.domain import audit
from calyx.domain.report import AUDIT_KEY, JSON_KEY, MD_KEY, configmap_name, render_markdown

__all__ = ["cmd_audit_verify", "cmd_report", "verify_text"]


# --------------------------------------------------------------------------------------------
# Reading the report
# --------------------------------------------------------------------------------------------


def _fetch(ctx: CliContext, name: str | None) -> dict[str, str]:
    """The report ConfigMap's ``data`` for rollout ``name`` in the context's namespace."""
    if not name:
        raise CliError("give a rollout NAME or --file PATH")
    ns = ctx.namespace
    cm = ctx.kube.get_configmap(ns, configmap_name(name))
    if cm is None:
        raise CliError(
            f'no report for rollout "{name}" in namespace {ns} yet (configmap '
            f"{configmap_name(name)} not found; it is written once the rollout starts)"
        )
    data = cm.get("data") or {}
    return {str(k): str(v) for k, v in data.items()}


def _read_file(path: str) -> dict[str, str]:
    """A saved file as report ConfigMap ``data``: which keys it provides depends on what it is."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text") from None
    stripped = text.lstrip()
    if not stripped:
        raise CliError(f"{path} is empty")
    # A JSON object on one line followed by more lines: audit.jsonl.
    first_line = stripped.split("\n", 1)[0].strip()
    if first_line.startswith("{") and first_line.endswith("}") and _is_jsonl(stripped):
        doc = json.loads(first_line)
        if "hash" in doc and "prev" in doc:
            return {AUDIT_KEY: text}
    try:
        doc = yaml.load(text, Loader=KubeSafeLoader)  # JSON is YAML
    except yaml.YAMLError:
        if stripped.startswith("#"):
            return {MD_KEY: text}
        raise CliError(f"{path} is neither a report, an audit.jsonl nor a ConfigMap") from None
    if isinstance(doc, Mapping):
        if doc.get("kind") == "ConfigMap" and isinstance(doc.get("data"), Mapping):
            return {str(k): str(v) for k, v in doc["data"].items()}
        if "schema" in doc and "rollout" in doc:
            return {JSON_KEY: text}
        if "hash" in doc and "prev" in doc:
            return {AUDIT_KEY: text}
    if isinstance(doc, str) and stripped.startswith("#"):
        return {MD_KEY: text}
    raise CliError(f"{path} is neither a report, an audit.jsonl nor a ConfigMap")


def _is_jsonl(text: str) -> bool:
    try:
        audit.parse_jsonl(text)
    except audit.AuditFormatError:
        return False
    return True


def _data(ctx: CliContext, args: Any) -> dict[str, str]:
    path = getattr(args, "file", None)
    if path:
        return _read_file(path)
    return _fetch(ctx, getattr(args, "name", None))


def _report_json(data: Mapping[str, str]) -> dict[str, Any] | None:
    text = data.get(JSON_KEY)
    if not text:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{JSON_KEY} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise CliError(f"{JSON_KEY} is not a JSON object")
    return doc


def cmd_report(ctx: CliContext, args: Any) -> str:
    """``calyx report NAME [--format md|json] [--file PATH]``: print the rollout's report."""
    fmt = getattr(args, "format", None) or "md"
    if fmt not in ("md", "json"):
        raise CliError(f"unknown format {fmt!r} (use md or json)")
    data = _data(ctx, args)
    report = _report_json(data)
    if fmt == "json":
        if report is None:
            raise CliError(f"no {JSON_KEY} in the report (only {', '.join(sorted(data))})")
        return json.dumps(report, ensure_ascii=False, indent=2)
    if data.get(MD_KEY):
        return data[MD_KEY].rstrip("\n")
    if report is not None:
        return render_markdown(report).rstrip("\n")
    raise CliError(f"no {MD_KEY} or {JSON_KEY} in the report (only {', '.join(sorted(data))})")


# --------------------------------------------------------------------------------------------
# Verifying the audit chain
# --------------------------------------------------------------------------------------------


def verify_text(
    chain: list[dict[str, Any]],
    *,
    report: Mapping[str, Any] | None = None,
    expect_head: str | None = None,
) -> tuple[str, bool]:
    """Verify ``chain`` (whole, or the stored tail) and describe the outcome in a few lines.

    A tail (first ``seq`` > 1) is checked from the anchor ``report.json`` names, else from its
    own first ``prev``, and the output says that the older records must be checked against the
    operator's log. ``report`` (report.json) and ``expect_head`` (e.g. from the operator log)
    must agree with the chain's head when given.
    """
    section = (report or {}).get("audit") or {}
    raw_seq = chain[0].get("seq") if chain else 1
    first_seq = raw_seq if isinstance(raw_seq, int) and not isinstance(raw_seq, bool) else 1
    is_tail = first_seq > 1
    if is_tail:
        anchor = section.get("anchor") if isinstance(section.get("anchor"), str) else None
        result = audit.verify(chain, anchor=anchor, start_seq=first_seq)
    else:
        result = audit.verify(chain)
    if not result.ok:
        rec = chain[result.index] if result.index is not None else {}
        seq = rec.get("seq") if isinstance(rec, Mapping) else None
        where = f"line {(result.index or 0) + 1}" + (f", seq {seq}" if seq is not None else "")
        return f"audit chain BROKEN at {where}: {result.reason}", False
    lines = [f"audit chain ok: {result.reason}", f"head {result.head}"]
    ok = True
    if is_tail:
        source = "report.json's anchor" if section.get("anchor") else "its first record's prev"
        lines.append(
            f"tail only: records 1-{first_seq - 1} were dropped from the ConfigMap for size; "
            f"the tail was verified from {source} {chain[0].get('prev')}: check the older records "
            "against the operator's log"
        )
    claimed = section.get("head")
    if isinstance(claimed, str) and claimed != result.head:
        lines.append(f"MISMATCH: report.json names head {claimed}, the chain ends at {result.head}")
        ok = False
    if expect_head and expect_head != result.head:
        lines.append(f"MISMATCH: expected head {expect_head}, the chain ends at {result.head}")
        ok = False
    elif expect_head:
        lines.append("head matches the expected head")
    if not ok:
        lines[0] = "audit chain BROKEN: " + lines[0].removeprefix("audit chain ok: ")
    return "\n".join(lines), ok


def cmd_audit_verify(ctx: CliContext, args: Any) -> tuple[str, bool]:
    """``calyx audit verify NAME [--file PATH] [--expect-head sha256:...]``.

    Returns the text to print and whether the chain verified (exit non-zero when not).
    """
    data = _data(ctx, args)
    text = data.get(AUDIT_KEY)
    if text is None:
        raise CliError(
            f"no {AUDIT_KEY} in the report (only {', '.join(sorted(data)) or 'nothing'})"
        )
    try:
        chain = audit.parse_jsonl(text)
    except audit.AuditFormatError as exc:
        return f"audit chain BROKEN: {exc}", False
    report = _report_json(data) if JSON_KEY in data else None
    return verify_text(chain, report=report, expect_head=getattr(args, "expect_head", None))
