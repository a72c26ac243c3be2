"""When an analysis is due, aligned to Prometheus's scrapes (docs/analysis.md, "Scrape-aligned").

A free-running clock evaluates at a random phase of the scrape cycle: a breaching sample waits up
to a whole interval after it lands. Prometheus knows each target's last scrape, its scrape
interval and how long the scrape took, so the next time new data *lands* is predictable: the
evaluation is due at the landing ``interval`` after the one the last evaluation saw. Pure:
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


def last_landing(t: ScrapeTarget, at: dt.datetime) -> dt.datetime:
    """The latest landing of ``t`` at or before ``at``: the newest data an evaluation at ``at``
    could see."""
    first = t.last_scrape + dt.timedelta(seconds=t.duration_seconds + LANDING_MARGIN_SECONDS)
    if t.interval_seconds <= 0:
        return first
    k = math.floor((at - first).total_seconds() / t.interval_seconds)
    return first + dt.timedelta(seconds=k * t.interval_seconds)


def due_at(
    last_evaluation: dt.datetime | None,
    interval_seconds: float,
    targets: Sequence[ScrapeTarget],
    tolerance_seconds: float = 0.0,
) -> dt.datetime | None:
    """When the next evaluation is due: ``None`` = now (never evaluated).

    With target information, the schedule runs on the *data*: the landing the last evaluation
    saw, plus ``interval``, rounded up to a landing. It does not run from when the last
    evaluation happened to run: a sweep tick or a busy pool delays an evaluation by a fraction
    of a scrape, and counting from that delay pushed every next evaluation one whole scrape
    later (a 2 s interval became 3 s; docs/performance.md). Without target information it is
    ``last + interval`` (less the tolerance for discrete timer ticks). With several targets the
    earliest is taken."""
    if last_evaluation is None:
        return None
    if not targets:
        return last_evaluation + dt.timedelta(seconds=interval_seconds - tolerance_seconds)
    step = dt.timedelta(seconds=interval_seconds - _EPSILON_SECONDS)
    return min(
        next_landing(t, last_landing(t, last_evaluation + _jitter(t)) + step) for t in targets
    )


_EPSILON_SECONDS = 0.001
"""Float rounding: a landing exactly ``interval`` after the anchor is that landing, not the next."""


def _jitter(t: ScrapeTarget) -> dt.timedelta:
    """Scrape start and duration jitter by milliseconds between target reads: an evaluation run
    at the landing it was due at must count as having seen it, or the next would come one
    scrape early."""
    return dt.timedelta(seconds=min(0.1, t.interval_seconds / 4))
