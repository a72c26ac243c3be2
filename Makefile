# Calyx developer entry points. `make test` is the README's test command and what CI runs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test venv system-deps lint unit e2e demo clean

## Everything CI checks: install, lint, type-check, layer contracts, every test.
test: venv system-deps cluster-binaries lint
	$(BIN)/python -m pytest

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

## Debian packages the tests use (real Prometheus, openssl for cluster certs).
system-deps:
	bash .ci/system-deps.sh

lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m calyx.api.crdgen --check

unit: venv
	$(BIN)/python -m pytest tests/unit

demo: venv system-deps cluster-binaries
	$(BIN)/calyx demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
