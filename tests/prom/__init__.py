"""A real Prometheus for tests (:mod:`tests.prom.server`) and its pytest fixtures (``plugin``)."""
