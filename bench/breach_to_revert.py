"""Breach → detection → revert latency, end to end (GitHub issues 4 and 5; docs/design.md
promise 3).

Real control plane (kwok pods), real Prometheus scraping the traffic simulator every 1 s, the
operator as a process (rollout tick 0.5 s). Each trial, in its own namespace:

1. a Service ``checkout`` (selects ``app=checkout``) and a stable Deployment of 6 replicas, so
   the EndpointSlice controller lists both stable and canary pods (kwok gives them fake IPs);
2. a Lease and a Rollout with tiers ``[{weight: 25, soakSeconds: 600}, {weight: 100}]`` and
   analysis at the smallest ``intervalSeconds`` the CRD allows (``--interval``; 1 s), window
   10 s, over all four built-in metrics;
3. once the canary (2 pods) is ready in the Service's EndpointSlices and an analysis passed, a
   random wait in ``[0, interval)`` (so the breach lands at a random phase of the scrape and
   analysis clocks), then at **T0** the canary image's profile turns bad in the simulator
   (TES 50 vs 100, or 50 % HTTP 500s);
4. wait for ``RolledBack`` and collect:

* **first breaching sample**: the first scrape (Prometheus sample timestamp) at which the
  breaching metric's own query, evaluated by Prometheus at that instant, is over its threshold;
* **detection**: ``status.rollback.detectedAt`` (stamped at the start of the evaluating pass,
  i.e. just *before* its queries ran); the operator's own estimate ``breachAt`` is reported too;
* **canary gone from endpoints**: from a watch on EndpointSlices (not polling), the arrival
  time of the event after which no *ready* endpoint's ``targetRef`` is a canary pod;
* **rollback verified**: ``status.rollback.verifiedAt``; ``revertSeconds = revertedAt -
  detectedAt`` (revert actions issued after the trigger is observed).

All times are wall-clock on one machine (API server, operator and this script share the clock).

Run: ``.venv/bin/python bench/breach_to_revert.py [--n 20] [--failure-limits 0,1]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import queue
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e.harness
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))  # calyx
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common

from calyx.api.rollout import MIN_INTERVAL_SECONDS
from calyx.domain.promql import DEFAULT_TEMPLATES, render, template_vars
from common import (
    Env,
    RawWatch,
    analysis_spec,
    fmt,
    machine_load,
    parse_time,
    service_body,
    summary,
    table,
    versions,
)
from tests.e2e.harness import deployment_body, lease_body, rollout_body

TARGET = "checkout"
CANARY_PREFIX = f"{TARGET}-canary-"
TIERS = [{"weight": 25, "soakSeconds": 600}, {"weight": 100}]
SIGNALS = {
    # metric: (knobs that break it, breach test on (canary, baseline))
    "tes": ({"tes": 50.0}, lambda c, b: b is not None and c < b * 0.95),
    "errorRate": ({"error_ratio": 0.5}, lambda c, b: c > 10),
}


class EndpointWatch:
    """Ready canary endpoints of Service ``checkout`` per namespace, from an EndpointSlice watch."""

    def __init__(self, api_client: Any) -> None:
        self._lock = threading.Lock()
        self._slices: dict[tuple[str, str], set[str]] = {}
        self.ready_canary: dict[str, int] = {}
        self.gone_at: dict[str, list[float]] = {}
        self.watch = RawWatch(
            api_client,
            "/apis/discovery.k8s.io/v1/endpointslices",
            self._on_event,
            label_selector=f"kubernetes.io/service-name={TARGET}",
            name="endpointslices",
        )

    def _on_event(self, kind: str, obj: dict[str, Any], received: float) -> None:
        meta = obj["metadata"]
        ns = meta["namespace"]
        ready = set()
        if kind != "DELETED":
            for ep in obj.get("endpoints") or []:
                ref = (ep.get("targetRef") or {}).get("name", "")
                # conditions.ready: nil means "unknown", which consumers treat as ready.
                if ref.startswith(CANARY_PREFIX) and (ep.get("conditions") or {}).get(
                    "ready", True
                ):
                    ready.add(ref)
        with self._lock:
            self._slices[(ns, meta["name"])] = ready
            before = self.ready_canary.get(ns, 0)
            now = sum(len(v) for (n, _), v in self._slices.items() if n == ns)
            self.ready_canary[ns] = now
            if before > 0 and now == 0:
                self.gone_at.setdefault(ns, []).append(received)

    def canary_ready(self, ns: str) -> int:
        with self._lock:
            return self.ready_canary.get(ns, 0)

    def first_gone_after(self, ns: str, t: float) -> float | None:
        with self._lock:
            return next((g for g in self.gone_at.get(ns, []) if g >= t), None)


@dataclass
class Trial:
    ns: str
    failure_limit: int
    signal: str
    t0: float = math.nan
    first_sample: float | None = None
    breach_at: float | None = None
    detected: float | None = None
    reverted: float | None = None
    gone: float | None = None
    verified: float | None = None
    revert_seconds: float | None = None
    detect_seconds: float | None = None
    reason: str = ""
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def d(self, a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a


class Bench:
    def __init__(self, env: Env, args: argparse.Namespace) -> None:
        self.env = env
        self.args = args
        self.eps = EndpointWatch(env.api)
        self.eps.watch.start()
        self.eps.watch.synced.wait(30)
        self.run_id = uuid.uuid4().hex[:6]

    def trial(self, idx: int, failure_limit: int, signal: str) -> Trial:
        env, a = self.env, self.args
        assert env.sim is not None
        ns = f"b2r-{self.run_id}-fl{failure_limit}-{idx:02d}"
        t = Trial(ns, failure_limit, signal)
        stable = f"reg.example/checkout:1.0.0-{ns}"
        canary = f"reg.example/checkout:1.1.0-{ns}"
        healthy = {"tes": 100.0, "error_ratio": 0.001, "cpu_cores": 0.05}
        env.sim.set_profile(stable, **healthy)
        env.sim.set_profile(canary, **healthy)
        env.create_namespace(ns)
        env.create(service_body(ns))
        env.create(deployment_body(ns, TARGET, a.replicas, stable))
        env.wait("stable ready", lambda: env.ready_replicas(ns, TARGET) == a.replicas, 90)
        lease = lease_body(ns, "l1", TARGET, {"app": canary}, constraints={"maxInitialWeight": 25})
        env.create(lease)
        spec = analysis_spec(env.prom.url, a.interval, a.window, failure_limit)
        env.create(rollout_body(ns, "r1", "l1", tiers=TIERS, analysis=spec))
        expected = max(1, math.floor(a.replicas * 25 / 75 + 0.5))
        env.wait("canary in endpoints", lambda: self.eps.canary_ready(ns) == expected, 90)

        def passed_after(since: float) -> bool:
            la = (env.rollout(ns).get("status") or {}).get("lastAnalysis") or {}
            when = parse_time(la.get("time"))
            return la.get("verdict") == "Pass" and when is not None and when > since

        ready_at = time.time()
        env.wait("an analysis Pass", lambda: passed_after(ready_at), 60, 0.1)
        time.sleep(random.uniform(0, a.interval))
        knobs, _ = SIGNALS[signal]
        t.t0 = time.time()
        env.sim.set_profile(canary, **knobs)

        def rolled_back() -> dict[str, Any] | None:
            st = env.rollout(ns).get("status") or {}
            return st if st.get("phase") == "RolledBack" else None

        st = env.wait("RolledBack", rolled_back, 60, 0.1)
        rb = st.get("rollback") or {}
        t.reason = str(rb.get("reason", ""))[:80]
        t.breach_at = parse_time(rb.get("breachAt"))
        t.detected = parse_time(rb.get("detectedAt"))
        t.reverted = parse_time(rb.get("revertedAt"))
        t.verified = parse_time(rb.get("verifiedAt"))
        t.revert_seconds = rb.get("revertSeconds")
        t.detect_seconds = rb.get("detectSeconds")
        env.wait(
            "canary gone from endpoints",
            lambda: self.eps.first_gone_after(ns, t.t0) is not None,
            10,
            0.05,
        )
        t.gone = self.eps.first_gone_after(ns, t.t0)
        t.first_sample = self.first_breaching_sample(ns, signal, t.t0, t.detected or time.time())
        if signal not in t.reason:
            t.error = f"rolled back for another reason: {t.reason}"
        with contextlib.suppress(Exception):
            env.core.delete_namespace(ns)
        return t

    def first_breaching_sample(self, ns: str, signal: str, t0: float, until: float) -> float | None:
        """The first scrape after T0 at which the metric's own query breaches, evaluated by
        Prometheus at that scrape's timestamp (so ``rate()`` windows are exactly the operator's)."""
        env = self.env
        raw = env.prom_query('up{job="traffic-sim"}[30s]', at=until + 1)
        stamps = sorted(float(ts) for ts, _ in (raw[0]["values"] if raw else []))
        variables = template_vars(ns, TARGET, self.args.window)
        template = DEFAULT_TEMPLATES[signal]  # type: ignore[index]
        canary_q = render(template, variables.for_side("canary"))
        base_q = render(template, variables.for_side("baseline"))
        _, breaches = SIGNALS[signal]
        for ts in stamps:
            if ts < t0 - 1.0:
                continue  # a scrape that began just before T0 may have rendered after it
            c = env.prom_query(canary_q, at=ts)
            b = env.prom_query(base_q, at=ts)
            if not c:
                continue
            cv = float(c[0]["value"][1])
            bv = float(b[0]["value"][1]) if b else None
            if breaches(cv, bv):
                return ts
        return None


def report(trials: list[Trial], args: argparse.Namespace) -> tuple[str, list[str]]:
    goal_ab = args.interval + args.window / 2 + 2
    out: list[str] = []
    verdicts: list[str] = []
    for fl in sorted({t.failure_limit for t in trials}):
        ts = [t for t in trials if t.failure_limit == fl and not t.error]

        def col(f: Callable[[Trial], float | None], ts: list[Trial] = ts) -> list[float | None]:
            return [f(t) for t in ts]

        rows_def: list[tuple[str, list[float | None]]] = [
            ("T0 → first breaching sample", col(lambda t: t.d(t.t0, t.first_sample))),
            (
                "(a) first breaching sample → detectedAt",
                col(lambda t: t.d(t.first_sample, t.detected)),
            ),
            (
                "(a') operator breachAt → detectedAt (detectSeconds)",
                col(lambda t: t.detect_seconds),
            ),
            ("breachAt - first breaching sample", col(lambda t: t.d(t.first_sample, t.breach_at))),
            ("revertSeconds = revertedAt - detectedAt", col(lambda t: t.revert_seconds)),
            ("(b) detectedAt → canary gone from endpoints", col(lambda t: t.d(t.detected, t.gone))),
            (
                "(a)+(b) first breaching sample → canary gone",
                col(lambda t: t.d(t.first_sample, t.gone)),
            ),
            ("(c) detectedAt → rollback verified", col(lambda t: t.d(t.detected, t.verified))),
            ("first breaching sample → verified", col(lambda t: t.d(t.first_sample, t.verified))),
            ("T0 → canary gone from endpoints", col(lambda t: t.d(t.t0, t.gone))),
        ]
        rows = []
        stats: dict[str, dict[str, float]] = {}
        for label, vals in rows_def:
            s = summary(vals)
            stats[label] = s
            rows.append([label, int(s["n"]), fmt(s["p50"]), fmt(s["p95"]), fmt(s["max"])])
        by_signal = {sig: sum(1 for t in ts if t.signal == sig) for sig in SIGNALS}
        out.append(
            f"\n### failureLimit {fl}: {len(ts)} rollbacks "
            f"({', '.join(f'{k} {v}' for k, v in by_signal.items())}), seconds\n"
        )
        out.append(table(rows, ["interval", "n", "p50", "p95", "max"]))
        b95 = stats["(b) detectedAt → canary gone from endpoints"]["p95"]
        ab95 = stats["(a)+(b) first breaching sample → canary gone"]["p95"]
        rv95 = stats["revertSeconds = revertedAt - detectedAt"]["p95"]
        a95 = stats["(a) first breaching sample → detectedAt"]["p95"]
        ok = lambda cond: "PASS" if cond else "FAIL"  # noqa: E731
        verdicts += [
            f"failureLimit {fl}: (a)+(b) first breaching sample → canary out of the endpoints "
            f"p95 {fmt(ab95)} s ≤ 1.5 s (issue 13, 1 s scrape and interval): {ok(ab95 <= 1.5)}",
            f"failureLimit {fl}: (b) detection → canary gone p95 {fmt(b95)} s < 1 s: {ok(b95 < 1)}",
            f"failureLimit {fl}: (a)+(b) p95 {fmt(ab95)} s < interval + window/2 + 2 s = "
            f"{goal_ab:g} s: {ok(ab95 < goal_ab)}",
            f"failureLimit {fl}: revertSeconds p95 {fmt(rv95)} s < 1 s (issue 4): {ok(rv95 < 1)}",
            f"failureLimit {fl}: (a) detection p95 {fmt(a95)} s within one interval "
            f"({args.interval} s) + failureLimit x interval = {(fl + 1) * args.interval} s "
            f"(promise 3): {ok(a95 <= (fl + 1) * args.interval)}",
        ]
    return "\n".join(out), verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20, help="rollbacks per failureLimit (default 20)")
    p.add_argument("--failure-limits", default="0,1", help="comma list (default 0,1)")
    p.add_argument("--parallel", type=int, default=4, help="trials at once (default 4)")
    p.add_argument("--interval", type=int, default=MIN_INTERVAL_SECONDS, help="intervalSeconds")
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--replicas", type=int, default=6, help="stable replicas (canary = 2 at 25%%)")
    p.add_argument("--signal", choices=["tes", "errorRate", "mixed"], default="mixed")
    p.add_argument("--json", type=Path, help="write every trial's raw times here")
    p.add_argument("--tick", type=float, default=0.5, help="CALYX_ROLLOUT_TICK_SECONDS")
    args = p.parse_args(argv)
    limits = [int(x) for x in args.failure_limits.split(",") if x.strip()]
    signals = list(SIGNALS) if args.signal == "mixed" else [args.signal]
    started = time.time()
    print(f"breach_to_revert: {args.n} x failureLimit {limits}, parallel {args.parallel}; "
          f"{machine_load()}")  # fmt: skip
    trials: list[Trial] = []
    failures: list[str] = []
    with Env(operator_env={"CALYX_ROLLOUT_TICK_SECONDS": str(args.tick)}) as env:
        bench = Bench(env, args)
        try:
            jobs: queue.Queue[tuple[int, int, str]] = queue.Queue()
            for fl in limits:
                for i in range(args.n):
                    jobs.put((i, fl, signals[i % len(signals)]))
            lock = threading.Lock()

            def worker() -> None:
                while True:
                    try:
                        i, fl, sig = jobs.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        t = bench.trial(i, fl, sig)
                    except Exception as exc:
                        with lock:
                            failures.append(f"trial fl{fl}-{i}: {type(exc).__name__}: {exc}")
                            print(f"  trial fl{fl}-{i} FAILED: {exc}", flush=True)
                        continue
                    with lock:
                        trials.append(t)
                        a_, b_, c_ = (
                            t.d(t.first_sample, t.detected),
                            t.d(t.detected, t.gone),
                            t.d(t.detected, t.verified),
                        )
                        print(
                            f"  fl{fl} #{i:02d} {sig:9s}"
                            f" a={fmt(a_ if a_ is not None else math.nan)}"
                            f" b={fmt(b_ if b_ is not None else math.nan)}"
                            f" c={fmt(c_ if c_ is not None else math.nan)}"
                            f" revert={t.revert_seconds} {t.error}",
                            flush=True,
                        )

            threads = [threading.Thread(target=worker) for _ in range(max(1, args.parallel))]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            print(f"\nfinished: {machine_load()}; {time.time() - started:.0f} s in all")
        finally:
            bench.eps.watch.stop()
    text, verdicts = report(trials, args)
    print(text)
    print()
    for v in verdicts:
        print(v)
    if failures:
        print(f"\n{len(failures)} trial(s) failed:", *failures, sep="\n  ")
    errors = [t for t in trials if t.error]
    if errors:
        print(f"\n{len(errors)} trial(s) excluded:", *(f"{t.ns}: {t.error}" for t in errors),
              sep="\n  ")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "versions": versions(),
                    "args": vars(args) | {"json": str(args.json)},
                    "trials": [asdict(t) for t in trials],
                    "failures": failures,
                },
                indent=1,
                default=str,
            )
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
