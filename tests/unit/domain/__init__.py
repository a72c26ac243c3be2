"""Unit tests: the pure domain layer, table-style."""
