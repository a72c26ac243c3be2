"""Unit tests: test and benchmark tooling, chart scripts."""
