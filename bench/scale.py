"""Many concurrent Rollouts on one operator process (GitHub issues 5 and 13: "analysis at scale").

Real control plane (kwok pods), real Prometheus scraping the traffic simulator every 1 s, one
operator process (rollout tick 0.5 s). Rollouts are added in steps (default 100 → 250 → 1,000),
each in its own namespace with its own stable Deployment (``--replicas``, default 2) and a
canary held at 25 % by a long soak, analysis on all four built-in metrics against the real
Prometheus. The cluster gets one kwok node (1,000 pods) per 900 pods the last step needs. At
each step, once every Rollout is Progressing with a canary and an analysis verdict, the script
measures for ``--measure`` seconds:

* **operator RSS** (VmRSS from /proc/<pid>/status, sampled every 0.5 s) and **CPU** (utime +
  stime from /proc/<pid>/stat over the window, in cores);
* **PromQL load**: the operator's ``calyx_promql_query_duration_seconds_count`` (its /metrics)
  and Prometheus' own ``prometheus_http_requests_total{handler=~"/api/v1/query.*"}`` and
  ``prometheus_engine_query_duration_seconds_sum`` (engine seconds spent per second), plus the
  Prometheus process's CPU;
* **API server GETs per second** (``apiserver_request_total{verb="GET"}``; the controllers and
  this script use list/watch, so GETs are essentially the operator's per-pass reads), in all
  and for the kinds the operator caches (Rollouts, Leases, Deployments, ConfigMaps): with its
  watch caches the latter must not grow with the number of Rollouts;
* **effective analysis interval**: the spacing of successive ``status.lastAnalysis.time`` per
  Rollout, from a watch — if the operator cannot keep up, this stretches past
  ``intervalSeconds`` and detection (promise 3) slows down with it;
* **reconcile latency**: ``spec.paused: true`` → ``status.phase == Paused`` and back
  (``paused: false`` → ``Progressing``) for a few Rollouts, timed from the patch's return to the
  watch event carrying the new phase. Pause is a watch-event-driven pass, so this is what a user
  waits for under load.

``--py-spy SECONDS`` records a profile of the operator during the last step (py-spy from PyPI);
``--mem-census`` asks the operator for a memory census at the end (calyx_dev/memcensus.py: live
objects per type, the deep size of each watch-cache store); ``--no-watch-cache`` runs the
operator with ``CALYX_WATCH_CACHE=false`` (GET per read, no skipped passes) for comparison.

Run: ``.venv/bin/python bench/scale.py [--rollouts 1000] [--steps 100,250] [--interval 10]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e.harness
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))  # calyx
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common

from calyx.adapters.metrics import BATCH_MISS_REASONS
from calyx.domain.tiers import canary_replicas
from calyx_dev.operator_process import MEMCENSUS_ENV
from common import (
    Env,
    ProcSampler,
    RawWatch,
    analysis_spec,
    cpu_by_process,
    cpu_seconds,
    fmt,
    machine_cpu_seconds,
    machine_load,
    metric_sum,
    parse_time,
    rss_bytes,
    summary,
    table,
    versions,
)
from tests.e2e.harness import deployment_body, lease_body, rollout_body

#: How many of the busiest processes a step reports (``cores_by_process``).
PROCESSES_SHOWN = 8

TARGET = "checkout"
TIERS = [{"weight": 25, "soakSeconds": 36000}, {"weight": 100}]
# GETs of what the operator caches (apiserver_request_total's labels are sorted: group, ...,
# resource, ..., verb); the leader election's coordination.k8s.io Lease is not one of them.
CACHED_GETS = (
    r'group="(calyx\.io|apps|)",resource="(rollouts|leases|deployments|configmaps)".*verb="GET"'
)
PODS_PER_NODE = 900  # of the 1,000 a kwok node holds: headroom for the scheduler's spread


class RolloutWatch:
    """Phase and lastAnalysis.time of every Rollout, with arrival times, from one watch."""

    def __init__(self, api_client: Any) -> None:
        self._lock = threading.Lock()
        self.phase: dict[str, str] = {}
        self.verdict: dict[str, str] = {}
        self.canary: dict[str, int] = {}
        self.analysis_times: dict[str, list[float]] = {}
        self.phase_log: dict[str, list[tuple[float, str]]] = {}
        self.changed = threading.Condition(self._lock)
        self.watch = RawWatch(
            api_client, "/apis/calyx.io/v1alpha1/rollouts", self._on_event, name="rollouts"
        )

    def _on_event(self, kind: str, obj: dict[str, Any], received: float) -> None:
        ns = obj["metadata"]["namespace"]
        st = obj.get("status") or {}
        la = st.get("lastAnalysis") or {}
        with self._lock:
            phase = str(st.get("phase") or "")
            if self.phase.get(ns) != phase:
                self.phase_log.setdefault(ns, []).append((received, phase))
            self.phase[ns] = phase
            self.verdict[ns] = str(la.get("verdict") or "")
            if la.get("verdict") == "NoData":
                self.no_data_reason = str(la.get("reason") or "")
            self.canary[ns] = int(st.get("canaryReplicas") or 0)
            when = parse_time(la.get("time"))
            times = self.analysis_times.setdefault(ns, [])
            if when is not None and (not times or when > times[-1]):
                times.append(when)
            self.changed.notify_all()

    def ready(self, namespaces: Iterable[str]) -> int:
        """Rollouts soaking with a canary and a verdict, or ended (a rollback at scale is a
        result to report, not a reason to wait forever)."""
        with self._lock:
            return sum(
                1
                for ns in namespaces
                if (
                    self.phase.get(ns) == "Progressing"
                    and self.canary.get(ns, 0) > 0
                    and self.verdict.get(ns)
                )
                or self.phase.get(ns) in ("RolledBack", "Failed", "Completed")
            )

    def phases(self, namespaces: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for ns in namespaces:
                p = self.phase.get(ns, "")
                out[p] = out.get(p, 0) + 1
        return out

    def wait_phase(self, ns: str, phase: str, after: float, timeout: float) -> float | None:
        """Arrival time of the first event at/after ``after`` showing ``phase``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for t, p in self.phase_log.get(ns, []):
                    if t >= after and p == phase:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)

    def intervals(self, namespaces: Iterable[str], t0: float, t1: float) -> list[float]:
        out: list[float] = []
        with self._lock:
            for ns in namespaces:
                ts = [t for t in self.analysis_times.get(ns, []) if t0 <= t <= t1]
                out += [b - a for a, b in itertools.pairwise(ts)]
        return out

    no_data_reason = ""

    def verdicts(self, namespaces: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for ns in namespaces:
                v = self.verdict.get(ns, "")
                out[v] = out.get(v, 0) + 1
        return out


class Scale:
    def __init__(self, env: Env, args: argparse.Namespace) -> None:
        self.env = env
        self.args = args
        self.run_id = uuid.uuid4().hex[:5]
        self.namespaces: list[str] = []
        self.rw = RolloutWatch(env.api)
        self.rw.watch.start()
        self.rw.watch.synced.wait(30)
        pid = env.operator_pid()
        assert pid is not None
        self.pid = pid
        self.rss = ProcSampler(lambda: self.pid, 0.5).start()

    def add_rollout(self, i: int) -> str:
        env, a = self.env, self.args
        assert env.sim is not None
        ns = f"sc-{self.run_id}-{i:03d}"
        stable = f"reg.example/checkout:1.0.0-{ns}"
        canary = f"reg.example/checkout:1.1.0-{ns}"
        healthy = {"tes": 100.0, "error_ratio": 0.001, "cpu_cores": 0.05}
        env.sim.set_profile(stable, **healthy)
        env.sim.set_profile(canary, **healthy)
        env.create_namespace(ns)
        env.create(deployment_body(ns, TARGET, a.replicas, stable))
        env.create(
            lease_body(ns, "l1", TARGET, {"app": canary}, constraints={"maxInitialWeight": 25})
        )
        spec = analysis_spec(env.prom.url, a.interval, a.window, 1)
        env.create(rollout_body(ns, "r1", "l1", tiers=TIERS, analysis=spec))
        return ns

    def grow(self, count: int) -> float:
        start = time.time()
        first = len(self.namespaces)
        with ThreadPoolExecutor(max_workers=8) as pool:
            self.namespaces += list(pool.map(self.add_rollout, range(first, count)))
        self.env.wait(
            f"{count} rollouts progressing with an analysis verdict",
            lambda: self.rw.ready(self.namespaces) == count,
            timeout=1800,
            interval=1,
        )
        return time.time() - start

    def counters(self) -> dict[str, float]:
        env = self.env
        op = env.operator_metrics()
        prom = env.prom.api_raw_metrics() if hasattr(env.prom, "api_raw_metrics") else None
        if prom is None:
            import urllib.request

            with urllib.request.urlopen(f"{env.prom.url}/metrics", timeout=10) as resp:
                prom = resp.read().decode()
        apiserver = env.cluster.kubectl("get", "--raw", "/metrics").stdout
        busy, total = machine_cpu_seconds()
        return {
            "t": time.time(),
            "op_cpu": cpu_seconds(self.pid),
            "prom_cpu": cpu_seconds(env.prom._proc.pid),
            "op_queries": metric_sum(op, "calyx_promql_query_duration_seconds_count"),
            "op_query_errors": metric_sum(op, "calyx_promql_query_errors_total"),
            "prom_http_queries": metric_sum(
                prom, "prometheus_http_requests_total", r'handler="/api/v1/query(_range)?"'
            ),
            "prom_engine_s": metric_sum(
                prom, "prometheus_engine_query_duration_seconds_sum", r'slice="inner_eval"'
            ),
            "api_get": metric_sum(apiserver, "apiserver_request_total", r'verb="GET"'),
            "api_get_cached": metric_sum(apiserver, "apiserver_request_total", CACHED_GETS),
            "api_all": metric_sum(apiserver, "apiserver_request_total"),
            "m_busy": busy,
            "m_total": total,
            **{
                f"miss_{reason}": metric_sum(
                    op, "calyx_analysis_batch_misses_total", f'reason="{reason}"'
                )
                for reason in BATCH_MISS_REASONS
            },
        }

    def pause_probe(self, samples: int) -> tuple[list[float], list[float]]:
        """Latency of spec.paused true → Paused and false → Progressing, a few Rollouts."""
        step = max(1, len(self.namespaces) // samples)
        pause, resume = [], []
        for ns in self.namespaces[::step][:samples]:
            for want_paused, phase, out in (
                (True, "Paused", pause),
                (False, "Progressing", resume),
            ):
                self.env.custom.patch_namespaced_custom_object(
                    "calyx.io", "v1alpha1", ns, "rollouts", "r1", {"spec": {"paused": want_paused}}
                )
                t = time.time()
                seen = self.rw.wait_phase(ns, phase, t - 0.001, timeout=60)
                out.append(seen - t if seen is not None else math.nan)
        return pause, resume

    def measure(self, count: int, setup_s: float) -> dict[str, Any]:
        a = self.args
        print(f"[{count}] measuring {a.measure} s ({machine_load()})", flush=True)
        c0 = self.counters()
        procs0 = cpu_by_process()
        half = a.measure / 2
        time.sleep(half)
        pause, resume = self.pause_probe(a.probes)
        time.sleep(max(0.0, a.measure - (time.time() - c0["t"])))
        c1 = self.counters()
        procs1 = cpu_by_process()
        dt_ = c1["t"] - c0["t"]
        by_process = {
            name: round((procs1[name] - procs0.get(name, 0.0)) / dt_, 2) for name in procs1
        }
        rate = {k: (c1[k] - c0[k]) / dt_ for k in c0 if k != "t"}
        rss = self.rss.between(c0["t"], c1["t"])
        intervals = self.rw.intervals(self.namespaces, c0["t"], c1["t"])
        iv = summary(intervals)
        res = {
            "rollouts": count,
            "pods": len(self.env.pods or []),
            "setup_s": round(setup_s, 1),
            "window_s": round(dt_, 1),
            "rss_mb_max": max(rss) / 2**20 if rss else math.nan,
            "rss_mb_mean": sum(rss) / len(rss) / 2**20 if rss else math.nan,
            "op_cpu_cores": rate["op_cpu"],
            "prom_cpu_cores": rate["prom_cpu"],
            "machine_busy_cores": rate["m_busy"],
            "op_queries_per_s": rate["op_queries"],
            "op_query_errors_per_s": rate["op_query_errors"],
            "prom_http_queries_per_s": rate["prom_http_queries"],
            "prom_engine_s_per_s": rate["prom_engine_s"],
            "api_get_per_s": rate["api_get"],
            "api_get_cached_per_s": rate["api_get_cached"],
            "queries_per_interval": rate["prom_http_queries"] * a.interval,
            "api_all_per_s": rate["api_all"],
            "expected_queries_per_s": count * 8 / a.interval,
            "analysis_interval": iv,
            "pause": summary(pause),
            "resume": summary(resume),
            "verdicts": self.rw.verdicts(self.namespaces),
            "phases": self.rw.phases(self.namespaces),
            "load": machine_load(),
            "batch_misses_per_interval": {
                r: round(rate[f"miss_{r}"] * a.interval, 1) for r in BATCH_MISS_REASONS
            },
            "cores_by_process": dict(
                sorted(by_process.items(), key=lambda kv: -kv[1])[:PROCESSES_SHOWN]
            ),
        }
        print(
            f"[{count}] rss max {fmt(res['rss_mb_max'], 0)} MB, op cpu "
            f"{fmt(res['op_cpu_cores'], 2)} cores, GET/s {fmt(res['api_get_per_s'], 1)} "
            f"(cached kinds {fmt(res['api_get_cached_per_s'], 2)}), "
            f"op q/s {fmt(res['op_queries_per_s'], 1)} "
            f"(expected {fmt(res['expected_queries_per_s'], 1)}), analysis interval p50/p95 "
            f"{fmt(iv['p50'], 2)}/{fmt(iv['p95'], 2)} s, pause p50 "
            f"{fmt(res['pause']['p50'], 2)} s, verdicts {res['verdicts']}, phases {res['phases']}, "
            f"batch misses per interval {res['batch_misses_per_interval']}, "
            f"cores by process {res['cores_by_process']}"
            + (
                f" (a NoData reason: {self.rw.no_data_reason[:300]})"
                if res["verdicts"].get("NoData")
                else ""
            ),
            flush=True,
        )
        return res

    def close(self) -> None:
        self.rss.stop()
        self.rw.watch.stop()


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> tuple[str, list[str]]:
    rows = []
    for r in results:
        iv, pz, rs = r["analysis_interval"], r["pause"], r["resume"]
        rows.append(
            [
                r["rollouts"],
                r["pods"],
                fmt(r["rss_mb_max"], 0),
                fmt(r["op_cpu_cores"], 2),
                fmt(r["prom_cpu_cores"], 2),
                fmt(r["machine_busy_cores"], 2),
                f"{fmt(r['op_queries_per_s'], 1)} / {fmt(r['expected_queries_per_s'], 1)}",
                fmt(r["prom_http_queries_per_s"], 1),
                fmt(r["prom_engine_s_per_s"], 3),
                f"{fmt(r['api_get_per_s'], 1)} / {fmt(r['api_get_cached_per_s'], 2)}",
                fmt(r["queries_per_interval"], 1),
                f"{fmt(iv['p50'], 2)} / {fmt(iv['p95'], 2)} / {fmt(iv['max'], 2)}",
                f"{fmt(pz['p50'], 2)} / {fmt(pz['max'], 2)}",
                f"{fmt(rs['p50'], 2)} / {fmt(rs['max'], 2)}",
            ]
        )
    header = [
        "rollouts",
        "pods",
        "op RSS max MB",
        "op CPU cores",
        "prom CPU cores",
        "machine busy cores",
        "op PromQL q/s (got / 8xN/interval)",
        "prom /query q/s",
        "prom engine s/s",
        "apiserver GET/s all / cached kinds",
        "PromQL queries per interval",
        f"analysis interval p50/p95/max s (spec {args.interval})",
        "pause→Paused p50/max s",
        "resume→Progressing p50/max s",
    ]
    text = table(rows, header)
    verdicts = []
    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        growth_q = hi["prom_http_queries_per_s"] / max(lo["prom_http_queries_per_s"], 1e-9)
        growth_n = hi["rollouts"] / lo["rollouts"]
        verdicts.append(
            f"Prometheus queries grow x{growth_q:.1f} for x{growth_n:.0f} Rollouts "
            f"(goal: with the number of signals, i.e. x1): "
            f"{'PASS' if growth_q < 2 else 'FAIL — per-Rollout queries'}"
        )
        gets = hi["api_get_cached_per_s"] - lo["api_get_cached_per_s"]
        verdicts.append(
            f"GETs/s of the cached kinds: {fmt(lo['api_get_cached_per_s'], 2)} at "
            f"{lo['rollouts']} → {fmt(hi['api_get_cached_per_s'], 2)} at {hi['rollouts']} "
            f"Rollouts (goal: independent of the number of Rollouts): "
            f"{'PASS' if gets < 1 else 'FAIL'}"
        )
        qpi = [r["queries_per_interval"] for r in results]
        verdicts.append(
            f"PromQL queries per interval: {', '.join(fmt(q, 1) for q in qpi)} for "
            f"{', '.join(str(r['rollouts']) for r in results)} Rollouts (goal: independent of "
            f"the number of Rollouts): {'PASS' if qpi[-1] <= 2 * max(qpi[0], 1) else 'FAIL'}"
        )
    top = max((r["rss_mb_max"] for r in results), default=math.nan)
    verdicts.append(
        f"operator RSS max {fmt(top, 0)} MB < 400 MB: {'PASS' if top < 400 else 'FAIL'}"
    )
    cores = max((r["op_cpu_cores"] for r in results), default=math.nan)
    verdicts.append(
        f"operator CPU max {fmt(cores, 2)} cores < 1: {'PASS' if cores < 1 else 'FAIL'}"
    )
    goal = 11.0 if args.interval == 10 else args.interval * 1.15
    for r in results:
        iv = r["analysis_interval"]
        verdicts.append(
            f"{r['rollouts']} rollouts: analysis interval p95 {fmt(iv['p95'], 2)} s for a spec of "
            f"{args.interval} s (goal ≤ {goal:g} s): {'PASS' if iv['p95'] <= goal else 'FAIL'}"
        )
    return text, verdicts


def profile(pid: int, seconds: float, out: Path) -> str:
    """Record ``seconds`` of py-spy samples of the operator (collapsed stacks, one per line:
    the input of a flame graph), or say why there are none."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return "no profile: py-spy not installed (pip install py-spy)"
    raw = out.with_suffix(".txt")
    # --gil: only the thread holding the GIL, i.e. where the operator's CPU goes, not its waits;
    # --nonblocking: sampling never pauses the operator.
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50"]
    cmd += ["--gil", "--nonblocking"]
    try:
        subprocess.run(
            [*cmd, "--format", "raw", "--output", str(raw)], check=True, timeout=seconds + 60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no profile: {exc}"
    return f"profile (py-spy raw, collapsed stacks): {raw}"


def take_census(pid: int, path: Path, timeout: float = 300) -> str:
    """Ask the operator for its memory census (calyx_dev/memcensus.py) and summarise it."""
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return f"no memory census in {timeout:.0f} s"
        time.sleep(1)
    data = json.loads(path.read_text())
    mb = 2**20
    lines = [f"memory census ({path}): {data['gc_objects']} objects tracked by gc"]
    pm = data.get("pymalloc") or {}
    if pm:
        lines.append(
            f"  pymalloc: {pm.get('arenas', 0)} arenas of 1 MiB, "
            f"{pm.get('allocated_bytes', 0) / mb:.1f} MB in live blocks, "
            f"{pm.get('available_bytes', 0) / mb:.1f} MB free inside arenas"
        )
    lines += [f"  store {k}: {v['items']} objects, {v['bytes'] / mb:.1f} MB"
              for k, v in data["stores"].items()]  # fmt: skip
    lines += [f"  type {t['type']}: {t['count']} objects, {t['shallow_bytes'] / mb:.1f} MB"
              for t in data["types"][:12]]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rollouts", type=int, default=1000, help="final number of Rollouts")
    p.add_argument("--steps", default="100,250", help="intermediate counts measured on the way")
    p.add_argument("--replicas", type=int, default=2, help="stable replicas per Rollout")
    p.add_argument("--interval", type=int, default=10, help="analysis intervalSeconds")
    p.add_argument("--window", type=int, default=30, help="analysis windowSeconds")
    p.add_argument("--measure", type=float, default=60, help="seconds measured per step")
    p.add_argument("--probes", type=int, default=5, help="Rollouts paused/resumed per step")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--py-spy", type=float, default=0, help="profile seconds at the last step")
    p.add_argument(
        "--mem-census", action="store_true", help="memory census of the operator at the end"
    )
    p.add_argument("--no-watch-cache", action="store_true", help="operator without its caches")
    p.add_argument(
        "--operator-env", action="append", default=[], help="KEY=VALUE for the operator process"
    )
    args = p.parse_args(argv)
    steps = sorted({int(x) for x in args.steps.split(",") if x.strip()} | {args.rollouts})
    steps = [s for s in steps if s <= args.rollouts]
    started = time.time()
    print(f"scale: steps {steps}, {args.replicas} replicas each, interval {args.interval} s; "
          f"{machine_load()}")  # fmt: skip
    results: list[dict[str, Any]] = []
    pods = args.rollouts * (args.replicas + canary_replicas(args.replicas, TIERS[0]["weight"]))
    nodes = max(3, math.ceil(pods / PODS_PER_NODE))
    op_env = {"CALYX_WATCH_CACHE": "false"} if args.no_watch_cache else {}
    op_env |= dict(kv.split("=", 1) for kv in args.operator_env)
    census_path = (args.json or Path("scale")).with_suffix(".census.json")
    if args.mem_census:
        op_env[MEMCENSUS_ENV] = str(census_path.resolve())
    print(f"{pods} pods at {args.rollouts} Rollouts: {nodes} kwok nodes")
    spied = ""
    with Env(operator_env=op_env, nodes=nodes) as env:
        sc = Scale(env, args)
        try:
            base = sc.counters()
            idle_rss = rss_bytes(sc.pid) / 2**20
            print(f"idle operator: RSS {idle_rss:.0f} MB, cpu {base['op_cpu']:.1f} s so far")
            for count in steps:
                setup = sc.grow(count)
                print(f"[{count}] all progressing after {setup:.0f} s", flush=True)
                time.sleep(args.interval + 2)  # let every Rollout settle into its cadence
                results.append(sc.measure(count, setup))
            if args.py_spy:
                out = (args.json or Path("scale")).with_suffix(".pyspy")
                spied = profile(sc.pid, args.py_spy, out)
                print(spied, flush=True)
            if args.mem_census:
                print(take_census(sc.pid, census_path), flush=True)
            alive = env.op is not None and env.op.alive()
        finally:
            sc.close()
    text, verdicts = report(results, args)
    print(f"\nfinished in {time.time() - started:.0f} s; operator alive at the end: {alive}\n")
    print(text)
    print()
    for v in verdicts:
        print(v)
    if spied:
        print(spied)
    if args.json:
        payload = {"versions": versions(), "args": vars(args) | {"json": str(args.json)},
                   "results": results}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
