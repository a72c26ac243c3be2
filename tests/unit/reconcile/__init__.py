"""Unit tests: the real reconcilers on the in-memory API (tests/support/fake_kube.py)."""
