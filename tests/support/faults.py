"""Fault points for the end-to-end crash tests: the operator process dies at an exact step.

Loaded by the test harness next to the operator (``kopf run -m calyx.handlers.operator -m
tests.support.faults``; ``OperatorProcess`` adds it when ``CALYX_FAULT_EXIT_AFTER`` is in its
environment), never by the product. On import it installs :func:`exit_after` as the operator's
``RolloutDeps.faults`` (``calyx.handlers.operator.FAULTS``, read at startup).

``CALYX_FAULT_EXIT_AFTER=<point>`` names the point: an action kind (``CreateCanary``,
``PatchStableImages``, ``DeleteCanary``, ...) fires right after that action succeeded;
``Announce:<reason>`` fires after the decision carrying that announcement was stored and before
it is posted. The process then exits with 137 (as if SIGKILLed: no cleanup, no Lease release).
``CALYX_FAULT_MARKER=<file>`` is written first, so the fault fires once per test even though
the operator is restarted with the same environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger("calyx.faults")

POINT_ENV = "CALYX_FAULT_EXIT_AFTER"
MARKER_ENV = "CALYX_FAULT_MARKER"


def exit_after(point: str, marker: str) -> Callable[[str], None]:
    """A ``RolloutDeps.faults`` hook that kills the process at ``point``, once per marker."""

    def hook(at: str) -> None:
        if at != point or os.path.exists(marker):
            return
        with open(marker, "w") as fh:
            fh.write(at)
        log.warning("fault injection: exiting after %s", at)
        os._exit(137)

    return hook


def install(env: dict[str, str] | None = None) -> Callable[[str], None] | None:
    """Set the operator's fault hook from the environment (nothing when the point is unset)."""
    from calyx.handlers import operator

    e = dict(os.environ) if env is None else env
    point, marker = e.get(POINT_ENV), e.get(MARKER_ENV)
    if not point or not marker:
        return None
    operator.FAULTS = exit_after(point, marker)
    log.warning("fault injection armed: the operator exits after %s", point)
    return operator.FAULTS


install()
