"""The operator as a real, killable process: ``kopf run`` exactly as the image runs it.

It runs in its own process group, so a test (or ``calyx demo`` on exit) can SIGKILL it at any
instant and start a new one: that is what "crash-safe" is tested against.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

from calyx_dev.controlplane import die_with_parent

OPERATOR_NS = "calyx-system"
# The end-to-end tests' fault points (tests/support/faults.py): loaded next to the operator only
# when a test asks for one, from the source checkout this file lives in (docs/testing.md).
FAULT_ENV = "CALYX_FAULT_EXIT_AFTER"
FAULT_MODULE = "tests.support.faults"
MEMCENSUS_ENV = "CALYX_DEV_MEMCENSUS"  # a file: a memory census is written there on SIGUSR2
MEMCENSUS_MODULE = "calyx_dev.memcensus"
CHECKOUT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """``kopf run`` against the test cluster; killable with SIGKILL at any instant.

    ``identity`` is its name in the leader Lease (``POD_NAME``, as the chart sets it). It stays
    the same across :meth:`restart`, like a container restarted in place keeps its pod's name,
    so a restarted operator takes its own Lease back at once; two instances (a leader and a
    standby) get different ones.
    """

    def __init__(
        self,
        kubeconfig: str,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        identity: str | None = None,
    ):
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.extra_env = dict(env or {})
        self.identity = identity or f"calyx-operator-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = free_port()

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self._log_prefix}-{self.starts}.log"

    @property
    def _log_prefix(self) -> str:
        return f"operator-{self.identity}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        self.starts += 1
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "CALYX_NAMESPACE": OPERATOR_NS,
            "CALYX_LEASE_RECHECK_SECONDS": "1",
            "CALYX_ROLLOUT_TICK_SECONDS": "0.5",
            "CALYX_METRICS_PORT": str(self.metrics_port),
            "MALLOC_ARENA_MAX": "2",  # as in the image (Dockerfile)
            "POD_NAME": self.identity,
            **self.extra_env,
        }
        modules = ["-m", "calyx.handlers.operator"]
        dev_modules = ((FAULT_ENV, FAULT_MODULE), (MEMCENSUS_ENV, MEMCENSUS_MODULE))
        extra = [module for var, module in dev_modules if env.get(var)]
        for module in extra:
            modules += ["-m", module]
        if extra:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(CHECKOUT), env.get("PYTHONPATH")) if p
            )
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", *modules],
            env=env,
            stdout=log,
            preexec_fn=die_with_parent,  # even if we are SIGKILLed
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup handlers, like a node dying."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in sorted(self.log_dir.glob(f"{self._log_prefix}-*.log"))
        )
