"""Prometheus queries for canary analysis (docs/analysis.md), on ``prometheus-api-client``.

Blocking by design: the operator runs reconciles in worker threads, never on the asyncio loop, and
every method here is meant to be called from such a thread. Each thread gets its own
``PrometheusConnect`` (a ``requests.Session`` is not documented as thread-safe).

Every query ends in one of four outcomes, never an exception, because the analysis treats them
differently and must never mistake one for another:

* ``value``      -- exactly one finite number (a one-series vector or a scalar);
* ``empty``      -- no series, or NaN/±Inf. NaN is what ``0/0`` gives when a side had no traffic in
  the window and Inf what a zero denominator gives (e.g. no CPU request), so neither is a
  measurement: both are NoData (hold, eventually roll back), never a pass and never a breach;
* ``non_scalar`` -- several series (a query missing an aggregation) or a range/string result;
* ``error``      -- transport failure, timeout, HTTP or PromQL error.

A query is bounded by ``timeout_seconds`` twice: the HTTP client's connect/read timeout and
Prometheus's own ``timeout`` parameter (so a heavy query is cancelled server-side too). There are
no retries here: the analysis timer re-queries every interval, and a retry with back-off would
only delay the error outcome past the interval (promise 3).
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from calyx.adapters.metrics import METRICS, OperatorMetrics
from calyx.domain.analysis import QueryOutcome
from calyx.domain.scrape import ScrapeTarget

__all__ = [
    "UNANSWERED_PREFIXES",
    "Labels",
    "PrometheusClient",
    "PrometheusQueryError",
    "QueryOutcome",
    "RangeOutcome",
    "labels_key",
]

Labels = tuple[tuple[str, str], ...]
"""A series' labels as a sorted tuple of pairs: hashable, usable as a dict key."""

K = TypeVar("K")

_ERRNO: Final = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
_HTTP_ERROR: Final = re.compile(r"HTTP Status Code (\d+) \((b'.*'|b\".*\")\)\s*$", re.DOTALL)
_MAX_DETAIL: Final = 300
NO_ANSWER: Final = "no answer within"
TIMED_OUT: Final = "timed out after"
UNANSWERED_PREFIXES: Final = (NO_ANSWER, TIMED_OUT)
"""How an ``error`` outcome's detail begins when the server did not answer in time."""


class PrometheusQueryError(RuntimeError):
    """A batched query failed; ``outcome`` says how (kind ``error`` or ``non_scalar``)."""

    def __init__(self, outcome: QueryOutcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


@dataclass(frozen=True)
class RangeOutcome:
    """A range query's single series as ``(unix seconds, value)`` points, or why there is none."""

    kind: Literal["value", "empty", "non_scalar", "error"]
    points: tuple[tuple[float, float], ...] = ()
    detail: str = ""
    seconds: float = 0.0


def labels_key(metric: Mapping[str, str]) -> Labels:
    """The hashable key of a series' label set."""
    return tuple(sorted(metric.items()))


def _timed_out(exc: requests.RequestException) -> bool:
    """A timeout, whichever way ``requests`` reports it (a read timeout can surface as a
    ``ConnectionError`` whose text says "timed out"): the server did not answer in time."""
    return isinstance(exc, requests.Timeout) or "timed out" in str(exc)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _http_error(text: str) -> str:
    """``HTTP 400: parse error ...`` from the client's ``HTTP Status Code 400 (b'{json}')``."""
    found = _HTTP_ERROR.match(text)
    if found is None:
        return text
    status = f"HTTP {found.group(1)}"
    try:
        body = json.loads(ast.literal_eval(found.group(2)))
        return f"{status}: {body['errorType']}: {body['error']}"
    except (ValueError, SyntaxError, KeyError, TypeError):
        return f"{status}: {found.group(2)[2:-1]}"


def _number(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


class PrometheusClient:
    """Instant, batched and range queries against one Prometheus."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 5.0,
        headers: Mapping[str, str] | None = None,
        disable_ssl: bool = False,
        metrics: OperatorMetrics | None = METRICS,
        max_parallel: int = 8,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._headers = dict(headers or {})
        self._disable_ssl = disable_ssl
        self._metrics = metrics
        self._local = threading.local()
        self._max_parallel = max(1, max_parallel)
        # One pool for the client's lifetime: a pool per evaluation cost ~7 % of the operator's
        # CPU at 100 Rollouts (bench/scale.py profile).
        self._pool = ThreadPoolExecutor(
            max_workers=self._max_parallel, thread_name_prefix="calyx-promql"
        )
        self._targets_lock = threading.Lock()
        self._targets: list[ScrapeTarget] = []
        self._targets_at = -math.inf
        self._targets_inflight = False
        # Every request still waiting for its answer, by when it was sent: the first one a hung
        # server left unanswered starts the NoData clock (docs/analysis.md, "A hung Prometheus").
        self._outstanding: dict[int, datetime] = {}
        self._outstanding_lock = threading.Lock()
        self._request_ids = itertools.count()
        # Send time of the first request that timed out since the server last answered.
        self._unanswered_from: datetime | None = None

    def __repr__(self) -> str:
        return f"PrometheusClient({self.url!r}, timeout_seconds={self.timeout_seconds})"

    def _connect(self) -> PrometheusConnect:
        conn: PrometheusConnect | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = PrometheusConnect(
                url=self.url,
                headers=self._headers or None,
                disable_ssl=self._disable_ssl,
                retry=Retry(total=0, read=False, raise_on_status=False),
                timeout=self.timeout_seconds,
            )
            self._local.conn = conn
        return conn

    def _params(self, at: datetime | None) -> dict[str, str]:
        params = {"timeout": f"{self.timeout_seconds:g}s"}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        return params

    @contextmanager
    def _request(self) -> Iterator[None]:
        """Mark one request outstanding from its send until its answer (or failure)."""
        key = next(self._request_ids)
        sent = datetime.now(UTC)
        with self._outstanding_lock:
            self._outstanding[key] = sent
        answered: bool | None = True  # None: refused or reset, which says nothing either way
        try:
            yield
        except (requests.Timeout, requests.ConnectionError) as exc:
            answered = False if _timed_out(exc) else None
            raise
        finally:
            with self._outstanding_lock:
                del self._outstanding[key]
                if answered:
                    self._unanswered_from = None
                elif answered is False and self._unanswered_from is None:
                    self._unanswered_from = sent

    def answering(self, within_seconds: float) -> bool:
        """Whether the server looks responsive: nothing it left unanswered since its last
        answer, and no request waiting longer than ``within_seconds``."""
        with self._outstanding_lock:
            if self._unanswered_from is not None:
                return False
        return self.unanswered_since(older_than_seconds=within_seconds) is None

    def unanswered_since(self, older_than_seconds: float = 0.0) -> datetime | None:
        """When the first request the server left unanswered was sent: the oldest still
        waiting (if it has waited longer than ``older_than_seconds``), or one that timed out
        since the server last answered anything (None: none). Any request counts — a query of
        any Rollout, a batch, the targets read — so a hung server is known from the first
        request it left unanswered, not from each Rollout's own; and a timeout does not make
        it forget that first request."""
        now = datetime.now(UTC)
        with self._outstanding_lock:
            oldest = min(self._outstanding.values(), default=None)
            timed_out = self._unanswered_from
        if oldest is not None and (now - oldest).total_seconds() < older_than_seconds:
            oldest = None
        found = [t for t in (oldest, timed_out) if t is not None]
        return min(found) if found else None

    def _call(self, fn: Callable[[], Any]) -> tuple[Any, QueryOutcome | None, float]:
        """Run one API call; on failure return the ``error`` outcome instead of raising."""
        started = time.monotonic()
        reason, detail = "other", ""
        try:
            with self._request():
                return fn(), None, time.monotonic() - started
        except (requests.Timeout, requests.ConnectionError) as exc:
            if _timed_out(exc):
                reason, detail = "timeout", f"{TIMED_OUT} {self.timeout_seconds:g}s"
                return self._failed(reason, detail, started)
            found = _ERRNO.search(str(exc))
            why = found.group(1).strip().lower() if found else type(exc).__name__
            reason, detail = "connection", f"cannot reach Prometheus at {self.url}: {why}"
        except PrometheusApiClientException as exc:
            reason, detail = "http", _http_error(str(exc))
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        return self._failed(reason, detail, started)

    def _failed(
        self, reason: str, detail: str, started: float
    ) -> tuple[Any, QueryOutcome | None, float]:
        seconds = time.monotonic() - started
        outcome = QueryOutcome("error", None, _short(detail), seconds)
        if self._metrics is not None:
            self._metrics.record_query(outcome, reason)
        return None, outcome, seconds

    def _finish(self, outcome: QueryOutcome) -> QueryOutcome:
        if self._metrics is not None:
            self._metrics.record_query(outcome)
        return outcome

    def query(self, promql: str, *, at: datetime | None = None) -> QueryOutcome:
        """Evaluate ``promql`` at ``at`` (default: now) expecting one number."""
        result, failed, seconds = self._call(
            lambda: self._connect().custom_query(promql, params=self._params(at))
        )
        if failed is not None:
            return failed
        return self._finish(_single(result, seconds))

    def query_vector(self, promql: str, *, at: datetime | None = None) -> dict[Labels, float]:
        """Evaluate a grouped query (``sum by (namespace, pod) (...)``) into ``{labels: value}``.

        One such query serves every Rollout (split with ``calyx.domain.promql.classify_pod``), so
        Prometheus load grows with the number of signals, not of Rollouts. Series whose value is
        NaN/Inf are left out (no data for them). Raises :class:`PrometheusQueryError` on error or
        on a non-vector result; an empty dict means no series.
        """
        result, failed, seconds = self._call(
            lambda: self._connect().custom_query(promql, params=self._params(at))
        )
        if failed is not None:
            raise PrometheusQueryError(failed)
        if not isinstance(result, list) or (result and not isinstance(result[0], dict)):
            if isinstance(result, list) and len(result) == 2:
                value = _number(result[1])
                self._finish(QueryOutcome("value", value, "scalar", seconds))
                return {(): value} if value is not None and math.isfinite(value) else {}
            outcome = QueryOutcome("non_scalar", None, "not an instant vector", seconds)
            self._finish(outcome)
            raise PrometheusQueryError(outcome)
        values: dict[Labels, float] = {}
        for series in result:
            if "value" not in series:
                outcome = QueryOutcome("non_scalar", None, "range vector result", seconds)
                self._finish(outcome)
                raise PrometheusQueryError(outcome)
            value = _number(series["value"][1])
            if value is not None and math.isfinite(value):
                values[labels_key(series.get("metric", {}))] = value
        kind: Literal["value", "empty"] = "value" if values else "empty"
        self._finish(QueryOutcome(kind, None, f"{len(values)} series", seconds))
        return values

    def query_range(
        self, promql: str, start: datetime, end: datetime, step_seconds: float = 1.0
    ) -> RangeOutcome:
        """Evaluate ``promql`` over ``[start, end]`` every ``step_seconds``, one series expected.

        Used after a breach to find when it began (``calyx.domain.analysis
        .estimate_breach_start``). NaN/Inf points are dropped.
        """
        step = f"{max(step_seconds, 0.001):g}"  # float seconds; "0.25s" is no valid duration
        result, failed, seconds = self._call(
            lambda: self._connect().custom_query_range(
                promql,
                start,
                end,
                step,
                # The client rounds start/end to whole seconds; breachAt wants sub-second.
                params={
                    "timeout": f"{self.timeout_seconds:g}s",
                    "start": f"{start.timestamp():.3f}",
                    "end": f"{end.timestamp():.3f}",
                },
            )
        )
        if failed is not None:
            return RangeOutcome("error", (), failed.detail, seconds)
        if not isinstance(result, list) or not result:
            return RangeOutcome("empty", (), "no series", seconds)
        if len(result) > 1:
            return RangeOutcome("non_scalar", (), f"{len(result)} series", seconds)
        points = []
        for ts, raw in result[0].get("values", []):
            value = _number(raw)
            if value is not None and math.isfinite(value):
                points.append((float(ts), value))
        if not points:
            return RangeOutcome("empty", (), "only NaN/Inf points", seconds)
        return RangeOutcome("value", tuple(points), f"{len(points)} points", seconds)

    def submit_vector(self, promql: str) -> Future[dict[Labels, float]]:
        """:meth:`query_vector` on the client's pool (the batched queries of one timer tick run
        in parallel)."""
        return self._pool.submit(self.query_vector, promql)

    def query_many(
        self,
        queries: Mapping[K, str],
        *,
        at: datetime | None = None,
        wait_seconds: float | None = None,
    ) -> dict[K, QueryOutcome]:
        """Run several instant queries in parallel; the wall time is that of the slowest.

        One evaluation of a Rollout is up to 2 queries per metric; run one after the other, a
        stalled Prometheus would cost ``n * timeout`` and overrun the analysis interval.
        ``wait_seconds`` bounds the wait for all of them together: a query still unanswered then
        is an ``error`` outcome ("no answer"), so a hung Prometheus is NoData on time and a
        decision never waits for it (docs/analysis.md, "A hung Prometheus"). The abandoned
        request finishes (or times out) in the background.
        """
        if not queries:
            return {}
        futures = {key: self._pool.submit(self.query, q, at=at) for key, q in queries.items()}
        deadline = None if wait_seconds is None else time.monotonic() + max(0.0, wait_seconds)
        out: dict[K, QueryOutcome] = {}
        for key, fut in futures.items():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                out[key] = fut.result(timeout=left)
            except FutureTimeout:
                outcome = QueryOutcome(
                    "error", None, f"{NO_ANSWER} {wait_seconds:g}s", wait_seconds or 0.0
                )
                if self._metrics is not None:
                    self._metrics.record_query(outcome, "timeout")
                out[key] = outcome
        return out

    def scrape_targets(self, max_age_seconds: float = 1.0) -> list[ScrapeTarget]:
        """Active targets' last scrape, interval and duration (``/api/v1/targets``), refreshed
        in the background at most once per ``max_age_seconds`` and shared by every Rollout.
        Never blocks: a hung Prometheus must not delay the evaluations that declare it NoData.
        ``[]`` when unknown (the caller falls back to a free-running clock)."""
        now = time.monotonic()
        with self._targets_lock:
            stale = now - self._targets_at >= max_age_seconds
            if stale and not self._targets_inflight:
                self._targets_inflight = True
                self._pool.submit(self._refresh_targets)
            return self._targets

    def _refresh_targets(self) -> None:
        found: list[ScrapeTarget] = []
        answered = True
        try:
            with self._request():
                resp = self._connect()._session.get(  # the client has no targets API of its own
                    f"{self.url}/api/v1/targets",
                    params={"state": "active"},
                    headers=self._headers or None,
                    timeout=self.timeout_seconds,
                    verify=not self._disable_ssl,
                )
            resp.raise_for_status()
            for t in resp.json()["data"]["activeTargets"]:
                if t.get("health") != "up" or not t.get("lastScrape"):
                    continue
                found.append(
                    ScrapeTarget(
                        last_scrape=parse_prometheus_time(t["lastScrape"]),
                        interval_seconds=_duration_seconds(t.get("scrapeInterval", "")),
                        duration_seconds=float(t.get("lastScrapeDuration") or 0.0),
                    )
                )
        except (requests.RequestException, ValueError, KeyError, TypeError):
            answered = False  # the scrape cadence last read is still the best guess
        with self._targets_lock:
            if answered:
                self._targets = found
            self._targets_at = time.monotonic()
            self._targets_inflight = False

    def close(self) -> None:
        """Close this thread's HTTP session (other threads' sessions close with them)."""
        conn: PrometheusConnect | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_seconds(text: str) -> float:
    """Prometheus duration (``1s``, ``1m30s``, ``500ms``) in seconds; 0 when unparseable."""
    return sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text or ""))


_FRACTION = re.compile(r"\.(\d+)")


def parse_prometheus_time(text: str) -> datetime:
    """RFC 3339 with up to nanoseconds, as Prometheus writes ``lastScrape``."""
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6], text.replace("Z", "+00:00"), count=1)
    return datetime.fromisoformat(text)


def _single(result: Any, seconds: float) -> QueryOutcome:
    """Interpret an instant query's ``data.result`` as one number."""
    if not isinstance(result, list):
        return QueryOutcome("non_scalar", None, "unexpected result shape", seconds)
    if len(result) == 2 and not isinstance(result[0], dict):
        # resultType scalar (e.g. ``vector(1)`` reduced by scalar()), or string.
        value = _number(result[1])
        if value is None:
            return QueryOutcome("non_scalar", None, "string result", seconds)
        return _finite(value, "scalar", seconds)
    if not result:
        return QueryOutcome("empty", None, "no series", seconds)
    if len(result) > 1:
        return QueryOutcome(
            "non_scalar", None, f"{len(result)} series (aggregate the query to one)", seconds
        )
    series = result[0]
    if not isinstance(series, dict) or "value" not in series:
        return QueryOutcome("non_scalar", None, "range vector result", seconds)
    value = _number(series["value"][1])
    if value is None:
        return QueryOutcome("non_scalar", None, "unparseable sample value", seconds)
    return _finite(value, "", seconds)


def _finite(value: float, detail: str, seconds: float) -> QueryOutcome:
    if math.isnan(value):
        return QueryOutcome("empty", None, "NaN (0/0: no traffic in the window?)", seconds)
    if math.isinf(value):
        return QueryOutcome("empty", None, f"{value} (division by zero?)", seconds)
    return QueryOutcome("value", value, detail, seconds)
