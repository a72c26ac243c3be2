"""Token buckets for Events about user-controlled input (domain/ratelimit.py; docs/audit.md,
"Rate limits")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from calyx.domain.ratelimit import (
    LIMITED_REASONS,
    NAMESPACE_RULE,
    NEVER_LIMITED_REASONS,
    OBJECT_RULE,
    Bucket,
    Rule,
    is_full,
    is_limited,
    refilled,
    take,
)

DOCS = Path(__file__).resolve().parents[3] / "docs"
R = Rule(burst=3, refill_seconds=10.0)


@pytest.mark.parametrize(
    ("bucket", "now", "tokens", "at"),
    [
        (None, 100.0, 3.0, 100.0),  # no bucket yet: a full one
        (Bucket(0.0, 100.0), 100.0, 0.0, 100.0),  # no time passed
        (Bucket(0.0, 100.0), 105.0, 0.5, 105.0),  # half a refill period
        (Bucket(0.0, 100.0), 120.0, 2.0, 120.0),  # two periods: two tokens
        (Bucket(1.0, 100.0), 1e6, 3.0, 1e6),  # capped at the burst
        (Bucket(1.0, 100.0), 90.0, 1.0, 100.0),  # clock went back: nothing, stamp kept
    ],
)
def test_refill(bucket: Bucket | None, now: float, tokens: float, at: float) -> None:
    b = refilled(bucket, R, now)
    assert (b.tokens, b.at) == (pytest.approx(tokens), at)


@pytest.mark.parametrize(
    ("obj", "ns", "allowed", "denied_by", "after"),
    [
        (None, None, True, None, (2.0, 2.0)),  # both new: burst - 1
        (Bucket(1.0, 0.0), None, True, None, (0.0, 2.0)),  # the object's last token
        (Bucket(0.0, 0.0), None, False, 0, (0.0, 3.0)),  # object empty: namespace untouched
        (None, Bucket(0.5, 0.0), False, 1, (3.0, 0.5)),  # namespace empty: object untouched
        (Bucket(0.0, 0.0), Bucket(0.0, 0.0), False, 0, (0.0, 0.0)),  # first empty one named
        (Bucket(0.95, -1.0), None, True, None, (pytest.approx(0.05), 2.0)),  # refilled to 1.05
    ],
)
def test_take_is_all_or_nothing(
    obj: Bucket | None,
    ns: Bucket | None,
    allowed: bool,
    denied_by: int | None,
    after: tuple[float, float],
) -> None:
    v = take([(obj, R), (ns, R)], now=0.0)
    assert v.allowed is allowed and v.denied_by == denied_by
    assert tuple(b.tokens for b in v.buckets) == after


def test_a_flood_gets_the_burst_then_the_refill_rate() -> None:
    """1,000 attempts, one every 0.1 s (100 s): burst + 100 s / refill period get through."""
    bucket: Bucket | None = None
    allowed = 0
    for i in range(1000):
        v = take([(bucket, R)], now=i * 0.1)
        bucket = v.buckets[0]
        allowed += v.allowed
    assert allowed == R.burst + 9  # 99.9 s of refill: 9 whole tokens
    assert not is_full(bucket, R, 99.9) and is_full(bucket, R, 99.9 + 3 * R.refill_seconds)


def test_defaults_namespace_larger_than_object() -> None:
    assert NAMESPACE_RULE.burst > OBJECT_RULE.burst
    assert NAMESPACE_RULE.refill_seconds < OBJECT_RULE.refill_seconds


def test_decisions_are_never_limited() -> None:
    for reason in ("DeployStarted", "CanaryPromoted", "RolledBack", "DeployCompleted"):
        assert not is_limited(reason)
    for reason in ("RollbackComplete", "Verified2Key", "LeaseConsumed", "Cosigned"):
        assert not is_limited(reason)
    for reason in ("ThresholdBreached", "NoData", "SnapshotTampered", "RollbackStuck"):
        assert not is_limited(reason)
    assert is_limited("SignatureInvalid") and is_limited("LeaseRejected")
    assert not LIMITED_REASONS & NEVER_LIMITED_REASONS


def _events_table_reasons() -> set[str]:
    text = (DOCS / "operations.md").read_text()
    table = text.split("## Events", 1)[1].split("\n## ", 1)[0]
    out: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            out |= set(re.findall(r"`([A-Z][A-Za-z0-9]+)`", line.split("|")[1]))
    return out


def test_every_documented_reason_is_classified() -> None:
    """A new Event reason must be put on one side on purpose."""
    documented = _events_table_reasons()
    assert len(documented) > 20
    assert documented <= LIMITED_REASONS | NEVER_LIMITED_REASONS, (
        documented - LIMITED_REASONS - NEVER_LIMITED_REASONS
    )


def test_audit_md_names_exactly_the_limited_reasons() -> None:
    section = (DOCS / "audit.md").read_text().split("## Rate limits", 1)[1].split("\n## ", 1)[0]
    listed = section.split("Limited reasons:", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"`([A-Z][A-Za-z0-9]+)`", listed)) == LIMITED_REASONS
