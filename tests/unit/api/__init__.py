"""Unit tests: API models and the generated CRDs."""
