"""Scrape-aligned evaluations (docs/analysis.md, "Scrape-aligned")."""

from __future__ import annotations

import datetime as dt

import pytest

from calyx.adapters.prometheus import _duration_seconds, parse_prometheus_time
from calyx.domain.scrape import LANDING_MARGIN_SECONDS, ScrapeTarget, due_at, next_landing

T0 = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)


def s(x: float) -> dt.timedelta:
    return dt.timedelta(seconds=x)


def test_next_landing_follows_the_scrape_cadence() -> None:
    t = ScrapeTarget(T0, 1.0, 0.02)
    land = 0.02 + LANDING_MARGIN_SECONDS
    assert next_landing(t, T0) == T0 + s(land)
    assert next_landing(t, T0 + s(0.5)) == T0 + s(1 + land)
    assert next_landing(t, T0 + s(3 + land)) == T0 + s(3 + land)


def test_due_at_the_landing_an_interval_after_the_one_last_seen() -> None:
    t = ScrapeTarget(T0, 1.0, 0.02)
    land = 0.02 + LANDING_MARGIN_SECONDS
    last = T0 + s(0.4)  # evaluated at a random phase: it saw the landing at T0 + land
    assert due_at(last, 1, [t]) == T0 + s(1 + land)
    assert due_at(None, 1, [t]) is None, "never evaluated: now"
    assert due_at(last, 1, []) == last + s(1), "no target information: free-running"


@pytest.mark.parametrize("late", [0.0, 0.01, 0.3, 0.6, 0.85])
def test_a_late_evaluation_does_not_push_the_schedule_a_scrape_later(late: float) -> None:
    """The 2 s interval measured as 3 s: an evaluation that ran ``late`` after its landing
    scheduled the next from its own time and so skipped a scrape."""
    t = ScrapeTarget(T0, 1.0, 0.02)
    landing = next_landing(t, T0 + s(5))
    assert due_at(landing + s(late), 2, [t]) == landing + s(2)


def test_a_landing_that_moves_by_jitter_still_counts_as_seen() -> None:
    """Scrape durations vary by milliseconds between target reads: an evaluation run exactly at
    its landing must not be scheduled one scrape early because the landing now looks later."""
    first = ScrapeTarget(T0, 1.0, 0.020)
    landing = next_landing(first, T0 + s(5))
    reread = ScrapeTarget(T0 + s(5), 1.0, 0.028)
    assert due_at(landing, 2, [reread]) == next_landing(reread, landing + s(1.5))


def test_interval_not_a_multiple_of_the_scrape_interval() -> None:
    t = ScrapeTarget(T0, 15.0, 0.1)
    landing = next_landing(t, T0)
    assert due_at(landing + s(0.2), 10, [t]) == landing + s(15), "new data only every 15 s"


def test_prometheus_formats() -> None:
    assert _duration_seconds("1m30s") == 90 and _duration_seconds("500ms") == 0.5
    got = parse_prometheus_time("2026-11-25T10:00:01.123456789Z")
    assert got == T0 + s(1.123456)
