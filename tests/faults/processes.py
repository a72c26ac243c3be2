"""Pause, resume, kill and restart the local environment's server processes.

SIGSTOP freezes a process without closing anything: its sockets stay open, the kernel still
completes TCP handshakes into its listen backlog, and requests simply get no answer -- a hung
server. SIGKILL is a crash: connections are reset and new ones are refused until a restart.
Signals go to the whole process group (every component runs in its own).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any, Protocol


class _HasProc(Protocol):
    """calyx_dev.prometheus.PrometheusServer (its process is private there)."""

    _proc: Any


def component_pid(cluster: Any, name: str) -> int:
    """Pid (= process group) of a LocalCluster component: "kube-apiserver", "etcd", "kwok",
    "kube-controller-manager", "kube-scheduler"."""
    inner = getattr(cluster, "inner", cluster)  # the fixture wraps the LocalCluster
    procs = getattr(inner, "procs", None)
    if procs is None:
        raise RuntimeError(f"{inner!r} runs no local processes (external cluster?)")
    live = [p for p in procs if p.name == name and p.popen.poll() is None]
    if not live:
        raise LookupError(f"no running {name} in {[p.name for p in procs]}")
    return int(live[-1].popen.pid)


def prometheus_pid(server: _HasProc) -> int:
    proc = server._proc
    if proc is None or proc.poll() is not None:
        raise LookupError("prometheus is not running")
    return int(proc.pid)


def process_state(pid: int) -> str:
    """The kernel's one-letter state: R, S, D, T (stopped), Z, ... ("" if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def pause(pid: int, timeout: float = 5) -> None:
    """SIGSTOP the process group of ``pid`` and wait until the kernel reports it stopped."""
    os.killpg(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while process_state(pid) not in ("T", "t"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} not stopped (state {process_state(pid)!r})")
        time.sleep(0.01)


def resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGCONT)


@contextlib.contextmanager
def paused(pid: int) -> Iterator[int]:
    """``with paused(pid): ...`` -- resumed afterwards whatever happens inside."""
    pause(pid)
    try:
        yield pid
    finally:
        resume(pid)


def kill(pid: int, timeout: float = 10) -> None:
    """SIGKILL the process group and wait until the process is gone (or a zombie)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while process_state(pid) not in ("", "Z"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} survived SIGKILL")
        time.sleep(0.01)


def kill_prometheus(server: Any) -> None:
    """SIGKILL the Prometheus of a PrometheusServer (no clean TSDB shutdown); ``server.start()``
    brings it back on the same port and data directory."""
    pid = prometheus_pid(server)
    kill(pid)
    with contextlib.suppress(Exception):
        server._proc.wait(5)
    server._proc = None
