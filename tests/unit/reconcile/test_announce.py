"""Announcing from the outbox when the report ConfigMap write fails (docs/audit.md, "Outbox").

A failure that the next pass can cure (this replica lost the leader lease for a moment, the
ConfigMap kept changing under the compare-and-swap, the API timed out) must leave the outbox
entry in place, so the record reaches the report exactly once later. Only a refusal no retry
can cure (a policy denies the write, the namespace is going away) falls back to stdout alone.
Found by the 90 s black-hole fault test: the CanaryPromoted record was missing from the report
while its Event was posted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from calyx.adapters.kube import FencedError
from calyx.domain.audit import parse_jsonl
from calyx.domain.report import AUDIT_KEY
from tests.support.fake_kube import api_error, conflict
from tests.support.rollout_world import NS, World

REPORT = "r1-report"


def _records(w: World) -> Counter[str]:
    cm = w.fake.peek("configmaps", NS, REPORT) or {}
    chain = parse_jsonl(((cm.get("data") or {}).get(AUDIT_KEY)) or "")
    return Counter(str(r.get("reason")) for r in chain)


def _fail_report_writes(w: World, error: Callable[[], Exception]) -> list[bool]:
    """Writes of the report ConfigMap raise ``error()`` until the returned flag is cleared."""
    failing = [True]
    for method in ("create_configmap", "replace_configmap"):
        real = getattr(w.fake, method)

        def write(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            body = args[-1]
            if body["metadata"]["name"] == REPORT and failing[0]:
                raise error()
            return _real(*args, **kwargs)

        setattr(w.fake, method, write)
    return failing


RETRYABLE: dict[str, Callable[[], Exception]] = {
    "fenced": lambda: FencedError("PUT refused: the leader lease was not renewed in time"),
    "conflict": lambda: conflict("configmaps", REPORT),
    "timeout": lambda: TimeoutError("read timed out"),
    "server error": lambda: api_error(503, "ServiceUnavailable", "etcd is down"),
}


@pytest.mark.parametrize("cause", sorted(RETRYABLE))
def test_a_report_write_the_next_pass_can_cure_loses_no_record(cause: str) -> None:
    w = World(replicas=20)
    failing = _fail_report_writes(w, RETRYABLE[cause])
    for _ in range(3):
        w.run()
    assert w.reasons() == ["DeployStarted"]
    assert w.rollout["status"].get("outbox"), "the entry waits for its record"
    failing[0] = False
    w.run()
    assert _records(w) == Counter({"DeployStarted": 1})
    assert w.reasons() == ["DeployStarted"], "the Event is posted once"
    assert not w.rollout["status"].get("outbox")


def test_a_refusal_no_retry_cures_goes_to_stdout_and_clears_the_outbox(
    capsys: pytest.CaptureFixture[str],
) -> None:
    w = World(replicas=20)
    _fail_report_writes(w, lambda: api_error(403, "Forbidden", "denied by policy"))
    w.run()
    assert w.reasons() == ["DeployStarted"]
    assert not w.rollout["status"].get("outbox")
    assert '"reason":"DeployStarted"' in capsys.readouterr().out.replace(" ", "")
