"""Which Rollouts a pass can skip: those whose last pass had nothing to do, whose inputs have
not changed since, and whose next clock-driven decision is not due yet (docs/architecture.md,
"Passes skipped when nothing is due").

With watch-fed reads a pass costs no request, but it still costs CPU (spec parsing, signature
checks, hashing templates): a 0.5 s sweep over 1,000 Rollouts would keep a core busy doing
nothing. A pass is skipped only when *both* hold:

* the change token of the Rollout's inputs (``RolloutDeps.changes``: the watch caches of its
  namespace, the trust store) is the one taken just before that quiet pass read anything
  — so any event since, even one that changes nothing the planner looks at, runs a pass;
* the clock is before :func:`calyx.domain.wake.next_due` of what that pass observed.

Without a change token (the plain ``Kube``: reads are GETs, there is nothing to compare) no
pass is ever skipped.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Hashable


class QuietBook:
    """Per Rollout: the change token and due time of its last pass that planned nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quiet: dict[str, tuple[Hashable, dt.datetime]] = {}
        self._running: set[str] = set()  # a pass queued or running
        self._started: set[str] = set()  # ... of which running: it may have read already
        self._again: set[str] = set()  # ... and a change came in after it started

    def begin(self, key: str) -> bool:
        """Claim ``key`` for a sweep's pass; False while its previous pass is still queued or
        running (the sweep does not wait for it, nor queue a second one)."""
        with self._lock:
            if key in self._running:
                return False
            self._running.add(key)
            return True

    def request(self, key: str) -> bool:
        """Claim ``key`` for a watch event's pass. True: queue one. False: a queued pass will
        read the change anyway, or a running one may have read before it, in which case
        :meth:`end` asks for one more (client-go's workqueue: one pass per key at a time,
        never a change left unread)."""
        with self._lock:
            if key not in self._running:
                self._running.add(key)
                return True
            if key in self._started:
                self._again.add(key)
            return False

    def start(self, key: str) -> None:
        """The queued pass of ``key`` begins (before it reads anything)."""
        with self._lock:
            self._started.add(key)

    def end(self, key: str) -> bool:
        """The pass of ``key`` is over; True when a change came in while it ran: the caller
        queues one more (``key`` stays claimed for it)."""
        with self._lock:
            self._started.discard(key)
            if key in self._again:
                self._again.discard(key)
                return True
            self._running.discard(key)
            return False

    def drop(self, key: str) -> None:
        """Forget any pass of ``key`` (its pool refused it: the operator stops)."""
        with self._lock:
            self._running.discard(key)
            self._started.discard(key)
            self._again.discard(key)

    def is_running(self, key: str) -> bool:
        with self._lock:
            return key in self._running

    def running(self) -> int:
        """How many passes are queued or running (a graceful stop waits for them)."""
        with self._lock:
            return len(self._running)

    def record(self, key: str, token: Hashable | None, due: dt.datetime | None) -> None:
        """After a pass that planned nothing: quiet until ``due`` unless the token moves."""
        with self._lock:
            if token is None or due is None:
                self._quiet.pop(key, None)
            else:
                self._quiet[key] = (token, due)

    def forget(self, key: str) -> None:
        with self._lock:
            self._quiet.pop(key, None)

    def retain(self, keys: set[str]) -> None:
        """Forget Rollouts that no longer exist."""
        with self._lock:
            for key in [k for k in self._quiet if k not in keys]:
                del self._quiet[key]

    def is_quiet(self, key: str, token: Hashable | None, now: dt.datetime) -> bool:
        """True when a pass now would see the same inputs as the last quiet one, before its
        next due time: nothing for it to decide."""
        if token is None:
            return False
        with self._lock:
            held = self._quiet.get(key)
        return held is not None and held[0] == token and now < held[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._quiet)


__all__ = ["QuietBook"]
