"""``calyx guard status -n NS``: is the admission guard enforced in this namespace, and is it whole?

The guard is a pair of ValidatingAdmissionPolicies shipped by the chart (docs/security-guard.md).
Whether it protects a namespace depends on three things a user cannot see in one place: the
namespace's ``calyx.io/guard`` label, the policies and the bindings that select the namespace,
and whether the API server has taken them up. This verb reads all three, and then asks the API
server itself with a server-side dry run (nothing is stored), so the answer is what the API
server does, not what the objects suggest. Exit code 0 only when the namespace is enforced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from calyx.adapters.kube import Kube, api_message
from calyx.cli.context import CliContext
from calyx.cli.errors import CliError
from calyx.domain.guard import (
    BREAK_GLASS_ANNOTATION,
    ENFORCE,
    GUARD_LABEL,
    GUARD_SELECTOR,
    GUARDED,
    MESSAGE_PREFIX,
    OPERATOR_ANNOTATION,
    POLICY_KIND_LABEL,
    WARN,
    probe_deployment,
    selector_matches,
)


@dataclass
class Binding:
    name: str
    policy: str
    actions: tuple[str, ...]
    applies: bool


@dataclass
class Policy:
    name: str
    guards: str  # "deployments" | "configmaps" | "" (unknown)
    operator: str
    break_glass: str
    problems: list[str] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)

    @property
    def denies_here(self) -> bool:
        return any(b.applies and "Deny" in b.actions for b in self.bindings)


@dataclass
class Probe:
    outcome: str  # "denied" | "allowed" | "inconclusive"
    detail: str


def _policy_problems(policy: Mapping[str, Any]) -> list[str]:
    """What keeps a policy from working as written: type-check warnings (an expression that
    does not compile against the matched kind) and a generation the API server has not seen."""
    meta, status = policy.get("metadata") or {}, policy.get("status") or {}
    out = [
        f"{w.get('fieldRef')}: {str(w.get('warning') or '').splitlines()[0]}"
        for w in (status.get("typeChecking") or {}).get("expressionWarnings") or []
    ]
    observed = status.get("observedGeneration")
    if observed is not None and observed != meta.get("generation"):
        out.append(f"not yet checked by the API server (generation {meta.get('generation')})")
    return out


def collect(
    policies: Iterable[Mapping[str, Any]],
    bindings: Iterable[Mapping[str, Any]],
    ns_labels: Mapping[str, str],
) -> list[Policy]:
    """The guard's policies, each with the bindings that use it and whether they select
    a namespace with ``ns_labels``."""
    out: dict[str, Policy] = {}
    for p in policies:
        meta = p.get("metadata") or {}
        ann = meta.get("annotations") or {}
        out[meta["name"]] = Policy(
            name=meta["name"],
            guards=str((meta.get("labels") or {}).get(POLICY_KIND_LABEL) or ""),
            operator=str(ann.get(OPERATOR_ANNOTATION) or ""),
            break_glass=str(ann.get(BREAK_GLASS_ANNOTATION) or ""),
            problems=_policy_problems(p),
        )
    for b in bindings:
        spec = b.get("spec") or {}
        policy = out.get(str(spec.get("policyName")))
        if policy is None:
            continue
        selector = (spec.get("matchResources") or {}).get("namespaceSelector")
        policy.bindings.append(
            Binding(
                name=b["metadata"]["name"],
                policy=policy.name,
                actions=tuple(spec.get("validationActions") or ()),
                applies=selector_matches(selector, ns_labels),
            )
        )
    return sorted(out.values(), key=lambda p: p.name)


def _whoami(kube: Kube) -> tuple[str, tuple[str, ...]] | None:
    """The caller's user name and groups as the API server sees them (SelfSubjectReview)."""
    try:
        review = client.AuthenticationV1Api(kube.api).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
    except ApiException:
        return None
    info = (kube._plain(review).get("status") or {}).get("userInfo") or {}
    return str(info.get("username") or ""), tuple(info.get("groups") or ())


def probe(kube: Kube, namespace: str) -> Probe:
    """Server-side dry run of a Deployment create: every admission policy runs, nothing is
    stored. Denied with the guard's message means the API server enforces it for this caller."""
    body = probe_deployment(namespace)
    try:
        kube.apps.create_namespaced_deployment(namespace, body, dry_run="All")
    except ApiException as exc:
        msg = api_message(exc)
        if exc.status == 403 and MESSAGE_PREFIX in msg:
            return Probe("denied", msg)
        if exc.status == 403:
            return Probe("inconclusive", f"you may not create Deployments here at all ({msg})")
        return Probe("inconclusive", f"HTTP {exc.status}: {msg}")
    return Probe("allowed", "a dry-run Deployment create was admitted")


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        (
            indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        ).rstrip()
        for r in rows
    ]


def cmd_status(ctx: CliContext, _args: Any) -> tuple[str, int]:
    ns = ctx.namespace
    kube = ctx.kube
    lines: list[str] = []
    try:
        ns_obj = kube._plain(kube.core.read_namespace(ns))
        ns_labels: dict[str, str] = dict((ns_obj.get("metadata") or {}).get("labels") or {})
    except ApiException as exc:
        if exc.status == 404:
            raise CliError(f"namespace {ns} not found") from None
        raise CliError(f"cannot read namespace {ns}: {api_message(exc)}") from None
    mode = ns_labels.get(GUARD_LABEL)
    if mode == ENFORCE:
        lines.append(f"namespace {ns}: label {GUARD_LABEL}={ENFORCE}")
    elif mode == WARN:
        lines.append(
            f"namespace {ns}: label {GUARD_LABEL}={WARN} (violations are allowed, with a warning "
            "and an audit annotation)"
        )
    else:
        shown = f"{GUARD_LABEL}={mode}" if mode else f"no {GUARD_LABEL} label"
        lines.append(f"namespace {ns}: {shown} (the guard does not act here)")

    adm = client.AdmissionregistrationV1Api(kube.api)
    policies: list[Policy] | None
    try:
        raw_p = adm.list_validating_admission_policy(label_selector=GUARD_SELECTOR).items
        raw_b = adm.list_validating_admission_policy_binding().items
        policies = collect(
            [kube._plain(p) for p in raw_p], [kube._plain(b) for b in raw_b], ns_labels
        )
    except ApiException as exc:
        if exc.status != 403:
            raise CliError(f"cannot list admission policies: {api_message(exc)}") from None
        policies = None

    me = _whoami(kube)
    exempt_users = {p.operator for p in policies or [] if p.operator}
    exempt_groups = {p.break_glass for p in policies or [] if p.break_glass}
    exempt = me is not None and (me[0] in exempt_users or bool(exempt_groups & set(me[1])))
    if me is not None:
        groups = ", ".join(g for g in me[1] if g != "system:authenticated") or "-"
        lines.append(
            f"you: {me[0]} (groups: {groups})"
            + (" - exempt: the operator or break-glass" if exempt else "")
        )

    result = probe(kube, ns)
    lines.append(f"probe (server-side dry run of a Deployment create as you): {result.outcome}")
    lines.append(f"  {result.detail}")

    reasons: list[str] = []
    if mode != ENFORCE:
        reasons.append(f"label the namespace: kubectl label namespace {ns} {GUARD_LABEL}={ENFORCE}")
    if policies is None:
        lines.append(
            "policies: your credentials may not read validatingadmissionpolicies "
            "(cluster-scoped); the probe above is what the API server does for you"
        )
        if result.outcome != "denied" and not exempt:
            reasons.append("cannot confirm enforcement: the policies are not readable")
    else:
        lines.append("policies:")
        if not policies:
            lines.append(f"  none (no ValidatingAdmissionPolicy labelled {GUARD_SELECTOR})")
        rows: list[list[str]] = [["POLICY", "GUARDS", "BINDING", "ACTIONS", "HERE", "STATE"]]
        for p in policies:
            state = "; ".join(p.problems) or "ok"
            for i, b in enumerate(p.bindings or [None]):
                rows.append(
                    [
                        p.name if i == 0 else "",
                        (p.guards or "?") if i == 0 else "",
                        b.name if b else "(no binding)",
                        ",".join(b.actions) if b else "-",
                        ("yes" if b.applies else "no") if b else "-",
                        state if i == 0 else "",
                    ]
                )
        if policies:
            lines += _table(rows)
            ops = ", ".join(sorted(exempt_users)) or "?"
            bg = ", ".join(sorted(exempt_groups)) or "?"
            lines.append(f"exempt: operator {ops}; break-glass group {bg}")
        for kind in GUARDED:
            mine = [p for p in policies if p.guards == kind]
            if not mine:
                reasons.append(
                    f"no guard policy for {kind} (is the chart installed with guard.enabled?)"
                )
            elif mode == ENFORCE and not any(p.denies_here for p in mine):
                reasons.append(f"no Deny binding of the {kind} policy selects namespace {ns}")
            for p in mine:
                if p.problems:
                    reasons.append(f"policy {p.name}: {'; '.join(p.problems)}")
    if mode == ENFORCE and result.outcome == "allowed" and not exempt:
        reasons.append(
            "the API server admitted the probe: the policies are not (yet) in effect here"
        )

    if reasons:
        lines.append("NOT ENFORCED:")
        lines += [f"  - {r}" for r in reasons]
        return "\n".join(lines), 1
    lines.append(
        f"ENFORCED: pod templates and Calyx's ConfigMaps in {ns} change only through Calyx"
    )
    return "\n".join(lines), 0
