"""The benchmark's memory census (calyx_dev/memcensus.py): written on SIGUSR2, it names the
watch-cache stores and how much they hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCRIPT = """
import os, signal, time
from calyx.adapters.cache import ObjectStore
store = ObjectStore("deployments", authoritative=True)
for i in range(200):
    store.put({"metadata": {"namespace": "ns", "name": f"d{i}", "resourceVersion": str(i + 1),
               "uid": f"u{i}"}, "spec": {"x": "y" * 1000}}, fresh=True)
import calyx_dev.memcensus
os.kill(os.getpid(), signal.SIGUSR2)
path = os.environ["CALYX_DEV_MEMCENSUS"]
for _ in range(100):
    if os.path.exists(path):
        break
    time.sleep(0.1)
"""


def test_census_names_each_store_and_its_size(tmp_path: Path) -> None:
    out = tmp_path / "census.json"
    subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'operator'}:{REPO}", "CALYX_DEV_MEMCENSUS": str(out)},
        check=True,
        timeout=60,
    )
    data = json.loads(out.read_text())
    store = data["stores"]["deployments"]
    assert store["items"] == 200
    assert 200 * 1000 < store["bytes"] < 200 * 5000, store  # the 1 kB strings, and their dicts
    assert any(t["type"] == "builtins.dict" for t in data["types"])
    pm = data["pymalloc"]
    assert pm["arenas"] >= 1 and 0 < pm["allocated_bytes"] <= pm["arenas"] * 2**20, pm
