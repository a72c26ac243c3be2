"""The Helm chart: lint, rendered objects, least-privilege RBAC, values schema, drift, dry-run."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from calyx.domain.trust import parse_trust_store
from tests.packaging import rbac_scan
from tests.packaging.conftest import CHART, ROOT, find, helm_env, render, run_helm

pytestmark = pytest.mark.slow  # each test runs helm (a subprocess); a few seconds in all

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(1, 33))).decode()

# The operator's permissions, exactly (docs/install.md, "RBAC", explains each rule).
# (scope, apiGroup, resource, verb, resourceNames)
CLUSTER = "ClusterRole"
ROLE = "Role"
GUARD_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
EXPECTED_RBAC = {
    *(
        (CLUSTER, "calyx.io", r, v, ())
        for r in ("leases", "rollouts")
        for v in ("get", "list", "watch", "patch")
    ),
    *((CLUSTER, "calyx.io", r, "patch", ()) for r in ("leases/status", "rollouts/status")),
    *(
        (CLUSTER, "apiextensions.k8s.io", "customresourcedefinitions", v, ())
        for v in ("list", "watch")
    ),
    *(
        (CLUSTER, "", "configmaps", v, ())
        for v in ("get", "list", "watch", "create", "update", "delete")
    ),
    *(
        (CLUSTER, "apps", "deployments", v, ())
        for v in ("get", "list", "watch", "create", "patch", "delete")
    ),
    (CLUSTER, "", "pods", "deletecollection", ()),
    *((CLUSTER, "batch", "jobs", v, ()) for v in ("get", "create", "delete")),
    (CLUSTER, "", "events", "create", ()),
    *((ROLE, "", "configmaps", v, ("calyx-ledger", "calyx-trust")) for v in ("list", "watch")),
    # leader election (docs/operations.md, "High availability"): the one Lease, by name
    *((ROLE, "coordination.k8s.io", "leases", v, ("calyx-operator",)) for v in ("get", "patch")),
    (ROLE, "coordination.k8s.io", "leases", "create", ()),  # create cannot be limited by name
}


@pytest.fixture(scope="module")
def docs(helm: str) -> list[dict[str, Any]]:
    return render(helm)


def rbac_grants(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, str, tuple[str, ...]]]:
    out = set()
    for doc in docs:
        if doc["kind"] not in (CLUSTER, ROLE):
            continue
        for rule in doc["rules"]:
            assert "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    for verb in rule["verbs"]:
                        names = tuple(sorted(rule.get("resourceNames", ())))
                        out.add((doc["kind"], group, res, verb, names))
    return out


# ------------------------------------------------------------------------------------ basics


def test_helm_lint_strict(helm: str) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"
    assert chart["type"] == "application"


def test_default_render_has_the_expected_objects(docs: list[dict[str, Any]]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted(
        [
            ("ServiceAccount", "calyx"),
            ("ConfigMap", "calyx-trust"),
            ("ClusterRole", "calyx"),
            ("ClusterRoleBinding", "calyx"),
            ("Role", "calyx"),
            ("RoleBinding", "calyx"),
            ("Service", "calyx-metrics"),
            ("Deployment", "calyx"),
            ("PodDisruptionBudget", "calyx"),
            ("ValidatingAdmissionPolicy", "calyx-guard-deployments"),
            ("ValidatingAdmissionPolicy", "calyx-guard-configmaps"),
            ("ValidatingAdmissionPolicyBinding", "calyx-guard-deployments"),
            ("ValidatingAdmissionPolicyBinding", "calyx-guard-deployments-warn"),
            ("ValidatingAdmissionPolicyBinding", "calyx-guard-configmaps"),
            ("ValidatingAdmissionPolicyBinding", "calyx-guard-configmaps-warn"),
            ("ValidatingAdmissionPolicyBinding", "calyx-guard-configmaps-operator-namespace"),
        ]
    )
    cluster_scoped = ("ClusterRole", "ClusterRoleBinding", *GUARD_KINDS)
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] not in cluster_scoped:
            assert meta["namespace"] == "calyx-system", doc["kind"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "calyx"
        assert labels["app.kubernetes.io/instance"] == "calyx"
        assert labels["app.kubernetes.io/part-of"] == "calyx"
    assert not any(
        d["kind"] == "ConfigMap" and d["metadata"]["name"] == "calyx-ledger" for d in docs
    ), "the ledger is operator state: never rendered by the chart"


def test_crds_ship_in_the_chart_crds_dir_and_match_generated() -> None:
    generated = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert set(generated) == {"leases.calyx.io.yaml", "rollouts.calyx.io.yaml"}
    assert shipped == generated, "charts/calyx/crds/ drifted from crds/: run `make manifests`"


def test_install_manifest_is_up_to_date(helm: str) -> None:
    spec = importlib.util.spec_from_file_location(
        "render_manifests", ROOT / "tools" / "render_manifests.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    problems = mod.check(helm)
    assert not problems, "\n".join(problems) + "\nrun `make manifests`"
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == "calyx-system"
    assert docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CustomResourceDefinition") == 2
    assert kinds.index("CustomResourceDefinition") < kinds.index("Deployment")


# -------------------------------------------------------------------------------- deployment


def test_deployment_is_restricted_with_a_leader_and_a_standby(docs: list[dict[str, Any]]) -> None:
    dep = find(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    # leader election makes two operators at once safe: a new pod starts as a standby
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    )
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti, "preferred, not required"
    assert pod["serviceAccountName"] == "calyx"
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc
    # the only writable path is the /tmp emptyDir, which is also HOME
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    (vol,) = pod["volumes"]
    assert vol["name"] == "tmp" and "emptyDir" in vol
    assert all("hostPath" not in v for v in pod["volumes"])
    env = {e["name"]: e for e in c["env"]}
    assert env["HOME"]["value"] == "/tmp"
    assert env["CALYX_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # the replica's identity in the leader Lease is its pod name (downward API)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_deployment_image_env_probes_resources(docs: list[dict[str, Any]]) -> None:
    (c,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "calyx:0.1.0", "the tag defaults to the chart's appVersion"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert "command" not in c, "the image's ENTRYPOINT runs; the chart only appends args"
    assert c["args"] == ["--log-format=full"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CALYX_TRUST_CONFIGMAP"] == "calyx-trust"
    assert env["CALYX_LEDGER_CONFIGMAP"] == "calyx-ledger"
    assert env["CALYX_PROMETHEUS_URL"].startswith("http")
    assert env["CALYX_LEASE_RECHECK_SECONDS"] == "2"
    assert env["CALYX_ROLLOUT_TICK_SECONDS"] == "1"
    assert env["CALYX_METRICS_PORT"] == "9100"
    # leader-election timings default in the operator (calyx.adapters.settings), not here
    assert not [k for k in env if k.startswith("CALYX_LEADER_")]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9100}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]


def test_values_flow_into_the_deployment(helm: str) -> None:
    docs = render(
        helm,
        {
            "image": {"repository": "registry.example/calyx", "digest": "sha256:" + "a" * 64},
            "operator": {
                "prometheusURL": "http://prom.example:9090",
                "leaseRecheckSeconds": 5,
                "rolloutTickSeconds": 0.5,
                "logFormat": "json",
                "verbose": True,
                "extraArgs": ["--log-refkey=calyx"],
                "extraEnv": [{"name": "EXTRA", "value": "1"}],
                "leaderElection": {"leaseDurationSeconds": 30, "renewDeadlineSeconds": 20},
            },
            "healthPort": 8081,
            "metrics": {"port": 9200},
            "trust": {"configMapName": "my-trust"},
            "ledger": {"configMapName": "my-ledger"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "affinity": {"nodeAffinity": {"x": 1}},
        },
    )
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example/calyx@sha256:" + "a" * 64
    assert c["args"] == [
        "--log-format=json",
        "--verbose",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--log-refkey=calyx",
    ]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CALYX_PROMETHEUS_URL"] == "http://prom.example:9090"
    assert env["CALYX_LEASE_RECHECK_SECONDS"] == "5"
    assert env["CALYX_ROLLOUT_TICK_SECONDS"] == "0.5"
    assert env["CALYX_METRICS_PORT"] == "9200"
    assert env["CALYX_TRUST_CONFIGMAP"] == "my-trust"
    assert env["EXTRA"] == "1"
    assert env["CALYX_LEADER_LEASE_SECONDS"] == "30"
    assert env["CALYX_LEADER_RENEW_DEADLINE_SECONDS"] == "20"
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}}, "a value replaces the default spread"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8081, "metrics": 9200}
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert find(docs, "ConfigMap")["metadata"]["name"] == "my-trust"
    (rule,) = [r for r in find(docs, "Role")["rules"] if r["resources"] == ["configmaps"]]
    assert sorted(rule["resourceNames"]) == ["my-ledger", "my-trust"]
    svc = find(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9200, "targetPort": "metrics", "protocol": "TCP"}
    ]


# ------------------------------------------------------------------------------------- RBAC


def test_rbac_is_exactly_the_documented_least_privilege(docs: list[dict[str, Any]]) -> None:
    grants = rbac_grants(docs)
    assert not any("*" in (g[1], g[2], g[3]) for g in grants), "no wildcards"
    missing = EXPECTED_RBAC - grants
    extra = grants - EXPECTED_RBAC
    assert not missing and not extra, f"missing: {sorted(missing)}\nextra: {sorted(extra)}"
    sa = find(docs, "ServiceAccount")["metadata"]["name"]
    for kind, role_kind in (("ClusterRoleBinding", CLUSTER), ("RoleBinding", ROLE)):
        binding = find(docs, kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": "calyx",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": "calyx-system"}
        ]
    # nothing that would let the operator escalate or read secrets
    resources = {g[2] for g in grants}
    assert not resources & {
        "secrets",
        "roles",
        "clusterroles",
        "rolebindings",
        "clusterrolebindings",
        "serviceaccounts",
        "namespaces",
        "kopfpeerings",
        "clusterkopfpeerings",
    }


def test_rbac_covers_every_api_call_of_the_operator(docs: list[dict[str, Any]]) -> None:
    grants = rbac_grants(docs)
    cluster = {(g[1], g[2], g[3]) for g in grants if g[0] == CLUSTER}
    namespaced = {(g[1], g[2], g[3]) for g in grants if g[0] == ROLE}
    needs = rbac_scan.operator_needs() + rbac_scan.kopf_needs()
    assert any(n.resource == "leases" for n in needs), "the scan found nothing: broken scanner"
    uncovered = []
    for need in needs:
        if need.key in cluster:
            continue
        # list/watch of ConfigMaps is granted only in the operator namespace, for the trust store
        # and ledger (calyx.adapters.cm_watch watches them by name with a field selector), and so
        # is the leader Lease (calyx.adapters.leader)
        if need.key in namespaced and need.where.startswith(
            ("operator/calyx/adapters/cm_watch.py", "operator/calyx/adapters/leader.py")
        ):
            continue
        uncovered.append(f"{need.group or 'core'}/{need.resource} {need.verb}  ({need.where})")
    assert not uncovered, (
        "the operator uses API verbs the chart's RBAC does not grant; add them to "
        "charts/calyx/templates/rbac.yaml, EXPECTED_RBAC here and docs/install.md:\n  "
        + "\n  ".join(sorted(set(uncovered)))
    )


def test_owner_references_need_no_finalizer_permission() -> None:
    """blockOwnerDeletion: true would need `update` on rollouts/finalizers (admission plugin
    OwnerReferencesPermissionEnforcement); the operator sets it false, so RBAC omits that."""
    for path in rbac_scan.operator_files():
        text = path.read_text()
        assert not re.search(r"[\"']blockOwnerDeletion[\"']\s*:\s*True", text), (
            f"{path}: blockOwnerDeletion True needs leases|rollouts/finalizers update in the chart"
        )


def test_rbac_can_be_disabled(helm: str) -> None:
    docs = render(
        helm, {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "existing"}}
    )
    assert not [d for d in docs if d["kind"].endswith(("Role", "RoleBinding"))]
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "existing"


# ---------------------------------------------------------------------- admission guard


def _guard(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The guard's policies (kind ``ValidatingAdmissionPolicy``) or bindings, by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


POLICY, BINDING = GUARD_KINDS


def _cel(policy: dict[str, Any]) -> str:
    """Every CEL expression of a policy, one per line."""
    spec = policy["spec"]
    parts = [v["expression"] for v in spec.get("variables", [])]
    parts += [m["expression"] for m in spec.get("matchConditions", [])]
    for v in spec["validations"]:
        parts += [v["expression"], v.get("messageExpression", "")]
    parts += [a["valueExpression"] for a in spec.get("auditAnnotations", [])]
    return "\n".join(parts)


def test_guard_policies_name_the_chart_service_account_and_group(
    docs: list[dict[str, Any]],
) -> None:
    """docs/security-guard.md: the operator's identity is the chart's own ServiceAccount, the
    exemptions are exactly the operator, break-glass and (ConfigMaps) the control plane."""
    guard = _guard(docs, POLICY)
    sa = find(docs, "ServiceAccount")["metadata"]["name"]
    operator = f"system:serviceaccount:calyx-system:{sa}"
    assert operator == "system:serviceaccount:calyx-system:calyx"
    for kind in ("deployments", "configmaps"):
        policy = guard[f"calyx-guard-{kind}"]
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert policy["spec"]["failurePolicy"] == "Fail"
        meta = policy["metadata"]
        assert meta["labels"]["app.kubernetes.io/component"] == "guard"
        assert meta["labels"]["calyx.io/guard-policy"] == kind
        assert meta["annotations"] == {
            "calyx.io/operator-user": operator,
            "calyx.io/break-glass-group": "calyx:break-glass",
        }
        cel = _cel(policy)
        assert f'request.userInfo.username == "{operator}"' in cel
        assert '"calyx:break-glass" in request.userInfo.groups' in cel
        # no other identity is exempt (the ConfigMap policy adds the control plane's)
        users = set(re.findall(r"system:serviceaccount:[\w:.-]+", cel))
        expected = {operator}
        if kind == "configmaps":
            expected |= {
                "system:serviceaccount:kube-system:generic-garbage-collector",
                "system:serviceaccount:kube-system:namespace-controller",
            }
        assert users == expected, users
        for v in policy["spec"]["validations"]:
            assert v["reason"] == "Forbidden" and v["message"].startswith("calyx guard:")

    deploy = guard["calyx-guard-deployments"]["spec"]
    (rule,) = deploy["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["deployments"], "not deployments/scale: scaling stays free"
    assert sorted(rule["operations"]) == ["CREATE", "UPDATE"]
    assert "object.spec.template != oldObject.spec.template" in _cel(
        guard["calyx-guard-deployments"]
    )
    cms = guard["calyx-guard-configmaps"]["spec"]
    (rule,) = cms["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["configmaps"]
    assert sorted(rule["operations"]) == ["CREATE", "DELETE", "UPDATE"]
    (cond,) = cms["matchConditions"]
    assert "[object, oldObject]" in cond["expression"], "label removal and delete are matched"
    assert "'calyx.io/managed-by'" in cond["expression"] and "calyx.io/" in cond["expression"]


def test_guard_bindings_select_opted_in_namespaces_only(docs: list[dict[str, Any]]) -> None:
    bindings = {name: d["spec"] for name, d in _guard(docs, BINDING).items()}
    for kind in ("deployments", "configmaps"):
        enforce, warn = bindings[f"calyx-guard-{kind}"], bindings[f"calyx-guard-{kind}-warn"]
        assert enforce["policyName"] == warn["policyName"] == f"calyx-guard-{kind}"
        assert enforce["validationActions"] == ["Deny"]
        assert warn["validationActions"] == ["Warn", "Audit"]
        assert enforce["matchResources"] == {
            "namespaceSelector": {"matchLabels": {"calyx.io/guard": "enforce"}}
        }
        assert warn["matchResources"] == {
            "namespaceSelector": {"matchLabels": {"calyx.io/guard": "warn"}}
        }
    own = bindings["calyx-guard-configmaps-operator-namespace"]
    assert own["policyName"] == "calyx-guard-configmaps"
    assert own["validationActions"] == ["Deny"]
    assert own["matchResources"] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "calyx-system"}}
    }
    assert len(bindings) == 5, sorted(bindings)


def test_guard_follows_the_service_account_group_and_names(helm: str) -> None:
    docs = render(
        helm,
        {
            "fullnameOverride": "cx",
            "serviceAccount": {"create": False, "name": "deployer"},
            "guard": {"breakGlassGroup": "oncall:sre", "protectOperatorNamespace": False},
        },
        namespace="ops",
    )
    guard, bindings = _guard(docs, POLICY), _guard(docs, BINDING)
    assert sorted(guard) == ["cx-guard-configmaps", "cx-guard-deployments"]
    assert sorted(bindings) == [
        "cx-guard-configmaps",
        "cx-guard-configmaps-warn",
        "cx-guard-deployments",
        "cx-guard-deployments-warn",
    ], "protectOperatorNamespace: false drops the operator-namespace binding"
    for kind in ("deployments", "configmaps"):
        policy = guard[f"cx-guard-{kind}"]
        assert policy["metadata"]["annotations"] == {
            "calyx.io/operator-user": "system:serviceaccount:ops:deployer",
            "calyx.io/break-glass-group": "oncall:sre",
        }
        cel = _cel(policy)
        assert '"system:serviceaccount:ops:deployer"' in cel and '"oncall:sre"' in cel
        assert "calyx-system" not in cel and "calyx:break-glass" not in cel
        for suffix in ("", "-warn"):
            assert bindings[f"cx-guard-{kind}{suffix}"]["spec"]["policyName"] == f"cx-guard-{kind}"


def test_guard_group_is_quoted_for_cel(helm: str) -> None:
    """A group with quotes or a backslash ends up as one CEL string literal, not as code."""
    group = 'team "a" \\ b\'s'
    (policy,) = [
        d
        for d in render(helm, {"guard": {"breakGlassGroup": group}})
        if d["kind"] == POLICY and d["metadata"]["name"] == "calyx-guard-deployments"
    ]
    assert f"{json.dumps(group)} in request.userInfo.groups" in _cel(policy)
    assert policy["metadata"]["annotations"]["calyx.io/break-glass-group"] == group


def test_guard_refuses_clusters_without_validating_admission_policy_v1(helm: str) -> None:
    """A security feature must not vanish silently: before 1.30 the chart fails with what to do."""
    proc = run_helm(helm, "template", "calyx", str(CHART), "--kube-version", "1.29.4", check=False)
    assert proc.returncode != 0
    assert "guard.enabled needs Kubernetes >= 1.30" in proc.stderr, proc.stderr
    assert "guard.enabled=false" in proc.stderr
    docs = render(helm, {"guard": {"enabled": False}}, extra=("--kube-version", "1.29.4"))
    assert not [d for d in docs if d["kind"] in GUARD_KINDS]


def test_guard_can_be_disabled(helm: str) -> None:
    docs = render(helm, {"guard": {"enabled": False}})
    assert not [d for d in docs if d["kind"] in GUARD_KINDS]
    assert {d["kind"] for d in docs} >= {"Deployment", "ClusterRole", "ServiceAccount"}


# --------------------------------------------------------------------------- trust store


def test_trust_store_from_values_is_what_the_operator_parses(helm: str) -> None:
    signers = [
        {"id": "alice", "role": "human", "publicKey": KEY_A, "namespaces": ["shop", "pay-*"]},
        {"id": "sentinel", "role": "agent", "publicKey": KEY_B},
    ]
    policy = {
        "humans": 1,
        "agents": 1,
        "maxSignatureAgeSeconds": 600,
        "maxLeaseSeconds": 7200,
        "clockSkewSeconds": 30,
    }
    docs = render(helm, {"trust": {"signers": signers, "policy": policy}})
    data = find(docs, "ConfigMap", "calyx-trust")["data"]
    assert set(data) == {"signers.yaml", "policy.yaml"}
    store = parse_trust_store(data["signers.yaml"], data["policy.yaml"])
    assert sorted(store.signers) == ["alice", "sentinel"]
    alice = store.signers["alice"]
    assert alice.role == "human" and alice.public_key == bytes(range(32))
    assert alice.namespaces == ("shop", "pay-*")
    assert store.signers["sentinel"].namespaces is None
    assert store.policy.max_signature_age_seconds == 600
    assert store.policy.max_lease_seconds == 7200
    assert store.policy.clock_skew_seconds == 30


def test_default_trust_store_is_empty_and_valid(docs: list[dict[str, Any]]) -> None:
    data = find(docs, "ConfigMap", "calyx-trust")["data"]
    store = parse_trust_store(data["signers.yaml"], data["policy.yaml"])
    assert store.signers == {}, "no signer trusted until the user adds one"
    assert store.policy.humans == 1 and store.policy.agents == 1


def test_trust_store_can_be_left_to_the_cli(helm: str) -> None:
    docs = render(helm, {"trust": {"create": False}})
    assert not [d for d in docs if d["kind"] == "ConfigMap"]


# --------------------------------------------------------------- optional objects, NOTES


def test_service_monitor_is_off_and_the_pdb_on_by_default(docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in docs}
    assert "ServiceMonitor" not in kinds
    pdb = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    dep = find(docs, "Deployment")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("replicas", [0, 1])
def test_no_pdb_for_a_single_replica(helm: str, replicas: int) -> None:
    """minAvailable 1 on one replica would block every node drain."""
    docs = render(helm, {"replicaCount": replicas})
    assert "PodDisruptionBudget" not in {d["kind"] for d in docs}
    assert find(docs, "Deployment")["spec"]["replicas"] == replicas


def test_service_monitor_and_pdb_when_enabled(helm: str) -> None:
    docs = render(
        helm,
        {
            "metrics": {
                "serviceMonitor": {
                    "enabled": True,
                    "labels": {"release": "prom"},
                    "interval": "15s",
                }
            },
            "podDisruptionBudget": {"enabled": True},
        },
    )
    sm = find(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    svc = find(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    pdb = find(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    dep = find(docs, "Deployment")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


@pytest.mark.e2e
def test_notes_render_on_install(helm: str, kube_cluster: Any, kube_namespace: str) -> None:
    """`helm install --dry-run=server` (helm needs a cluster to print NOTES)."""
    proc = subprocess.run(
        [
            helm,
            "install",
            "calyx",
            str(CHART),
            "-n",
            kube_namespace,
            "--dry-run=server",
            "--kubeconfig",
            kube_cluster.kubeconfig,
        ],
        capture_output=True,
        text=True,
        env=helm_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {kube_namespace} rollout status deployment/calyx" in notes
    assert "sign-lease" in notes and "--watch" in notes
    assert "no signers yet" in notes


# ------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"replicaCount": -1}, "replicaCount"),
        ({"operator": {"leaderElection": {"leaseDurationSeconds": 0}}}, "leaseDurationSeconds"),
        ({"operator": {"leaderElection": {"renewDeadline": 5}}}, "renewDeadline"),
        ({"image": {"repository": "calyx", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"image": {"repository": "calyx", "pullPolicy": "Always", "tag": "latest"}}, "tag"),
        ({"image": {"repository": "calyx", "pullPolicy": "Always", "digest": "abc"}}, "digest"),
        ({"trust": {"signers": [{"id": "alice", "role": "robot", "publicKey": KEY_A}]}}, "role"),
        (
            {"trust": {"signers": [{"id": "alice", "role": "human", "publicKey": "c2hvcnQ="}]}},
            "publicKey",
        ),
        ({"trust": {"signers": [{"id": "Alice!", "role": "human", "publicKey": KEY_A}]}}, "id"),
        ({"trust": {"signers": [{"id": "alice", "role": "human"}]}}, "publicKey"),
        ({"trust": {"signers": [{"id": "a", "role": "human", "publicKey": KEY_A, "x": 1}]}}, "x"),
        ({"trust": {"policy": {"humans": 0}}}, "humans"),
        ({"trust": {"policy": {"maxLeaseSeconds": "1d"}}}, "maxLeaseSeconds"),
        ({"operator": {"prometheusURL": "prometheus:9090"}}, "prometheusURL"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),
        ({"operator": {"rolloutTickSeconds": 0}}, "rolloutTickSeconds"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "enabled"),
        ({"resources": {"limits": {"memory": "lots"}}}, "memory"),
        ({"replicas": 1}, "replicas"),  # typo of replicaCount: unknown keys are rejected
        ({"guard": {"enabled": "yes"}}, "enabled"),
        ({"guard": {"breakGlassGroup": ""}}, "breakGlassGroup"),
        ({"guard": {"breakGlassGroup": "system:authenticated"}}, "breakGlassGroup"),
        ({"guard": {"enforce": True}}, "enforce"),
    ],
)
def test_bad_values_are_rejected_by_the_schema(
    helm: str, tmp_path: Path, values: dict[str, Any], why: str
) -> None:
    vf = tmp_path / "bad-values.yaml"
    vf.write_text(yaml.safe_dump(values))
    proc = run_helm(helm, "template", "calyx", str(CHART), "-f", str(vf), check=False)
    assert proc.returncode != 0, f"accepted bad values {values}"
    assert "schema" in proc.stderr, proc.stderr
    assert why in proc.stderr, proc.stderr


def test_schema_covers_every_value(helm: str) -> None:
    """Every key of values.yaml is declared (additionalProperties is false at the top)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema.get("additionalProperties") is False
    assert set(values) == set(schema["properties"])


def test_every_value_is_documented() -> None:
    doc = (ROOT / "docs" / "install.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(prefix: str, node: Any) -> list[str]:
        if (
            isinstance(node, dict)
            and node
            and prefix not in ("resources", "podSecurityContext", "securityContext", "trust.policy")
        ):
            return [
                k for key, val in node.items() for k in walk(f"{prefix}.{key}".lstrip("."), val)
            ]
        return [prefix]

    missing = [k for k in walk("", values) if f"`{k}`" not in doc]
    assert not missing, f"values not described in docs/install.md: {missing}"


# ------------------------------------------------------------------------ against a cluster


@pytest.mark.e2e
def test_server_side_dry_run_of_the_rendered_chart(
    helm: str, kube_cluster: Any, kube_namespace: str
) -> None:
    """The API server (RBAC on, Pod Security "restricted" enforced) accepts every object."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    for crd in ("leases.calyx.io", "rollouts.calyx.io"):
        kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    kube_cluster.kubectl(
        "label",
        "namespace",
        kube_namespace,
        "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    release = f"calyx-{kube_namespace[-8:]}"
    text = run_helm(
        helm,
        "template",
        release,
        str(CHART),
        "--namespace",
        kube_namespace,
        "--set",
        "podDisruptionBudget.enabled=true",
    ).stdout
    kinds = re.findall(r"^kind: (\w+)", text, re.M)
    assert {"Deployment", "ClusterRole", "Role", "PodDisruptionBudget"} <= set(kinds)
    proc = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr  # e.g. "would violate PodSecurity"
    assert proc.stdout.count("(server dry run)") == len(kinds), proc.stdout


# ------------------------------------------------- dashboards and alerts (docs/observability.md)

RULES_FILE = CHART / "files" / "calyx.rules.yaml"
DASHBOARD_FILE = CHART / "dashboards" / "calyx.json"


def test_dashboards_and_prometheus_rule_are_off_by_default(docs: list[dict[str, Any]]) -> None:
    assert "PrometheusRule" not in {d["kind"] for d in docs}
    assert not [d for d in docs if d["metadata"]["name"].endswith("-dashboards")]
    assert not [d for d in docs if "grafana_dashboard" in d["metadata"]["labels"]]


def test_lint_strict_with_dashboards_and_rules(helm: str, tmp_path: Path) -> None:
    vf = tmp_path / "v.yaml"
    vf.write_text(
        yaml.safe_dump({"dashboards": {"enabled": True}, "prometheusRule": {"enabled": True}})
    )
    proc = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(vf))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


def test_prometheus_rule_is_the_rules_file_for_this_release(helm: str, tmp_path: Path) -> None:
    docs = render(
        helm,
        {"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}},
        release="shop-ops",
        namespace="ops",
    )
    rule = find(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "ops"
    assert rule["metadata"]["labels"]["release"] == "prom"
    expected = yaml.safe_load(
        RULES_FILE.read_text().replace('job="calyx-metrics"', 'job="shop-ops-calyx-metrics"')
    )
    assert rule["spec"] == expected
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert all('job="shop-ops-calyx-metrics"' in e for e in exprs), exprs
    # Prometheus templates in annotations are left for Prometheus, not eaten by helm
    assert "{{ $labels.trigger }}" in json.dumps(rule["spec"])
    # what the Prometheus Operator would load is a valid rule file
    promtool = shutil.which("promtool")
    if promtool:
        f = tmp_path / "rendered.rules.yaml"
        f.write_text(yaml.safe_dump(rule["spec"]))
        proc = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_rule_job_override(helm: str) -> None:
    docs = render(helm, {"prometheusRule": {"enabled": True, "job": "kubernetes-pods"}})
    text = json.dumps(find(docs, "PrometheusRule")["spec"])
    assert 'job=\\"kubernetes-pods\\"' in text and "calyx-metrics" not in text


def test_dashboard_configmap_for_the_grafana_sidecar(helm: str) -> None:
    docs = render(
        helm,
        {
            "dashboards": {
                "enabled": True,
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "Calyx"},
            }
        },
        release="shop-ops",
    )
    cm = find(docs, "ConfigMap", "shop-ops-calyx-dashboards")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Calyx"}
    shipped = json.loads(cm["data"]["calyx.json"])
    source = json.loads(DASHBOARD_FILE.read_text())
    assert shipped["panels"] == source["panels"], "panels ship unchanged"
    job = next(v for v in shipped["templating"]["list"] if v["name"] == "job")
    assert job["query"] == "shop-ops-calyx-metrics", "the job default follows the release name"
    assert shipped["uid"] == "calyx-overview"


def test_dashboard_label_is_configurable(helm: str) -> None:
    docs = render(
        helm, {"dashboards": {"enabled": True, "label": "grafana_dash", "labelValue": "yes"}}
    )
    cm = find(docs, "ConfigMap", "calyx-dashboards")
    assert cm["metadata"]["labels"]["grafana_dash"] == "yes"
    assert cm["metadata"]["namespace"] == "calyx-system"


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"dashboards": {"enable": True}}, "enable"),
        ({"prometheusRule": {"enabled": "yes"}}, "enabled"),
        ({"dashboards": {"label": ""}}, "label"),
    ],
)
def test_dashboard_and_rule_values_are_validated(
    helm: str, tmp_path: Path, values: dict[str, Any], why: str
) -> None:
    vf = tmp_path / "bad.yaml"
    vf.write_text(yaml.safe_dump(values))
    proc = run_helm(helm, "template", "calyx", str(CHART), "-f", str(vf), check=False)
    assert proc.returncode != 0, f"accepted {values}"
    assert why in proc.stderr, proc.stderr
