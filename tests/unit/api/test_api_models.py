"""calyx.api models accept the docs/api.md objects and reject bad ones with clear messages."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from calyx.api import (
    Condition,
    InvalidSpecError,
    LeaseObject,
    LeaseSpec,
    LeaseStatus,
    RolloutObject,
    RolloutSpec,
    RolloutStatus,
    find_condition,
    parse_lease_spec,
    parse_rollout_spec,
    set_condition,
)

LEASE_YAML = """
apiVersion: calyx.io/v1alpha1
kind: Lease
metadata: {name: checkout-2-3-1, namespace: shop}
spec:
  intent: "INT-42: checkout 2.3.1 fixes cart rounding"
  targetRef: {kind: Deployment, name: checkout}
  change:
    containers:
      - {name: app, image: "registry.example/checkout@sha256:0123abcd"}
  constraints:
    maxInitialWeight: 5
    requireAnalysis: true
  expiresAt: "2026-11-25T18:00:00Z"
"""

ROLLOUT_YAML = """
apiVersion: calyx.io/v1alpha1
kind: Rollout
metadata: {name: checkout-2-3-1, namespace: shop}
spec:
  leaseRef: {name: checkout-2-3-1}
  paused: false
  tiers:
    - {weight: 5,   soakSeconds: 120}
    - {weight: 25,  soakSeconds: 300, approval: Manual}
    - {weight: 100}
  analysis:
    intervalSeconds: 10
    windowSeconds: 30
    prometheusURL: ""
    failureLimit: 1
    noData: {rollbackAfterSeconds: 120}
    tes:       {maxDropPercent: 5}
    errorRate: {maxPermille: 10}
    cpu:       {maxPercent: 90}
    memory:    {maxPercent: 90}
    custom: [{name: p99-latency, query: "histogram_quantile(0.99, x)", max: 300}]
  onBreach: Rollback
  postDeploy:
    jobTemplate:
      spec:
        template:
          spec:
            restartPolicy: Never
            containers: [{name: smoke, image: "curlimages/curl:8", args: ["http://checkout"]}]
    timeoutSeconds: 300
"""

ROLLOUT_STATUS_YAML = """
phase: Progressing
target: {kind: Deployment, name: checkout}
change: {containers: [{name: app, image: "registry.example/checkout@sha256:0123abcd"}]}
leaseDigest: "sha256:00ff"
currentTier: 1
currentWeight: 25
effectivePercent: 26
canaryReplicas: 7
stableReplicas: 20
snapshot: {configMap: checkout-2-3-1-snapshot, sha256: "abc"}
risk: {score: 34, level: Medium, factors: [{name: mutable-tag, points: 15, detail: "tag :2.3"}]}
tiers:
  - weight: 5
    startedAt: "2026-11-25T10:00:00Z"
    completedAt: "2026-11-25T10:02:00Z"
    result: Passed
    metrics: {errorRate: {canary: 2, baseline: 1}, tes: {canary: 0.97, baseline: 0.98}}
  - {weight: 25, startedAt: "2026-11-25T10:02:01Z", result: Running}
lastAnalysis:
  time: "2026-11-25T10:03:00.250000Z"
  verdict: Pass
  values: {cpu: {canary: 41.5, baseline: 40}}
  consecutiveBreaches: 0
rollback:
  trigger: Breach
  reason: "errorRate 30 > 10"
  breachAt: "2026-11-25T10:04:00Z"
  detectedAt: "2026-11-25T10:04:05.5Z"
  revertedAt: "2026-11-25T10:04:05.9Z"
  verifiedAt: "2026-11-25T10:04:20Z"
  detectSeconds: 5.5
  revertSeconds: 0.4
conditions:
  - {type: LeaseVerified, status: "True", reason: Verified2Key, message: "",
     lastTransitionTime: "2026-11-25T10:00:00Z", observedGeneration: 3}
observedGeneration: 3
"""


def lease_obj() -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(LEASE_YAML)
    return obj


def rollout_obj() -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(ROLLOUT_YAML)
    return obj


# --------------------------------------------------------------------------------------------
# Valid objects
# --------------------------------------------------------------------------------------------


def test_design_lease_parses() -> None:
    obj = LeaseObject.model_validate(lease_obj())
    assert obj.name == "checkout-2-3-1" and obj.namespace == "shop"
    assert obj.spec.target_ref.kind == "Deployment"
    assert obj.spec.change.containers[0].image.endswith("@sha256:0123abcd")
    assert obj.spec.max_initial_weight() == 5
    assert obj.spec.requires_analysis() is True
    assert obj.spec.expires_at_datetime() == datetime(2026, 11, 25, 18, tzinfo=UTC)
    assert obj.status is None


def test_lease_without_constraints_gets_defaults_in_code_only() -> None:
    raw = lease_obj()["spec"]
    del raw["constraints"]
    spec = parse_lease_spec(raw)
    assert spec.constraints is None
    assert spec.max_initial_weight() == 5 and spec.requires_analysis() is True
    # Nothing is added to what was signed.
    assert spec.signed_dict() == raw


def test_lease_signed_dict_round_trips_exactly() -> None:
    raw = lease_obj()["spec"]
    assert parse_lease_spec(raw).signed_dict() == raw


def test_lease_with_rollout_ref_round_trips_exactly() -> None:
    """rolloutRef is signed like the rest of the spec: as written, nothing added."""
    raw = {
        **lease_obj()["spec"],
        "rolloutRef": {"name": "checkout-2-3-1", "specDigest": "sha256:" + "0f" * 32},
    }
    spec = parse_lease_spec(raw)
    assert spec.rollout_ref is not None
    assert spec.rollout_ref.name == "checkout-2-3-1"
    assert spec.rollout_ref.spec_digest == "sha256:" + "0f" * 32
    assert spec.signed_dict() == raw
    assert parse_lease_spec(lease_obj()["spec"]).rollout_ref is None


@pytest.mark.parametrize(
    "constraints, weight, analysis",
    [({"maxInitialWeight": 25}, 25, True), ({"requireAnalysis": False}, 5, False), ({}, 5, True)],
)
def test_lease_constraint_accessors(
    constraints: dict[str, Any], weight: int, analysis: bool
) -> None:
    spec = parse_lease_spec({**lease_obj()["spec"], "constraints": constraints})
    assert spec.max_initial_weight() == weight
    assert spec.requires_analysis() is analysis


def test_design_rollout_parses() -> None:
    obj = RolloutObject.model_validate(rollout_obj())
    spec = obj.spec
    assert [t.weight for t in spec.tiers or []] == [5, 25, 100]
    assert [t.approval for t in spec.tiers or []] == ["Auto", "Manual", "Auto"]
    assert spec.tiers and spec.tiers[2].soak_seconds == 0
    assert spec.analysis.prometheus_url == ""
    assert spec.analysis.custom and spec.analysis.custom[0].max == 300
    assert spec.analysis.has_metrics()
    assert spec.post_deploy and spec.post_deploy.job_template["spec"]["template"]
    assert spec.on_breach == "Rollback"


def test_minimal_rollout_defaults() -> None:
    spec = parse_rollout_spec({"leaseRef": {"name": "l"}})
    assert spec.paused is False
    assert spec.tiers is None  # chosen from the risk score
    assert spec.on_breach == "Rollback"
    a = spec.analysis
    assert (a.interval_seconds, a.window_seconds, a.failure_limit) == (10, 30, 1)
    assert a.no_data.rollback_after_seconds == 120
    assert a.prometheus_url is None
    assert not a.has_metrics()


def test_rollout_dump_uses_camel_case_aliases() -> None:
    spec = parse_rollout_spec(rollout_obj()["spec"])
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert dumped["leaseRef"] == {"name": "checkout-2-3-1"}
    assert dumped["analysis"]["prometheusURL"] == ""
    assert dumped["analysis"]["noData"] == {"rollbackAfterSeconds": 120}
    assert dumped["tiers"][1] == {"weight": 25, "soakSeconds": 300, "approval": "Manual"}
    # snake_case names are accepted as well (populate by name)
    assert RolloutSpec.model_validate({"lease_ref": {"name": "x"}}).lease_ref.name == "x"


def test_rollout_status_round_trip() -> None:
    raw = yaml.safe_load(ROLLOUT_STATUS_YAML)
    status = RolloutStatus.model_validate(raw)
    assert status.risk and status.risk.level == "Medium"
    assert status.rollback and status.rollback.detect_seconds == 5.5
    patch = status.to_patch()
    assert patch == status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert patch["lastAnalysis"]["time"] == "2026-11-25T10:03:00.250000Z"
    assert patch["tiers"][0]["startedAt"] == "2026-11-25T10:00:00Z"
    assert patch["conditions"][0]["lastTransitionTime"] == "2026-11-25T10:00:00Z"
    assert RolloutStatus.model_validate(patch) == status


def test_status_ignores_fields_from_newer_operators() -> None:
    status = LeaseStatus.model_validate({"phase": "Verified", "someFutureField": {"x": 1}})
    assert status.phase == "Verified"
    assert "someFutureField" not in status.to_patch()


def test_whole_objects_with_status() -> None:
    obj = lease_obj()
    obj["status"] = {
        "phase": "Verified",
        "digest": "sha256:ab",
        "cosigners": [
            {"id": "alice", "role": "human", "signedAt": "2026-11-25T09:00:00Z", "valid": True},
            {"id": "eve", "role": "admin", "signedAt": "x", "valid": False, "reason": "bad role"},
        ],
        "consumedBy": {"name": "checkout-2-3-1", "uid": "1234"},
        "conditions": [
            {
                "type": "Verified",
                "status": "True",
                "reason": "Verified2Key",
                "message": "",
                "lastTransitionTime": "2026-11-25T09:00:01Z",
            }
        ],
        "observedGeneration": 1,
    }
    lease = LeaseObject.model_validate(obj)
    assert lease.status and lease.status.cosigners and not lease.status.cosigners[1].valid
    ro = rollout_obj()
    ro["status"] = yaml.safe_load(ROLLOUT_STATUS_YAML)
    assert RolloutObject.model_validate(ro).status is not None


def test_set_condition_keeps_transition_time_when_status_unchanged() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = datetime(2026, 1, 2, tzinfo=UTC)
    conds = set_condition(
        [], type_="Verified", status="True", reason="Verified2Key", message="", now=t0
    )
    conds = set_condition(
        conds, type_="Verified", status="True", reason="Verified2Key", message="again", now=t1
    )
    cond = find_condition(conds, "Verified")
    assert cond is not None and cond.last_transition_time == t0 and cond.message == "again"
    conds = set_condition(
        conds, type_="Verified", status="False", reason="LeaseExpired", message="", now=t1
    )
    conds = set_condition(
        conds, type_="Other", status="Unknown", reason="Pending", message="", now=t1
    )
    assert [c.type for c in conds] == ["Verified", "Other"]
    assert conds[0].last_transition_time == t1
    assert isinstance(conds[0], Condition)


def test_condition_reason_must_be_camel_case() -> None:
    with pytest.raises(ValueError, match="reason"):
        Condition.model_validate(
            {
                "type": "X",
                "status": "True",
                "reason": "not ok",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        )


# --------------------------------------------------------------------------------------------
# Invalid specs: (mutation, field path expected in the message, words expected in the message)
# --------------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is _DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()

LEASE_BAD = [
    ("missing intent", _set("intent", _DELETE), "spec.intent", "required"),
    ("missing expiresAt", _set("expiresAt", _DELETE), "spec.expiresAt", "required"),
    ("missing targetRef", _set("targetRef", _DELETE), "spec.targetRef", "required"),
    ("empty intent", _set("intent", ""), "spec.intent", "at least 1"),
    ("bad expiresAt", _set("expiresAt", "tomorrow"), "spec.expiresAt", "RFC 3339"),
    ("expiresAt not UTC", _set("expiresAt", "2026-11-25T18:00:00+02:00"), "spec.expiresAt", "UTC"),
    ("expiresAt no zone", _set("expiresAt", "2026-11-25T18:00:00"), "spec.expiresAt", "RFC 3339"),
    ("expiresAt month 13", _set("expiresAt", "2026-13-25T18:00:00Z"), "spec.expiresAt", "month"),
    ("expiresAt not string", _set("expiresAt", 1764093600), "spec.expiresAt", "string"),
    ("unknown field", _set("intnet", "typo"), "spec.intnet", "unknown field"),
    ("unknown nested", _set("targetRef.namespace", "x"), "spec.targetRef.namespace", "unknown"),
    ("kind not Deployment", _set("targetRef.kind", "StatefulSet"), "spec.targetRef.kind", "Deploy"),
    ("bad target name", _set("targetRef.name", "Check_Out"), "spec.targetRef.name", "pattern"),
    ("empty containers", _set("change.containers", []), "spec.change.containers", "at least 1"),
    (
        "duplicate container",
        _set("change.containers", [{"name": "a", "image": "x:1"}, {"name": "a", "image": "y:1"}]),
        "spec.change.containers",
        "duplicate container name 'a'",
    ),
    (
        "missing image",
        _set("change.containers.0.image", _DELETE),
        "containers[0].image",
        "required",
    ),
    (
        "image whitespace",
        _set("change.containers.0.image", "a b"),
        "containers[0].image",
        "pattern",
    ),
    ("float weight", _set("constraints.maxInitialWeight", 5.0), "maxInitialWeight", "integer"),
    ("string weight", _set("constraints.maxInitialWeight", "5"), "maxInitialWeight", "integer"),
    ("bool weight", _set("constraints.maxInitialWeight", True), "maxInitialWeight", "integer"),
    ("weight 0", _set("constraints.maxInitialWeight", 0), "maxInitialWeight", "greater than"),
    ("weight 101", _set("constraints.maxInitialWeight", 101), "maxInitialWeight", "less than"),
    ("string bool", _set("constraints.requireAnalysis", "true"), "requireAnalysis", "boolean"),
    (
        "rolloutRef digest uppercase",
        _set("rolloutRef", {"name": "r", "specDigest": "sha256:" + "AB" * 32}),
        "spec.rolloutRef.specDigest",
        "pattern",
    ),
    (
        "rolloutRef digest short",
        _set("rolloutRef", {"name": "r", "specDigest": "sha256:abc"}),
        "spec.rolloutRef.specDigest",
        "at least 71",
    ),
    (
        "rolloutRef digest other algorithm",
        _set("rolloutRef", {"name": "r", "specDigest": "sha512:" + "ab" * 32}),
        "spec.rolloutRef.specDigest",
        "pattern",
    ),
    (
        "rolloutRef without digest",
        _set("rolloutRef", {"name": "r"}),
        "spec.rolloutRef.specDigest",
        "required",
    ),
    (
        "rolloutRef without name",
        _set("rolloutRef", {"specDigest": "sha256:" + "ab" * 32}),
        "spec.rolloutRef.name",
        "required",
    ),
    (
        "rolloutRef name not DNS",
        _set("rolloutRef", {"name": "Roll_Out", "specDigest": "sha256:" + "ab" * 32}),
        "spec.rolloutRef.name",
        "pattern",
    ),
    (
        "rolloutRef name longer than a Rollout name",
        _set("rolloutRef", {"name": "r" * 64, "specDigest": "sha256:" + "ab" * 32}),
        "spec.rolloutRef.name",
        "at most 63",
    ),
    (
        "rolloutRef unknown field",
        _set("rolloutRef", {"name": "r", "specDigest": "sha256:" + "ab" * 32, "uid": "x"}),
        "spec.rolloutRef.uid",
        "unknown field",
    ),
]


@pytest.mark.parametrize(
    "mutate, path, words", [c[1:] for c in LEASE_BAD], ids=[c[0] for c in LEASE_BAD]
)
def test_bad_lease_specs_fail_with_field_in_message(mutate: Any, path: str, words: str) -> None:
    spec = copy.deepcopy(lease_obj()["spec"])
    mutate(spec)
    with pytest.raises(InvalidSpecError) as info:
        parse_lease_spec(spec)
    message = str(info.value)
    assert path in message, message
    assert words in message, message
    assert "\n" not in message  # one line: it goes into a condition message


def _tiers(*weights: Any) -> list[dict[str, Any]]:
    return [{"weight": w} for w in weights]


ROLLOUT_BAD = [
    ("float weight", _set("tiers", _tiers(5.0, 100)), "spec.tiers[0].weight", "integer"),
    ("string weight", _set("tiers", _tiers("5", 100)), "spec.tiers[0].weight", "integer"),
    (
        "weight 0",
        _set("tiers", _tiers(0, 100)),
        "spec.tiers[0].weight",
        "greater than or equal to 1",
    ),
    (
        "weight 101",
        _set("tiers", _tiers(5, 101)),
        "spec.tiers[1].weight",
        "less than or equal to 100",
    ),
    ("decreasing", _set("tiers", _tiers(25, 5, 100)), "spec.tiers", "strictly increasing"),
    ("repeated weight", _set("tiers", _tiers(5, 5, 100)), "spec.tiers", "strictly increasing"),
    ("last not 100", _set("tiers", _tiers(5, 50)), "spec.tiers", "last tier must have weight 100"),
    ("empty tiers", _set("tiers", []), "spec.tiers", "at least 1"),
    ("11 tiers", _set("tiers", _tiers(*range(1, 11), 100)), "spec.tiers", "at most 10"),
    ("negative soak", _set("tiers.0.soakSeconds", -1), "spec.tiers[0].soakSeconds", "greater"),
    ("float soak", _set("tiers.0.soakSeconds", 1.5), "spec.tiers[0].soakSeconds", "integer"),
    ("bad approval", _set("tiers.1.approval", "manual"), "spec.tiers[1].approval", "'Manual'"),
    ("interval 0", _set("analysis.intervalSeconds", 0), "spec.analysis.intervalSeconds", "1"),
    ("interval float", _set("analysis.intervalSeconds", 10.0), "intervalSeconds", "integer"),
    ("failureLimit -1", _set("analysis.failureLimit", -1), "spec.analysis.failureLimit", "0"),
    (
        "negative noData",
        _set("analysis.noData.rollbackAfterSeconds", -5),
        "rollbackAfterSeconds",
        "greater",
    ),
    ("float threshold", _set("analysis.tes.maxDropPercent", 5.5), "maxDropPercent", "integer"),
    ("bad url", _set("analysis.prometheusURL", "prom:9090"), "prometheusURL", "pattern"),
    ("lowercase url key", _set("analysis.prometheusUrl", "http://p"), "prometheusUrl", "unknown"),
    (
        "duplicate custom",
        _set("analysis.custom", [{"name": "a", "query": "q", "max": 1}] * 2),
        "spec.analysis.custom",
        "duplicate custom metric name 'a'",
    ),
    ("float custom max", _set("analysis.custom.0.max", 0.5), "custom[0].max", "integer"),
    ("unknown field", _set("tier", []), "spec.tier", "unknown field"),
    ("typo in tier", _set("tiers.0.soakSecond", 5), "spec.tiers[0].soakSecond", "unknown field"),
    ("bad onBreach", _set("onBreach", "Ignore"), "spec.onBreach", "Rollback"),
    ("paused string", _set("paused", "false"), "spec.paused", "boolean"),
    ("missing leaseRef", _set("leaseRef", _DELETE), "spec.leaseRef", "required"),
    ("jobTemplate no spec", _set("postDeploy.jobTemplate", {}), "jobTemplate", "'spec'"),
    ("timeout 0", _set("postDeploy.timeoutSeconds", 0), "postDeploy.timeoutSeconds", "greater"),
]


@pytest.mark.parametrize(
    "mutate, path, words", [c[1:] for c in ROLLOUT_BAD], ids=[c[0] for c in ROLLOUT_BAD]
)
def test_bad_rollout_specs_fail_with_field_in_message(mutate: Any, path: str, words: str) -> None:
    spec = copy.deepcopy(rollout_obj()["spec"])
    mutate(spec)
    with pytest.raises(InvalidSpecError) as info:
        parse_rollout_spec(spec)
    message = str(info.value)
    assert path in message, message
    assert words in message, message
    assert message.startswith("invalid rollouts.calyx.io: ")


def test_spec_must_be_an_object() -> None:
    with pytest.raises(InvalidSpecError, match="spec: must be an object"):
        parse_lease_spec(None)


def test_all_problems_are_reported() -> None:
    spec = rollout_obj()["spec"]
    spec["tiers"][0]["weight"] = 0
    spec["analysis"]["intervalSeconds"] = 0
    with pytest.raises(InvalidSpecError) as info:
        parse_rollout_spec(spec)
    assert len(info.value.problems) == 2


def test_whole_object_rejects_wrong_kind_and_version() -> None:
    obj = lease_obj()
    obj["apiVersion"] = "coordination.k8s.io/v1"
    with pytest.raises(ValueError, match="apiVersion"):
        LeaseObject.model_validate(obj)
    obj = rollout_obj()
    obj["kind"] = "Lease"
    with pytest.raises(ValueError, match="kind"):
        RolloutObject.model_validate(obj)


def test_specs_are_immutable_values() -> None:
    spec = parse_lease_spec(lease_obj()["spec"])
    with pytest.raises(ValueError):
        spec.intent = "changed"  # type: ignore[misc]
    assert isinstance(spec, LeaseSpec)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=-5, max_value=110), min_size=0, max_size=12))
def test_tier_validation_matches_the_rule(weights: list[int]) -> None:
    """Accepted iff 1-10 tiers, each 1-100, strictly increasing, ending at 100."""
    expected = (
        1 <= len(weights) <= 10
        and all(1 <= w <= 100 for w in weights)
        and all(a < b for a, b in itertools.pairwise(weights))
        and weights[-1] == 100
    )
    raw = {"leaseRef": {"name": "l"}, "tiers": [{"weight": w} for w in weights]}
    try:
        parse_rollout_spec(raw)
        accepted = True
    except InvalidSpecError:
        accepted = False
    assert accepted == expected


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "leaseRef": st.fixed_dictionaries(
                {"name": st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)}
            )
        },
        optional={
            "paused": st.booleans(),
            "onBreach": st.sampled_from(["Rollback", "Pause"]),
            "analysis": st.fixed_dictionaries(
                {},
                optional={
                    "intervalSeconds": st.integers(2, 3600),
                    "failureLimit": st.integers(1, 100),
                    "errorRate": st.fixed_dictionaries({"maxPermille": st.integers(0, 1000)}),
                },
            ),
        },
    )
)
def test_rollout_spec_round_trips(raw: dict[str, Any]) -> None:
    spec = parse_rollout_spec(raw)
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert parse_rollout_spec(dumped) == spec
    assert spec.model_dump(mode="json", exclude_unset=True, exclude_none=True) == raw


def test_a_metric_without_a_limit_gets_its_documented_default() -> None:
    """``cpu: {}`` checks CPU at the default ceiling (docs/api.md, "Defaults"): one home per
    default, the model, which the analysis settings are built from."""
    from calyx.api.rollout import (
        DEFAULT_CPU_MAX_PERCENT,
        DEFAULT_ERROR_RATE_MAX_PERMILLE,
        DEFAULT_MEMORY_MAX_PERCENT,
        DEFAULT_TES_MAX_DROP_PERCENT,
        Analysis,
    )

    a = Analysis.model_validate({"tes": {}, "errorRate": {}, "cpu": {}, "memory": {}})
    assert a.tes is not None and a.tes.max_drop_percent == DEFAULT_TES_MAX_DROP_PERCENT == 5
    assert a.error_rate is not None and a.error_rate.max_permille == DEFAULT_ERROR_RATE_MAX_PERMILLE
    assert a.cpu is not None and a.cpu.max_percent == DEFAULT_CPU_MAX_PERCENT == 90
    assert a.memory is not None and a.memory.max_percent == DEFAULT_MEMORY_MAX_PERCENT == 90
