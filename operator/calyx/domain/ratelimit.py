"""Rate limits for Events about user-controlled input (docs/audit.md, "Rate limits").

Anyone who may edit Leases and Rollouts in a namespace (no keys needed) can make the operator
announce a new cause as often as they like: rewrite a Lease's signature 1,000 times and each
rewrite is a new ``SignatureInvalid``. Dedupe (a warning about an unchanged cause is posted once)
does not help against a cause that changes every time, so those Events go through two token
buckets: one per involved object and a larger one per namespace. An Event is posted only when
both hold a token; otherwise it is suppressed (its audit record is still written).

Only the reasons in :data:`LIMITED_REASONS` are limited: repeatable announcements about input that
needs no key. Decisions the state machine bounds by itself (a deploy starts once, a tier advances
once, a rollback is issued once, a Lease verifies once) are never dropped, whatever the rate.

Pure: buckets are values, the clock (monotonic seconds) is passed in; the operator's adapter
(``adapters/event_limiter.py``) holds one bucket per key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Rule:
    """A token bucket's shape: ``burst`` tokens at most, one more every ``refill_seconds``."""

    burst: int
    refill_seconds: float


#: Per involved object (a Lease, a Rollout): ten announcements at once, then one every 5 min.
#: Kubernetes' own EventRecorder allows 25 and one per 5 min per source and object; a Lease or
#: Rollout has fewer legitimate warnings than a Pod (a handful while it is being fixed).
OBJECT_RULE: Final = Rule(burst=10, refill_seconds=300.0)
#: Per namespace, over the limited reasons of all its objects: 50 at once, then two a minute.
#: Larger than one object's, so one noisy object does not silence the others, and bounding what
#: hundreds of bad objects can post (500 bad Leases: 50 Events, then 120 an hour).
NAMESPACE_RULE: Final = Rule(burst=50, refill_seconds=30.0)

#: Repeatable warnings (and human toggles) about input that anyone with namespace rights can
#: change without a key: each edit can be a new cause. Limited.
LIMITED_REASONS: Final = frozenset(
    {
        "SignatureInvalid",
        "LeaseRejected",
        "LeaseExpired",
        "TrustStoreInvalid",
        "LeaseNotVerified",
        "ApprovalRejected",
        "TargetNotFound",
        "ContainerNotFound",
        "ConstraintViolated",
        "TargetBusy",
        "CanaryConflict",
        "InvalidQuery",
        "Paused",
        "Resumed",
    }
)
#: Decisions bounded by the state machine (or needing a key, or about the operator's own
#: state): never dropped. Listed so that every reason is classified on purpose
#: (tests/unit/domain/test_ratelimit.py checks the Events table of docs/operations.md).
NEVER_LIMITED_REASONS: Final = frozenset(
    {
        "Cosigned",
        "Verified2Key",
        "LeaseConsumed",
        "DeployStarted",
        "CanaryPromoted",
        "DeployCompleted",
        "RolledBack",
        "RollbackComplete",
        "WaitingForApproval",
        "ApprovalAccepted",
        "ThresholdBreached",
        "NoData",
        "PrometheusUnavailable",
        "ValidationStarted",
        "ValidationPassed",
        "ValidationFailed",
        "TargetDeleted",
        "SnapshotTampered",
        "RollbackStuck",
        "RollbackAbandoned",
        "LedgerRebuilt",
        "Cancelled",
    }
)


def is_limited(reason: str) -> bool:
    """Whether an Event with this reason goes through the buckets."""
    return reason in LIMITED_REASONS


@dataclass(frozen=True)
class Bucket:
    """Tokens left at monotonic time ``at``."""

    tokens: float
    at: float


def full(rule: Rule, now: float) -> Bucket:
    return Bucket(float(rule.burst), now)


def refilled(bucket: Bucket | None, rule: Rule, now: float) -> Bucket:
    """``bucket`` as it stands at ``now`` (a missing bucket is a full one). A clock that went
    backwards refills nothing and keeps the later stamp."""
    if bucket is None:
        return full(rule, now)
    elapsed = max(0.0, now - bucket.at)
    tokens = min(float(rule.burst), bucket.tokens + elapsed / rule.refill_seconds)
    return Bucket(tokens, max(bucket.at, now))


def is_full(bucket: Bucket, rule: Rule, now: float) -> bool:
    """A full bucket is the same as none: the adapter may forget it."""
    return refilled(bucket, rule, now).tokens >= rule.burst


@dataclass(frozen=True)
class Verdict:
    """``allowed``, the buckets after the call (same order as given), and when refused, the
    index of the first bucket that had no token."""

    allowed: bool
    buckets: tuple[Bucket, ...]
    denied_by: int | None = None


def take(buckets: Sequence[tuple[Bucket | None, Rule]], now: float) -> Verdict:
    """Take one token from every bucket, or from none: an Event refused by the namespace's
    bucket does not spend its object's token, and the other way round."""
    current = tuple(refilled(b, rule, now) for b, rule in buckets)
    for i, b in enumerate(current):
        if b.tokens < 1.0:
            return Verdict(False, current, i)
    return Verdict(True, tuple(Bucket(b.tokens - 1.0, b.at) for b in current))
