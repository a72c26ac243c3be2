"""Test fixtures shared across layers: the in-memory Kubernetes fake, fault hooks.

Never imported by ``calyx`` (an import-linter contract in pyproject.toml says so).
"""
