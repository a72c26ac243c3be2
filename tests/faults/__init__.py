"""Fault-injection rig for the end-to-end tests (docs/testing.md, "Fault injection")."""
