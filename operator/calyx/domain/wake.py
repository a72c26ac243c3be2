"""When a quiet Rollout next needs a pass for the clock's sake (docs/architecture.md, "Passes
skipped when nothing is due").

A pass whose plan was empty changes nothing when it runs again on the same inputs. It can only
decide something new once one of its inputs changes (a watch event: the reconciler tracks that
with a change token) or once the clock reaches a time the planner compares against. This module
computes the earliest such time from what that pass observed, so the timer sweep can leave the
Rollout alone until then.

Conservative by construction: ``None`` ("do not skip") for every phase but the three where
only a soak, an analysis interval or an approval is awaited, and for anything unusual (a
deletion, a forced rollback, an announcement not yet posted, an invalid spec or lease). The
clock facts the planner reads in those phases, and where they come from:

* the next analysis, as the analysis runner computes it (the first scrape landing after
  ``status.lastAnalysis.time + intervalSeconds``, docs/analysis.md), else that sum; a soak with
  analysis only advances at an evaluation;
* the soak end without analysis: ``soakStartedAt + soakSeconds`` of the current tier;
* the Lease's ``expiresAt`` (the verdict turns Expired at that instant);
* everything else that only the clock changes (a signature's age limit, a future-dated
  approval coming into its skew window) is bounded by :data:`MAX_QUIET_SECONDS`. The Lease
  sweep also mirrors any such change of a Lease's verdict into its status within seconds, which
  is a watch event of its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from calyx.domain.lease_plan import previously_accepted
from calyx.domain.outbox import pending
from calyx.domain.rollout_plan import FORCE_ROLLBACK, Observed, tiers_in_force
from calyx.domain.signatures import COSIGN_PREFIX, parse_cosign_annotation, sig_fingerprint
from calyx.domain.timefmt import parse_signed_at, parse_stamp, parse_time
from calyx.domain.trust import TrustStore

#: Phases in which a pass with nothing to do may be skipped until :func:`next_due`.
SKIPPABLE_PHASES = ("Progressing", "Paused", "WaitingForApproval")
#: The longest a quiet Rollout goes without a pass, whatever :func:`next_due` found: the bound on
#: any clock fact not modelled here.
MAX_QUIET_SECONDS = 30.0


def next_due(
    o: Observed, analysis_due: Callable[[], dt.datetime | None] | None = None
) -> dt.datetime | None:
    """The earliest time at which a pass over the unchanged inputs ``o`` could plan something,
    or None when this Rollout must not be skipped at all. ``analysis_due`` is the analysis
    runner's own answer for ``o`` (None from it: due now)."""
    rollout: Mapping[str, Any] = o.rollout
    meta = rollout.get("metadata") or {}
    status = rollout.get("status") or {}
    phase = status.get("phase")
    if (
        phase not in SKIPPABLE_PHASES
        or meta.get("deletionTimestamp")
        or FORCE_ROLLBACK in (meta.get("annotations") or {})
        or pending(status)
        or o.spec is None
        or o.lease_spec is None
        or o.verdict is None
        or not o.verdict.valid
    ):
        return None
    due = [o.now + dt.timedelta(seconds=MAX_QUIET_SECONDS), o.lease_spec.expires_at_datetime()]
    if o.spec.analysis.has_metrics():
        last = parse_stamp((status.get("lastAnalysis") or {}).get("time"))
        interval = dt.timedelta(seconds=o.spec.analysis.interval_seconds)
        when = analysis_due() if analysis_due is not None else last and last + interval
        if when is None:
            return None  # never analysed: due now
        due.append(when)
    elif phase == "Progressing":
        tiers = tiers_in_force(o)
        i = int(status.get("currentTier") or 0)
        entries = status.get("tiers") or []
        entry = entries[i] if i < len(entries) and isinstance(entries[i], Mapping) else {}
        soak_start = parse_stamp(entry.get("soakStartedAt"))
        if soak_start is not None:
            tier = tiers[min(i, len(tiers) - 1)]
            due.append(soak_start + dt.timedelta(seconds=tier.soak_seconds))
        # No soak start yet: waiting for the canary's pods, a Deployment watch event.
    return min(due)


def lease_next_due(
    lease: Mapping[str, Any], trust: TrustStore, now: dt.datetime
) -> dt.datetime | None:
    """When the verdict on ``lease`` could next change with nothing but the clock (the Lease
    sweep re-verifies it then, or when the Lease, trust store or ledger changes), or None when
    it must be verified every time. The clock facts of verification (docs/signing.md):
    ``expiresAt``; a signature's ``maxSignatureAgeSeconds`` unless an earlier verification
    accepted it (then the age is not checked again); a future-dated signature coming within
    ``clockSkewSeconds`` of now. Bounded by :data:`MAX_QUIET_SECONDS` like a Rollout's."""
    spec = lease.get("spec")
    meta = lease.get("metadata") or {}
    if not isinstance(spec, Mapping) or meta.get("deletionTimestamp"):
        return None
    try:
        expires = parse_time(spec.get("expiresAt"), field="expiresAt")
    except (TypeError, ValueError):
        return None
    due = [now + dt.timedelta(seconds=MAX_QUIET_SECONDS)]
    if expires > now:
        due.append(expires)
    accepted = previously_accepted(lease.get("status"))
    policy = trust.policy
    for key, value in (meta.get("annotations") or {}).items():
        if not key.startswith(COSIGN_PREFIX):
            continue
        try:
            ann = parse_cosign_annotation(key, value)
            signed = parse_signed_at(ann.signed_at)
        except ValueError:
            continue  # malformed stays malformed, whatever the time
        valid_from = signed - dt.timedelta(seconds=policy.clock_skew_seconds)
        if valid_from > now:
            due.append(valid_from)
        if accepted.get(ann.signer) != sig_fingerprint(ann.sig):
            aged = signed + dt.timedelta(seconds=policy.max_signature_age_seconds)
            if aged > now:
                due.append(aged)
    return min(due)


__all__ = ["MAX_QUIET_SECONDS", "SKIPPABLE_PHASES", "lease_next_due", "next_due"]
