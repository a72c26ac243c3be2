"""The Prometheus adapter against a canned HTTP API: every response shape maps to one outcome.

A fake server rather than real Prometheus, so that rare shapes (scalar, string, matrix, NaN, +Inf,
a hung server) are exercised deterministically and in milliseconds; tests/integration covers the
real thing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from calyx.adapters.metrics import OperatorMetrics
from calyx.adapters.prometheus import PrometheusClient, PrometheusQueryError, labels_key
from calyx_dev.prometheus import free_port
from tests.support.fake_prometheus import FakePrometheus, Reply, ok, vec


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.close()


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


@pytest.fixture
def client(fake: FakePrometheus, metrics: OperatorMetrics) -> PrometheusClient:
    return PrometheusClient(fake.url, timeout_seconds=2, metrics=metrics)


@pytest.mark.parametrize(
    ("reply", "kind", "value", "detail_has"),
    [
        (vec(({}, "12.5")), "value", 12.5, ""),
        (vec(({"pod": "a"}, "0")), "value", 0.0, ""),
        (ok("scalar", [1700000000.0, "3"]), "value", 3.0, "scalar"),
        (ok("vector", []), "empty", None, "no series"),
        (vec(({}, "NaN")), "empty", None, "NaN"),
        (vec(({}, "+Inf")), "empty", None, "inf"),
        (vec(({}, "-Inf")), "empty", None, "inf"),
        (ok("scalar", [1700000000.0, "NaN"]), "empty", None, "NaN"),
        (vec(({"pod": "a"}, "1"), ({"pod": "b"}, "2")), "non_scalar", None, "2 series"),
        (
            ok("matrix", [{"metric": {}, "values": [[1700000000.0, "1"]]}]),
            "non_scalar",
            None,
            "range",
        ),
        (ok("string", [1700000000.0, "hello"]), "non_scalar", None, "string"),
        (
            (400, {"status": "error", "errorType": "bad_data", "error": 'parse error: "x"'}),
            "error",
            None,
            'HTTP 400: bad_data: parse error: "x"',
        ),
        (
            (422, {"status": "error", "errorType": "execution", "error": "many-to-many"}),
            "error",
            None,
            "HTTP 422: execution: many-to-many",
        ),
        ((503, {"status": "error", "errorType": "timeout", "error": "query timed out"}), "error",
         None, "HTTP 503"),
    ],
)  # fmt: skip
def test_query_outcomes(
    fake: FakePrometheus,
    client: PrometheusClient,
    reply: Reply,
    kind: str,
    value: float | None,
    detail_has: str,
) -> None:
    fake.replies["q"] = reply
    outcome = client.query("q")
    assert outcome.kind == kind
    assert outcome.value == value
    assert detail_has.lower() in outcome.detail.lower()
    assert outcome.seconds >= 0


def test_query_passes_time_and_server_side_timeout(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    fake.replies["q"] = vec(({}, "1"))
    client.query("q", at=datetime(2026, 1, 1, tzinfo=UTC))
    assert fake.seen[-1]["timeout"] == "2s"
    assert fake.seen[-1]["time"] == f"{datetime(2026, 1, 1, tzinfo=UTC).timestamp():.3f}"


def test_timeout_is_an_error_outcome_within_budget(
    fake: FakePrometheus, metrics: OperatorMetrics
) -> None:
    fake.replies["q"] = vec(({}, "1"))
    fake.delay = 2.0
    client = PrometheusClient(fake.url, timeout_seconds=0.3, metrics=metrics)
    started = time.monotonic()
    outcome = client.query("q")
    assert outcome.kind == "error"
    assert "timed out" in outcome.detail
    assert time.monotonic() - started < 1.5  # no retries with back-off
    assert (
        metrics.registry.get_sample_value("calyx_promql_query_errors_total", {"reason": "timeout"})
        == 1
    )


def test_unreachable_is_an_error_outcome(metrics: OperatorMetrics) -> None:
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", metrics=metrics)
    outcome = client.query("up")
    assert outcome.kind == "error"
    assert "cannot reach Prometheus" in outcome.detail
    assert "connection refused" in outcome.detail
    assert len(outcome.detail) <= 300


def test_latency_is_recorded_by_outcome(
    fake: FakePrometheus, client: PrometheusClient, metrics: OperatorMetrics
) -> None:
    fake.replies["a"] = vec(({}, "1"))
    fake.replies["b"] = ok("vector", [])
    client.query("a")
    client.query("a")
    client.query("b")
    count = metrics.registry.get_sample_value
    assert count("calyx_promql_query_duration_seconds_count", {"outcome": "value"}) == 2
    assert count("calyx_promql_query_duration_seconds_count", {"outcome": "empty"}) == 1


def test_query_vector_groups_by_labels(fake: FakePrometheus, client: PrometheusClient) -> None:
    fake.replies["by pod"] = vec(
        ({"namespace": "shop", "pod": "a"}, "1.5"),
        ({"namespace": "shop", "pod": "b"}, "NaN"),
        ({"pod": "c", "namespace": "shop"}, "2"),
    )
    assert client.query_vector("by pod") == {
        (("namespace", "shop"), ("pod", "a")): 1.5,
        labels_key({"pod": "c", "namespace": "shop"}): 2.0,
    }
    fake.replies["none"] = ok("vector", [])
    assert client.query_vector("none") == {}
    fake.replies["scalar"] = ok("scalar", [1700000000.0, "4"])
    assert client.query_vector("scalar") == {(): 4.0}


@pytest.mark.parametrize(
    "reply",
    [
        (400, {"status": "error", "errorType": "bad_data", "error": "boom"}),
        ok("matrix", [{"metric": {}, "values": [[1, "1"]]}]),
    ],
)
def test_query_vector_raises_on_failure(
    fake: FakePrometheus, client: PrometheusClient, reply: Reply
) -> None:
    fake.replies["q"] = reply
    with pytest.raises(PrometheusQueryError) as info:
        client.query_vector("q")
    assert info.value.outcome.kind in ("error", "non_scalar")


def test_query_range_points(fake: FakePrometheus, client: PrometheusClient) -> None:
    fake.replies["r"] = ok(
        "matrix",
        [{"metric": {}, "values": [[100, "1"], [101, "NaN"], [102, "30"]]}],
    )
    start = datetime.fromtimestamp(100, tz=UTC)
    end = datetime.fromtimestamp(102, tz=UTC)
    out = client.query_range("r", start, end, step_seconds=1)
    assert out.kind == "value"
    assert out.points == ((100.0, 1.0), (102.0, 30.0))
    assert fake.seen[-1]["step"] == "1"
    fake.replies["two"] = ok(
        "matrix", [{"metric": {"a": "1"}, "values": []}, {"metric": {"a": "2"}, "values": []}]
    )
    assert client.query_range("two", start, end).kind == "non_scalar"
    fake.replies["none"] = ok("matrix", [])
    assert client.query_range("none", start, end).kind == "empty"
    assert client.query_range("unknown", start, end).kind == "error"


def test_query_many_runs_in_parallel(fake: FakePrometheus, client: PrometheusClient) -> None:
    for name in "abcd":
        fake.replies[name] = vec(({}, "1"))
    fake.delay = 0.4
    started = time.monotonic()
    out = client.query_many({name: name for name in "abcd"})
    assert {k: v.kind for k, v in out.items()} == dict.fromkeys("abcd", "value")
    assert time.monotonic() - started < 1.2  # four 0.4 s queries, not 1.6 s


def test_usable_from_many_threads(fake: FakePrometheus, client: PrometheusClient) -> None:
    fake.replies["q"] = vec(({}, "7"))
    results: list[float | None] = []

    def work() -> None:
        for _ in range(5):
            results.append(client.query("q").value)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [7.0] * 20


def test_rejects_nonpositive_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        PrometheusClient("http://127.0.0.1:1", timeout_seconds=0)


# ---- the operator's own metrics (calyx.adapters.metrics) ------------------------------------


def test_operator_metrics_are_isolated_and_complete() -> None:
    import urllib.request

    from calyx.adapters.metrics import ROLLOUT_PHASES, start_metrics_server

    m = OperatorMetrics()
    other = OperatorMetrics()
    m.set_rollouts_by_phase({"Progressing": 3, "Completed": 1})
    m.set_rollouts_by_phase({"Progressing": 2})
    m.record_rollback("Breach", 0.8)
    m.record_rollback("Manual")
    m.record_signature("valid")
    m.record_signature("invalid")
    m.record_signature("valid")
    get = m.registry.get_sample_value
    assert get("calyx_rollouts", {"phase": "Progressing"}) == 2
    assert get("calyx_rollouts", {"phase": "Completed"}) == 0  # a full snapshot each time
    assert {get("calyx_rollouts", {"phase": p}) for p in ROLLOUT_PHASES} == {0, 2}
    assert get("calyx_rollbacks_total", {"trigger": "Breach"}) == 1
    assert get("calyx_breach_to_revert_seconds_count") == 1
    assert get("calyx_breach_to_revert_seconds_bucket", {"le": "1.0"}) == 1
    assert get("calyx_signature_verifications_total", {"result": "valid"}) == 2
    # every trigger is pre-set to 0 (so increase() sees a first rollback): isolated means 0 here
    assert other.registry.get_sample_value("calyx_rollbacks_total", {"trigger": "Breach"}) == 0

    server, thread = start_metrics_server(0, addr="127.0.0.1", metrics=m)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        assert 'calyx_rollbacks_total{trigger="Breach"} 1.0' in text
        assert "calyx_promql_query_duration_seconds" in text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_first_request_left_unanswered_is_remembered(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    """A hung server is known from the first request it left waiting, whoever sent it: the
    NoData clock starts there (docs/analysis.md, "A hung Prometheus")."""
    fake.replies["q"] = vec(({}, "1"))
    assert client.unanswered_since() is None and client.answering(within_seconds=0.1)
    fake.delay = 0.6
    sent = datetime.now(UTC)
    out = client.query_many({"a": "q"}, wait_seconds=0.1)
    assert out["a"].kind == "error"
    since = client.unanswered_since()
    assert since is not None and 0 <= (since - sent).total_seconds() < 0.1
    time.sleep(0.15)
    assert not client.answering(within_seconds=0.2)
    time.sleep(0.6)  # the answer arrives after all: the server is answering again
    assert client.unanswered_since() is None and client.answering(within_seconds=0.2)


def test_a_timeout_marks_the_server_not_answering(
    fake: FakePrometheus, metrics: OperatorMetrics
) -> None:
    fake.replies["q"] = vec(({}, "1"))
    fake.delay = 0.5
    client = PrometheusClient(fake.url, timeout_seconds=0.2, metrics=metrics)
    sent = datetime.now(UTC)
    assert client.query("q").kind == "error"
    assert client.query("q").kind == "error"
    since = client.unanswered_since()
    assert since is not None and 0 <= (since - sent).total_seconds() < 0.1, (
        "nothing is outstanding any more, but the first request left unanswered is remembered"
    )
    assert not client.answering(within_seconds=1.0)
    fake.delay = 0.0
    assert client.query("q").kind == "value"
    assert client.answering(within_seconds=1.0) and client.unanswered_since() is None
