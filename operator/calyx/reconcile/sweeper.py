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
        self._poke = threading.Event()  # set by stop() too, so a wait ends at once
        self._thread = threading.Thread(target=self._run, name=f"sweep-{name}", daemon=True)
        self.failures = FailureLog(log)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()

    def wake(self) -> None:
        """Run a sweep as soon as the current one (if any) ends, on top of the cadence; any
        number of wakes before it starts make one sweep. For watches whose every event would
        otherwise run a whole sweep in the watch's thread: at 1,000 Rollouts starting, each
        claim changed the ledger and each change re-checked every Lease, which left the
        ledger's watch minutes behind and busy long after (docs/performance.md, run 9)."""
        self._poke.set()

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
        ended": otherwise every analysis interval would stretch by the sweep's own duration.
        A wake runs an extra sweep and leaves the cadence as it was."""
        next_at = time.monotonic()
        while True:
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # a sweep overran: skip the missed ticks, do not pile them up
                next_at = now
            while self._poke.wait(max(0.0, next_at - time.monotonic())):
                if self._stop.is_set():
                    return
                self._poke.clear()
                self._sweep()
                if time.monotonic() >= next_at:
                    break  # that sweep was also this tick's
            else:  # the tick came without a wake
                if self._stop.is_set():
                    return
                self._sweep()

    def _sweep(self) -> None:
        try:
            self.tick()
        except Exception as exc:
            self.failures.failed(self.name, f"sweep {self.name}", exc)
        else:
            self.failures.ok(self.name, f"sweep {self.name}")
