"""The e2e safety-invariant checker must catch a forward write made without a valid Lease."""

from typing import Any

import pytest

from tests.e2e.harness import assert_no_forward_write_without_valid_lease


class FakeAudit:
    def __init__(self, lease_phases: list[tuple[str, str]], writes: list[tuple[str, str]]):
        self.lease_phases, self.writes = lease_phases, writes

    def read_audit_events(self, verbs: Any = None, resource: Any = None, **kw: Any) -> list[Any]:
        if resource == "leases.calyx.io":
            return [
                {
                    "requestReceivedTimestamp": t,
                    "objectRef": {"name": "l1"},
                    "requestObject": {"status": {"phase": p}},
                }
                for t, p in self.lease_phases
            ]
        return [
            {
                "requestReceivedTimestamp": t,
                "verb": v,
                "userAgent": "calyx-operator/0.1.0",
                "objectRef": {"name": "checkout-canary"},
                "requestObject": {},
            }
            for t, v in self.writes
        ]


@pytest.mark.parametrize(
    ("phases", "writes", "ok"),
    [
        ([("T1", "Verified")], [("T2", "create")], True),
        ([("T1", "Verified"), ("T3", "Consumed")], [("T4", "patch")], True),
        ([("T1", "Rejected")], [("T2", "create")], False),  # never valid
        ([("T1", "Verified"), ("T3", "Expired")], [("T4", "patch")], False),  # after expiry
        ([("T2", "Verified")], [("T1", "create")], True),  # rollout verified a beat earlier
        ([("T2", "Rejected")], [("T1", "create")], False),  # ...but not if it was never valid
        ([], [("T1", "create")], False),
        ([("T1", "Rejected")], [], True),  # nothing written, nothing to check
    ],
)
def test_checker(phases: list[tuple[str, str]], writes: list[tuple[str, str]], ok: bool) -> None:
    fake = FakeAudit(phases, writes)
    if ok:
        assert assert_no_forward_write_without_valid_lease(fake, "ns") == len(writes)
    else:
        with pytest.raises(AssertionError, match="forward write"):
            assert_no_forward_write_without_valid_lease(fake, "ns")
