"""Passes skipped when nothing is due: the due time (domain/wake.py) and the book that holds it
(reconcile/quiet.py). Conservative first: anything unusual means "run the pass"."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from calyx.api.lease import parse_lease_spec
from calyx.api.rollout import parse_rollout_spec
from calyx.domain.rollout_plan import Observed
from calyx.domain.timefmt import format_time, format_time_ms
from calyx.domain.wake import MAX_QUIET_SECONDS, next_due
from calyx.reconcile.quiet import QuietBook

NOW = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)
ANALYSIS = {
    "intervalSeconds": 10,
    "prometheusURL": "http://prom:9090",
    "errorRate": {"maxPermille": 10},
}


def observed(
    phase: str = "Progressing",
    analysis: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    expires_in: float = 3600,
    valid: bool = True,
    meta: dict[str, Any] | None = None,
) -> Observed:
    spec: dict[str, Any] = {
        "leaseRef": {"name": "l1"},
        "tiers": [{"weight": 25, "soakSeconds": 600}, {"weight": 100}],
    }
    if analysis is not None:
        spec["analysis"] = analysis
    lease = {
        "intent": "x",
        "targetRef": {"kind": "Deployment", "name": "checkout"},
        "change": {"containers": [{"name": "app", "image": "a:2"}]},
        "expiresAt": format_time(NOW + dt.timedelta(seconds=expires_in)),
    }
    rollout = {
        "metadata": {"name": "r1", "namespace": "ns", **(meta or {})},
        "spec": spec,
        "status": {"phase": phase, **(status or {})},
    }
    return Observed(
        rollout=rollout,
        now=NOW,
        spec=parse_rollout_spec(spec),
        lease_spec=parse_lease_spec(lease),
        verdict=SimpleNamespace(valid=valid),  # type: ignore[arg-type]
    )


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def test_next_analysis_is_the_due_time() -> None:
    last = {"lastAnalysis": {"time": format_time_ms(at(-3))}}
    assert next_due(observed(analysis=ANALYSIS, status=last)) == at(7)
    # the runner's own (scrape-aligned) answer wins over the plain sum
    assert next_due(observed(analysis=ANALYSIS, status=last), lambda: at(7.4)) == at(7.4)


def test_never_analysed_is_due_now() -> None:
    assert next_due(observed(analysis=ANALYSIS)) is None
    assert next_due(observed(analysis=ANALYSIS), lambda: None) is None


def test_soak_end_without_analysis() -> None:
    tiers = [{"weight": 25, "soakStartedAt": format_time_ms(at(-590))}]
    assert next_due(observed(status={"currentTier": 0, "tiers": tiers})) == at(10)


def test_waiting_for_ready_pods_is_bounded_by_the_quiet_limit() -> None:
    assert next_due(observed(status={"currentTier": 0})) == at(MAX_QUIET_SECONDS)


def test_lease_expiry_is_a_due_time() -> None:
    assert next_due(observed(expires_in=5)) == at(5)


def test_unusual_states_are_never_skipped() -> None:
    for o in (
        observed(phase="RollingBack"),
        observed(phase="Promoting"),
        observed(phase="Validating"),
        observed(phase="WaitingForLease"),
        observed(valid=False),
        observed(meta={"deletionTimestamp": "2026-11-25T09:00:00Z"}),
        observed(meta={"annotations": {"calyx.io/force-rollback": "now"}}),
        observed(status={"outbox": [{"id": "x", "reason": "R"}]}),
    ):
        assert next_due(o) is None, o.rollout


def test_quiet_book_needs_the_same_token_and_a_time_before_due() -> None:
    book = QuietBook()
    book.record("ns/r1", (1, 2), at(10))
    assert book.is_quiet("ns/r1", (1, 2), at(9))
    assert not book.is_quiet("ns/r1", (1, 3), at(9))  # something it reads changed
    assert not book.is_quiet("ns/r1", (1, 2), at(10))  # due
    assert not book.is_quiet("ns/r1", None, at(0))  # no token: never skip
    book.record("ns/r1", (1, 2), None)  # "do not skip" replaces the record
    assert not book.is_quiet("ns/r1", (1, 2), at(0))
    book.record("ns/r2", (1, 2), at(10))
    book.retain({"ns/r1"})
    assert len(book) == 0


# --- Leases: the sweep re-verifies a quiet Lease only when a clock fact is due -------------------


def trust_store() -> Any:
    from calyx.adapters.trust_store import trust_store_from_configmap
    from tests.e2e.harness import trust_configmap

    policy = "maxSignatureAgeSeconds: 600\nclockSkewSeconds: 60\n"
    return trust_store_from_configmap(trust_configmap(["alice", "sentinel"], policy), "t")


def signed_lease(signed_at: dt.datetime, expires_in: float = 3600) -> dict[str, Any]:
    from tests.e2e.harness import lease_body

    body = lease_body("ns", "l1", "checkout", {"app": "a:2"}, expires_in=expires_in, now=signed_at)
    body["spec"]["expiresAt"] = format_time(NOW + dt.timedelta(seconds=expires_in))
    from tests.e2e.harness import cosign

    for s in ("alice", "sentinel"):
        body["metadata"]["annotations"][f"cosign.calyx.io/{s}"] = cosign(body, s, signed_at)
    return body


def test_lease_due_at_expiry_or_the_age_limit_of_a_signature_not_yet_accepted() -> None:
    from calyx.domain.wake import lease_next_due

    trust = trust_store()
    fresh = signed_lease(at(-100), expires_in=20)
    assert lease_next_due(fresh, trust, NOW) == at(20)  # expires before any signature ages
    aging = signed_lease(at(-590))
    assert lease_next_due(aging, trust, NOW) == at(10)  # signedAt + maxSignatureAgeSeconds
    from calyx.domain.signatures import parse_cosign_annotation, sig_fingerprint

    accepted = [
        {"id": s, "valid": True, "sigSha256": sig_fingerprint(parse_cosign_annotation(k, v).sig)}
        for k, v in aging["metadata"]["annotations"].items()
        for s in [k.split("/", 1)[1]]
    ]
    aging["status"] = {"cosigners": accepted}  # accepted once: the age is not checked again
    assert lease_next_due(aging, trust, NOW) == at(MAX_QUIET_SECONDS)
    future = signed_lease(at(80))
    assert lease_next_due(future, trust, NOW) == at(20)  # within clockSkewSeconds from then
