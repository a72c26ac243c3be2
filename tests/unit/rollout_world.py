"""An in-memory world for planner tests: applies each planned step the way the reconciler does.

It is not a Kubernetes emulator (the e2e suite runs against a real API server); it only moves
dicts so the pure state machine can be driven through whole rollouts, crashes included, in
milliseconds. Pods become ready instantly unless ``auto_ready`` is off.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

from calyx.api.lease import parse_lease_spec
from calyx.api.rollout import parse_rollout_spec
from calyx.domain.canary import CLAIM_ANNOTATION, canary_name, snapshot_name, trusted_snapshot
from calyx.domain.ledger import LedgerEntry, decide_claim
from calyx.domain.risk import recommended_tiers
from calyx.domain.rollout_binding import rollout_spec_digest
from calyx.domain.rollout_plan import (
    DEFAULT_TIERS,
    AnalysisOutcome,
    Observed,
    Plan,
    plan_rollout,
    stamp,
)
from calyx.domain.signatures import (
    COSIGN_PREFIX,
    cosign_annotation_value,
    lease_statement,
    public_key_from_seed,
    sign_statement,
)
from calyx.domain.timefmt import format_time
from calyx.domain.trust import parse_trust_store
from calyx.domain.verification import verify_lease

T0 = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)
SEEDS = {"alice": b"\x01" * 32, "sentinel": b"\x02" * 32, "bob": b"\x03" * 32}
ROLES = {"alice": "human", "sentinel": "agent", "bob": "human"}


def signers_yaml(ids: list[str]) -> str:
    return "".join(
        f"- {{id: {i}, role: {ROLES[i]}, publicKey: "
        f"{base64.b64encode(public_key_from_seed(SEEDS[i])).decode()}}}\n"
        for i in ids
    )


class World:
    def __init__(
        self,
        replicas: int = 20,
        tiers: list[dict[str, Any]] | None = None,
        constraints: dict[str, Any] | None = None,
        expires_in: int = 3600,
        spec: dict[str, Any] | None = None,
        bind: bool = False,
    ) -> None:
        self.now = T0
        self.ns = "shop"
        self.trust = parse_trust_store(signers_yaml(["alice", "sentinel", "bob"]), None)
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
            "change": {"containers": [{"name": "app", "image": "reg/checkout:2"}]},
            "constraints": constraints if constraints is not None else {"requireAnalysis": False},
            "expiresAt": format_time(T0 + dt.timedelta(seconds=expires_in)),
        }
        self.lease: dict[str, Any] | None = {
            "metadata": {"name": "l1", "namespace": self.ns, "annotations": {}},
            "spec": lease_spec,
        }
        if bind:  # the keys sign how, too (docs/signing.md, "Binding the rollout")
            digest = rollout_spec_digest(parse_rollout_spec(rspec))
            lease_spec["rolloutRef"] = {"name": "r1", "specDigest": digest}
        for s in ("alice", "sentinel"):
            self.sign_lease(s)
        self.rollout: dict[str, Any] = {
            "metadata": {
                "name": "r1",
                "namespace": self.ns,
                "uid": "uid-r1",
                "generation": 1,
                "annotations": {},
                "finalizers": [],
                "resourceVersion": "1",
            },
            "spec": rspec,
            "status": {},
        }
        self.target: dict[str, Any] | None = {
            "metadata": {"name": "checkout", "namespace": self.ns, "generation": 1, "uid": "d1"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "checkout"}},
                "template": {
                    "metadata": {"labels": {"app": "checkout"}},
                    "spec": {"containers": [{"name": "app", "image": "reg/checkout:1"}]},
                },
            },
            "status": {},
        }
        self.settle(self.target)
        self.canary: dict[str, Any] | None = None
        self.snapshot: dict[str, Any] | None = None
        self.job: dict[str, Any] | None = None
        self.ledger: dict[str, LedgerEntry] = {}
        self.events: list[tuple[str, str, str]] = []
        self.actions: list[str] = []
        self.auto_ready = True
        self.analysis: AnalysisOutcome | None = None
        self.risk: dict[str, Any] | None = None
        self.writes_while_invalid: list[str] = []
        self.busy_by: str | None = None
        self.posted: set[str] = set()
        self.query_problem: tuple[str, str] | None = None
        self.foreign_canary: dict[str, Any] | None = None
        self.failing: set[str] = set()  # action kinds the "API server" refuses

    # --- world mechanics ------------------------------------------------------------------
    def sign_lease(self, signer: str, role: str | None = None) -> None:
        assert self.lease is not None
        role = role or ROLES[signer]
        signed_at = format_time(self.now)
        st = lease_statement(self.ns, "l1", self.lease["spec"], signer, role, signed_at)
        self.lease["metadata"]["annotations"][COSIGN_PREFIX + signer] = cosign_annotation_value(
            role, signed_at, sign_statement(st, SEEDS[signer])
        )

    @staticmethod
    def settle(dep: dict[str, Any]) -> None:
        n = dep["spec"]["replicas"]
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
        }

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def observe(self) -> Observed:
        spec = parse_rollout_spec(self.rollout["spec"])
        verdict = lease_spec = None
        claimed = False
        if self.lease is not None:
            lease_spec = parse_lease_spec(self.lease["spec"])
            verdict = verify_lease(
                namespace=self.ns,
                name="l1",
                spec=self.lease["spec"],
                annotations=self.lease["metadata"]["annotations"],
                trust=self.trust,
                now=self.now,
                ledger=self.ledger,
                claimant_uid="uid-r1",
            )
            holder = self.ledger.get(verdict.digest)
            claimed = holder is not None and holder.rollout_uid == "uid-r1"
        st = self.rollout["status"]
        doc, problem = None, ""
        if (st.get("snapshot") or {}).get("configMap"):
            doc, problem = trusted_snapshot(self.snapshot, st["snapshot"].get("sha256"))
        return Observed(
            query_problem=self.query_problem,
            busy_by=self.busy_by,
            foreign_canary=self.foreign_canary,
            snapshot_doc=doc,
            snapshot_problem=problem,
            rollout=copy.deepcopy(self.rollout),
            now=self.now,
            spec=spec,
            lease=self.lease,
            lease_spec=lease_spec,
            verdict=verdict,
            claimed=claimed,
            trust=self.trust,
            target=copy.deepcopy(self.target),
            canary=copy.deepcopy(self.canary),
            snapshot=self.snapshot,
            job=copy.deepcopy(self.job),
            risk=self.risk,
            default_tiers=recommended_tiers(self.risk["level"]) if self.risk else DEFAULT_TIERS,
            analysis=self.analysis,
        )

    def _announce(self) -> None:
        """The outbox as the reconciler posts it: each entry once, then cleared."""
        for e in self.rollout["status"].pop("outbox", None) or []:
            if e["id"] not in self.posted:
                self.posted.add(e["id"])
                self.events.append((e["type"], e["reason"], e["message"]))

    def step(self, crash_before_status: bool = False) -> Plan:
        self._announce()  # what a pass that died mid-announcement left
        o = self.observe()
        plan = plan_rollout(o)
        lease_valid = o.verdict is not None and o.verdict.valid
        if plan.status_first:  # written before the actions, so a crash after them keeps it
            self.rollout["status"] = copy.deepcopy(plan.status)
        for a in plan.actions:
            self.actions.append(a.kind)
            if a.kind in ("CreateCanary", "ScaleCanary", "PatchStableImages") and not lease_valid:
                self.writes_while_invalid.append(a.kind)
            if a.kind not in self.failing:
                self._apply(a)
        if plan.stamp_reverted:
            plan.status.setdefault("rollback", {})["revertedAt"] = stamp(self.now)
        if crash_before_status:
            return plan
        self.rollout["status"] = copy.deepcopy(plan.status)
        self._announce()
        return plan

    def _apply(self, a: Any) -> None:
        meta = self.rollout["metadata"]
        if a.kind == "AddFinalizer":
            meta["finalizers"].append("calyx.io/rollback")
        elif a.kind == "RemoveFinalizer":
            meta["finalizers"].remove("calyx.io/rollback")
        elif a.kind == "Claim":
            if decide_claim(self.ledger, a.entry).won:
                self.ledger.setdefault(a.entry.digest, a.entry)
        elif a.kind == "ClaimTarget":
            assert self.target is not None
            ann = self.target["metadata"].setdefault("annotations", {})
            ann[CLAIM_ANNOTATION] = f"{meta['name']}/{meta['uid']}"
        elif a.kind == "ReleaseTarget":
            assert self.target is not None
            self.target["metadata"].get("annotations", {}).pop(CLAIM_ANNOTATION, None)
        elif a.kind == "DeleteSnapshot":
            self.snapshot = None
        elif a.kind == "WriteSnapshot":
            self.snapshot = self.snapshot or copy.deepcopy(dict(a.body))
        elif a.kind == "CreateCanary":
            self.canary = self.canary or copy.deepcopy(dict(a.body))
            self.canary["metadata"]["generation"] = 1
            self.canary["status"] = {}
            if self.auto_ready:
                self.settle(self.canary)
        elif a.kind == "ScaleCanary":
            assert self.canary is not None
            self.canary["spec"]["replicas"] = a.replicas
            self.canary["metadata"]["generation"] += 1
            if self.auto_ready:
                self.settle(self.canary)
        elif a.kind == "PatchStableImages":
            assert self.target is not None
            images = {c["name"]: c["image"] for c in a.body["containers"]}
            for c in self.target["spec"]["template"]["spec"]["containers"]:
                c["image"] = images.get(c["name"], c["image"])
            self.target["metadata"]["generation"] += 1
            if self.auto_ready:
                self.settle(self.target)
        elif a.kind == "DeleteCanary":
            self.canary = None
        elif a.kind == "RestoreStable":
            assert self.target is not None
            self.target["spec"]["template"] = copy.deepcopy(a.body["spec"]["template"])
            self.target["metadata"]["generation"] += 1
            self.settle(self.target)
        elif a.kind == "CreateJob":
            self.job = self.job or {**copy.deepcopy(dict(a.body)), "status": {}}
        elif a.kind == "DeleteJob":
            self.job = None
        elif a.kind == "SetPaused":
            self.rollout["spec"]["paused"] = a.paused
        else:
            raise AssertionError(a.kind)

    def run(self, max_steps: int = 30) -> None:
        """Step until nothing changes (what one reconcile wake-up does)."""
        for _ in range(max_steps):
            before = copy.deepcopy(self.rollout["status"])
            plan = self.step()
            if not plan.actions and self.rollout["status"] == before:
                return
        raise AssertionError("planner did not converge")

    # --- queries --------------------------------------------------------------------------
    @property
    def phase(self) -> str | None:
        return self.rollout["status"].get("phase")

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]

    def canary_replicas(self) -> int | None:
        return None if self.canary is None else int(self.canary["spec"]["replicas"])

    def approve(
        self, signer: str, to_weight: int, role: str = "human", digest: str | None = None
    ) -> None:
        from calyx.domain.signatures import (
            APPROVE_PREFIX,
            approval_annotation_value,
            approval_statement,
        )

        digest = digest or self.rollout["status"]["leaseDigest"]
        signed_at = format_time(self.now)
        st = approval_statement(self.ns, "r1", digest, to_weight, signer, signed_at)
        if role != "human":
            st["role"] = role
        self.rollout["metadata"]["annotations"][APPROVE_PREFIX + signer] = (
            approval_annotation_value(to_weight, signed_at, sign_statement(st, SEEDS[signer]))
        )


def names(m: Mapping[str, Any] | None) -> list[str]:
    return sorted((m or {}).keys())


__all__ = ["T0", "World", "canary_name", "snapshot_name"]
