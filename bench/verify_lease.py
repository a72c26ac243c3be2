"""Time ``verify_lease`` on a realistic Lease with two cosignatures (human + agent).

The controller re-verifies before every tier advance and on every analysis interval
(docs/design.md promise 1, §Analysis), so verification sits on the rollback-latency path; the
goal is well under 1 ms.

Run: ``.venv/bin/python bench/verify_lease.py [runs]`` (default 2000).
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "operator")]

from calyx.domain.signatures import (  # noqa: E402 - after the path tweak, for a bare checkout
    cosign_annotation_value,
    lease_statement,
    public_key_from_seed,
    sign_statement,
)
from calyx.domain.trust import Policy, Signer, TrustStore  # noqa: E402
from calyx.domain.verification import verify_lease  # noqa: E402

ALICE, SENTINEL = b"\x01" * 32, b"\x02" * 32
NAMESPACE, NAME, SIGNED_AT = "shop", "checkout-2-3-1", "2026-11-25T09:30:00Z"
SPEC: dict[str, object] = {
    "intent": "INT-42: checkout 2.3.1 fixes cart rounding (5 € → 5,00 €)",
    "targetRef": {"kind": "Deployment", "name": "checkout"},
    "change": {
        "containers": [
            {"name": "app", "image": "registry.example/checkout@sha256:" + "3b" * 32},
            {"name": "sidecar", "image": "registry.example/envoy@sha256:" + "4c" * 32},
        ]
    },
    "constraints": {"maxInitialWeight": 5, "requireAnalysis": True},
    "expiresAt": "2026-11-25T18:00:00Z",
}


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    trust = TrustStore(
        {
            "alice": Signer("alice", "human", public_key_from_seed(ALICE), ("shop",)),
            "sentinel": Signer("sentinel", "agent", public_key_from_seed(SENTINEL)),
        },
        Policy(),
    )
    annotations = {
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    for signer, role, seed in (("alice", "human", ALICE), ("sentinel", "agent", SENTINEL)):
        statement = lease_statement(NAMESPACE, NAME, SPEC, signer, role, SIGNED_AT)
        sig = sign_statement(statement, seed)
        annotations[f"cosign.calyx.io/{signer}"] = cosign_annotation_value(role, SIGNED_AT, sig)
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

    def once() -> None:
        verdict = verify_lease(
            namespace=NAMESPACE,
            name=NAME,
            spec=SPEC,
            annotations=annotations,
            trust=trust,
            now=now,
            ledger={},
        )
        assert verdict.valid, verdict.reason

    for _ in range(50):  # warm-up
        once()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        samples.append(time.perf_counter() - start)
    samples.sort()
    median = statistics.median(samples) * 1e6
    p95 = samples[int(0.95 * (len(samples) - 1))] * 1e6
    worst = samples[-1] * 1e6
    print(
        f"verify_lease, 2 cosignatures, {runs} runs: "
        f"median {median:.0f} µs, p95 {p95:.0f} µs, max {worst:.0f} µs (goal < 1000 µs)"
    )


if __name__ == "__main__":
    main()
