"""pytest fixtures: a real Prometheus scraping the traffic simulator (no Kubernetes needed).

Register with ``pytest_plugins = ["tests.prom.plugin"]`` (tests/conftest.py).

* ``traffic_sim`` (session): a started :class:`tests.sim.TrafficSim` on a free loopback port.
* ``prometheus`` (session): a :class:`calyx_dev.prometheus.PrometheusServer` scraping it every
  second (``honor_labels: true``), ready when yielded; ``.url``, ``.stop()``, ``.start()``
  (same port and data dir), ``.wait_for(promql, predicate)``. Stopped and deleted at the end.
* ``sim_namespace`` (function): a fresh namespace name; tests share one Prometheus and one
  simulator, so each puts its pods in its own namespace instead of resetting shared state.
  Its pods are removed from the simulator afterwards.
* Marker ``prometheus``: tests that need the binary. They are skipped, with the reason, only when
  the ``prometheus`` binary is missing -- unless ``CALYX_REQUIRE_PROMETHEUS=1`` (set it in CI),
  which turns the skip into a failure so a broken install cannot pass silently.

Environment: ``CALYX_PROMETHEUS`` (binary path), ``CALYX_TEST_KEEP=1`` (keep the data dir/log).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from calyx_dev.prometheus import PrometheusServer, prometheus_binary
from calyx_dev.trafficsim import TrafficSim

MISSING = (
    "the 'prometheus' binary is not installed (apt-get install prometheus, or "
    ".ci/system-deps.sh; CALYX_PROMETHEUS=/path/to/prometheus)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "prometheus: needs a real Prometheus binary (tests/prom)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if prometheus_binary() is not None or os.environ.get("CALYX_REQUIRE_PROMETHEUS") == "1":
        return
    skip = pytest.mark.skip(reason=MISSING)
    for item in items:
        if "prometheus" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def traffic_sim() -> Iterator[TrafficSim]:
    sim = TrafficSim().start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def prometheus(traffic_sim: TrafficSim) -> Iterator[PrometheusServer]:
    if prometheus_binary() is None:
        if os.environ.get("CALYX_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    server = PrometheusServer([traffic_sim.address])
    try:
        server.start()
        # The first scrape has happened once the simulator's target is up.
        server.wait_for('up{job="traffic-sim"} == 1', timeout=30)
        yield server
    finally:
        server.close()


@pytest.fixture
def sim_namespace(traffic_sim: TrafficSim) -> Iterator[str]:
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    yield namespace
    traffic_sim.remove_pods(
        [p.name for p in traffic_sim.pods() if p.namespace == namespace], namespace
    )
