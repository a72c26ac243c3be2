"""Faults on the real control plane (issue 12, parts 6 and 8): the API server gone for 30 s and
90 s at each phase (tier soak, promotion, rollback), Prometheus hung and killed during a tier,
and connection resets during status writes.

The operator runs as a process whose kubeconfig points at a loopback TCP proxy
(``tests/faults/proxy.py``) in front of the real kube-apiserver; the test, the controllers and
kwok talk to the API server directly. "Gone" is one of:

* ``sigstop``  -- kube-apiserver itself is SIGSTOPped: a hung server for everyone (controllers,
  kwok, the traffic simulator's pod listing, hence the metrics too);
* ``blackhole`` -- the proxy stops forwarding: a network partition between the operator and an
  API server that keeps running (the Deployment controller and kwok go on meanwhile);
* ``refuse``   -- the proxy stops listening and resets every connection: an API server process
  that is down or restarting.

Every scenario ends with the safety invariants read from the API server's audit log
(``assert_no_forward_write_without_valid_lease``, ``assert_only_signed_templates``) and with
"each decision announced exactly once": the Events on the Rollout and the audit records in its
report counted per reason.

Measured timings are appended as JSON lines to ``$CALYX_FAULT_TIMINGS`` when it is set (they
feed docs/operations.md, "Outages").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx.domain.audit import parse_jsonl
from calyx_dev.operator_process import OperatorProcess
from tests.e2e.harness import (
    assert_no_forward_write_without_valid_lease,
    assert_only_signed_templates,
    events_for,
    replicas_of,
    wait_for,
)
from tests.e2e.test_analysis import Rig, cluster_pods_in_sim  # noqa: F401 - fixture
from tests.faults.audit import AuditEvent, AuditTrigger, operator_write
from tests.faults.processes import component_pid, kill_prometheus, pause, prometheus_pid, resume
from tests.faults.proxy import FaultProxy, write_proxied_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.slow]

REPORT_AUDIT_KEY = "audit.jsonl"  # the audit chain in ConfigMap <rollout>-report (docs/report.md)
# Tiers: the first soaks long enough for an outage to land in it; the second is short.
SOAK_TIERS = [{"weight": 5, "soakSeconds": 20}, {"weight": 25, "soakSeconds": 4}, {"weight": 100}]
FAST_TIERS = [{"weight": 5, "soakSeconds": 4}, {"weight": 25, "soakSeconds": 4}, {"weight": 100}]
KILL_TIERS = [{"weight": 5, "soakSeconds": 12}, {"weight": 25, "soakSeconds": 4}, {"weight": 100}]
HOLD_TIERS = [{"weight": 5, "soakSeconds": 4}, {"weight": 25, "soakSeconds": 600}, {"weight": 100}]


class Misannounced(AssertionError):
    """A decision announced zero times or more than once (Events or audit records)."""


class TooSlow(AssertionError):
    """A measured time above its documented bound."""


class TooChatty(AssertionError):
    """The operator logged more during an outage than one line per state change allows."""


# ------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def api_proxy(kube_cluster: Any) -> Iterator[FaultProxy]:
    if kube_cluster.kind != "local":
        pytest.skip("faults are injected into the local control plane's processes")
    url = urllib.parse.urlsplit(kube_cluster.server)
    assert url.hostname and url.port
    with FaultProxy((url.hostname, url.port)) as proxy:
        yield proxy


@pytest.fixture
def proxied_operator(
    calyx_crds: Any, no_operator: None, api_proxy: FaultProxy, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, alone (the session's shared one is stopped meanwhile), talking to the API
    server only through ``api_proxy``."""
    kubeconfig = write_proxied_kubeconfig(
        calyx_crds.kubeconfig, tmp_path / "proxied.kubeconfig", api_proxy
    )
    # faulthandler: a stuck operator is dumped (every thread's stack) when a scenario times out
    op = OperatorProcess(kubeconfig, tmp_path, env={"PYTHONFAULTHANDLER": "1"})
    op.start()
    try:
        yield op
    finally:
        api_proxy.heal()  # let it shut down cleanly (it gives its leader Lease up)
        op.stop()


class Fault:
    """A fault armed on an audit-log trigger: ``restore()`` undoes it (idempotent)."""

    trigger: AuditTrigger

    def __init__(self) -> None:
        self._back: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def set(self, back: Callable[[], None]) -> None:
        with self._lock:
            self._back = back

    def restore(self) -> None:
        with self._lock:
            back, self._back = self._back, None
        if back is not None:
            back()


class FaultRig(Rig):
    """The analysis rig (real Prometheus + traffic simulator) with faults and measurements."""

    def __init__(
        self,
        cluster: Any,
        kube: Kube,
        sim: Any,
        prom: Any,
        ns: str,
        proxy: FaultProxy,
        op: OperatorProcess,
        timings: Callable[[dict[str, Any]], None],
    ) -> None:
        super().__init__(cluster, kube, sim, prom, ns)
        self.proxy, self.op, self.record = proxy, op, timings

    # -- the API server gone -----------------------------------------------------------------

    def api_down(self, how: str) -> Callable[[], None]:
        """Take the API server away from the operator now; returns the function that brings it
        back."""
        if how == "sigstop":
            pid = component_pid(self.cluster, "kube-apiserver")
            pause(pid)
            return lambda: resume(pid)
        if how in ("blackhole", "refuse"):
            self.proxy.set_mode("blackhole" if how == "blackhole" else "refuse")
            return self.proxy.heal
        raise ValueError(how)

    def outage(self, how: str, seconds: float) -> tuple[float, float]:
        """The API server gone for ``seconds`` from now; returns (down, back) as epoch seconds."""
        back = self.api_down(how)
        down = time.time()
        try:
            time.sleep(seconds)
        finally:
            back()
        return down, time.time()

    @contextlib.contextmanager
    def api_down_on(self, how: str, predicate: Callable[[AuditEvent], bool]) -> Iterator[Fault]:
        """Take the API server away the moment the audit log shows a matching write; on leaving
        the block the trigger is stopped first, then the API server is brought back (if the
        scenario has not done so), so no fault outlives the scenario."""
        fault = Fault()
        fault.trigger = AuditTrigger(
            self.cluster.audit_log, predicate, lambda _ev: fault.set(self.api_down(how))
        )
        fault.trigger.start()
        try:
            yield fault
        finally:
            fault.trigger.stop()
            fault.restore()

    # -- what the operator did ---------------------------------------------------------------

    def status_writes(self, since: float) -> list[AuditEvent]:
        """Successful Rollout status writes by the operator received at or after ``since``."""
        return [
            ev
            for ev in self.cluster.read_audit_events(
                verbs=["patch", "update"],
                resource="rollouts.calyx.io",
                subresource="status",
                namespace=self.ns,
                succeeded=True,
                since=stamp(since),
            )
            if str(ev.get("userAgent", "")).startswith("calyx-operator")
        ]

    def first_write_after(self, since: float, timeout: float = 60) -> float:
        """Seconds from ``since`` until the operator's first successful status write after it."""
        ev = wait_for(
            "the operator's first status write after the API came back",
            lambda: (w := self.status_writes(since)) and w[0],
            timeout=timeout,
            interval=0.5,
        )
        return epoch(ev["requestReceivedTimestamp"]) - since

    def log_lines(self) -> list[str]:
        return self.op.log_path.read_text(errors="replace").splitlines()

    # -- the end of every scenario -----------------------------------------------------------

    def assert_safe(self) -> None:
        assert_no_forward_write_without_valid_lease(self.cluster, self.ns)
        assert_only_signed_templates(self.cluster, self.kube, self.ns)

    def assert_announced_once(
        self,
        outcome: str,
        promoted: int,
        breaches: int | None = 0,
        no_data: tuple[float, int] | None = None,
    ) -> None:
        """Each decision announced exactly once, as an Event and as an audit record.

        ``no_data=(since, n)``: n NoData streaks began at or after ``since`` (epoch seconds);
        a canary's first evaluations often have no series yet, a streak of its own."""
        expected = {"DeployStarted": 1, "CanaryPromoted": promoted}
        if outcome == "Completed":
            expected |= {"DeployCompleted": 1, "RolledBack": 0, "RollbackComplete": 0}
        else:
            expected |= {"DeployCompleted": 0, "RolledBack": 1, "RollbackComplete": 1}
        if breaches is not None:
            expected["ThresholdBreached"] = breaches  # one per streak
        since = 0.0
        if no_data is not None:
            since, expected["NoData"] = no_data

        def counted(reason: str, when: str | None) -> bool:
            return reason != "NoData" or (when is not None and epoch(when) >= since)

        def counts() -> tuple[Counter[str], Counter[str]]:
            events = Counter(
                e["reason"]
                for e in events_for(self.kube, self.ns, "r1")
                if counted(e["reason"], e.get("firstTimestamp") or e.get("eventTime"))
            )
            cm = self.kube.get_configmap(self.ns, "r1-report") or {}
            chain = parse_jsonl(((cm.get("data") or {}).get(REPORT_AUDIT_KEY)) or "")
            records = Counter(
                str(r.get("reason")) for r in chain if counted(str(r.get("reason")), r.get("time"))
            )
            return events, records

        def wrong() -> dict[str, dict[str, int]]:
            events, records = counts()
            return {
                reason: {"expected": n, "events": events[reason], "records": records[reason]}
                for reason, n in expected.items()
                if events[reason] != n or records[reason] != n
            }

        # The end Event and record follow the end phase's status write by a moment; then
        # wait once more, for a duplicate being written right now.
        deadline = time.monotonic() + 15
        while wrong() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        if bad := wrong():
            seen = [
                f"{e.get('lastTimestamp') or e.get('eventTime')} {e['reason']}: {e.get('message')}"
                for e in sorted(
                    events_for(self.kube, self.ns, "r1"),
                    key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime")),
                )
                if e["reason"] in bad
            ]
            raise Misannounced(
                f"announcements per reason: {bad}; those Events:\n" + "\n".join(seen)
            )

    def wait_end(self, phase: str, timeout: float = 120) -> dict[str, Any]:
        """Until the Rollout's status says ``phase`` (its Events are checked separately)."""
        try:
            wait_for(f"phase {phase}", lambda: self.status().get("phase") == phase, timeout)
        except AssertionError as exc:
            st = self.status()
            raise AssertionError(
                f"{exc}; phase={st.get('phase')} message={st.get('message')} "
                f"lastAnalysis={st.get('lastAnalysis')}; proxy {self.proxy.mode}, "
                f"{self.proxy.connections} connections, {self.proxy.stats}\n{self.dump_operator()}"
            ) from None
        return self.status()

    def dump_operator(self) -> str:
        """The operator's last log lines and, if it is still running, every thread's stack
        (SIGABRT with faulthandler on: it dies, the scenario has failed anyway)."""
        if self.op.proc is not None and self.op.alive():
            os.kill(self.op.proc.pid, signal.SIGABRT)
            with contextlib.suppress(Exception):
                self.op.proc.wait(10)
        return "\n".join(self.log_lines()[-120:])


def stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="microseconds")


def epoch(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def timings(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], None]:
    path = os.environ.get("CALYX_FAULT_TIMINGS")

    def record(values: dict[str, Any]) -> None:
        row = {"test": request.node.name, **values}
        request.node.user_properties.append(("timings", json.dumps(values)))
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    return record


@pytest.fixture
def rig(
    trust: Any,
    kube: Kube,
    cluster_pods_in_sim: Any,  # noqa: F811 - the fixture imported above
    prometheus: Any,
    api_proxy: FaultProxy,
    proxied_operator: OperatorProcess,
    kube_namespace: str,
    timings: Callable[[dict[str, Any]], None],
) -> Iterator[FaultRig]:
    r = FaultRig(
        trust,
        kube,
        cluster_pods_in_sim,
        prometheus,
        kube_namespace,
        api_proxy,
        proxied_operator,
        timings,
    )
    yield r
    if not prometheus.running:  # a scenario failed with Prometheus down
        prometheus.start()


def wait_soaking(rig: FaultRig, weight: int, timeout: float = 90) -> None:
    """Until the tier at ``weight`` is soaking with a passing analysis."""
    wait_for(
        f"tier {weight}% soaking with a passing analysis",
        lambda: (
            (st := rig.status()).get("currentWeight") == weight
            and st.get("phase") == "Progressing"
            and (st.get("lastAnalysis") or {}).get("verdict") == "Pass"
        ),
        timeout=timeout,
    )


API_OUTAGES = [
    pytest.param("sigstop", 30, id="sigstop-30s"),
    pytest.param("blackhole", 90, id="blackhole-90s"),
]


# ------------------------------------------------------------------------------------------------
# the API server gone, at each phase


@pytest.mark.parametrize(("how", "seconds"), API_OUTAGES)
def test_api_gone_during_tier_soak(rig: FaultRig, how: str, seconds: int) -> None:
    """Mid-soak of the 5 % tier: nothing is decided while the API is gone; afterwards the
    operator resumes, the rollout completes, and every decision is announced once."""
    rig.start(tiers=SOAK_TIERS)
    wait_soaking(rig, 5)
    down, back = rig.outage(how, seconds)
    resume_s = rig.first_write_after(back)
    st = rig.wait_end("Completed")
    done = time.time()
    rig.record({"how": how, "outage_s": round(back - down, 1), "resume_s": round(resume_s, 2)})
    rig.record({"heal_to_completed_s": round(done - back, 1)})
    assert [t["result"] for t in st["tiers"]] == ["Passed", "Passed", "Passed"]
    # the outage is a gap in the soak, not soaked time (docs/analysis.md)
    gaps = st["tiers"][0].get("analysisGaps") or []
    assert any(g["seconds"] >= (back - down) - 5 for g in gaps), gaps
    rig.assert_safe()
    rig.assert_announced_once("Completed", promoted=2, no_data=None)


@pytest.mark.parametrize(("how", "seconds"), API_OUTAGES)
def test_api_gone_during_promotion(rig: FaultRig, how: str, seconds: int) -> None:
    """The API goes away the moment the operator's image patch of the stable Deployment is
    applied (before its status write): the promotion finishes once, after the outage."""
    stable_patch = operator_write(
        "deployments",
        rig.ns,
        verb="patch",
        name="checkout",
        body=lambda b: isinstance(b, dict) and "template" in (b.get("spec") or {}),
    )
    with rig.api_down_on(how, stable_patch) as fault:
        rig.start(tiers=FAST_TIERS)
        fault.trigger.wait(timeout=120)
        down = time.time()
        time.sleep(seconds)
        fault.restore()
    back = time.time()
    resume_s = rig.first_write_after(back)
    rig.wait_end("Completed")
    rig.record(
        {
            "how": how,
            "outage_s": round(back - down, 1),
            "resume_s": round(resume_s, 2),
            "heal_to_completed_s": round(time.time() - back, 1),
        }
    )
    patches = [
        w
        for w in rig.cluster.read_audit_events(
            resource="deployments", namespace=rig.ns, name="checkout", subresource=""
        )
        if str(w.get("userAgent", "")).startswith("calyx-operator")
        and "template" in ((w.get("requestObject") or {}).get("spec") or {})
    ]
    assert len(patches) == 1, "the stable Deployment was patched more than once"
    rig.assert_safe()
    rig.assert_announced_once("Completed", promoted=2, no_data=None)


@pytest.mark.parametrize(("how", "seconds"), API_OUTAGES)
def test_api_gone_during_rollback(rig: FaultRig, how: str, seconds: int) -> None:
    """A breach at 25 % decides a rollback; the API goes away the moment that decision
    (RollingBack) is stored, before the revert: the revert finishes after the outage, once,
    and the breach streak is announced once."""
    decided = operator_write(
        "rollouts",
        rig.ns,
        subresource="status",
        name="r1",
        body=lambda b: ((b or {}).get("status") or {}).get("phase") == "RollingBack",
    )
    rig.start(tiers=HOLD_TIERS)
    wait_for("tier 25%", lambda: replicas_of(rig.kube, rig.ns, "checkout-canary") == 3, timeout=90)
    wait_soaking(rig, 25)
    with rig.api_down_on(how, decided) as fault:
        rig.sim.set_profile(rig.canary, error_ratio=0.2)
        fault.trigger.wait(timeout=60)
        down = time.time()
        time.sleep(seconds)
        fault.restore()
    back = time.time()
    st = rig.wait_end("RolledBack")
    rb = st["rollback"]
    rig.record(
        {
            "how": how,
            "outage_s": round(back - down, 1),
            "heal_to_verified_s": round(epoch(rb["verifiedAt"]) - back, 2),
            "revert_seconds": rb.get("revertSeconds"),
        }
    )
    assert rb["trigger"] == "Breach" and "errorRate" in rb["reason"]
    assert rig.kube.get_deployment(rig.ns, "checkout-canary") is None
    rig.assert_safe()
    rig.assert_announced_once("RolledBack", promoted=1, breaches=1, no_data=None)


# ------------------------------------------------------------------------------------------------
# the operator itself gone


def test_operator_down_30s_during_tier_soak(rig: FaultRig) -> None:
    """SIGKILL of the operator mid-soak, a new process 30 s later: it resumes from the cluster
    (the outage is a soak gap), completes, and announces each decision once."""
    rig.start(tiers=SOAK_TIERS)
    wait_soaking(rig, 5)
    rig.op.kill()
    down = time.time()
    time.sleep(30)
    rig.op.start()
    back = time.time()
    resume_s = rig.first_write_after(back)
    st = rig.wait_end("Completed")
    rig.record(
        {
            "how": "operator SIGKILL",
            "outage_s": round(back - down, 1),
            "start_to_first_write_s": round(resume_s, 2),
            "heal_to_completed_s": round(time.time() - back, 1),
        }
    )
    gaps = st["tiers"][0].get("analysisGaps") or []
    assert any(g["seconds"] >= (back - down) - 5 for g in gaps), gaps
    rig.assert_safe()
    rig.assert_announced_once("Completed", promoted=2, no_data=None)


# ------------------------------------------------------------------------------------------------
# logging while the API server is down


# Measured: 26,765 lines and 813 tracebacks before issue 12 (9c39847); 809-1,965 lines, nearly
# all urllib3 "Retrying" warnings, before those were silenced (f2cf87f); now within the bound.
def test_api_refused_90s_logs_one_line_per_state_change(rig: FaultRig) -> None:
    """The issue's probe: 25,269 log lines (768 tracebacks) in an 85 s outage. A failing loop
    logs one line per state change: a handful for the whole outage, not one per pass."""
    rig.start(tiers=SOAK_TIERS)
    wait_soaking(rig, 5)
    before = len(rig.log_lines())
    down, back = rig.outage("refuse", 90)
    during = rig.log_lines()[before:]
    resume_s = rig.first_write_after(back)
    rig.wait_end("Completed")
    tracebacks = sum("Traceback (most recent call last)" in line for line in during)
    rig.record(
        {
            "how": "refuse",
            "outage_s": round(back - down, 1),
            "resume_s": round(resume_s, 2),
            "log_lines": len(during),
            "tracebacks": tracebacks,
        }
    )
    # first: a safety failure or a lost announcement is never an expected failure
    rig.assert_safe()
    rig.assert_announced_once("Completed", promoted=2, no_data=None)
    if len(during) >= 200 or tracebacks > 2:
        raise TooChatty(
            f"{len(during)} log lines and {tracebacks} tracebacks in a {back - down:.0f} s "
            f"outage; first lines:\n" + "\n".join(during[:15])
        )


# ------------------------------------------------------------------------------------------------
# Prometheus hung and killed during a tier


# Measured: 20.1 s before issue 12; 18.4 s at 3bafefa; 17.4-18.3 s with the batch skipped while
# unanswered and the streak started at the batch's send (loaded 2-core machine), goal 15 s; and
# since the streak starts at the first request of any kind left unanswered and the deadline is
# an evaluation of its own, about rollbackAfterSeconds + 1 s (docs/performance.md).
def test_prometheus_hung_mid_tier_rolls_back_on_time(rig: FaultRig) -> None:
    """SIGSTOP: every query hangs. NoData from the first unanswered query; the revert once
    no data has lasted rollbackAfterSeconds, within one interval of that (docs/analysis.md)."""
    after, interval = 10, 5
    rig.start(
        tiers=[{"weight": 5, "soakSeconds": 600}, {"weight": 100}],
        analysis={"intervalSeconds": interval, "noData": {"rollbackAfterSeconds": after}},
    )
    wait_soaking(rig, 5)
    pid = prometheus_pid(rig.prom)
    pause(pid)
    hung = time.time()
    try:
        st = rig.wait_end("RolledBack", timeout=90)
    finally:
        resume(pid)
    rb = st["rollback"]
    hang_to_detect = epoch(rb["detectedAt"]) - hung
    hang_to_revert = epoch(rb["revertedAt"]) - hung
    rig.record(
        {
            "rollbackAfterSeconds": after,
            "intervalSeconds": interval,
            "hang_to_detect_s": round(hang_to_detect, 2),
            "hang_to_revert_s": round(hang_to_revert, 2),
            "revert_seconds": rb.get("revertSeconds"),
        }
    )
    assert rb["trigger"] == "NoData" or "no data" in rb["reason"].lower(), rb
    assert st["currentWeight"] == 5  # never advanced without data
    rig.assert_safe()
    rig.assert_announced_once("RolledBack", promoted=0, breaches=0, no_data=(hung, 1))
    # The goal is rollbackAfterSeconds + one interval at the 95th percentile (15 s here); one
    # run is judged with 2 s to spare for a loaded machine. The interval is as long as a
    # query's timeout used to be, where the waits that issue 12 removed (the no-data clock
    # started only after a first timeout, the revert waited for the deciding pass's queries)
    # each cost up to one interval.
    if hang_to_revert > after + interval + 2 or (rb.get("revertSeconds") or 0) > 1:
        raise TooSlow(
            f"hang to revert {hang_to_revert:.1f} s (goal {after + interval} s), "
            f"revertSeconds {rb.get('revertSeconds')}"
        )


def test_prometheus_killed_mid_tier_holds_then_completes(rig: FaultRig) -> None:
    """SIGKILL (connection refused at once): the tier holds without data and never advances;
    Prometheus restarted on the same port and data within rollbackAfterSeconds, the analysis
    passes again and the rollout completes."""
    rig.start(tiers=KILL_TIERS, analysis={"noData": {"rollbackAfterSeconds": 60}})
    wait_soaking(rig, 5)
    kill_prometheus(rig.prom)
    killed = time.time()
    try:
        rig.wait_verdict("NoData", timeout=20)
        nodata_s = time.time() - killed
        time.sleep(12)  # a whole soak: without data the tier must not advance
        st = rig.status()
        assert st["phase"] == "Progressing" and st["currentWeight"] == 5, st.get("message")
    finally:
        rig.prom.start()
    restarted = time.time()
    rig.wait_verdict("Pass", timeout=60)
    first_pass_s = time.time() - restarted
    rig.wait_end("Completed")
    rig.record(
        {
            "kill_to_nodata_s": round(nodata_s, 2),
            "restart_to_pass_s": round(first_pass_s, 2),
            "down_s": round(restarted - killed, 1),
        }
    )
    rig.assert_safe()
    rig.assert_announced_once("Completed", promoted=2, breaches=0, no_data=(killed, 1))


# ------------------------------------------------------------------------------------------------
# connection resets during status writes


def test_connection_reset_during_each_decision_write(rig: FaultRig) -> None:
    """Each status write that stores a decision (a phase or a tier change) is applied by the
    API server, and then every connection of the operator is reset before the answer reaches
    it (the proxy holds answers back 0.3 s; the reset is triggered from the audit log). The
    operator must treat the decision as stored -- no second write of it, no lost Event."""
    rig.proxy.delay(down=0.3)
    decision = operator_write(
        "rollouts",
        rig.ns,
        subresource="status",
        name="r1",
        body=lambda b: bool({"phase", "currentWeight"} & set((b or {}).get("status") or {})),
    )
    resets: list[tuple[int, float]] = []  # (connections reset, seconds after the write)

    def reset(ev: AuditEvent) -> None:
        n = rig.proxy.reset_all()
        resets.append((n, time.time() - epoch(ev["stageTimestamp"])))

    trigger = AuditTrigger(rig.cluster.audit_log, decision, reset, times=8)
    with trigger:
        rig.start(tiers=FAST_TIERS)
        rig.wait_end("Completed", timeout=180)
    phases = [
        ((ev.get("requestObject") or {}).get("status") or {}).get("phase") for ev in trigger.events
    ]
    lag = max(t for _, t in resets)
    rig.record(
        {
            "decision_writes_reset": len(trigger.events),
            "connections_reset": sum(n for n, _ in resets),
            "max_reset_lag_s": round(lag, 3),
        }
    )
    assert len(trigger.events) >= 4, phases  # Progressing, 25 %, 100 %, Completed at least
    assert all(n >= 1 for n, _ in resets), resets
    # The answer left the API server at about the write's stageTimestamp and the proxy holds it
    # 0.3 s: a reset sooner than that lands before the operator has read it.
    assert lag < 0.25, resets
    rig.assert_safe()
    rig.assert_announced_once("Completed", promoted=2, no_data=None)
