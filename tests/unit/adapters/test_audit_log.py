"""Audit records on stdout are whole lines even when threads announce at once
(adapters/audit_log.py). With ``print`` (text, then newline: two writes) this probe merged 34
of 40,000 lines into lines holding two records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[3] / "operator"
PROBE = f"""
import sys, threading
sys.path.insert(0, {str(OPERATOR)!r})
from calyx.adapters.audit_log import write_record

def announce(tag):
    for i in range(20000):
        write_record({{"object": tag, "seq": i, "message": "x" * 200}})

threads = [threading.Thread(target=announce, args=(t,)) for t in "ab"]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_concurrent_records_stay_one_per_line() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    lines = out.splitlines()
    assert len(lines) == 40000
    assert all(json.loads(line)["message"] == "x" * 200 for line in lines)
