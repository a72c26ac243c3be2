"""Hang → revert with a hung Prometheus (GitHub issue 12; docs/analysis.md, "A hung Prometheus").

Real control plane (kwok pods), real Prometheus scraping the traffic simulator every 1 s, the
operator as a process (rollout tick 0.5 s). Each trial, in its own namespace:

1. a stable Deployment of 6 replicas, a Lease, and a Rollout with tiers
   ``[{weight: 25, soakSeconds: 600}, {weight: 100}]``, analysis over the four built-in metrics
   with ``intervalSeconds`` and ``noData.rollbackAfterSeconds`` from the command line;
2. once an analysis passed, a random wait in ``[0, interval)``, then at **T0** the Prometheus
   process is stopped with SIGSTOP (it keeps its socket: connections are accepted and never
   answered, the worst case for a client);
3. wait for ``RolledBack``, SIGCONT Prometheus, and collect ``hang → detectedAt`` and
   ``hang → revertedAt`` (the revert issued), against the goal ``rollbackAfterSeconds + interval``.

The issue's probe (before the fix): a 10 s ``rollbackAfterSeconds`` became 20.8 s from hang to
revert, and ``revertSeconds`` was 5.1 s because the revert waited for the deciding pass's queries.

Run: ``.venv/bin/python bench/hung_prometheus.py [--n 10] [--interval 2] [--after 10]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e.harness
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))  # calyx
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common

from common import Env, analysis_spec, fmt, machine_load, parse_time, summary, table
from tests.e2e.harness import deployment_body, lease_body, rollout_body

TARGET = "checkout"
TIERS = [{"weight": 25, "soakSeconds": 600}, {"weight": 100}]


def trial(env: Env, args: argparse.Namespace, run_id: str, idx: int) -> dict[str, Any]:
    assert env.sim is not None and env.prom is not None
    ns = f"hung-{run_id}-{idx:02d}"
    stable, canary = f"reg.example/checkout:1.0.0-{ns}", f"reg.example/checkout:1.1.0-{ns}"
    healthy = {"tes": 100.0, "error_ratio": 0.001, "cpu_cores": 0.05}
    env.sim.set_profile(stable, **healthy)
    env.sim.set_profile(canary, **healthy)
    env.create_namespace(ns)
    env.create(deployment_body(ns, TARGET, 6, stable))
    env.wait("stable ready", lambda: env.ready_replicas(ns, TARGET) == 6, 90)
    env.create(lease_body(ns, "l1", TARGET, {"app": canary}, constraints={"maxInitialWeight": 25}))
    spec = analysis_spec(
        env.prom.url, args.interval, 10, 1, noData={"rollbackAfterSeconds": args.after}
    )
    env.create(rollout_body(ns, "r1", "l1", tiers=TIERS, analysis=spec))

    def passed_after(since: float) -> bool:
        la = (env.rollout(ns).get("status") or {}).get("lastAnalysis") or {}
        when = parse_time(la.get("time"))
        return la.get("verdict") == "Pass" and when is not None and when > since

    ready = time.time()
    env.wait("an analysis Pass", lambda: passed_after(ready), 90, 0.1)
    time.sleep(random.uniform(0, args.interval))
    pid = env.prom._proc.pid
    t0 = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:

        def rolled_back() -> dict[str, Any] | None:
            st = env.rollout(ns).get("status") or {}
            reverted = (st.get("rollback") or {}).get("revertedAt")
            return st if st.get("phase") in ("RollingBack", "RolledBack") and reverted else None

        st = env.wait("rollback", rolled_back, args.after + 60, 0.1)
    finally:
        os.kill(pid, signal.SIGCONT)
    rb = st.get("rollback") or {}
    detected, reverted = parse_time(rb.get("detectedAt")), parse_time(rb.get("revertedAt"))
    with contextlib.suppress(Exception):
        env.core.delete_namespace(ns)
    return {
        "ns": ns,
        "detect": (detected - t0) if detected else None,
        "revert": (reverted - t0) if reverted else None,
        # decided → issued; status.rollback.revertSeconds is written only once the revert is
        # verified, later than this trial looks
        "revertSeconds": round(reverted - detected, 3) if reverted and detected else None,
        "trigger": rb.get("trigger"),
        "reason": str(rb.get("reason", ""))[:70],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--interval", type=int, default=2)
    p.add_argument("--after", type=int, default=10, help="noData.rollbackAfterSeconds")
    args = p.parse_args(argv)
    print(f"hung_prometheus: {args.n} trials, interval {args.interval}s, "
          f"rollbackAfterSeconds {args.after}s; {machine_load()}")  # fmt: skip
    run_id = uuid.uuid4().hex[:6]
    rows: list[dict[str, Any]] = []
    with Env() as env:
        for i in range(args.n):
            r = trial(env, args, run_id, i)
            rows.append(r)
            print(
                f"  #{i:02d} hang→detected {fmt(r['detect'] or float('nan'))} s, "
                f"hang→revert {fmt(r['revert'] or float('nan'))} s, "
                f"revertSeconds {r['revertSeconds']} ({r['trigger']}: {r['reason']})",
                flush=True,
            )
    goal = args.after + args.interval
    out = []
    for key in ("detect", "revert", "revertSeconds"):
        s = summary(r[key] for r in rows)
        out.append([key, fmt(s["p50"]), fmt(s["p95"]), fmt(s["max"])])
    print(table(out, ["hang → …", "p50 s", "p95 s", "max s"]))
    p95 = summary(r["revert"] for r in rows)["p95"]
    verdict = "met" if p95 <= goal else "MISSED"
    print(f"goal: hang → revert p95 ≤ rollbackAfterSeconds + interval = {goal} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
