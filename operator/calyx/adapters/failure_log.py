"""One log line per state change for failing loops (docs/operations.md, "Outages").

During an API-server outage every sweep, watch and pass fails the same way, every second; a
traceback each time buried the one line an SRE needs (25,269 lines in an 85 s outage). A
:class:`FailureLog` logs the first failure of a key, stays quiet while the failure reads the same,
logs again when it changes, and logs once when the key recovers. Expected faults (the API server
or a network path down, 5xx, 429, timeouts) get one line without a traceback; anything else is a
bug and keeps its traceback — once per distinct message.
"""

from __future__ import annotations

import logging
import threading

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from calyx.adapters.kube import FencedError, error_message


def is_transient(exc: BaseException) -> bool:
    """A fault of the environment, not of Calyx: worth one line, not a traceback."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 408, 429) or exc.status >= 500
    return isinstance(exc, (Urllib3Error, ConnectionError, TimeoutError, FencedError))


def summary(exc: BaseException) -> str:
    """A stable one-line description: no ports, addresses of objects or retry counters."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status}: {error_message(exc)}"[:300]
    if isinstance(exc, Urllib3Error):
        reason = getattr(exc, "reason", None)
        return f"API server unreachable ({type(reason or exc).__name__})"
    return f"{type(exc).__name__}: {exc}"[:300]


class FailureLog:
    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}

    def failed(self, key: str, what: str, exc: BaseException) -> None:
        text = summary(exc)
        with self._lock:
            if self._state.get(key) == text:
                return
            self._state[key] = text
        if is_transient(exc):
            self.log.warning("%s failed: %s (repeats are not logged until it changes)", what, text)
        else:
            self.log.error("%s failed: %s", what, text, exc_info=exc)

    def ok(self, key: str, what: str) -> None:
        with self._lock:
            was = self._state.pop(key, None)
        if was is not None:
            self.log.warning("%s recovered (was: %s)", what, was)
