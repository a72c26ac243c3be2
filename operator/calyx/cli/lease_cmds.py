"""``lease create``, ``sign-lease`` and ``verify-lease``: the human side of the two keys."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calyx.adapters.kube import LEASES, api_message
from calyx.adapters.ledger_store import LedgerStore
from calyx.adapters.trust_store import load_trust_store
from calyx.api.common import API_VERSION
from calyx.api.errors import InvalidSpecError
from calyx.api.lease import parse_lease_spec
from calyx.cli import keys, yamlio
from calyx.cli.context import CliContext
from calyx.cli.errors import CliError
from calyx.cli.rollout_file import read_rollout_file
from calyx.domain.canonical import CanonicalError, canonical_json
from calyx.domain.signatures import (
    COSIGN_PREFIX,
    cosign_annotation_value,
    lease_digest,
    lease_statement,
    sign_statement,
)
from calyx.domain.timefmt import format_time, parse_time
from calyx.domain.trust import TrustStore, TrustStoreError
from calyx.domain.verification import LeaseVerdict, verify_lease

_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> dt.timedelta:
    m = _DURATION.match(text)
    if not m:
        raise CliError(f"duration {text!r} is not like 90s, 30m, 4h or 2d")
    n, unit = int(m.group(1)), m.group(2)
    return dt.timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def check_spec(spec: Mapping[str, Any]) -> None:
    """Refuse to create or sign a spec the operator would reject anyway."""
    try:
        canonical_json(spec)
    except CanonicalError as exc:
        raise CliError(f"spec cannot be signed: {exc}") from None
    try:
        parse_lease_spec(spec)
    except InvalidSpecError as exc:
        raise CliError(str(exc)) from None


def build_lease(
    *,
    name: str,
    namespace: str,
    target: str,
    images: list[str],
    intent: str,
    expires_at: str,
    max_initial_weight: int | None,
    require_analysis: bool | None,
    rollout_ref: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    containers = []
    for item in images:
        cname, sep, image = item.partition("=")
        if not sep or not cname or not image:
            raise CliError(f"--image {item!r} must be CONTAINER=IMAGE")
        containers.append({"name": cname, "image": image})
    spec: dict[str, Any] = {
        "intent": intent,
        "targetRef": {"kind": "Deployment", "name": target},
        "change": {"containers": containers},
    }
    constraints: dict[str, Any] = {}
    if max_initial_weight is not None:
        constraints["maxInitialWeight"] = max_initial_weight
    if require_analysis is not None:
        constraints["requireAnalysis"] = require_analysis
    if constraints:
        spec["constraints"] = constraints
    spec["expiresAt"] = expires_at
    if rollout_ref is not None:
        spec["rolloutRef"] = dict(rollout_ref)
    check_spec(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def rollout_ref_from(path: str, *, lease_name: str, namespace: str) -> dict[str, str]:
    """``spec.rolloutRef`` for the Rollout in ``path``: its name and effective-spec digest.

    Refuses a Rollout the Lease could never authorize -- another namespace, or a ``leaseRef``
    naming another Lease -- since signing such a binding would only produce a Rollout that
    fails with ``ConstraintViolated`` later (docs/signing.md, "Binding the rollout").
    """
    rollout = read_rollout_file(path)
    where = "stdin" if path == "-" else path
    if rollout.namespace is not None and rollout.namespace != namespace:
        raise CliError(
            f"{where}: Rollout namespace {rollout.namespace!r} differs from the lease's "
            f"{namespace!r} (a Lease binds a Rollout in its own namespace: pass "
            f"-n {rollout.namespace})"
        )
    if rollout.spec.lease_ref.name != lease_name:
        raise CliError(
            f"{where}: Rollout {rollout.name!r} cites lease {rollout.spec.lease_ref.name!r} "
            f"in spec.leaseRef, not {lease_name!r}"
        )
    return {"name": rollout.name, "specDigest": rollout.digest}


def expires_at_from(expires_in: str | None, expires_at: str | None, now: dt.datetime) -> str:
    if expires_at and expires_in:
        raise CliError("give --expires-in or --expires-at, not both")
    if expires_at:
        try:
            return format_time(parse_time(expires_at))
        except ValueError as exc:
            raise CliError(str(exc)) from None
    return format_time(now + parse_duration(expires_in or "4h"))


def sign_document(
    lease: dict[str, Any], *, signer: str, role: str, seed: bytes, now: dt.datetime
) -> tuple[str, str]:
    """Add ``cosign.calyx.io/<signer>`` to ``lease`` (in place); returns (key, value)."""
    meta = lease.get("metadata") or {}
    ns, name, spec = meta.get("namespace"), meta.get("name"), lease.get("spec")
    if not ns or not name or not isinstance(spec, dict):
        raise CliError("lease needs metadata.name, metadata.namespace and spec to be signed")
    check_spec(spec)
    signed_at = format_time(now)
    statement = lease_statement(ns, name, spec, signer, role, signed_at)
    sig = sign_statement(statement, seed)
    key = COSIGN_PREFIX + signer
    value = cosign_annotation_value(role, signed_at, sig)
    meta.setdefault("annotations", {})[key] = value
    lease["metadata"] = meta
    return key, value


def read_lease_file(path: Path, namespace_flag: str | None) -> dict[str, Any]:
    try:
        docs = yamlio.load_all(path.read_text())
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except Exception as exc:  # yaml.YAMLError and friends
        raise CliError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise CliError(f"{path}: expected exactly one Lease document, found {len(docs)}")
    lease: dict[str, Any] = docs[0]
    if lease.get("apiVersion") != API_VERSION or lease.get("kind") != "Lease":
        raise CliError(
            f"{path}: not a leases.calyx.io object (apiVersion {lease.get('apiVersion')!r}, "
            f"kind {lease.get('kind')!r})"
        )
    meta = lease.setdefault("metadata", {})
    file_ns = meta.get("namespace")
    if namespace_flag and file_ns and namespace_flag != file_ns:
        raise CliError(f"{path}: metadata.namespace is {file_ns!r} but -n says {namespace_flag!r}")
    if not file_ns:
        if not namespace_flag:
            raise CliError(
                f"{path}: metadata.namespace is missing; the signature binds the namespace, "
                "so set it in the file or pass -n"
            )
        meta["namespace"] = namespace_flag
    return lease


def get_live_lease(ctx: CliContext, name: str) -> dict[str, Any]:
    lease = ctx.kube.get_custom(LEASES, ctx.namespace, name)
    if lease is None:
        raise CliError(f'leases.calyx.io "{name}" not found in namespace {ctx.namespace}')
    return lease


def cmd_sign(ctx: CliContext, args: Any, now: dt.datetime) -> str:
    seed = keys.load_seed(Path(args.key))
    if args.file:
        path = Path(args.file)
        lease = read_lease_file(path, ctx.namespace_flag)
        key, _ = sign_document(lease, signer=args.signer, role=args.role, seed=seed, now=now)
        out = Path(args.output) if args.output else path
        out.write_text(yamlio.dump(lease))
        meta = lease["metadata"]
        digest = lease_digest(meta["namespace"], meta["name"], lease["spec"])
        return f"signed {out} as {args.signer} ({args.role}); digest {digest}; annotation {key}"
    from kubernetes.client.rest import ApiException

    lease = get_live_lease(ctx, args.name)
    key, value = sign_document(lease, signer=args.signer, role=args.role, seed=seed, now=now)
    patch = {
        "metadata": {
            "annotations": {key: value},
            # Precondition: if the object was replaced since we read it, the write fails.
            "resourceVersion": lease["metadata"]["resourceVersion"],
            "uid": lease["metadata"]["uid"],
        }
    }
    try:
        ctx.kube.patch_custom(LEASES, ctx.namespace, args.name, patch)
    except ApiException as exc:
        raise CliError(f"could not annotate lease: {api_message(exc)}") from None
    digest = lease_digest(ctx.namespace, args.name, lease["spec"])
    return f"leases.calyx.io/{args.name} cosigned by {args.signer} ({args.role}); digest {digest}"


def format_verdict(ns: str, name: str, verdict: LeaseVerdict) -> str:
    rows = [("SIGNER", "ROLE", "SIGNED-AT", "VALID", "REASON")]
    for c in verdict.cosigners:
        rows.append((c.id, c.role, c.signed_at or "-", "yes" if c.valid else "no", c.reason or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    if len(rows) == 1:
        lines = ["no cosignatures"]
    head = f"lease {ns}/{name}: {verdict.phase}; digest {verdict.digest}"
    if not verdict.valid:
        head += f"\nreason: {verdict.reason}"
    return "\n".join([*lines, head]).rstrip()


def cmd_verify(ctx: CliContext, args: Any, now: dt.datetime) -> tuple[str, bool]:
    lease = (
        read_lease_file(Path(args.file), ctx.namespace_flag)
        if args.file
        else (get_live_lease(ctx, args.name))
    )
    meta = lease["metadata"]
    try:
        trust: TrustStore = load_trust_store(ctx.kube, ctx.settings)
    except TrustStoreError as exc:
        raise CliError(str(exc)) from None
    ledger = LedgerStore(ctx.kube, ctx.settings).entries()
    from calyx.domain.lease_plan import previously_accepted

    verdict = verify_lease(
        namespace=meta["namespace"],
        name=meta["name"],
        spec=lease.get("spec") or {},
        annotations=meta.get("annotations") or {},
        trust=trust,
        now=now,
        ledger=ledger,
        previously_accepted=previously_accepted(lease.get("status")),
    )
    return format_verdict(meta["namespace"], meta["name"], verdict), verdict.valid


def cmd_create(ctx: CliContext, args: Any, now: dt.datetime) -> str:
    from kubernetes.client.rest import ApiException

    lease = build_lease(
        name=args.name,
        namespace=ctx.namespace,
        target=args.target,
        images=args.image,
        intent=args.intent,
        expires_at=expires_at_from(args.expires_in, args.expires_at, now),
        max_initial_weight=args.max_initial_weight,
        require_analysis=args.require_analysis,
        rollout_ref=(
            rollout_ref_from(args.rollout, lease_name=args.name, namespace=ctx.namespace)
            if args.rollout
            else None
        ),
    )
    if not args.apply:
        return yamlio.dump(lease).rstrip()
    try:
        ctx.kube.create_custom(LEASES, ctx.namespace, lease)
    except ApiException as exc:
        raise CliError(f"could not create lease: {api_message(exc)}") from None
    return f"leases.calyx.io/{args.name} created in {ctx.namespace}"
