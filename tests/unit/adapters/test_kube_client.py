"""The API client the operator builds (calyx/adapters/kube.py, ``api_client``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from calyx.adapters.kube import api_client
from calyx.handlers.operator import API_CONNECTIONS, KOPF_WORKERS, SWEEP_WORKERS

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "x",
}


def test_the_operator_keeps_a_connection_per_thread_that_sends_requests(tmp_path: Path) -> None:
    """Run 10's profile at 1,000 Rollouts showed TLS handshakes inside status writes: 64
    threads shared a pool of 10 connections (the client's 5 per CPU), so most requests opened
    and closed a connection of their own."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(KUBECONFIG))
    api = api_client(kubeconfig=str(path), connections=API_CONNECTIONS)
    assert api.rest_client.pool_manager.connection_pool_kw["maxsize"] == 64
    assert API_CONNECTIONS >= SWEEP_WORKERS + KOPF_WORKERS
    cli = api_client(kubeconfig=str(path))  # the CLI keeps the client's default
    assert cli.rest_client.pool_manager.connection_pool_kw["maxsize"] != 64
