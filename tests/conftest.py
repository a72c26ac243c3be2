"""Shared pytest wiring: the local control plane (tests/cluster), real Prometheus with the
traffic simulator (tests/prom), and the Calyx operator, CRDs and trust store (tests/e2e)."""

pytest_plugins = ["tests.cluster.plugin", "tests.prom.plugin", "tests.e2e.plugin"]
