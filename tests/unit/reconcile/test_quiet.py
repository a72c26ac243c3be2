"""Passes skipped when nothing is due, through the real reconciler on the fake API
(tests/support/fake_kube.py): a quiet soaking Rollout is not observed again until its soak ends
or something it reads changes (reconcile/quiet.py, domain/wake.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import calyx.reconcile.rollout as rollout_mod
from calyx.reconcile.rollout import reconcile_all_rollouts, reconcile_rollout
from tests.support.rollout_world import NS, World


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[World, list[int]]:
    """A Rollout soaking its 5 % tier for 60 s; the change token is the fake's revision (it
    moves on every write), and every pass that observes is counted."""
    w = World(tiers=[{"weight": 5, "soakSeconds": 60}, {"weight": 100}])
    w.deps.changes = lambda _ns: w.fake.revision
    observed: list[int] = []
    real = rollout_mod.observe

    def counting(*args: Any, **kwargs: Any) -> Any:
        observed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rollout_mod, "observe", counting)
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
