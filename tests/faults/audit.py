"""React to a write the moment the API server records it, by tailing its audit log.

The local API server writes its audit log in blocking mode (an event is on disk before the
response is sent), so a watcher polling the file every few milliseconds can inject a fault
"right after the status write was applied": with the proxy holding server-to-client bytes back
for a moment (``FaultProxy.delay(down=...)``), a reset lands before the client reads the answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AuditEvent = dict[str, Any]


class AuditTrigger:
    """Calls ``action(event)`` for audit events matching ``predicate`` (ResponseComplete stage),
    at most ``times`` times; ``fired`` is set after the first. Only events written after
    ``start()`` are seen."""

    def __init__(
        self,
        path: str | Path,
        predicate: Callable[[AuditEvent], bool],
        action: Callable[[AuditEvent], None],
        times: int = 1,
        poll: float = 0.005,
    ) -> None:
        self.path = Path(path)
        self.predicate = predicate
        self.action = action
        self.times = times
        self.poll = poll
        self.events: list[AuditEvent] = []
        self.fired = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._offset = 0
        self._thread = threading.Thread(target=self._run, name="audit-trigger", daemon=True)

    def start(self) -> AuditTrigger:
        self._offset = self.path.stat().st_size if self.path.exists() else 0
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.error is not None:
            raise RuntimeError("audit trigger action failed") from self.error

    def __enter__(self) -> AuditTrigger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, timeout: float) -> AuditEvent:
        if not self.fired.wait(timeout):
            raise AssertionError(f"no audit event matched within {timeout}s")
        return self.events[0]

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set() and len(self.events) < self.times:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self._offset)
                    chunk = fh.read()
            except OSError:
                chunk = b""
            self._offset += len(chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("stage") != "ResponseComplete" or not self.predicate(ev):
                    continue
                self.events.append(ev)
                try:
                    self.action(ev)
                except BaseException as exc:
                    self.error = exc
                    return
                finally:
                    self.fired.set()
                if len(self.events) >= self.times:
                    return
            time.sleep(self.poll)


def operator_write(
    resource: str,
    namespace: str,
    *,
    verb: str | tuple[str, ...] = ("patch", "update"),
    subresource: str = "",
    name: str | None = None,
    body: Callable[[Any], bool] | None = None,
) -> Callable[[AuditEvent], bool]:
    """A predicate: a successful write by the operator (user agent ``calyx-operator/...``)."""
    verbs = (verb,) if isinstance(verb, str) else verb

    def match(ev: AuditEvent) -> bool:
        ref = ev.get("objectRef") or {}
        code = (ev.get("responseStatus") or {}).get("code", 0)
        return (
            str(ev.get("userAgent", "")).startswith("calyx-operator")
            and ev.get("verb") in verbs
            and ref.get("resource") == resource
            and ref.get("namespace") == namespace
            and ref.get("subresource", "") == subresource
            and (name is None or ref.get("name") == name)
            and 200 <= code < 300
            and (body is None or body(ev.get("requestObject")))
        )

    return match
