"""Human controls on a Rollout. Each writes exactly what a GitOps commit could write:
``spec.paused``, an ``approve.calyx.io/<id>`` annotation, or ``calyx.io/force-rollback``."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from calyx.adapters.kube import ROLLOUTS, api_message
from calyx.cli import keys
from calyx.cli.context import CliContext
from calyx.cli.errors import CliError
from calyx.cli.rollout_file import read_rollout_file
from calyx.domain.rollout_plan import FORCE_ROLLBACK, TERMINAL
from calyx.domain.signatures import (
    APPROVE_PREFIX,
    approval_annotation_value,
    approval_statement,
    sign_statement,
)
from calyx.domain.timefmt import format_time


def cmd_digest(args: Any) -> str:
    """``calyx rollout digest -f FILE``: the value for a Lease's ``spec.rolloutRef.specDigest``
    (docs/signing.md, "Binding the rollout"). Offline: the digest depends on the file only."""
    return read_rollout_file(args.file).digest


def _get(ctx: CliContext, name: str) -> dict[str, Any]:
    obj = ctx.kube.get_custom(ROLLOUTS, ctx.namespace, name)
    if obj is None:
        raise CliError(f'rollouts.calyx.io "{name}" not found in namespace {ctx.namespace}')
    return obj


def _patch(ctx: CliContext, name: str, patch: Mapping[str, Any]) -> None:
    try:
        ctx.kube.patch_custom(ROLLOUTS, ctx.namespace, name, patch)
    except ApiException as exc:
        raise CliError(f"could not update rollout {name}: {api_message(exc)}") from None


def cmd_pause(ctx: CliContext, args: Any, paused: bool) -> str:
    obj = _get(ctx, args.name)
    phase = (obj.get("status") or {}).get("phase")
    if phase in TERMINAL:
        raise CliError(
            f"rollout {args.name} is {phase}; nothing to {'pause' if paused else 'resume'}"
        )
    _patch(ctx, args.name, {"spec": {"paused": paused}})
    verb = "paused" if paused else "resumed"
    return f"rollouts.calyx.io/{args.name} {verb} (breaches are still evaluated)"


def next_tier_weight(status: Mapping[str, Any]) -> int:
    tiers = status.get("tiers") or []
    idx = status.get("approvalForTier")
    if idx is None:
        idx = int(status.get("currentTier") or 0) + 1
    if not 0 <= int(idx) < len(tiers):
        raise CliError("the rollout has no next tier to approve")
    return int(tiers[int(idx)]["weight"])


def cmd_approve(ctx: CliContext, args: Any, now: dt.datetime) -> str:
    seed = keys.load_seed(Path(args.key))
    obj = _get(ctx, args.name)
    status = obj.get("status") or {}
    digest = status.get("leaseDigest")
    if not digest:
        raise CliError(f"rollout {args.name} has no verified lease yet; nothing to approve")
    weight = args.to_weight if args.to_weight is not None else next_tier_weight(status)
    signed_at = format_time(now)
    statement = approval_statement(ctx.namespace, args.name, digest, weight, args.signer, signed_at)
    sig = sign_statement(statement, seed)
    value = approval_annotation_value(weight, signed_at, sig)
    _patch(ctx, args.name, {"metadata": {"annotations": {APPROVE_PREFIX + args.signer: value}}})
    return f"approved {args.name} entering {weight}% as {args.signer} (lease {digest[:19]}…)"


def cmd_force_rollback(ctx: CliContext, args: Any) -> str:
    _get(ctx, args.name)
    reason = args.reason or "forced by calyx force-rollback"
    _patch(ctx, args.name, {"metadata": {"annotations": {FORCE_ROLLBACK: reason}}})
    return f"rollouts.calyx.io/{args.name}: rollback requested ({reason})"


def render_status(obj: Mapping[str, Any], events: list[Mapping[str, Any]]) -> str:
    meta, st = obj["metadata"], obj.get("status") or {}
    lines = [
        f"Rollout {meta['namespace']}/{meta['name']}: {st.get('phase', 'Pending')}"
        + (f" — {st['message']}" if st.get("message") else ""),
        f"  lease {obj['spec']['leaseRef']['name']} {st.get('leaseDigest', '')}".rstrip(),
    ]
    if st.get("target"):
        lines.append(
            f"  target Deployment {st['target']['name']}: stable {st.get('stableReplicas', '?')}"
            f" canary {st.get('canaryReplicas', 0)} pods, weight {st.get('currentWeight', 0)}%"
            f" requested, {st.get('effectivePercent', 0)}% served"
        )
    if st.get("risk"):
        lines.append(f"  risk {st['risk'].get('score')} ({st['risk'].get('level')})")
    lines.append("  TIER  WEIGHT  STARTED                   RESULT")
    for i, t in enumerate(st.get("tiers") or []):
        mark = "▶" if i == st.get("currentTier") and st.get("phase") not in TERMINAL else " "
        lines.append(
            f"  {mark}{i + 1:<4} {t.get('weight', ''):>5}%  {t.get('startedAt', '-'):<25} "
            f"{t.get('result', '')}"
        )
    if st.get("rollback"):
        rb = st["rollback"]
        lines.append(
            f"  rollback: {rb.get('trigger')} — {rb.get('reason')}; detect "
            f"{rb.get('detectSeconds', '-')}s, revert {rb.get('revertSeconds', '-')}s"
        )
    lines.append("  CONDITIONS")
    for c in st.get("conditions") or []:
        lines.append(f"    {c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}")
    if events:
        lines.append("  EVENTS")
        for e in events[-8:]:
            lines.append(
                f"    {e.get('type', ''):<8}{e.get('reason', ''):<20}{e.get('message', '')}"
            )
    return "\n".join(lines)


def _events(ctx: CliContext, name: str) -> list[Mapping[str, Any]]:
    try:
        res = ctx.kube.core.list_namespaced_event(
            ctx.namespace, field_selector=f"involvedObject.kind=Rollout,involvedObject.name={name}"
        )
    except ApiException:
        return []
    items = [ctx.kube._plain(e) for e in res.items or []]
    return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))


def cmd_status(
    ctx: CliContext,
    args: Any,
    emit: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    last = ""
    while True:
        obj = _get(ctx, args.name)
        text = render_status(obj, _events(ctx, args.name))
        if not args.watch:
            return text
        if text != last:
            emit(text + "\n")
            last = text
        if (obj.get("status") or {}).get("phase") in TERMINAL:
            return ""
        sleep(args.interval)
