"""The admission guard's vocabulary, shared by ``calyx guard status`` and the dev environment.

The guard itself is a pair of ValidatingAdmissionPolicies in the chart
(charts/calyx/templates/guard-*.yaml, docs/security-guard.md); these names must match them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: namespace label that opts a namespace in: ``enforce`` (deny) or ``warn`` (warn and audit)
GUARD_LABEL = "calyx.io/guard"
ENFORCE = "enforce"
WARN = "warn"
#: every message of the guard's policies starts with this
MESSAGE_PREFIX = "calyx guard:"
#: labels the chart puts on the guard's policies and bindings
GUARD_SELECTOR = "app.kubernetes.io/part-of=calyx,app.kubernetes.io/component=guard"
#: on each policy: what it guards ("deployments" or "configmaps")
POLICY_KIND_LABEL = "calyx.io/guard-policy"
GUARDED = ("deployments", "configmaps")
#: on each policy: the exempt operator user and the break-glass group it was rendered with
OPERATOR_ANNOTATION = "calyx.io/operator-user"
BREAK_GLASS_ANNOTATION = "calyx.io/break-glass-group"
PROBE_IMAGE = "registry.k8s.io/pause:3.10"


def probe_deployment(namespace: str) -> dict[str, Any]:
    """A Deployment to create with ``dryRun=All``: admission runs in full and nothing is stored,
    so the answer tells whether the guard acts for the caller in ``namespace``."""
    labels = {"calyx.io/guard-probe": "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"generateName": "calyx-guard-probe-", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": "probe", "image": PROBE_IMAGE}]},
            },
        },
    }


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against a label set, as the API server evaluates a binding's
    ``namespaceSelector`` (an absent or empty selector matches every namespace)."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
