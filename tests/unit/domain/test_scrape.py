"""Scrape-aligned evaluations (docs/analysis.md, "Scrape-aligned")."""

from __future__ import annotations

import datetime as dt

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


def test_due_at_the_first_landing_after_the_interval() -> None:
    t = ScrapeTarget(T0, 1.0, 0.02)
    last = T0 + s(0.4)  # evaluated at a random phase of the scrape cycle
    assert due_at(last, 1, [t]) == T0 + s(2 + 0.02 + LANDING_MARGIN_SECONDS)
    assert due_at(None, 1, [t]) is None, "never evaluated: now"
    assert due_at(last, 1, []) == last + s(1), "no target information: free-running"


def test_prometheus_formats() -> None:
    assert _duration_seconds("1m30s") == 90 and _duration_seconds("500ms") == 0.5
    got = parse_prometheus_time("2026-11-25T10:00:01.123456789Z")
    assert got == T0 + s(1.123456)
