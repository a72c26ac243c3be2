"""The periodic sweep's cadence and wakes (calyx/reconcile/sweeper.py): a watch that wakes it
gets one prompt sweep however many changes it saw, and the sweep runs in the sweep's thread."""

from __future__ import annotations

import threading
import time

from calyx.reconcile.sweeper import Sweeper


def _until(cond: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_wakes_while_a_sweep_runs_make_one_more_sweep() -> None:
    """Probe (run 9, 1,000 Rollouts): each of ~1,000 ledger changes ran a whole Lease sweep in
    the ledger watch's thread, which was still catching up minutes after the ramp-up."""
    release = threading.Event()
    sweeps: list[str] = []

    def tick() -> None:
        sweeps.append(threading.current_thread().name)
        assert release.wait(5)

    sweeper = Sweeper("leases", 60.0, tick)  # the cadence alone would not sweep in this test
    sweeper.start()
    try:
        sweeper.wake()
        assert _until(lambda: len(sweeps) == 1), "a wake, long before the first tick"
        for _ in range(50):
            sweeper.wake()  # fifty ledger changes during that sweep
        release.set()
        assert _until(lambda: len(sweeps) == 2)
        time.sleep(0.3)
        assert len(sweeps) == 2, "fifty wakes: one sweep"
        assert sweeps == ["sweep-leases"] * 2
        sweeper.wake()
        assert _until(lambda: len(sweeps) == 3), "an idle sweeper wakes at once"
    finally:
        release.set()
        sweeper.stop()
        assert sweeper.join(2)


def test_the_cadence_keeps_its_ticks_with_wakes_in_between() -> None:
    ticks: list[float] = []
    sweeper = Sweeper("rollouts", 0.2, lambda: ticks.append(time.monotonic()))
    sweeper.start()
    try:
        assert _until(lambda: len(ticks) >= 1)
        time.sleep(0.05)
        sweeper.wake()
        assert _until(lambda: len(ticks) >= 6, timeout=3)
    finally:
        sweeper.stop()
        assert sweeper.join(2)
    span = ticks[5] - ticks[0]
    assert 0.7 <= span <= 2.0, f"5 more ticks (one a wake) in {span:.2f} s on a 0.2 s cadence"


def test_stop_ends_the_wait_at_once() -> None:
    sweeper = Sweeper("leases", 60.0, lambda: None)
    sweeper.start()
    time.sleep(0.1)
    started = time.monotonic()
    sweeper.stop()
    assert sweeper.join(2)
    assert time.monotonic() - started < 1
