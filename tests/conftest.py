"""Shared pytest wiring: the local control plane (tests/cluster) and real Prometheus with the
traffic simulator (tests/prom)."""

pytest_plugins = ["tests.cluster.plugin", "tests.prom.plugin"]
