"""What the operator's code asks of the API server, read from its source (for the RBAC tests).

Every Kubernetes call in ``operator/calyx`` (except ``calyx/cli`` and ``calyx_dev``, which run
with the user's own credentials) goes through the ``kubernetes`` client's ``CoreV1Api``/
``AppsV1Api``/``BatchV1Api``/``CustomObjectsApi``/``CoordinationV1Api``, held as ``.core``/
``.apps``/``.batch``/``.custom``/``.coordination`` (``calyx.adapters.kube``).
The ``Kube`` wrapper methods count only when operator code calls them (so a CLI-only wrapper such
as ``create_custom`` does not widen the operator's ClusterRole).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "operator" / "calyx"
KUBE = PKG / "adapters" / "kube.py"

API_GROUPS = {
    "core": "",
    "apps": "apps",
    "batch": "batch",
    "custom": "calyx.io",
    "coordination": "coordination.k8s.io",
}
VERBS = {
    "read": "get",
    "get": "get",
    "list": "list",
    "create": "create",
    "replace": "update",
    "patch": "patch",
    "delete_collection": "deletecollection",
    "delete": "delete",
}
RESOURCES = {
    "config_map": ["configmaps"],
    "deployment": ["deployments"],
    "pod": ["pods"],
    "event": ["events"],
    "job": ["jobs"],
    "namespace": ["namespaces"],
    "service": ["services"],
    "secret": ["secrets"],
    "replica_set": ["replicasets"],
    "custom_object": ["leases", "rollouts"],  # the plural is an argument: assume both
    "lease": ["leases"],  # coordination.k8s.io: leader election (calyx.adapters.leader)
}
_METHOD = re.compile(
    r"^(?P<verb>delete_collection|read|get|list|create|replace|patch|delete)_"
    r"(?:namespaced_|cluster_)?(?P<res>[a-z_]+?)(?P<status>_status)?(?:_for_all_namespaces)?$"
)
_REF = re.compile(r"\.(core|apps|batch|custom|coordination)\.([a-z_]+)(\s*\()?")


@dataclass(frozen=True)
class Need:
    group: str
    resource: str
    verb: str
    where: str  # file:line, for the failure message

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)


def needs_of_call(api: str, method: str, called: bool, where: str) -> list[Need]:
    m = _METHOD.match(method)
    if m is None:
        raise AssertionError(f"{where}: cannot map {api}.{method} to RBAC verbs; extend rbac_scan")
    resources = RESOURCES.get(m["res"])
    if resources is None:
        raise AssertionError(f"{where}: unknown resource in {api}.{method}; extend rbac_scan")
    verbs = [VERBS[m["verb"]]]
    if m["verb"] == "list" and not called:
        verbs.append("watch")  # passed to kubernetes.watch.Watch().stream(...)
    suffix = "/status" if m["status"] else ""
    return [Need(API_GROUPS[api], res + suffix, verb, where) for res in resources for verb in verbs]


def _refs(path: Path) -> list[tuple[str, str, bool, str]]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        for m in _REF.finditer(line):
            out.append((m[1], m[2], bool(m[3]), f"{path.relative_to(ROOT)}:{n}"))
    return out


def kube_wrappers() -> dict[str, list[tuple[str, str, bool, str]]]:
    """Kube method name -> the client calls in its body."""
    tree = ast.parse(KUBE.read_text())
    lines = KUBE.read_text().splitlines()
    out: dict[str, list[tuple[str, str, bool, str]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Kube":
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef):
                    calls = []
                    for n in range(fn.lineno, (fn.end_lineno or fn.lineno) + 1):
                        for m in _REF.finditer(lines[n - 1]):
                            calls.append((m[1], m[2], bool(m[3]), f"{KUBE.relative_to(ROOT)}:{n}"))
                    out[fn.name] = calls
    assert out, "class Kube not found in calyx/adapters/kube.py"
    return out


def operator_files() -> list[Path]:
    # cli/ runs with the user's credentials, devenv/ (tests, `calyx demo`) with the local
    # cluster's admin: neither is the operator.
    return [
        p for p in sorted(PKG.rglob("*.py")) if p.relative_to(PKG).parts[0] not in ("cli", "devenv")
    ]


def operator_needs() -> list[Need]:
    """Every (group, resource, verb) the operator process may use, with where it is used."""
    wrappers = kube_wrappers()
    needs: list[Need] = []
    for path in operator_files():
        if path == KUBE:
            continue
        text = path.read_text()
        other = re.search(r"\b(\w+V\d\w*Api|CustomObjectsApi|call_api|DynamicClient)\b", text)
        if other:
            raise AssertionError(
                f"{path.relative_to(ROOT)}: uses {other[1]} directly; the RBAC scan only follows "
                "calls through calyx.adapters.kube.Kube (.core/.apps/.batch/.custom/.coordination)"
            )
        for api, method, called, where in _refs(path):
            needs += needs_of_call(api, method, called, where)
        for n, line in enumerate(text.splitlines(), start=1):
            for m in re.finditer(r"\.([a-z_]+)\(", line):
                for api, method, called, where in wrappers.get(m[1], []):
                    needs += needs_of_call(
                        api, method, called, f"{path.relative_to(ROOT)}:{n} via {where}"
                    )
    return needs


def kopf_needs() -> list[Need]:
    """What Kopf itself does for our handlers (``kopf run --standalone --all-namespaces``).

    Read from kopf 1.45's source: it discovers resources via /apis (no RBAC), then lists and
    watches CRDs to notice changes (kopf/_core/reactor/observation.py); cluster-wide it does not
    list namespaces; it lists+watches each handled resource cluster-wide; it posts core/v1 Events
    (kopf/_cogs/clients/events.py, create only). Handlers other than ``on.event`` (create/update/
    delete/resume/field, timers, daemons) make it patch the object (finalizers, progress
    annotations); peering is off (--standalone), so no kopfpeerings.
    """
    where = "kopf"
    needs = [
        Need("apiextensions.k8s.io", "customresourcedefinitions", "list", where),
        Need("apiextensions.k8s.io", "customresourcedefinitions", "watch", where),
        Need("", "events", "create", where),
    ]
    src = (PKG / "handlers" / "operator.py").read_text()
    for m in re.finditer(r"@kopf\.(on\.\w+|timer|daemon)\((?:GROUP, VERSION, )?(\w+)", src):
        kind, res = m[1], {"LEASES": "leases", "ROLLOUTS": "rollouts"}.get(m[2])
        if res is None:
            continue
        verbs = ["list", "watch"] + ([] if kind == "on.event" else ["patch"])
        needs += [Need("calyx.io", res, v, f"kopf @{kind}") for v in verbs]
    return needs
