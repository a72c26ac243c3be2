# Calyx developer entry points. `make test` is the README's test command and what CI runs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test venv system-deps lint unit e2e demo clean helm manifests

## Everything CI checks: install, lint, type-check, layer contracts, every test.
test: venv system-deps cluster-binaries helm lint
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
	$(BIN)/ruff check operator calyx_dev tests bench tools
	$(BIN)/ruff format --check operator calyx_dev tests bench tools
	$(BIN)/mypy
	PYTHONPATH=. $(BIN)/lint-imports
	$(BIN)/python -m calyx.api.crdgen --check

## Pinned helm, built once from the Go module proxy (tools/helm.sh).
helm:
	bash tools/helm.sh >/dev/null

## Regenerate everything derived: crds/ from the models, the chart's CRD copies, install.yaml.
manifests: venv helm
	$(BIN)/python -m calyx.api.crdgen
	$(BIN)/python tools/render_manifests.py

unit: venv
	$(BIN)/python -m pytest tests/unit

demo: venv system-deps cluster-binaries
	$(BIN)/calyx demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# --- Local Kubernetes control plane for the e2e tests (tests/cluster/, docs/testing.md) ---------
KIND ?= kind
KIND_CLUSTER ?= calyx-e2e
KIND_KUBECONFIG ?= $(CURDIR)/.kind-$(KIND_CLUSTER).kubeconfig

.PHONY: cluster-binaries cluster-up e2e e2e-kind

## Build (or find cached) kube-apiserver, controller-manager, scheduler, kubectl, etcd, kwok.
cluster-binaries: venv
	$(BIN)/python -m calyx_dev.build

## Start a throw-away local cluster and keep it until Ctrl-C (prints KUBECONFIG).
cluster-up: venv cluster-binaries
	$(BIN)/python -m calyx_dev.controlplane --hold

## End-to-end tests against the local control plane (no Docker needed).
e2e: venv cluster-binaries
	$(BIN)/python -m pytest -m e2e

## The same end-to-end tests against a kind cluster (needs Docker and kind); deleted afterwards.
e2e-kind: venv
	$(KIND) create cluster --name $(KIND_CLUSTER) --kubeconfig $(KIND_KUBECONFIG) --wait 120s
	status=0; CALYX_TEST_CLUSTER=external KUBECONFIG=$(KIND_KUBECONFIG) \
	  $(BIN)/python -m pytest -m e2e || status=$$?; \
	$(KIND) delete cluster --name $(KIND_CLUSTER) --kubeconfig $(KIND_KUBECONFIG); \
	rm -f $(KIND_KUBECONFIG); exit $$status
