"""Helpers for end-to-end tests: the operator as a real process, keys, leases, deployments.

The operator runs exactly as the image runs it (``kopf run``), in its own process group, so a
test can SIGKILL it at any instant and start a new one: that is what "crash-safe" means.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from calyx.adapters.kube import Kube
from calyx.api.rollout import parse_rollout_spec
from calyx.domain.rollout_binding import rollout_spec_digest
from calyx.domain.signatures import (
    COSIGN_PREFIX,
    cosign_annotation_value,
    lease_statement,
    public_key_from_seed,
    sign_statement,
)
from calyx.domain.timefmt import format_time
from calyx_dev.operator_process import OPERATOR_NS
from calyx_dev.workloads import sample_deployment

REPO = Path(__file__).resolve().parents[2]
SEEDS = {
    "alice": bytes([1]) * 32,  # human
    "bob": bytes([3]) * 32,  # human
    "sentinel": bytes([2]) * 32,  # agent
    "watcher": bytes([4]) * 32,  # agent
}
ROLES = {"alice": "human", "bob": "human", "sentinel": "agent", "watcher": "agent"}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2
) -> Any:
    """Poll until ``predicate`` returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def signers_yaml(ids: Sequence[str], namespaces: Mapping[str, list[str]] | None = None) -> str:
    lines = []
    for i in ids:
        pub = base64.b64encode(public_key_from_seed(SEEDS[i])).decode()
        entry = f"- {{id: {i}, role: {ROLES[i]}, publicKey: {pub}"
        if namespaces and i in namespaces:
            entry += ", namespaces: [" + ", ".join(f'"{n}"' for n in namespaces[i]) + "]"
        lines.append(entry + "}")
    return "\n".join(lines) + "\n"


def trust_configmap(ids: Sequence[str], policy: str = "", **kw: Any) -> dict[str, Any]:
    data = {"signers.yaml": signers_yaml(ids, **kw)}
    if policy:
        data["policy.yaml"] = policy
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "calyx-trust", "namespace": OPERATOR_NS},
        "data": data,
    }


def lease_body(
    ns: str,
    name: str,
    target: str,
    images: Mapping[str, str],
    expires_in: float = 3600,
    constraints: Mapping[str, Any] | None = None,
    signers: Sequence[str] = ("alice", "sentinel"),
    now: dt.datetime | None = None,
    rollout: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A signed Lease; with ``rollout`` (a Rollout body) it also binds that Rollout's name and
    effective spec (docs/signing.md, "Binding the rollout")."""
    now = now or utcnow()
    spec: dict[str, Any] = {
        "intent": f"TEST-1: roll {target} to {', '.join(images.values())}",
        "targetRef": {"kind": "Deployment", "name": target},
        "change": {"containers": [{"name": k, "image": v} for k, v in images.items()]},
        "expiresAt": format_time(now + dt.timedelta(seconds=expires_in)),
    }
    if constraints is not None:
        spec["constraints"] = dict(constraints)
    if rollout is not None:
        spec["rolloutRef"] = {
            "name": rollout["metadata"]["name"],
            "specDigest": rollout_spec_digest(parse_rollout_spec(rollout["spec"])),
        }
    body = {
        "apiVersion": "calyx.io/v1alpha1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": ns, "annotations": {}},
        "spec": spec,
    }
    for s in signers:
        body["metadata"]["annotations"][COSIGN_PREFIX + s] = cosign(body, s, now)
    return body


def cosign(
    lease: Mapping[str, Any], signer: str, now: dt.datetime | None = None, role: str | None = None
) -> str:
    meta = lease["metadata"]
    signed_at = format_time(now or utcnow())
    role = role or ROLES[signer]
    st = lease_statement(meta["namespace"], meta["name"], lease["spec"], signer, role, signed_at)
    return cosign_annotation_value(role, signed_at, sign_statement(st, SEEDS[signer]))


def deployment_body(ns: str, name: str, replicas: int, image: str) -> dict[str, Any]:
    return sample_deployment(ns, name, replicas, image)


def rollout_body(
    ns: str,
    name: str,
    lease: str,
    tiers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "calyx.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"leaseRef": {"name": lease}, **spec},
    }
    if tiers is not None:
        body["spec"]["tiers"] = tiers
    return body


def lease_phase(kube: Kube, ns: str, name: str) -> str | None:
    obj = kube.get_custom("leases", ns, name)
    return ((obj or {}).get("status") or {}).get("phase")


def events_for(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    res = kube.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
    return [kube._plain(e) for e in res.items]


def reasons(kube: Kube, ns: str, name: str) -> list[str]:
    return [e["reason"] for e in events_for(kube, ns, name)]


def rollout_status(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return ((kube.get_custom("rollouts", ns, name) or {}).get("status")) or {}


TRANSITION_EVENT = {"Completed": "DeployCompleted", "RolledBack": "RollbackComplete"}


def wait_phase(kube: Kube, ns: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    """Wait for ``phase``; for an end phase also for its Event, which the operator posts just
    after the status write (so a test counting Events never races it)."""

    def check() -> dict[str, Any] | None:
        st = rollout_status(kube, ns, name)
        return st if st.get("phase") == phase else None

    try:
        st: dict[str, Any] = wait_for(f"rollout {name} phase {phase}", check, timeout=timeout)
    except AssertionError as exc:
        st = rollout_status(kube, ns, name)
        raise AssertionError(
            f"{exc}; status now: phase={st.get('phase')} message={st.get('message')}"
        ) from None
    if phase in TRANSITION_EVENT:
        wait_for(
            f"{TRANSITION_EVENT[phase]} event",
            lambda: TRANSITION_EVENT[phase] in reasons(kube, ns, name),
            timeout=10,
        )
    return st


def deployment(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    return kube.get_deployment(ns, name)


def replicas_of(kube: Kube, ns: str, name: str) -> int | None:
    d = kube.get_deployment(ns, name)
    return None if d is None else int(d["spec"]["replicas"])


def operator_forward_writes(
    cluster: Any, ns: str, since: str | None = None
) -> list[dict[str, Any]]:
    """Writes by the operator that move a workload *toward* the change (create, scale, image
    patch) — read from the API server's audit log. Reverts (delete, the JSON patch that
    restores the snapshot template) are not forward writes."""
    out = []
    for ev in cluster.read_audit_events(
        resource="deployments", namespace=ns, since=since, succeeded=True
    ):
        if not str(ev.get("userAgent", "")).startswith("calyx-operator"):
            continue
        body = ev.get("requestObject")
        if isinstance(body, dict) and set(body) == {"metadata"} and ev["verb"] == "patch":
            continue  # the target claim annotation: no pod, no replica changes
        if ev["verb"] == "create" or (
            ev["verb"] in ("patch", "update") and not isinstance(body, list)
        ):
            out.append(ev)
    return out


def _template_images(body: Any) -> set[str]:
    """Container images a Deployment write puts into a pod template (create, strategic or
    merge patch, and the JSON patch that restores a snapshot)."""
    found: set[str] = set()
    if isinstance(body, list):  # JSON patch: [{"op": "replace", "path": "/spec/template", ...}]
        for op in body:
            found |= _template_images({"spec": {"template": op.get("value")}})
        return found
    tmpl = ((body or {}).get("spec") or {}).get("template") or {}
    spec = tmpl.get("spec") or {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if c.get("image"):
            found.add(str(c["image"]))
    return found


def assert_only_signed_templates(cluster: Any, kube: Kube, ns: str) -> int:
    """docs/design.md promise 7 over a whole scenario (docs/security.md): every pod template the
    operator wrote into a Deployment carries only images of a snapshot the operator itself
    took or of a Lease the operator recorded Verified or Consumed. Returns writes checked."""
    allowed: set[str] = set()
    for ev in cluster.read_audit_events(
        verbs=["create"], resource="configmaps", namespace=ns, succeeded=True
    ):
        if not str(ev.get("userAgent", "")).startswith("calyx-operator"):
            continue
        payload = ((ev.get("requestObject") or {}).get("data") or {}).get("deployment.json")
        if payload:
            allowed |= _template_images(json.loads(payload))
    signed = {
        lease
        for _, lease, phase in lease_phase_timeline(cluster, ns)
        if phase in ("Verified", "Consumed")
    }
    for lease in kube.list_custom("leases", ns):
        if lease["metadata"]["name"] in signed:
            allowed |= {str(c["image"]) for c in lease["spec"]["change"]["containers"]}
    checked = 0
    for ev in cluster.read_audit_events(
        verbs=["create", "patch", "update"], resource="deployments", namespace=ns, succeeded=True
    ):
        if not str(ev.get("userAgent", "")).startswith("calyx-operator"):
            continue
        images = _template_images(ev.get("requestObject"))
        checked += bool(images)
        assert images <= allowed, (
            f"operator wrote unsigned image(s) {sorted(images - allowed)} into "
            f"{ev['objectRef'].get('name')} at {ev['requestReceivedTimestamp']}"
        )
    return checked


def lease_phase_timeline(cluster: Any, ns: str) -> list[tuple[str, str, str]]:
    """(time, lease, phase) of every Lease status phase the operator wrote, from the audit log."""
    out = []
    for ev in cluster.read_audit_events(
        verbs=["patch", "update"],
        resource="leases.calyx.io",
        subresource="status",
        namespace=ns,
        succeeded=True,
    ):
        phase = ((ev.get("requestObject") or {}).get("status") or {}).get("phase")
        if phase:
            out.append((ev["requestReceivedTimestamp"], ev["objectRef"]["name"], phase))
    return sorted(out)


def assert_no_forward_write_without_valid_lease(cluster: Any, ns: str) -> int:
    """docs/design.md promise 1 over a whole scenario: every forward write to a Deployment
    happened while a Lease in the namespace was valid as the operator recorded it (Verified, or
    Consumed by the claimant), never before the first verification nor after it turned Expired
    or Rejected. Returns the number of forward writes checked."""
    timeline = lease_phase_timeline(cluster, ns)
    writes = operator_forward_writes(cluster, ns)
    for w in writes:
        t = w["requestReceivedTimestamp"]
        state: dict[str, str] = {}
        for when, lease, phase in timeline:
            if when <= t:
                state[lease] = phase
        valid = [lease for lease, phase in state.items() if phase in ("Verified", "Consumed")]
        # The Rollout verifies the Lease itself and may act milliseconds before the Lease
        # controller records it: a Lease with no recorded phase yet counts when its first
        # recorded phase is Verified.
        later = {lease for when, lease, phase in timeline if when > t and lease not in state}
        first = {lease: next(p for w2, l2, p in timeline if l2 == lease) for lease in later}
        valid += [lease for lease, phase in first.items() if phase == "Verified"]
        assert valid, (
            f"forward write {w['verb']} {w['objectRef'].get('name')} at {t} while the leases "
            f"were {state or 'never verified'}"
        )
    return len(writes)
