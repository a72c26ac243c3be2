# syntax=docker/dockerfile:1
# Calyx operator image: `docker build -t calyx:dev .`
#
# Two stages: the builder turns the source tree into a wheel and installs it, with its
# dependencies, into a virtualenv at /opt/calyx; the runtime stage copies only that venv onto a
# fresh slim Python. The image runs as uid 65532 and never writes to its own filesystem
# (bytecode is compiled at build time, PYTHONDONTWRITEBYTECODE stops any later writes), so it
# runs with readOnlyRootFilesystem; HOME and TMPDIR point at /tmp, an emptyDir in the chart.
# tests/packaging/test_image_entry.py runs this ENTRYPOINT against a real API server.
#
# PYTHON_IMAGE is the base of both stages: any Debian-style image with Python 3.11 on PATH as
# `python3` and the venv module. Without Docker, tools/image.py builds this file with buildah and
# --build-arg PYTHON_IMAGE=<a Debian bookworm + python3 root filesystem made by mmdebstrap>;
# tests/packaging/test_image_build.py runs the result (docs/install.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# README.m[d]: copied when present (pyproject's readme); the glob keeps the build working without it.
COPY pyproject.toml README.m[d] ./
COPY operator/ operator/
# After installing: no pip/setuptools at run time, and no kubernetes.aio (a 68 MB asyncio copy of
# the client that neither Calyx nor Kopf imports). tests/packaging replays these two lines.
RUN python3 -m venv /opt/calyx \
 && /opt/calyx/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/calyx/bin/pip install /wheels/calyx-*.whl \
 && /opt/calyx/bin/pip uninstall -y pip setuptools \
 && rm -rf /opt/calyx/lib/python3.11/site-packages/kubernetes/aio

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="calyx" \
      org.opencontainers.image.description="Kubernetes operator for two-key signed canary deployments" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/calyx /opt/calyx
# USER: the uid has no passwd entry (any runAsUser works), and Kopf's getpass.getuser() falls
# back to a passwd lookup, which would crash at startup, when this variable is missing.
# MALLOC_ARENA_MAX: glibc gives each of the operator's ~60 threads its own 64 MB malloc arena;
# two arenas keep the RSS to what the caches hold (docs/performance.md, 1,000 Rollouts).
ENV PATH=/opt/calyx/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    USER=calyx \
    MALLOC_ARENA_MAX=2
# 65532: the conventional "nonroot" uid/gid (distroless); no passwd entry is needed.
USER 65532:65532
# 8080: Kopf liveness (/healthz); 9100: operator metrics (/metrics).
EXPOSE 8080 9100
ENTRYPOINT ["kopf", "run", "--standalone", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "-m", "calyx.handlers.operator"]
