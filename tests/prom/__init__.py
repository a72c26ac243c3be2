"""A real Prometheus for tests (:mod:`calyx.devenv.prometheus`) and its pytest fixtures."""
