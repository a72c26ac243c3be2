"""A real Prometheus process for tests: loopback only, temp data dir, 1 s scrapes.

The Debian ``prometheus`` package (installed by ``.ci/system-deps.sh``) provides the binary; it is
never run as a system service here. One :class:`PrometheusServer` owns one process: ``stop()`` and
``start()`` keep the port and the data directory, which is what the "Prometheus stopped mid-tier"
scenario needs (queries fail meanwhile; after the restart old samples are still there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from calyx_dev.controlplane import die_with_parent

__all__ = ["PrometheusServer", "free_port", "prometheus_binary"]


def prometheus_binary() -> str | None:
    """Path of the ``prometheus`` binary (``$CALYX_PROMETHEUS`` overrides), or None."""
    return os.environ.get("CALYX_PROMETHEUS") or shutil.which("prometheus")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """Prometheus scraping ``targets`` (``host:port``) every ``scrape_interval``."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        workdir: Path | None = None,
        port: int | None = None,
        scrape_interval: str = "1s",
        binary: str | None = None,
    ) -> None:
        binary = binary or prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus binary not found (apt-get install prometheus)")
        self.binary = binary
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="calyx-prom-"))
        self.data_dir = self.workdir / "data"
        self.config_file = self.workdir / "prometheus.yml"
        self.log_file = self.workdir / "prometheus.log"
        self.port = port or free_port()
        self.scrape_interval = scrape_interval
        self.targets = list(targets)
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        # JSON is YAML: no YAML dependency needed.
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "traffic-sim",
                    # The simulator speaks for many pods; keep its namespace/pod labels.
                    "honor_labels": True,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        self.config_file.write_text(json.dumps(config, indent=2))

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        """Start (or restart) on the same port and data dir; return once ``/-/ready``."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        try:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=2h",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdout=log,
                preexec_fn=die_with_parent,  # even if we are SIGKILLed
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C on pytest does not hit it mid-teardown
            )
        finally:
            log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (clean TSDB shutdown), SIGKILL if it hangs; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def close(self) -> None:
        """Stop and delete the work dir (if we created it)."""
        self.stop()
        if self._own_workdir and not os.environ.get("CALYX_TEST_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---- small query helpers for tests (the operator uses calyx.adapters.prometheus) --------

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            return json.loads(resp.read())["data"]

    def instant(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("/api/v1/query", query=promql)["result"]
        return result

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll ``promql`` until ``predicate(result)``; e.g. wait for the first scrapes."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                result = self.instant(promql)
                if predicate(result):
                    return result
            except (urllib.error.URLError, OSError, KeyError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{promql!r} did not satisfy the condition in {timeout}s: {result}")

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
