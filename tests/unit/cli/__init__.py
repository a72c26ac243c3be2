"""Unit tests: the CLI."""
