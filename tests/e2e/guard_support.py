"""Helpers for the admission-guard tests (tests/e2e/test_guard.py): real users and the chart.

Users are made the way a platform team makes them on a cluster without an identity provider: a
private key and a CSR (``CN=<user>``, ``O=<group>`` per group) signed through the
``certificates.k8s.io`` API with signer ``kubernetes.io/kube-apiserver-client`` and approved by
an admin, then a kubeconfig with that client certificate. They authenticate as themselves, so
the API server's audit log and the policies' ``request.userInfo`` see the real user name and
groups (no impersonation headers). Permissions come from ordinary RoleBindings to the built-in
``edit`` ClusterRole, what developers get.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from calyx.domain.guard import MESSAGE_PREFIX, probe_deployment
from tests.e2e.harness import wait_for


@dataclass
class User:
    """A cluster user with its own client certificate; runs the cluster's pinned kubectl."""

    name: str
    groups: tuple[str, ...]
    kubeconfig: Path
    kubectl_path: str

    def kubectl(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl <args>`` as this user; never raises (tests look at the outcome)."""
        return subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def helm_binary() -> str:
    """The pinned helm (tools/helm.sh builds it once from the Go module proxy); skips the test
    when there is no Go toolchain to build it, like the packaging tests."""
    import os

    import pytest

    if os.environ.get("CALYX_HELM"):
        return os.environ["CALYX_HELM"]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ["bash", str(root / "tools" / "helm.sh")], capture_output=True, text=True, timeout=1200
    )
    if proc.returncode == 3:
        pytest.skip(f"helm unavailable: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"tools/helm.sh failed:\n{proc.stderr[-4000:]}"
    return proc.stdout.strip().splitlines()[-1]


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"


def make_user(
    cluster: Any, name: str, groups: Sequence[str] = (), workdir: Path | None = None
) -> User:
    """A user authenticated by a client certificate the cluster's CA signed via the CSR API."""
    work = Path(tempfile.mkdtemp(prefix=f"calyx-user-{name}-", dir=workdir))
    subj = f"/CN={name}" + "".join(f"/O={g}" for g in groups)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "user.key", cwd=work)
    _openssl("req", "-new", "-key", "user.key", "-subj", subj, "-out", "user.csr", cwd=work)
    csr_name = f"calyx-test-{name}-{uuid.uuid4().hex[:6]}"
    csr = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name},
        "spec": {
            "request": base64.b64encode((work / "user.csr").read_bytes()).decode(),
            "signerName": "kubernetes.io/kube-apiserver-client",
            "expirationSeconds": 3600,
            "usages": ["client auth"],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(csr))
    cluster.kubectl("certificate", "approve", csr_name)

    def issued() -> str:
        got = cluster.kubectl_json("get", "csr", csr_name)
        return str((got.get("status") or {}).get("certificate") or "")

    cert = wait_for(f"certificate for {name}", issued, timeout=30)
    cluster.kubectl("delete", "csr", csr_name, "--wait=false")
    admin = json.loads(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
    )
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": admin["clusters"][0]["cluster"]}],
                "users": [
                    {
                        "name": name,
                        "user": {
                            "client-certificate-data": cert,
                            "client-key-data": base64.b64encode(
                                (work / "user.key").read_bytes()
                            ).decode(),
                        },
                    }
                ],
                "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
                "current-context": name,
            }
        )
    )
    kubeconfig.chmod(0o600)
    return User(name, tuple(groups), kubeconfig, cluster.kubectl_path)


def grant(
    cluster: Any, namespace: str, clusterrole: str, *, user: str = "", group: str = ""
) -> None:
    """A RoleBinding of a built-in ClusterRole (``edit``) in one namespace."""
    subject = f"--user={user}" if user else f"--group={group}"
    name = f"{clusterrole}-{(user or group).replace(':', '-')}"
    cluster.kubectl(
        "create", "rolebinding", name, f"--clusterrole={clusterrole}", subject, "-n", namespace
    )


def wait_guard_active(user: User, namespace: str, timeout: float = 30) -> None:
    """Policies take effect once the API server's policy informer has them: wait until a
    dry-run Deployment create by ``user`` (not exempt) is denied by the guard."""
    probe = probe_deployment(namespace)

    def denied() -> bool:
        res = user.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe))
        return res.returncode != 0 and MESSAGE_PREFIX in res.stderr

    wait_for(f"the guard to act in {namespace}", denied, timeout=timeout, interval=0.3)


def audit_since() -> str:
    """Now, for ``read_audit_events(since=...)``: the API server runs on this machine's clock
    and stamps requests to the microsecond."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
