"""Leader election on a ``coordination.k8s.io/v1`` Lease, and the fence every write asks.

Two operator replicas run side by side; the one holding the Lease ``calyx-operator`` in the
operator namespace reconciles and writes, the other waits (docs/operations.md, "High
availability"). The rules are those of client-go's ``leaderelection`` package, which the
built-in controllers use, so ``kubectl get lease`` reads the same way for Calyx:

* A standby judges expiry by its **own** monotonic clock: the Lease has expired once the standby
  has seen no change to it for ``leaseDurationSeconds``. ``renewTime`` and ``acquireTime`` are
  written for people and tools, never compared with the local wall clock, so clock skew between
  nodes cannot cut a leader's term short.
* Every write of the Lease is a compare-and-swap on ``metadata.resourceVersion``: of two
  standbys taking over at once, the API server accepts one and the other sees a conflict.
* The leader's proof is its last successful renewal, timed from just *before* that request was
  sent (the earliest moment a standby can have seen it). The fence (:meth:`LeaderElector.holds`)
  closes ``renew_deadline`` after it, which is ``lease - renew_deadline`` (5 s by default)
  before any standby may take over; that margin absorbs clock-rate differences and writes
  already on the wire. client-go leaves fencing to the caller; here every write of the
  operator asks the fence first (``calyx.adapters.kube.Kube``).
* A graceful stop (SIGTERM: node drain, rolling update) gives the Lease up — empty holder and a
  1 s duration, like client-go's ``ReleaseOnCancel`` — so the standby takes over within one
  retry period instead of a whole lease duration.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.rest import ApiException

from calyx.adapters.kube import Kube, error_message
from calyx.domain.timefmt import format_micro_time as micro_time

log = logging.getLogger("calyx.leader")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class LeaseRecord:
    """The election state kept in a Lease's spec."""

    holder: str | None
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LeaseRecord:
        return cls(
            holder=spec.get("holderIdentity") or None,
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        """The spec as a merge patch: every field named, None (null) removes it."""
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


@dataclass(frozen=True)
class Observation:
    """What one read of the Lease returned: its record (None: no Lease yet) and version."""

    record: LeaseRecord | None
    resource_version: str | None


class LeaderElector:
    """Acquires and renews the leader Lease from a thread; answers :meth:`holds` for the fence.

    ``kube`` must be a Kube of its own, without a fence and on its own connection pool: the
    renewal is how the leader proves it leads, and it must not queue behind a sweep's requests.
    ``monotonic`` and ``wallclock`` are injectable so tests can move time by hand.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_seconds: float,
        renew_deadline_seconds: float,
        retry_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], dt.datetime] = _utcnow,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not 0 < retry_seconds < renew_deadline_seconds < lease_seconds:
            raise ValueError("need 0 < retry < renew deadline < lease duration")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline_seconds
        self.retry = retry_seconds
        # A renewal that hangs must not hold the loop past the point where it could still help.
        self.request_timeout = renew_deadline_seconds / 2
        self._mono = monotonic
        self._wall = wallclock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._leading = False
        self._renewed_at: float | None = None  # monotonic, sent-time of the last good write
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # monotonic, when ``_observed`` last changed
        self._published: bool | None = None
        self._publish_lock = threading.Lock()
        self._failing: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def __repr__(self) -> str:
        return f"<LeaderElector {self.namespace}/{self.name} as {self.identity}>"

    # --- the fence ----------------------------------------------------------------------------
    def holds(self, now: float | None = None) -> bool:
        """True while this replica may write: it holds the Lease and its last successful
        renewal was sent less than ``renew_deadline`` ago (``now`` is ``time.monotonic()``)."""
        now = self._mono() if now is None else now
        with self._lock:
            return (
                self._leading
                and self._renewed_at is not None
                and now - self._renewed_at < self.renew_deadline
            )

    def explain(self, now: float | None = None) -> str:
        """Why :meth:`holds` is false, in words an SRE can act on."""
        now = self._mono() if now is None else now
        where = f"Lease {self.namespace}/{self.name}"
        with self._lock:
            if not self._leading or self._renewed_at is None:
                holder = (self._observed.holder if self._observed else None) or "nobody"
                return f"{self.identity} is not the leader ({where} is held by {holder})"
            age = now - self._renewed_at
        return (
            f"{self.identity} last renewed {where} {age:.1f}s ago, longer than the "
            f"{self.renew_deadline:g}s it may write without proof of leadership"
        )

    @property
    def leader(self) -> str | None:
        """The holder this replica last saw in the Lease (None: free or not read yet)."""
        with self._lock:
            return self._observed.holder if self._observed else None

    # --- one election step --------------------------------------------------------------------
    def observe(self) -> Observation:
        """Read the Lease; note the moment its record last changed (a standby's expiry clock)."""
        try:
            resp = self.kube.coordination.read_namespaced_lease(
                self.name,
                self.namespace,
                _preload_content=False,
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return Observation(None, None)
            raise
        # Raw JSON, not the client's model: the MicroTime strings stay exactly as stored.
        obj = json.loads(resp.data)
        record = LeaseRecord.from_spec(obj.get("spec") or {})
        now = self._mono()
        with self._lock:
            if record != self._observed:
                if self._observed is None or record.holder != self._observed.holder:
                    log.info(
                        "leader Lease %s/%s is held by %s",
                        self.namespace,
                        self.name,
                        record.holder or "nobody",
                    )
                self._observed = record
                self._observed_at = now
        return Observation(record, obj["metadata"]["resourceVersion"])

    def claim(self, seen: Observation) -> bool:
        """Acquire or renew on what :meth:`observe` returned: write the Lease only if it is
        absent, free, ours, or unchanged for its whole duration by our clock. True when this
        replica leads after the call."""
        if seen.record is None:
            self._create_empty()
            seen = self.observe()
        rec = seen.record
        if rec is None:  # deleted again at once: try on the next step
            return False
        if rec.holder and rec.holder != self.identity:
            with self._lock:
                expires = self._observed_at + (rec.duration_seconds or self.lease_seconds)
            if self._mono() < expires:
                self._set_leading(False)
                return False
        wall = micro_time(self._wall())
        mine = rec.holder == self.identity
        never_held = rec.holder is None and rec.acquire_time is None
        new = LeaseRecord(
            holder=self.identity,
            duration_seconds=math.ceil(self.lease_seconds),
            acquire_time=rec.acquire_time if mine and rec.acquire_time else wall,
            renew_time=wall,
            transitions=rec.transitions + (0 if mine or never_held else 1),
        )
        sent = self._mono()
        try:
            self._write(new, seen.resource_version)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote it since we read it: not ours
                self._set_leading(False)
                return False
            raise
        with self._lock:
            self._observed = new
            self._observed_at = sent
            self._renewed_at = sent
        if not mine:
            log.info(
                "acquired the leader Lease %s/%s as %s (transitions: %d)",
                self.namespace,
                self.name,
                self.identity,
                new.transitions,
            )
        self._set_leading(True)
        return True

    def step(self) -> bool:
        """One acquire-or-renew attempt; errors are logged once per change, never raised."""
        try:
            result = self.claim(self.observe())
        except Exception as exc:
            msg = error_message(exc)
            if msg != self._failing:
                log.warning(
                    "leader election: Lease %s/%s unreachable: %s (fence closes %gs after the "
                    "last renewal)",
                    self.namespace,
                    self.name,
                    msg,
                    self.renew_deadline,
                )
            self._failing = msg
            result = False
        else:
            if self._failing is not None:
                log.info("leader election: Lease %s/%s reachable again", self.namespace, self.name)
            self._failing = None
        self._publish()
        return result

    def next_wait(self, now: float | None = None) -> float:
        """Seconds until the next step: the retry period, but a standby wakes right when the
        holder's term runs out by its clock, so takeover does not wait for the next poll."""
        now = self._mono() if now is None else now
        with self._lock:
            rec = self._observed
            if self._leading or rec is None or not rec.holder or rec.holder == self.identity:
                return self.retry
            remaining = self._observed_at + (rec.duration_seconds or self.lease_seconds) - now
        return min(self.retry, max(remaining, 0.0) + 0.05)

    def release(self) -> bool:
        """Give the Lease up (graceful stop): the fence closes first, then the Lease gets an
        empty holder so a standby takes over on its next look. Only if it is still ours."""
        with self._lock:
            was_leading = self._leading
            self._leading = False
        self._publish()
        if not was_leading:
            return False
        try:
            seen = self.observe()
            rec = seen.record
            if rec is None or rec.holder != self.identity:
                return False
            wall = micro_time(self._wall())
            self._write(
                replace(rec, holder=None, duration_seconds=1, acquire_time=wall, renew_time=wall),
                seen.resource_version,
            )
        except Exception as exc:  # the standby then waits for the lease duration instead
            log.warning("could not release the leader Lease: %s", error_message(exc))
            return False
        log.info("released the leader Lease %s/%s", self.namespace, self.name)
        return True

    # --- the thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop renewing; with ``release``, give the Lease up for the standby."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.request_timeout * 2 + 1)
        if release:
            self.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            if self._stop.wait(self.next_wait()):
                return

    # --- internals ----------------------------------------------------------------------------
    def _create_empty(self) -> None:
        """Create the Lease with an empty spec; the claim that follows is a CAS like any other.

        The client turns a create body into its model classes and writes datetimes back with
        ``isoformat()``, which drops the fraction when it is zero — a MicroTime the API server
        rejects. Patch bodies go out as given, so every timestamp is written by a patch."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {},
        }
        try:
            self.kube.coordination.create_namespaced_lease(
                self.namespace, body, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status != 409:  # another replica created it first: fine
                raise

    def _write(self, record: LeaseRecord, resource_version: str | None) -> None:
        """Merge-patch the record, only if the Lease is still at ``resource_version`` (the API
        server answers 409 Conflict otherwise)."""
        patch = {
            "metadata": {"resourceVersion": resource_version},
            "spec": record.to_spec(),
        }
        self.kube.coordination.patch_namespaced_lease(
            self.name,
            self.namespace,
            patch,
            _content_type="application/merge-patch+json",
            _request_timeout=self.request_timeout,
        )

    def _set_leading(self, leading: bool) -> None:
        with self._lock:
            was = self._leading
            self._leading = leading
        if was and not leading:
            log.warning(
                "lost the leader Lease %s/%s (now held by %s): writes stop",
                self.namespace,
                self.name,
                self.leader or "nobody",
            )
        self._publish()

    def _publish(self) -> None:
        """Tell ``on_change`` when :meth:`holds` flips, also when only time closed the fence."""
        with self._publish_lock:
            now_holds = self.holds()
            if now_holds == self._published:
                return
            if self._published and not now_holds and self._leading:
                log.warning("fence closed: %s", self.explain())
            self._published = now_holds
            if self._on_change is not None:
                self._on_change(now_holds)
