"""Audit records on the operator's stdout, one whole line each (docs/audit.md).

The log is the chain's independent copy, read back line by line. ``print`` writes the text and
the newline separately, so two threads announcing at once (the Lease sweep's pool, Kopf's
handlers) could interleave them into one line holding two records, which no reader can parse:
a record lost from the witness. Each record is written here in one call, under a lock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

from calyx.domain import audit

_LOCK = threading.Lock()


def write_record(record: Mapping[str, Any], stream: TextIO | None = None) -> None:
    line = audit.log_line(record) + "\n"
    out = stream if stream is not None else sys.stdout
    with _LOCK:
        out.write(line)
        out.flush()
