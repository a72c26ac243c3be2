"""Passes skipped when nothing is due, through the real reconciler on the fake API
(tests/support/fake_kube.py): a quiet soaking Rollout is not observed again until its soak ends
or something it reads changes (reconcile/quiet.py, domain/wake.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

import calyx.reconcile.rollout as rollout_mod
from calyx.domain.rollout_plan import AnalysisOutcome, stamp
from calyx.reconcile.rollout import reconcile_all_rollouts, reconcile_rollout
from tests.support.rollout_world import NS, World


def _counting_passes(w: World, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fake's revision as the change token (it moves on every write); one entry per pass
    that observes."""
    w.deps.changes = lambda _ns: w.fake.revision
    observed: list[int] = []
    real = rollout_mod.observe

    def counting(*args: Any, **kwargs: Any) -> Any:
        observed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rollout_mod, "observe", counting)
    return observed


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[World, list[int]]:
    """A Rollout soaking its 5 % tier for 60 s; the change token is the fake's revision (it
    moves on every write), and every pass that observes is counted."""
    w = World(tiers=[{"weight": 5, "soakSeconds": 60}, {"weight": 100}])
    observed = _counting_passes(w, monkeypatch)
    w.run()
    assert w.phase == "Progressing" and w.canary_replicas() == 1  # 5 % of 20
    assert w.rollout["status"]["tiers"][0].get("soakStartedAt")
    return w, observed


def test_a_quiet_rollout_is_skipped_until_its_soak_ends(world: tuple[World, list[int]]) -> None:
    w, observed = world
    reconcile_rollout(w.deps, NS, "r1", tick=True, lazy=True)  # nothing to do: quiet now
    before = len(observed)
    for _ in range(5):
        w.advance(5)
        reconcile_all_rollouts(w.deps)
    assert len(observed) == before  # 25 s into a 60 s soak: nothing due, nothing observed
    w.advance(10)
    reconcile_all_rollouts(w.deps)
    assert len(observed) == before + 1  # the 30 s bound on quiet: one pass, still nothing to do
    w.advance(20)
    reconcile_all_rollouts(w.deps)
    assert len(observed) == before + 1
    w.advance(6)
    reconcile_all_rollouts(w.deps)
    assert w.rollout["status"]["currentWeight"] == 100  # the soak's end was acted on


def test_a_change_it_reads_runs_the_pass(world: tuple[World, list[int]]) -> None:
    w, observed = world
    reconcile_rollout(w.deps, NS, "r1", tick=True, lazy=True)
    before = len(observed)
    w.fake.patch_custom("rollouts", NS, "r1", {"spec": {"paused": True}})
    reconcile_all_rollouts(w.deps)
    assert len(observed) > before
    assert w.phase == "Paused"


def test_without_a_change_token_nothing_is_skipped(world: tuple[World, list[int]]) -> None:
    w, observed = world
    w.deps.changes = None
    reconcile_rollout(w.deps, NS, "r1", tick=True, lazy=True)
    before = len(observed)
    reconcile_all_rollouts(w.deps)
    assert len(observed) == before + 1


def test_lease_expiry_is_not_skipped(world: tuple[World, list[int]]) -> None:
    w, _ = world
    reconcile_rollout(w.deps, NS, "r1", tick=True, lazy=True)
    expires = w.lease["spec"]["expiresAt"]
    w.now = dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) + dt.timedelta(seconds=1)
    reconcile_all_rollouts(w.deps)
    assert w.phase in ("RollingBack", "RolledBack")


class _HeldPool:
    """A pool whose passes never run: what a sweep queues is what stays queued."""

    def __init__(self) -> None:
        self.queued: list[Any] = []

    def submit(self, fn: Any, *args: Any) -> Any:
        from concurrent.futures import Future

        self.queued.append({"namespace": args[1], "name": args[2]})
        return Future()


def test_a_sweep_behind_schedule_queues_the_longest_unevaluated_first() -> None:
    """1,000 Rollouts on a saturated operator: every one is due, the batch asked for all of
    them each tick and each pass ran seconds later, too late to use it. Now a sweep queues at
    most ``max_queued`` passes, the longest unevaluated first, and batches only those."""
    w = World(tiers=[{"weight": 5, "soakSeconds": 60}, {"weight": 100}])
    bodies = [
        {
            "metadata": {"namespace": NS, "name": f"r{i}", "uid": f"u{i}"},
            "status": {
                "phase": "Progressing",
                "lastAnalysis": {"time": f"2026-11-25T10:00:{59 - i:02d}.000Z"},
            },
        }
        for i in range(10)
    ]
    prepared: list[set[str]] = []

    class Kube:
        def list_custom(self, _plural: str) -> list[dict[str, Any]]:
            return bodies

    class Analysis:
        def prepare(self, _bodies: Any, _now: Any, only: set[str]) -> None:
            prepared.append(only)

    deps = dataclasses.replace(w.deps, kube=Kube(), analyze=Analysis(), changes=None)
    pool = _HeldPool()
    reconcile_all_rollouts(deps, pool=pool, max_queued=4)
    assert [m["name"] for m in pool.queued] == ["r9", "r8", "r7", "r6"]
    assert prepared[-1] == {f"{NS}/r{i}" for i in (9, 8, 7, 6)}
    reconcile_all_rollouts(deps, pool=pool, max_queued=4)
    assert len(pool.queued) == 4, "still queued: nothing more until they end"
    for m in pool.queued:
        deps.quiet.end(f"{NS}/{m['name']}")
    reconcile_all_rollouts(deps, pool=pool, max_queued=4)
    assert [m["name"] for m in pool.queued[4:]] == ["r9", "r8", "r7", "r6"], (
        "their status was not updated by the held passes, so they are still the oldest"
    )


ANALYSED = {"analysis": {"intervalSeconds": 10, "errorRate": {"maxPermille": 10}}}


@pytest.fixture
def evaluating(monkeypatch: pytest.MonkeyPatch) -> tuple[World, list[int]]:
    """A Rollout soaking with analysis every 10 s, its passes counted; the change token is
    the fake's revision, and a status write is "the one change" when it moved it by one."""
    w = World(tiers=[{"weight": 5, "soakSeconds": 60}, {"weight": 100}], spec=ANALYSED)
    observed = _counting_passes(w, monkeypatch)
    w.deps.after_own_write = lambda before, _written: (
        w.fake.revision if w.fake.revision == before + 1 else None  # type: ignore[operator]
    )
    w.run()
    assert w.phase == "Progressing"
    return w, observed


def _evaluate(w: World) -> None:
    """A timer pass whose evaluation passes: it writes only status.lastAnalysis."""
    w.advance(10)
    w.analysis = AnalysisOutcome(
        status={"time": stamp(w.now), "verdict": "Pass"}, action="none", message=""
    )
    revision = w.fake.revision
    reconcile_rollout(w.deps, NS, "r1", tick=True, lazy=True)
    assert w.fake.revision == revision + 1, "one status write"
    assert w.rollout["status"]["lastAnalysis"]["time"] == stamp(w.now)


def test_the_echo_of_an_evaluations_status_write_runs_no_pass(
    evaluating: tuple[World, list[int]],
) -> None:
    """Profile at 1,000 Rollouts: 18 % of the operator's samples were the pass each status
    write's echo ran, observing everything again to find nothing to do."""
    w, observed = evaluating
    _evaluate(w)
    before = len(observed)
    reconcile_rollout(w.deps, NS, "r1", lazy=True)  # the watch event of our own write
    assert len(observed) == before
    w.advance(9)
    reconcile_all_rollouts(w.deps)
    assert len(observed) == before, "the next evaluation is not due yet"
    w.advance(1)
    reconcile_all_rollouts(w.deps)
    assert len(observed) == before + 1


def test_without_after_own_write_the_echo_runs_a_pass(
    evaluating: tuple[World, list[int]],
) -> None:
    w, observed = evaluating
    w.deps.after_own_write = None
    _evaluate(w)
    before = len(observed)
    reconcile_rollout(w.deps, NS, "r1", lazy=True)
    assert len(observed) == before + 1


def test_a_change_that_came_back_with_the_write_runs_the_pass(
    evaluating: tuple[World, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user pauses the Rollout between the pass's reads and its status write, and the token
    (wrongly) shows one change: the written object shows the spec moved, so nothing is carried
    over and the echo's pass sees the pause."""
    w, observed = evaluating
    w.deps.after_own_write = lambda _before, _written: w.fake.revision
    real = w.fake.patch_custom_status

    def user_first(*args: Any, **kwargs: Any) -> Any:
        w.fake.patch_custom("rollouts", NS, "r1", {"spec": {"paused": True}})
        monkeypatch.setattr(w.fake, "patch_custom_status", real)
        return real(*args, **kwargs)

    monkeypatch.setattr(w.fake, "patch_custom_status", user_first)
    w.advance(10)
    w.analysis = AnalysisOutcome(
        status={"time": stamp(w.now), "verdict": "Pass"}, action="none", message=""
    )
    reconcile_rollout(w.deps, NS, "r1", tick=True, lazy=True)
    before = len(observed)
    reconcile_rollout(w.deps, NS, "r1", lazy=True)
    assert len(observed) > before
    assert w.phase == "Paused"


BEFORE: dict[str, Any] = {
    "metadata": {"name": "r1", "resourceVersion": "5", "generation": 2, "annotations": {}},
    "spec": {"paused": False},
    "status": {"phase": "Progressing", "lastAnalysis": {"time": "a"}, "snapshot": {"sha": 1}},
}


@pytest.mark.parametrize(
    ("change", "carried"),
    [
        ({"metadata": {"resourceVersion": "6", "managedFields": [{}]}}, True),
        ({"status": {"lastAnalysis": {"time": "b"}, "message": "m"}}, True),
        ({"spec": {"paused": True}}, False),
        ({"metadata": {"annotations": {"calyx.io/force-rollback": "x"}}}, False),
        ({"metadata": {"deletionTimestamp": "t"}}, False),
        ({"status": {"phase": "Paused"}}, False),
        ({"status": {"snapshot": {"sha": 2}}}, False),
        ({"status": {"risk": {"level": "high"}}}, False),
        ({"kind": {"other": 1}}, False),
    ],
)
def test_an_observation_carries_over_only_a_status_write_it_does_not_read(
    change: dict[str, Any], carried: bool
) -> None:
    written = {**BEFORE, **{k: {**BEFORE.get(k, {}), **v} for k, v in change.items()}}
    observed = rollout_mod.Observed(rollout=BEFORE, now=dt.datetime(2026, 11, 30))
    out = rollout_mod._carried_over(observed, written)
    assert (out is not None) == carried
    if out is not None:
        assert out.rollout is written and out.analysis is None


def test_watch_events_queue_one_pass_per_rollout_and_one_more_after_a_running_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kopf's handler hands the pass over (rollout_mod.request_pass): events while a pass is
    queued add nothing (it reads them anyway); an event after it started, which it may have
    read too early, gets exactly one more pass."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    w = World()
    started, release = threading.Event(), threading.Event()
    passes: list[bool] = []

    def blocking(_deps: Any, _ns: str, _name: str, tick: bool = False, lazy: bool = False) -> None:
        passes.append(tick)
        started.set()
        assert release.wait(5)

    monkeypatch.setattr(rollout_mod, "reconcile_rollout", blocking)
    with ThreadPoolExecutor(max_workers=1) as pool:
        hold = threading.Event()
        pool.submit(hold.wait, 5)  # the pool is busy: the next pass stays queued
        for _ in range(5):
            rollout_mod.request_pass(w.deps, pool, NS, "r1")
        hold.set()
        assert started.wait(5)
        assert len(passes) == 1, "five events while queued: one pass"
        started.clear()
        rollout_mod.request_pass(w.deps, pool, NS, "r1")  # after it started
        rollout_mod.request_pass(w.deps, pool, NS, "r1")
        release.set()
        assert started.wait(5)
    assert len(passes) == 2 and passes == [False, False]
    assert w.deps.quiet.running() == 0


def test_an_event_during_a_sweeps_pass_gets_a_pass_after_it() -> None:
    from calyx.reconcile.quiet import QuietBook

    book = QuietBook()
    assert book.begin("ns/r")  # the sweep's pass, queued
    assert not book.request("ns/r")  # an event: the queued pass will read it
    book.start("ns/r")
    assert not book.request("ns/r") and book.is_running("ns/r")
    assert book.end("ns/r"), "an event came in while it ran: one more"
    assert not book.begin("ns/r"), "still claimed for that one"
    book.start("ns/r")
    assert not book.end("ns/r") and not book.is_running("ns/r")
    assert book.request("ns/r")
    book.drop("ns/r")
    assert book.running() == 0
