"""A real Prometheus for tests (:mod:`calyx_dev.prometheus`) and its pytest fixtures."""
