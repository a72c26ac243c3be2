"""Calyx: a Kubernetes operator for two-key canary deployments.

Layers (docs/architecture.md), dependencies pointing one way:
``api`` ← ``domain`` ← ``adapters`` ← ``reconcile`` ← ``handlers`` / ``cli``.
"""

__version__ = "0.1.0"
