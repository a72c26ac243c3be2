"""A Rollout and its cluster in memory: the real reconciler against the fake API.

``World`` runs ``calyx.reconcile.rollout`` itself (``reconcile_rollout`` for a wake-up, one
``observe`` → ``plan_rollout`` → ``apply`` for a :meth:`World.step`) against the in-memory
``FakeKube`` (tests/support/fake_kube.py), so whole rollouts, crashes included, run in
milliseconds with the same reads, writes, patches, outbox and Events the operator makes. What the
operator would get from elsewhere comes in through its own dependencies: the trust store
(``trust``), the clock (``now``/``advance``), metric analysis (``analysis``, ``query_problem``)
and the fault points (``step(crash_before_status=True)``).

Everything else is a real object in the fake: the attributes ``rollout``, ``target``, ``canary``,
``snapshot``, ``job``, ``lease``, ``ledger``, ``busy_by`` and ``foreign_canary`` are views onto
it (the live stored dicts: editing one in place is an edit behind the API server's back, as a
test needs to set up a situation; assigning one goes through the API). Deployments become ready
at once unless ``auto_ready`` is off (then only a pod template that already ran ready does, as
rolling back to the old ReplicaSet would).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from calyx.adapters.events import EventRecorder
from calyx.adapters.kube import LEASES, ROLLOUTS
from calyx.adapters.ledger_store import LedgerStore
from calyx.adapters.settings import Settings
from calyx.api.rollout import parse_rollout_spec
from calyx.domain.canary import (
    CLAIM_ANNOTATION,
    MANAGED_BY,
    canary_name,
    claim_of,
    job_name,
    owned_by,
    snapshot_name,
    template_sha,
)
from calyx.domain.lease_plan import previously_accepted
from calyx.domain.ledger import ClaimOutcome, LedgerEntry, encode_entry, read_ledger
from calyx.domain.outbox import pending
from calyx.domain.rollout_binding import rollout_spec_digest
from calyx.domain.rollout_plan import FINALIZER, AnalysisOutcome, Observed, Plan, plan_rollout
from calyx.domain.signatures import (
    APPROVE_PREFIX,
    COSIGN_PREFIX,
    approval_annotation_value,
    approval_statement,
    cosign_annotation_value,
    lease_statement,
    public_key_from_seed,
    sign_statement,
)
from calyx.domain.timefmt import format_time, format_time_ms
from calyx.domain.trust import parse_trust_store
from calyx.domain.verification import verify_lease
from calyx.reconcile.locks import KeyedLocks
from calyx.reconcile.rollout import RolloutDeps, announce, apply, observe, reconcile_rollout
from tests.support.fake_kube import JSON_PATCH, STRATEGIC, FakeKube, api_error

T0 = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)
SEEDS = {"alice": b"\x01" * 32, "sentinel": b"\x02" * 32, "bob": b"\x03" * 32}
ROLES = {"alice": "human", "sentinel": "agent", "bob": "human"}
NS = "shop"
OPERATOR_NS = "calyx-system"
FORWARD = ("CreateCanary", "ScaleCanary", "PatchStableImages")
"""Writes that move a change forward: only ever while the Lease verifies (docs/security.md)."""


def signers_yaml(ids: list[str]) -> str:
    return "".join(
        f"- {{id: {i}, role: {ROLES[i]}, publicKey: "
        f"{base64.b64encode(public_key_from_seed(SEEDS[i])).decode()}}}\n"
        for i in ids
    )


class Crash(BaseException):
    """The operator process dying at a fault point: a BaseException, so nothing in the
    reconciler (which survives ordinary errors of a revert) can catch it."""


class _Analysis:
    """``RolloutDeps.analyze``: the World's ``analysis`` on timer passes and its
    ``query_problem`` as the pre-start check (what ``AnalysisRunner.check`` finds)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def __call__(self, observed: Observed) -> AnalysisOutcome | None:
        return self.world.analysis

    def check(self, observed: Observed) -> tuple[str, str] | None:
        return self.world.query_problem


class _RecordingLedger(LedgerStore):
    """The real ledger store on the fake ConfigMap; each claim is recorded as a ``Claim``."""

    def __init__(self, world: World, kube: Any, events: EventRecorder) -> None:
        super().__init__(
            kube,
            Settings(namespace=OPERATOR_NS, leader_identity="calyx-operator-0"),
            events=events,
            clock=lambda: world.now,
        )
        self.world = world

    def claim(self, candidate: LedgerEntry, now: dt.datetime) -> ClaimOutcome:
        self.world._act("Claim")
        return super().claim(candidate, now)


class _RecordingKube:
    """The fake as the reconciler sees it. Each call that carries out a planned action is
    recorded by the action's kind (``World.actions``, failed ones included); a kind in
    ``World.failing`` is refused as an admission webhook would (403); a forward write is checked
    against the Lease as it verifies at that moment (``World.writes_while_invalid``). Reads,
    status writes, the report and the ledger pass straight through."""

    def __init__(self, world: World, fake: FakeKube) -> None:
        self.world = world
        self.fake = fake

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)

    def patch_custom(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> Any:
        if plural == ROLLOUTS and "finalizers" in (patch.get("metadata") or {}):
            fins = patch["metadata"]["finalizers"]
            self.world._act("AddFinalizer" if FINALIZER in fins else "RemoveFinalizer")
        elif plural == ROLLOUTS and "paused" in (patch.get("spec") or {}):
            self.world._act("SetPaused")
        return self.fake.patch_custom(plural, namespace, name, patch)

    def annotate_deployment(
        self, namespace: str, name: str, key: str, value: str | None, resource_version: str
    ) -> bool:
        self.world._act("ClaimTarget" if value is not None else "ReleaseTarget")
        return self.fake.annotate_deployment(namespace, name, key, value, resource_version)

    def create_configmap_if_absent(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.world._act("WriteSnapshot")
        self.fake.create_configmap_if_absent(namespace, body)

    def delete_configmap(self, namespace: str, name: str) -> None:
        self.world._act("DeleteSnapshot")
        self.fake.delete_configmap(namespace, name)

    def create_deployment(self, namespace: str, body: Mapping[str, Any]) -> Any:
        self.world._act("CreateCanary")
        return self.fake.create_deployment(namespace, body)

    def patch_deployment(self, namespace: str, name: str, patch: Any, content_type: str) -> Any:
        if content_type == JSON_PATCH:
            self.world._act("RestoreStable")
        elif content_type == STRATEGIC:
            self.world._act("PatchStableImages")
        else:
            self.world._act("ScaleCanary")
        return self.fake.patch_deployment(namespace, name, patch, content_type)

    def delete_deployment_now(self, namespace: str, name: str, pod_selector: str) -> None:
        self.world._act("DeleteCanary")
        self.fake.delete_deployment_now(namespace, name, pod_selector)

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.world._act("CreateJob")
        self.fake.create_job(namespace, body)

    def delete_job(self, namespace: str, name: str) -> None:
        self.world._act("DeleteJob")
        self.fake.delete_job(namespace, name)


def _fresh(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` without what the API server sets, ready to be created again."""
    out = copy.deepcopy(dict(body))
    meta = out.setdefault("metadata", {})
    for field in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        meta.pop(field, None)
    out.pop("status", None)
    return out


class World:
    def __init__(
        self,
        replicas: int = 20,
        tiers: list[dict[str, Any]] | None = None,
        constraints: dict[str, Any] | None = None,
        expires_in: int = 3600,
        spec: dict[str, Any] | None = None,
        bind: bool = False,
        image: str = "reg/checkout:2",
    ) -> None:
        self.now = T0
        self.ns = NS
        self.trust = parse_trust_store(signers_yaml(["alice", "sentinel", "bob"]), None)
        self.analysis: AnalysisOutcome | None = None
        self.query_problem: tuple[str, str] | None = None
        self.failing: set[str] = set()  # action kinds the "API server" refuses
        self.auto_ready = True
        self.actions: list[str] = []
        self.writes_while_invalid: list[str] = []
        self.errors: list[ApiException] = []  # wake-ups that an API refusal ended
        self._ready_templates: dict[str, set[str]] = {}
        self._crash_after: int | None = None
        self._done = 0

        self.fake = FakeKube(clock=lambda: self.now, ready=self._ready)
        self.kube = _RecordingKube(self, self.fake)
        events = EventRecorder(self.kube, instance="calyx-operator-0")
        self.deps = RolloutDeps(
            kube=self.kube,  # the recording wrapper is a KubeApi
            events=events,
            trust=lambda: self.trust,
            ledger=_RecordingLedger(self, self.kube, events),
            clock=lambda: self.now,
            locks=KeyedLocks(),
            analyze=_Analysis(self),
            faults=self._fault,
        )
        # What an installed operator finds: its (empty) ledger.
        self.fake.create_configmap(
            OPERATOR_NS, {"metadata": {"name": "calyx-ledger", "labels": dict(MANAGED_BY)}}
        )

        rspec: dict[str, Any] = {"leaseRef": {"name": "l1"}}
        rspec["tiers"] = (
            tiers
            if tiers is not None
            else [
                {"weight": 5, "soakSeconds": 60},
                {"weight": 25, "soakSeconds": 60},
                {"weight": 100},
            ]
        )
        rspec.update(spec or {})
        lease_spec: dict[str, Any] = {
            "intent": "INT-42",
            "targetRef": {"kind": "Deployment", "name": "checkout"},
            "change": {"containers": [{"name": "app", "image": image}]},
            "constraints": constraints if constraints is not None else {"requireAnalysis": False},
            "expiresAt": format_time(T0 + dt.timedelta(seconds=expires_in)),
        }
        if bind:  # the keys sign how, too (docs/signing.md, "Binding the rollout")
            digest = rollout_spec_digest(parse_rollout_spec(rspec))
            lease_spec["rolloutRef"] = {"name": "r1", "specDigest": digest}
        self.fake.create_custom(
            LEASES,
            NS,
            {
                "apiVersion": "calyx.io/v1alpha1",
                "kind": "Lease",
                "metadata": {"name": "l1", "annotations": {}},
                "spec": lease_spec,
            },
        )
        for s in ("alice", "sentinel"):
            self.sign_lease(s)
        self.fake.create_deployment(
            NS,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "checkout", "labels": {"app": "checkout"}},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": "checkout"}},
                    "template": {
                        "metadata": {"labels": {"app": "checkout"}},
                        "spec": {"containers": [{"name": "app", "image": "reg/checkout:1"}]},
                    },
                },
            },
        )
        self.fake.create_custom(
            ROLLOUTS,
            NS,
            {
                "apiVersion": "calyx.io/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": "r1", "annotations": {}, "finalizers": []},
                "spec": rspec,
            },
        )
        self.fake.patch_custom_status(ROLLOUTS, NS, "r1", {})  # a fresh Rollout's empty status

    # --- dependencies -----------------------------------------------------------------------
    def _ready(self, dep: Mapping[str, Any]) -> bool:
        """The Deployment controller's verdict: every pod of the current template is ready
        (always with ``auto_ready``; else only a template this Deployment already ran ready)."""
        seen = self._ready_templates.setdefault(dep["metadata"]["name"], set())
        sha = template_sha(dep)
        if self.auto_ready or sha in seen:
            seen.add(sha)
            return True
        return False

    def _fault(self, point: str) -> None:
        """``RolloutDeps.faults``: counts the actions done and, when a step is to crash, dies
        after its last one (before the status write that would record them)."""
        if point.startswith("Announce:"):
            return
        self._done += 1
        if self._crash_after is not None and self._done >= self._crash_after:
            raise Crash(point)

    def _act(self, kind: str) -> None:
        self.actions.append(kind)
        if kind in FORWARD and not self._lease_valid():
            self.writes_while_invalid.append(kind)
        if kind in self.failing:
            raise api_error(403, "Forbidden", f"admission webhook denied the request ({kind})")

    def _lease_valid(self) -> bool:
        """The Lease verified independently, as of now (the invariant the e2e suite checks
        in the API server's audit log)."""
        lease = self.fake.get_custom(LEASES, NS, "l1")
        if lease is None:
            return False
        verdict = verify_lease(
            namespace=NS,
            name="l1",
            spec=lease.get("spec") or {},
            annotations=lease["metadata"].get("annotations") or {},
            trust=self.trust,
            now=self.now,
            ledger=self.ledger,
            claimant_uid=self.rollout["metadata"]["uid"],
            previously_accepted=previously_accepted(lease.get("status")),
        )
        return verdict.valid

    # --- world mechanics ------------------------------------------------------------------
    def sign_lease(self, signer: str, role: str | None = None) -> None:
        assert self.lease is not None
        role = role or ROLES[signer]
        signed_at = format_time(self.now)
        st = lease_statement(self.ns, "l1", self.lease["spec"], signer, role, signed_at)
        value = cosign_annotation_value(role, signed_at, sign_statement(st, SEEDS[signer]))
        self.fake.patch_custom(
            LEASES, NS, "l1", {"metadata": {"annotations": {COSIGN_PREFIX + signer: value}}}
        )

    def approve(
        self, signer: str, to_weight: int, role: str = "human", digest: str | None = None
    ) -> None:
        digest = digest or self.rollout["status"]["leaseDigest"]
        signed_at = format_time(self.now)
        st = approval_statement(self.ns, "r1", digest, to_weight, signer, signed_at)
        if role != "human":
            st["role"] = role
        value = approval_annotation_value(to_weight, signed_at, sign_statement(st, SEEDS[signer]))
        self.fake.patch_custom(
            ROLLOUTS, NS, "r1", {"metadata": {"annotations": {APPROVE_PREFIX + signer: value}}}
        )

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def delete_rollout(self) -> None:
        """``kubectl delete rollout r1``: held by the finalizer until the operator lets go."""
        self.fake.delete_custom(ROLLOUTS, NS, "r1")

    def recent_rollbacks(self, count: int) -> None:
        """``count`` earlier Rollouts of the same target that rolled back yesterday."""
        for i in range(count):
            name = f"earlier-{i}"
            self.fake.create_custom(
                ROLLOUTS, NS, {"metadata": {"name": name}, "spec": {"leaseRef": {"name": name}}}
            )
            verified = format_time_ms(self.now - dt.timedelta(days=1))
            self.fake.patch_custom_status(
                ROLLOUTS,
                NS,
                name,
                {
                    "phase": "RolledBack",
                    "target": {"name": "checkout"},
                    "rollback": {"verifiedAt": verified},
                },
            )

    def forget_rollbacks(self) -> None:
        for obj in list(self.fake.items(ROLLOUTS, NS)):
            if obj["metadata"]["name"].startswith("earlier-"):
                self.fake.delete_custom(ROLLOUTS, NS, obj["metadata"]["name"])

    def observe(self) -> Observed:
        """What the reconciler observes now (a timer pass: analysis included)."""
        rollout = self.fake.get_custom(ROLLOUTS, NS, "r1")
        assert rollout is not None
        return observe(self.deps, rollout, tick=True)

    def step(self, crash_before_status: bool = False) -> Plan:
        """One pass of ``reconcile_rollout``: post what a dead pass left in the outbox, then
        observe → plan → apply. ``crash_before_status``: the operator dies right after the
        pass's last action (the ``faults`` dependency), before the status write recording it
        and before announcing; a pass with no action dies before its first write."""
        rollout = self.fake.get_custom(ROLLOUTS, NS, "r1")
        if rollout is None:
            return Plan(status={})
        if pending(rollout.get("status")):
            announce(self.deps, rollout, None)
            rollout = self.fake.get_custom(ROLLOUTS, NS, "r1")
            assert rollout is not None
        observed = observe(self.deps, rollout, tick=True)
        plan = plan_rollout(observed)
        if crash_before_status and not plan.actions:
            return plan
        self._done = 0
        self._crash_after = len(plan.actions) if crash_before_status else None
        try:
            apply(self.deps, rollout, plan, observed.lease)
        except Crash:
            pass
        finally:
            self._crash_after = None
        return plan

    def run(self, max_steps: int = 30) -> None:
        """Wake the reconciler (a timer tick) until a wake-up changes nothing in the cluster."""
        for _ in range(max_steps):
            before = self.fake.revision
            try:
                reconcile_rollout(self.deps, NS, "r1", tick=True)
            except ApiException as exc:  # the operator logs it; the next wake-up retries
                self.errors.append(exc)
                return
            if self.fake.revision == before:
                return
        raise AssertionError("reconciler did not converge")

    # --- views onto the cluster -------------------------------------------------------------
    @property
    def rollout(self) -> dict[str, Any]:
        """The Rollout as stored (or, once deleted, as last stored)."""
        live = self.fake.peek(ROLLOUTS, NS, "r1")
        return live if live is not None else self.fake.tombstones[(ROLLOUTS, NS, "r1")]

    @property
    def lease(self) -> dict[str, Any] | None:
        return self.fake.peek(LEASES, NS, "l1")

    @lease.setter
    def lease(self, body: Mapping[str, Any] | None) -> None:
        self._put(LEASES, "l1", body)

    @property
    def target(self) -> dict[str, Any] | None:
        return self.fake.peek("deployments", NS, "checkout")

    @target.setter
    def target(self, body: Mapping[str, Any] | None) -> None:
        self._put("deployments", "checkout", body)

    @property
    def canary(self) -> dict[str, Any] | None:
        """``checkout-canary`` when it is this Rollout's (owned by it)."""
        dep = self.fake.peek("deployments", NS, canary_name("checkout"))
        return dep if dep is not None and owned_by(dep, self.rollout["metadata"]["uid"]) else None

    @property
    def foreign_canary(self) -> dict[str, Any] | None:
        """``checkout-canary`` when someone else made it."""
        dep = self.fake.peek("deployments", NS, canary_name("checkout"))
        return dep if dep is not None and self.canary is None else None

    @foreign_canary.setter
    def foreign_canary(self, body: Mapping[str, Any] | None) -> None:
        if body is None and self.foreign_canary is None:
            return
        self._put("deployments", canary_name("checkout"), body)

    @property
    def snapshot(self) -> dict[str, Any] | None:
        return self.fake.peek("configmaps", NS, snapshot_name("r1"))

    @snapshot.setter
    def snapshot(self, body: Mapping[str, Any] | None) -> None:
        """Deleted, or deleted and created again (it is immutable): what ConfigMap write
        permission allows."""
        if self.snapshot is not None:
            self.fake.delete("configmaps", NS, snapshot_name("r1"))
        if body is not None:
            self.fake.create("configmaps", NS, _fresh(body))

    @property
    def job(self) -> dict[str, Any] | None:
        return self.fake.peek("jobs", NS, job_name("r1"))

    @property
    def ledger(self) -> dict[str, LedgerEntry]:
        """Digest → holder, from the ``calyx-ledger`` ConfigMap."""
        cm = self.fake.get_configmap(OPERATOR_NS, "calyx-ledger")
        return read_ledger((cm or {}).get("data")).holders()

    @ledger.setter
    def ledger(self, entries: Mapping[str, LedgerEntry]) -> None:
        cm = self.fake.get_configmap(OPERATOR_NS, "calyx-ledger")
        assert cm is not None
        cm["data"] = dict(encode_entry(e) for e in entries.values())
        self.fake.replace_configmap(OPERATOR_NS, "calyx-ledger", cm)

    @property
    def busy_by(self) -> str | None:
        """Another Rollout whose claim is on the target."""
        claim = claim_of(self.target)
        return claim[0] if claim is not None and claim[0] != "r1" else None

    @busy_by.setter
    def busy_by(self, name: str | None) -> None:
        """Another live Rollout that claimed the target (its claim annotation and status), or,
        with None, that Rollout gone and its claim released."""
        current = self.busy_by
        if current is not None:
            self.fake.patch("deployments", NS, "checkout", _annotate(CLAIM_ANNOTATION, None))
            self.fake.delete_custom(ROLLOUTS, NS, current)
        if name is None:
            return
        other = self.fake.create_custom(
            ROLLOUTS, NS, {"metadata": {"name": name}, "spec": {"leaseRef": {"name": "l0"}}}
        )
        self.fake.patch_custom_status(
            ROLLOUTS, NS, name, {"phase": "Progressing", "target": {"name": "checkout"}}
        )
        claim = f"{name}/{other['metadata']['uid']}"
        self.fake.patch("deployments", NS, "checkout", _annotate(CLAIM_ANNOTATION, claim))

    @property
    def risk(self) -> Mapping[str, Any] | None:
        """The stored assessment (``status.risk``). It is computed by the reconciler from the
        situation (images, the Lease's constraints, ``recent_rollbacks``), not injected."""
        return (self.rollout.get("status") or {}).get("risk")

    @property
    def events(self) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about the Rollout, in the order posted."""
        return [
            (e["type"], e["reason"], e["message"])
            for e in self.fake.events(NS)
            if e["involvedObject"].get("kind") == "Rollout"
            and e["involvedObject"].get("name") == "r1"
        ]

    def _put(self, resource: str, name: str, body: Mapping[str, Any] | None) -> None:
        """Delete (None), or replace unconditionally / create."""
        exists = self.fake.peek(resource, NS, name) is not None
        if body is None:
            if exists:
                self.fake.delete(resource, NS, name)
            return
        fresh = _fresh(body)
        fresh["metadata"]["name"] = name
        if exists:
            self.fake.update(resource, NS, name, fresh)
        else:
            self.fake.create(resource, NS, fresh)

    # --- queries --------------------------------------------------------------------------
    @property
    def phase(self) -> str | None:
        return (self.rollout.get("status") or {}).get("phase")

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]

    def canary_replicas(self) -> int | None:
        return None if self.canary is None else int(self.canary["spec"]["replicas"])


def _annotate(key: str, value: str | None) -> dict[str, Any]:
    return {"metadata": {"annotations": {key: value}}}


def names(m: Mapping[str, Any] | None) -> list[str]:
    return sorted((m or {}).keys())


__all__ = ["T0", "Crash", "World", "canary_name", "snapshot_name"]
