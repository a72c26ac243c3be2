"""Shared pytest wiring: the local control-plane fixtures live in tests/cluster/plugin.py."""

pytest_plugins = ["tests.cluster.plugin"]
