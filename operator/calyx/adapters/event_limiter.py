"""The buckets of the Event rate limits, held per process (docs/audit.md, "Rate limits").

The rule is pure (``domain/ratelimit.py``); this holds one bucket per involved object and one per
namespace, counts what it refuses (``calyx_events_suppressed_total{reason}``) and logs one line
per state change: the first Event suppressed for an object (or a namespace), and once Events for
it get through again, how many were suppressed meanwhile. Never a line per suppressed Event.

Buckets live in memory: a restart or a failover starts with full ones (one more burst at most).
A full bucket is the same as none, so full ones are forgotten from time to time and the memory
follows the objects that are being noisy, not every object ever seen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from calyx.adapters.metrics import METRICS, OperatorMetrics
from calyx.domain.ratelimit import (
    NAMESPACE_RULE,
    OBJECT_RULE,
    Bucket,
    Rule,
    is_full,
    is_limited,
    take,
)

log = logging.getLogger("calyx.events")

#: Forget full buckets after this many calls (a full bucket is the same as none).
PRUNE_EVERY = 512


@dataclass
class _Quiet:
    """A key whose Events are being suppressed: how many, and the first reason."""

    what: str
    count: int


class EventLimiter:
    """``allow(obj, reason)``: may an Event about ``obj`` be posted now?"""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        metrics: OperatorMetrics = METRICS,
        object_rule: Rule = OBJECT_RULE,
        namespace_rule: Rule = NAMESPACE_RULE,
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.rules = {"object": object_rule, "namespace": namespace_rule}
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._quiet: dict[tuple[str, str], _Quiet] = {}
        self._calls = 0

    def allow(self, obj: Mapping[str, Any], reason: str) -> bool:
        if not is_limited(reason):
            return True
        meta = obj.get("metadata") or {}
        ns = str(meta.get("namespace") or "default")
        what = f"{obj.get('kind') or 'object'} {ns}/{meta.get('name')}"
        keys = (("object", str(meta.get("uid") or what)), ("namespace", ns))
        now = self.clock()
        lines: list[str] = []
        with self._lock:
            verdict = take([(self._buckets.get(k), self.rules[k[0]]) for k in keys], now)
            for k, b in zip(keys, verdict.buckets, strict=True):
                self._buckets[k] = b
            if verdict.allowed:
                for k in keys:
                    quiet = self._quiet.pop(k, None)
                    if quiet is not None:
                        lines.append(
                            f"Events for {quiet.what} resumed ({reason}); {quiet.count} "
                            "suppressed by the rate limit meanwhile (their audit records were "
                            "written)"
                        )
            else:
                assert verdict.denied_by is not None
                key = keys[verdict.denied_by]
                quiet = self._quiet.get(key)
                if quiet is None:
                    where = what if key[0] == "object" else f"namespace {ns}"
                    self._quiet[key] = _Quiet(where, 1)
                    lines.append(
                        f"Events for {where} are rate-limited: {reason} on {what} and further "
                        "warnings are not posted (audit records still are; counted in "
                        "calyx_events_suppressed_total)"
                    )
                else:
                    quiet.count += 1
            self._calls += 1
            if self._calls % PRUNE_EVERY == 0:
                lines += self._prune(now)
        if not verdict.allowed:
            self.metrics.record_event_suppressed(reason)
        for line in lines:
            log.warning("%s", line)
        return verdict.allowed

    def _prune(self, now: float) -> list[str]:
        """Forget full buckets; a key that was quiet and is full again ends its quiet spell."""
        lines = []
        for key in [k for k, b in self._buckets.items() if is_full(b, self.rules[k[0]], now)]:
            del self._buckets[key]
            quiet = self._quiet.pop(key, None)
            if quiet is not None:
                lines.append(
                    f"Events for {quiet.what} are no longer rate-limited; {quiet.count} were "
                    "suppressed (their audit records were written)"
                )
        return lines

    def size(self) -> int:
        """Buckets held (for tests: memory follows the noisy objects)."""
        with self._lock:
            return len(self._buckets)
