"""Failover: leader killed → standby writing, and no decision repeated or lost (issue 13).

Local control plane (kwok pods), two operator processes with the production leader-election
timings (lease 15 s, renew deadline 10 s, retry 2 s; ``calyx.adapters.settings``), rollout tick
0.5 s, no Prometheus (the Rollouts run without analysis). Each of ``--kills`` trials, in its own
namespace:

1. a stable Deployment of 4 replicas, a signed Lease and a Rollout with tiers 5 % (soak 2 s),
   25 % (soak 2 s), 100 %;
2. after a random delay in ``[0, --max-delay)`` from the Rollout's creation — so the kill lands
   before the start, at the snapshot, the canary, a soak, the promotion or after completion — the
   process holding the coordination Lease is SIGKILLed (**T0**; no cleanup, no release);
3. right after T0 a signed probe Lease is created in a namespace of its own: work that only a
   live leader does (its status becomes Verified), so the first write after a takeover does not
   wait for a soak to end;
4. **takeover** = the survivor's first write in the API server's audit log (user agent
   ``calyx-operator/<v> (<identity>)``) minus T0; the moment the survivor is seen holding the Lease
   is reported too;
5. the Rollout must complete; then the killed process is started again (same identity, like a
   pod restarted in place; it joins as the standby) and the Rollout's decisions are counted:
   Events ``DeployStarted`` 1, ``CanaryPromoted`` 2, ``DeployCompleted`` 1, ``RolledBack`` 0, and
   stable-image patches 1. A count above that is a **duplicated** decision, below it a **lost**
   one.

Prints a Markdown report and writes it into docs/performance.md between the
``<!-- bench/failover.py -->`` markers (``--no-docs`` to skip).

Run: ``.venv/bin/python bench/failover.py [--kills 20] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e.*
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))  # calyx
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common

from calyx.adapters.kube import Kube
from calyx_dev.operator_process import OPERATOR_NS
from common import fmt, machine_load, summary, table, versions
from tests.e2e.failover_support import (
    OperatorPair,
    first_write_at,
    holder,
    stamp,
    wait_until,
    writes_by,
)
from tests.e2e.harness import (
    deployment_body,
    lease_body,
    operator_forward_writes,
    reasons,
    rollout_body,
    trust_configmap,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "performance.md"
BEGIN = "<!-- bench/failover.py: begin (written by the script; edit it there) -->"
END = "<!-- bench/failover.py: end -->"
TIERS = [{"weight": 5, "soakSeconds": 2}, {"weight": 25, "soakSeconds": 2}, {"weight": 100}]
EXPECTED = {"DeployStarted": 1, "CanaryPromoted": 2, "DeployCompleted": 1, "RolledBack": 0}
IMG1, IMG2 = "reg.example/checkout:1.0.0", "reg.example/checkout:2.0.0"
PROBE_NS = "calyx-failover-probe"


@dataclass
class Trial:
    i: int
    victim: str
    delay: float
    phase_at_kill: str
    t_kill: float = 0.0
    lease_acquired: float | None = None  # seconds after T0
    first_write: float | None = None  # seconds after T0
    counts: dict[str, int] = field(default_factory=dict)
    duplicated: int = 0
    lost: int = 0
    error: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tag = uuid.uuid4().hex[:4]
        self.cluster: Any = None
        self.pair: OperatorPair | None = None
        self.kube: Kube | None = None
        self.workdir = Path(args.workdir or f"/tmp/calyx-failover-{self.tag}")

    # -- environment ---------------------------------------------------------------------------
    def start(self) -> None:
        from kubernetes import client

        from calyx.api.crdgen import crd_manifests
        from calyx_dev.controlplane import LocalCluster

        self.cluster = LocalCluster(keep_data_dir=self.args.keep)
        self.cluster.start()
        print(f"cluster up: {self.cluster.server}", flush=True)
        self.kube = Kube(self.cluster.api_client())
        ext = client.ApiextensionsV1Api(self.kube.api)
        for crd in crd_manifests().values():
            ext.create_custom_resource_definition(crd)
        for crd in ("leases.calyx.io", "rollouts.calyx.io"):
            self.cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}")
        for ns in (OPERATOR_NS, PROBE_NS):
            self.cluster.create_namespace(ns)
        self.kube.core.create_namespaced_config_map(
            OPERATOR_NS, trust_configmap(["alice", "bob", "sentinel", "watcher"])
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pair = OperatorPair(
            self.cluster.kubeconfig,
            self.workdir,
            env={"CALYX_ROLLOUT_TICK_SECONDS": "0.5", "CALYX_LEASE_RECHECK_SECONDS": "1"},
            tag=self.tag,
        )
        self.pair.start(self.kube)
        print(f"operators up: {self.pair.a.identity} leads, {self.pair.b.identity} stands by")

    def close(self) -> None:
        if self.pair is not None and self.kube is not None:
            self.pair.stop(self.kube)
        if self.cluster is not None:
            self.cluster.stop()

    # -- one kill ------------------------------------------------------------------------------
    def trial(self, i: int) -> Trial:
        assert self.pair is not None and self.kube is not None
        kube, cluster, pair = self.kube, self.cluster, self.pair
        ns = f"failover-{i:02d}-{self.tag}"
        cluster.create_namespace(ns)
        kube.apps.create_namespaced_deployment(ns, deployment_body(ns, "checkout", 4, IMG1))
        wait_until("stable ready", lambda: _ready(kube, ns, "checkout") == 4, 60)
        lease = lease_body(
            ns, "l1", "checkout", {"app": IMG2}, constraints={"requireAnalysis": False}
        )
        kube.create_custom("leases", ns, lease)
        delay = self.rng.uniform(0, self.args.max_delay)
        kube.create_custom("rollouts", ns, rollout_body(ns, "r1", "l1", tiers=TIERS))
        t_created = time.time()
        time.sleep(max(0.0, t_created + delay - time.time()))
        victim = pair.leader(kube)
        survivor = pair.other(victim)
        phase = str(_status(kube, ns).get("phase") or "-")
        t = Trial(i=i, victim=victim.identity, delay=delay, phase_at_kill=phase)
        t.t_kill = time.time()
        victim.kill()
        probe = lease_body(PROBE_NS, f"probe-{i:02d}", "probe", {"app": IMG2})
        kube.create_custom("leases", PROBE_NS, probe)
        since = stamp(t.t_kill)
        wait_until("the survivor to hold the Lease", lambda: holder(kube) == survivor.identity, 90)
        t.lease_acquired = time.time() - t.t_kill
        first = wait_until(
            "the survivor's first write",
            lambda: first_write_at(cluster, survivor.identity, since),
            60,
            interval=0.5,  # the time comes from the audit log; polling it less saves CPU
        )
        t.first_write = first - t.t_kill
        wait_until("Completed", lambda: _status(kube, ns).get("phase") == "Completed", 180)
        assert not writes_by(cluster, victim.identity, since=since), "the dead leader wrote"
        # the victim comes back as the standby (its own Lease is someone else's now)
        victim.start()
        wait_until(
            f"{victim.identity} to rejoin as the standby",
            lambda: "a standby" in victim.log_path.read_text(errors="replace"),
            90,
        )
        time.sleep(1.5)  # an Event posted right after the Completed status write
        rs = reasons(kube, ns, "r1")
        t.counts = {r: rs.count(r) for r in EXPECTED}
        t.counts["stable image patches"] = len(
            [
                w
                for w in operator_forward_writes(cluster, ns)
                if w["objectRef"]["name"] == "checkout"
            ]
        )
        expected = {**EXPECTED, "stable image patches": 1}
        t.duplicated = sum(max(0, t.counts[k] - n) for k, n in expected.items())
        t.lost = sum(max(0, n - t.counts[k]) for k, n in expected.items())
        cluster.delete_namespace(ns, wait=False)
        return t


def _ready(kube: Kube, ns: str, name: str) -> int:
    d = kube.get_deployment(ns, name) or {}
    return int((d.get("status") or {}).get("readyReplicas") or 0)


def _status(kube: Kube, ns: str) -> dict[str, Any]:
    return dict((kube.get_custom("rollouts", ns, "r1") or {}).get("status") or {})


# -- report ------------------------------------------------------------------------------------
def report(
    trials: list[Trial], failures: list[str], args: argparse.Namespace, load: str | None = None
) -> str:
    ok = [t for t in trials if not t.error]
    first = summary(t.first_write for t in ok)
    acquired = summary(t.lease_acquired for t in ok)
    dup = sum(t.duplicated for t in ok)
    lost = sum(t.lost for t in ok)
    phases: dict[str, int] = {}
    for t in ok:
        phase = "not started (no status yet)" if t.phase_at_kill == "-" else t.phase_at_kill
        phases[phase] = phases.get(phase, 0) + 1
    v = versions()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    lines = [
        f"Run {when} (UTC): {len(ok)} kills of {args.kills} measured"
        + (f", {len(failures)} failed (listed below)" if failures else "")
        + f"; seed {args.seed}; {load or machine_load()} at the end (a shared machine). "
        f"kopf {v.get('kopf', '?')}, control plane {v.get('kubernetes-binaries', '?')}.",
        "",
        table(
            [
                ["leader killed → standby's first write", *_cells(first)],
                ["leader killed → standby holds the Lease", *_cells(acquired)],
            ],
            ["seconds", *KEYS],
        ),
        "",
        f"Decisions duplicated: **{dup}**; lost: **{lost}** (per Rollout: Events DeployStarted 1, "
        "CanaryPromoted 2, DeployCompleted 1, RolledBack 0; stable-image patches 1).",
        "",
        "Phase of the Rollout when its leader was killed: "
        + ", ".join(f"{k} {n}" for k, n in sorted(phases.items()))
        + ".",
    ]
    goal_t = first["p95"] <= 20
    goal_d = dup == 0 and len(ok) >= 20
    lines += [
        "",
        f"Goal (issue 13): standby writing p95 ≤ 20 s — **{'pass' if goal_t else 'fail'}** "
        f"({fmt(first['p95'], 2)} s); zero duplicated decisions over 20 kills — "
        f"**{'pass' if goal_d else ('not enough kills' if dup == 0 else 'fail')}** "
        f"({dup} over {len(ok)}).",
    ]
    if failures:
        lines += ["", "Failed trials:", *(f"* {f}" for f in failures)]
    return "\n".join(lines)


KEYS = ("n", "min", "p50", "p95", "max")


def _cells(stats: dict[str, float]) -> list[str]:
    return [str(int(stats["n"])), *(fmt(stats[k], 2) for k in KEYS[1:])]


def write_doc(text: str) -> None:
    """Replace the text between the markers (or add the section before "Known bottlenecks")."""
    doc = DOC.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = head + block + tail
    else:
        section = (
            "## 5. Failover (`bench/failover.py`)\n\n"
            "```\n.venv/bin/python bench/failover.py               "
            "# 20 SIGKILLs of the leader, ≈ 15 min\n```\n\n" + block + "\n\n"
        )
        anchor = "## Known bottlenecks"
        doc = doc.replace(anchor, section + anchor, 1) if anchor in doc else doc + "\n" + section
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20, help="leaders SIGKILLed (default 20)")
    p.add_argument("--max-delay", type=float, default=8.0, help="kill within this many s")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write every trial here")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/performance.md")
    p.add_argument("--keep", action="store_true", help="keep the cluster's data dir (audit log)")
    p.add_argument("--workdir", help="operator logs here (default /tmp/calyx-failover-*)")
    p.add_argument("--report", type=Path, help="no run: report the --json file of an earlier run")
    args = p.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        if isinstance(saved, list):  # trials only
            saved = {"trials": saved, "failures": [], "kills": len(saved), "seed": args.seed}
        args.kills, args.seed = saved["kills"], saved["seed"]
        trials = [Trial(**t) for t in saved["trials"]]
        text = report(trials, saved["failures"], args, saved.get("load"))
        print(text)
        if not args.no_docs:
            write_doc(text)
        return 0
    print(f"failover: {args.kills} kills; {machine_load()}", flush=True)
    bench = Bench(args)
    trials: list[Trial] = []
    failures: list[str] = []
    try:
        bench.start()
        for i in range(args.kills):
            try:
                t = bench.trial(i)
            except Exception as exc:
                failures.append(f"kill #{i}: {type(exc).__name__}: {exc}")
                print(f"  #{i:02d} FAILED: {exc}", flush=True)
                traceback.print_exc()
                _recover(bench)
                continue
            trials.append(t)
            print(
                f"  #{i:02d} killed {t.victim} at {t.phase_at_kill:<14s} (+{t.delay:4.1f}s): "
                f"Lease {fmt(t.lease_acquired or float('nan'), 2)}s, "
                f"first write {fmt(t.first_write or float('nan'), 2)}s, "
                f"dup {t.duplicated} lost {t.lost} {t.counts}",
                flush=True,
            )
    finally:
        bench.close()
        print(f"operator logs: {bench.workdir}")
    text = report(trials, failures, args)
    print("\n" + text)
    if args.json:
        saved = {"kills": args.kills, "seed": args.seed, "failures": failures}
        saved["load"] = machine_load()
        saved["trials"] = [asdict(t) for t in trials]
        args.json.write_text(json.dumps(saved, indent=1))
    if not args.no_docs:
        write_doc(text)
        print(f"\nwritten into {DOC.relative_to(REPO)}")
    return 0 if trials and not failures else 1


def _recover(bench: Bench) -> None:
    """After a failed trial: both processes running again, whoever leads."""
    if bench.pair is None:
        return
    for op in bench.pair.both:
        if not op.alive():
            op.start()


if __name__ == "__main__":
    sys.exit(main())
