"""``trust add|list|remove``: edit the signer list in ConfigMap ``calyx-trust``."""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Any

from calyx.adapters.trust_store import load_trust_store, update_signers
from calyx.cli import keys
from calyx.cli.context import CliContext
from calyx.cli.errors import CliError
from calyx.domain.trust import Signer, TrustStoreError


def fingerprint(public_key: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(public_key).digest()).decode().rstrip("=")


def _public_key(args: Any) -> bytes:
    if bool(args.public_key) == bool(args.key):
        raise CliError("give exactly one of --public-key BASE64 or --key FILE")
    if args.key:
        return base64.b64decode(keys.public_key_b64(keys.load_seed(Path(args.key))))
    try:
        raw = base64.b64decode(args.public_key, validate=True)
    except (binascii.Error, ValueError):
        raise CliError("--public-key is not valid base64") from None
    if len(raw) != 32:
        raise CliError(f"--public-key decodes to {len(raw)} bytes; an Ed25519 key has 32")
    return raw


def cmd_add(ctx: CliContext, args: Any) -> str:
    signer = Signer(
        id=args.id,
        role=args.role,
        public_key=_public_key(args),
        namespaces=tuple(args.namespace) if args.namespace else None,
    )

    def change(signers: list[Signer]) -> list[Signer]:
        if any(s.id == signer.id for s in signers):
            raise CliError(f"signer {signer.id!r} already exists; remove it first to rotate")
        return [*signers, signer]

    try:
        update_signers(ctx.kube, ctx.settings, change)
    except TrustStoreError as exc:
        raise CliError(str(exc)) from None
    s = ctx.settings
    where = f"{s.namespace}/{s.trust_configmap}"
    return f"added {args.id} ({args.role}, {fingerprint(signer.public_key)}) to {where}"


def cmd_remove(ctx: CliContext, args: Any) -> str:
    def change(signers: list[Signer]) -> list[Signer]:
        if not any(s.id == args.id for s in signers):
            raise CliError(f"signer {args.id!r} is not in the trust store")
        return [s for s in signers if s.id != args.id]

    try:
        update_signers(ctx.kube, ctx.settings, change)
    except TrustStoreError as exc:
        raise CliError(str(exc)) from None
    return f"removed {args.id}; leases relying on it are re-verified by the operator now"


def cmd_list(ctx: CliContext, _args: Any) -> str:
    try:
        store = load_trust_store(ctx.kube, ctx.settings)
    except TrustStoreError as exc:
        raise CliError(str(exc)) from None
    rows = [("ID", "ROLE", "NAMESPACES", "KEY")]
    for s in store.signers.values():
        ns = ",".join(s.namespaces) if s.namespaces else "*"
        rows.append((s.id, s.role, ns, fingerprint(s.public_key)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    p = store.policy
    lines.append(
        f"policy: humans={p.humans} agents={p.agents} maxSignatureAgeSeconds="
        f"{p.max_signature_age_seconds} maxLeaseSeconds={p.max_lease_seconds} "
        f"clockSkewSeconds={p.clock_skew_seconds} "
        f"requireRolloutBinding={p.require_rollout_binding}"
    )
    return "\n".join(lines)
