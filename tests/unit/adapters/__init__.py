"""Unit tests: adapters, with fakes or local servers."""
