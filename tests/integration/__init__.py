"""Tests against real Prometheus and the traffic simulator, without Kubernetes."""
