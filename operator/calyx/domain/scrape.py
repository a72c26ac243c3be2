"""When an analysis is due, aligned to Prometheus's scrapes (docs/analysis.md, "Scrape-aligned").

A free-running clock evaluates at a random phase of the scrape cycle: a breaching sample waits up
to a whole interval after it lands. Prometheus knows each target's last scrape, its scrape
interval and how long the scrape took, so the next time new data *lands* is predictable: the
evaluation is due at the first landing after ``interval`` has elapsed since the last one. Pure:
the adapter reads the targets, the clock is passed in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

LANDING_MARGIN_SECONDS = 0.05
"""After a scrape ends, the samples are appended and queryable within milliseconds."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One active Prometheus target: when it was last scraped, how often, and for how long."""

    last_scrape: dt.datetime
    interval_seconds: float
    duration_seconds: float


def next_landing(t: ScrapeTarget, after: dt.datetime) -> dt.datetime:
    """The first time at or after ``after`` when a scrape of ``t`` has landed (its start plus its
    duration plus a margin), assuming scrapes keep their cadence."""
    first = t.last_scrape + dt.timedelta(seconds=t.duration_seconds + LANDING_MARGIN_SECONDS)
    if t.interval_seconds <= 0 or after <= first:
        return first
    k = math.ceil((after - first).total_seconds() / t.interval_seconds)
    return first + dt.timedelta(seconds=k * t.interval_seconds)


def due_at(
    last_evaluation: dt.datetime | None,
    interval_seconds: float,
    targets: Sequence[ScrapeTarget],
    tolerance_seconds: float = 0.0,
) -> dt.datetime | None:
    """When the next evaluation is due: ``None`` = now (never evaluated). Without target
    information it is ``last + interval`` (less the tolerance for discrete timer ticks); with
    it, the first scrape landing at or after that time (a target's next landing never lies more
    than one of its scrape intervals later)."""
    if last_evaluation is None:
        return None
    base = last_evaluation + dt.timedelta(seconds=interval_seconds - tolerance_seconds)
    landings = [next_landing(t, base) for t in targets]
    return min(landings) if landings else base
