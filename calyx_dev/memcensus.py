"""Where the operator's memory goes: a census written on SIGUSR2 (development only).

Loaded into a benchmark's operator as an extra Kopf module (``OperatorProcess`` with
``CALYX_DEV_MEMCENSUS=<file>``), so the product carries no hook. ``tracemalloc`` would name
allocation sites but slows a saturated 1,000-Rollout operator several times; this census costs
nothing until asked and answers the question the RSS goal needs (docs/performance.md): how much
of the heap each holder keeps alive.

The census (JSON) has the live objects per type (count, shallow bytes), the deep size of every
watch-cache store, and pymalloc's arenas against its live blocks. It is taken in a forked
child, so asking for it does not change the operator's memory.
"""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

ENV = "CALYX_DEV_MEMCENSUS"


def _ours(obj: Any) -> bool:
    """An instance of a Calyx or Kopf class: its attributes are what it holds."""
    return str(type(obj).__module__).startswith(("calyx.", "kopf."))


def deep_size(root: Any) -> int:
    """Bytes of ``root`` and of every dict, list, tuple, set, string and Calyx or Kopf object
    it reaches."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif _ours(obj) and hasattr(obj, "__dict__"):
            stack.append(vars(obj))  # not modules, functions or classes: their whole world
    return total


def _pymalloc_stats() -> dict[str, int]:
    """pymalloc's own totals (``sys._debugmallocstats``, which prints to fd 2: read back
    through a temporary file). Arenas allocated versus bytes in used blocks is the
    fragmentation: memory Python holds for objects that are gone."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out = {}
    for label, key in (
        ("arenas allocated current", "arenas"),
        ("bytes in allocated blocks", "allocated_bytes"),
        ("bytes in available blocks", "available_bytes"),
    ):
        m = re.search(rf"# {re.escape(label)}\s*=\s*([\d,]+)", text)
        if m:
            out[key] = int(m.group(1).replace(",", ""))
    return out


def census() -> dict[str, Any]:
    gc.collect()
    objects = gc.get_objects()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in objects:
        t = type(obj)
        name = f"{t.__module__}.{t.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    stores = {}
    for obj in objects:
        if type(obj).__name__ == "ObjectStore":
            stores[obj.kind] = {"items": len(obj._items), "bytes": deep_size(obj._items)}
    return {
        "time": time.time(),
        "gc_objects": len(objects),
        "allocated_blocks": sys.getallocatedblocks(),
        "pymalloc": _pymalloc_stats(),
        "types": [
            {"type": n, "count": counts[n], "shallow_bytes": sizes[n]}
            for n, _ in sizes.most_common(25)
        ],
        "stores": stores,
    }


def _write(path: str) -> None:
    """Count in a forked child: the walk's own allocations (sets of ids, millions of entries
    at 1,000 Rollouts) would otherwise stay in the operator's arenas and inflate the very RSS
    being explained. The child sees the heap as it was at the fork, copy-on-write."""
    pid = os.fork()
    if pid == 0:
        try:
            data = census()
            tmp = f"{path}.tmp"
            with open(tmp, "w") as fh:
                json.dump(data, fh, indent=1)
            os.replace(tmp, path)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def install() -> None:
    path = os.environ.get(ENV)
    if not path:
        return

    def on_signal(_signum: int, _frame: Any) -> None:
        # Off the event loop's thread: a census of 1,000 Rollouts takes seconds.
        threading.Thread(target=_write, args=(path,), daemon=True).start()

    signal.signal(signal.SIGUSR2, on_signal)


install()
