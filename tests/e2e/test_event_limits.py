"""Rate limits for Events about user-controlled input (docs/audit.md, "Rate limits"; issue 12).

Probe: anyone who may edit Leases in a namespace (no keys) rewrites one Lease's signature as
fast as the API server takes it, each rewrite a different invalid signature (forged, dated in the
future, too old). Dedupe cannot merge them (each is a new cause), so the operator posted one
``SignatureInvalid`` Event per rewrite it saw: 200 rewrites in 2.3 s gave 62-65 Events (and, with
the outbox ids of the time, 61 audit records but only 42 Events: same-second ids collided). Now
the warnings about that Lease are bounded by its token bucket (9 ``SignatureInvalid`` + 1
``LeaseRejected`` of 68-84 announcements), every announcement still has its audit record, the
suppressed ones are counted on ``/metrics`` and logged once, and a good Lease next to it still
verifies in 0.15-0.35 s.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import urllib.request
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx.domain.ratelimit import OBJECT_RULE, is_limited
from calyx.domain.signatures import sig_fingerprint
from tests.e2e.harness import cosign, events_for, lease_body, lease_phase, utcnow, wait_for
from tests.e2e.plugin import apply_obj

pytestmark = [pytest.mark.e2e]

N = 200
SENTINEL = "cosign.calyx.io/sentinel"
SUPPRESSED = re.compile(r'^calyx_events_suppressed_total\{reason="([A-Za-z]+)"\} (\S+)$', re.M)


def suppressed(op: Any) -> dict[str, float]:
    url = f"http://127.0.0.1:{op.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {m[1]: float(m[2]) for m in SUPPRESSED.finditer(text)}


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except OSError:  # the metrics server is not up yet
        return None


def audit_records(op: Any, uid: str) -> list[dict[str, Any]]:
    """The object's audit records in the operator's stdout. Every record line must parse: two
    threads' records merged into one line would be lost from the witness."""
    out = []
    for line in op.log_text().splitlines():
        line = line.strip()
        if not line.startswith("{") or '"hash"' not in line:
            continue
        rec = json.loads(line)
        if rec.get("object", {}).get("uid") == uid:
            out.append(rec)
    return out


def bad_signature(lease: dict[str, Any], i: int) -> str:
    """A different invalid signature (and cause) for sentinel each time."""
    now = utcnow()
    kind = i % 3
    if kind == 0:  # forged: sentinel's signature over another spec
        other = lease_body(lease["metadata"]["namespace"], "victim", "checkout", {"app": f"x:{i}"})
        return cosign(other, "sentinel", now - dt.timedelta(seconds=i))
    if kind == 1:  # dated in the future, beyond the skew
        return cosign(lease, "sentinel", now + dt.timedelta(hours=1, seconds=i))
    return cosign(lease, "sentinel", now - dt.timedelta(days=2, seconds=i))  # too old


def test_signature_rewrite_flood_posts_bounded_events(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns, op = kube_namespace, running_operator
    wait_for("operator /metrics", lambda: _try(suppressed, op) is not None)
    before = suppressed(op)
    image = {"app": "reg/x@sha256:" + "a" * 64}
    body = lease_body(ns, "victim", "checkout", image, signers=["alice"])
    t0 = time.monotonic()  # the victim's buckets start full after this
    apply_obj(trust, body)
    wait_for("victim Rejected", lambda: lease_phase(kube, ns, "victim") == "Rejected")
    live = kube.get_custom("leases", ns, "victim")
    assert live is not None
    uid = live["metadata"]["uid"]

    done = 0
    last = ""

    def flood() -> None:
        nonlocal done, last
        for i in range(N):
            last = bad_signature(body, i)
            ann = {"metadata": {"annotations": {SENTINEL: last}}}
            kube.patch_custom("leases", ns, "victim", ann)
            done += 1

    start = time.monotonic()
    attacker = threading.Thread(target=flood, daemon=True)
    attacker.start()
    wait_for("a quarter of the flood", lambda: done >= N // 4, timeout=60, interval=0.05)

    # Meanwhile a good Lease in the same namespace verifies promptly.
    good = lease_body(ns, "good", "checkout", {"app": "reg/y@sha256:" + "b" * 64})
    t_good = time.monotonic()
    apply_obj(trust, good)
    wait_for(
        "good Lease's Verified2Key Event",
        lambda: "Verified2Key" in [e["reason"] for e in events_for(kube, ns, "good")],
        timeout=30,
        interval=0.1,
    )
    good_seconds = time.monotonic() - t_good
    attacker.join(120)
    assert done == N
    flood_seconds = time.monotonic() - start

    def settled() -> bool:
        st = (kube.get_custom("leases", ns, "victim") or {}).get("status") or {}
        sentinel = next((c for c in st.get("cosigners") or [] if c.get("id") == "sentinel"), {})
        want = sig_fingerprint(json.loads(last)["sig"])
        return not st.get("outbox") and sentinel.get("sigSha256") == want

    wait_for("victim settled", settled, timeout=60)
    time.sleep(2)  # the last pass's Event, after its status write
    elapsed = time.monotonic() - t0

    victim_events = events_for(kube, ns, "victim")
    posted = [e["reason"] for e in victim_events].count("SignatureInvalid")
    records = audit_records(op, uid)
    recorded = [r["reason"] for r in records].count("SignatureInvalid")
    delta = suppressed(op).get("SignatureInvalid", 0.0) - before.get("SignatureInvalid", 0.0)
    log = op.log_text().splitlines()
    limit_lines = [ln for ln in log if "rate-limit" in ln and f"{ns}/victim" in ln]
    event_lines = [ln for ln in log if f"event Warning {ns}/victim SignatureInvalid" in ln]
    limited = [e for e in victim_events if is_limited(e["reason"])]
    bound = OBJECT_RULE.burst + int(elapsed / OBJECT_RULE.refill_seconds)
    print(
        f"\nflood: {N} rewrites in {flood_seconds:.1f}s; SignatureInvalid: {recorded} audit "
        f"records, {posted} Events posted, {delta:.0f} suppressed; Events on the Lease: "
        f"{len(victim_events)}, {len(limited)} of them limited (bound {bound}); rate-limit "
        f"log lines {len(limit_lines)}; good Lease Verified2Key after {good_seconds:.2f}s"
    )
    assert recorded >= 3 * OBJECT_RULE.burst, "the operator saw many of the rewrites"
    assert len(limited) <= bound, f"{len(limited)} warnings posted for one Lease ({bound})"
    assert recorded == posted + delta, "every announcement is either posted or counted"
    ids = {str((r.get("data") or {}).get("outboxId")) for r in records}
    assert all(e["metadata"]["name"].split(".", 1)[1] in ids for e in victim_events), (
        "every posted Event has its audit record"
    )
    assert 1 <= len(limit_lines) <= 4, limit_lines
    assert len(event_lines) == posted, "no log line per suppressed Event"
    assert good_seconds < 10
