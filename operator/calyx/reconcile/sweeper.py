"""A periodic sweep that re-runs a reconcile function over every object of a kind.

Watch events say *something changed*; they never fire when only the clock moved. Expiry and
signature age are clock facts, so a sweep bounds how stale any status can be. It runs in its
own thread (not a Kopf timer) because Kopf timers put a finalizer on every object, and a Lease
should carry nothing its signers did not write beyond status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from calyx.adapters.failure_log import FailureLog

log = logging.getLogger("calyx.sweeper")


class Sweeper:
    def __init__(
        self, name: str, interval: float | Callable[[], float], tick: Callable[[], None]
    ) -> None:
        """``interval`` may be a function, read before each wait: the rollout sweep ticks
        faster while a Rollout analyses at a short interval (docs/architecture.md)."""
        self.name = name
        self._interval = interval
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sweep-{name}", daemon=True)
        self.failures = FailureLog(log)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def interval(self) -> float:
        if callable(self._interval):
            return float(self._interval())
        return float(self._interval)

    def join(self, timeout: float) -> bool:
        """Wait for a sweep in progress to finish (a graceful stop must not release leadership
        under a pass that is still writing); False if it did not within ``timeout``."""
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        """Ticks on a fixed cadence (start + k·interval), not "interval after the last sweep
        ended": otherwise every analysis interval would stretch by the sweep's own duration."""
        next_at = time.monotonic()
        while True:
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # a sweep overran: skip the missed ticks, do not pile them up
                next_at = now
            if self._stop.wait(max(0.0, next_at - now)):
                return
            try:
                self.tick()
            except Exception as exc:
                self.failures.failed(self.name, f"sweep {self.name}", exc)
            else:
                self.failures.ok(self.name, f"sweep {self.name}")
