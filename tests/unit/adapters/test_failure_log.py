"""Failing loops log one line per state change (docs/operations.md, "Outages")."""

from __future__ import annotations

import logging

import pytest
from kubernetes.client.rest import ApiException
from urllib3.exceptions import MaxRetryError, NewConnectionError

from calyx.adapters.failure_log import FailureLog, is_transient
from calyx.adapters.kube import FencedError


def unreachable() -> Exception:
    return MaxRetryError(None, "/apis", reason=NewConnectionError(None, "refused"))  # type: ignore[arg-type]


def test_an_outage_is_one_line_and_its_end_another(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog(logging.getLogger("t.outage"))
    with caplog.at_level(logging.INFO, logger="t.outage"):
        for _ in range(500):  # 85 s of 1-second sweeps, several loops each
            log.failed("rollouts", "sweep rollouts", unreachable())
        log.failed("rollouts", "sweep rollouts", ApiException(status=503, reason="Unavailable"))
        log.ok("rollouts", "sweep rollouts")
        log.ok("rollouts", "sweep rollouts")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "unreachable" in lines[0] and "HTTP 503" in lines[1] and "recovered" in lines[2]
    assert all(r.exc_info is None for r in caplog.records), "expected faults: no traceback"


def test_a_bug_keeps_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog(logging.getLogger("t.bug"))
    with caplog.at_level(logging.INFO, logger="t.bug"):
        for _ in range(10):
            log.failed("r", "reconciling rollout ns/r", KeyError("phase"))
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ApiException(status=500), True),
        (ApiException(status=429), True),
        (ApiException(status=409), False),
        (ApiException(status=403), False),
        (ValueError("x"), False),
        (FencedError("PUT refused: leader lease expired"), True),  # a failover, not a bug
    ],
)
def test_what_counts_as_an_expected_fault(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient
