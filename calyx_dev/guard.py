"""The admission guard on a development cluster, without Helm: for ``calyx demo``.

The policies and bindings come from ``manifests/install.yaml`` (rendered from the chart by
``make manifests``), so the demo shows exactly what ships. Only the bindings that select
namespaces by the ``calyx.io/guard`` label are applied: the one protecting the operator's own
namespace is left out, because the demo's operator runs with the admin kubeconfig rather than
the chart's ServiceAccount and must keep writing its ledger there. docs/security-guard.md
explains the guard.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from calyx.domain.guard import ENFORCE, GUARD_LABEL, MESSAGE_PREFIX, probe_deployment
from calyx_dev.controlplane import ClusterBase

POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
#: a checkout's manifests/install.yaml (the package is installed editable from operator/)
INSTALL_YAML = Path(__file__).resolve().parents[1] / "manifests" / "install.yaml"


def guard_objects(install_yaml: Path = INSTALL_YAML) -> list[dict[str, Any]]:
    """The guard's policies and its label-selected bindings from the install manifest."""
    out = []
    for doc in yaml.safe_load_all(install_yaml.read_text()):
        if not doc or doc.get("kind") not in POLICY_KINDS:
            continue
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            selector = (doc["spec"].get("matchResources") or {}).get("namespaceSelector") or {}
            if GUARD_LABEL not in (selector.get("matchLabels") or {}):
                continue
        out.append(doc)
    return out


def enable_guard(
    cluster: ClusterBase,
    namespace: str,
    install_yaml: Path = INSTALL_YAML,
    timeout: float = 30,
) -> list[str]:
    """Apply the guard, label ``namespace`` ``calyx.io/guard=enforce`` and wait until the API
    server enforces it (a server-side dry-run Deployment create is denied); returns the names of
    the applied objects."""
    objs = guard_objects(install_yaml)
    if not objs:
        raise RuntimeError(f"no ValidatingAdmissionPolicy in {install_yaml}")
    cluster.kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}),
    )
    cluster.kubectl("label", "namespace", namespace, "--overwrite", f"{GUARD_LABEL}={ENFORCE}")
    probe = probe_deployment(namespace)
    deadline = time.monotonic() + timeout
    while True:
        res = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
        )
        if res.returncode != 0 and MESSAGE_PREFIX in res.stderr:
            return [f"{o['kind']}/{o['metadata']['name']}" for o in objs]
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the guard did not take effect in {namespace} within {timeout:.0f}s: "
                f"{(res.stderr or res.stdout).strip()[:300]}"
            )
        time.sleep(0.3)


def disable_guard(
    cluster: ClusterBase, namespace: str | None = None, install_yaml: Path = INSTALL_YAML
) -> None:
    """Undo :func:`enable_guard` (tests share one cluster)."""
    if namespace is not None:
        cluster.kubectl("label", "namespace", namespace, f"{GUARD_LABEL}-", check=False)
    for obj in reversed(guard_objects(install_yaml)):
        cluster.kubectl(
            "delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", check=False
        )
