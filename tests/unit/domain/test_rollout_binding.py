"""The keys sign how, not only what (docs/signing.md, "Binding the rollout (rolloutRef)"): the
effective Rollout spec, its digest, and the rules that refuse a Rollout a Lease does not bind."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from calyx.api import LeaseSpec, RolloutSpec, parse_lease_spec, parse_rollout_spec
from calyx.domain.canonical import CanonicalError
from calyx.domain.rollout_binding import (
    binding_problem,
    effective_rollout_spec,
    rollout_spec_digest,
)
from calyx.domain.trust import ROLLOUT_BINDINGS, RolloutBinding
from tests.unit.api.test_crds import ROLLOUT_FILE, apply_defaults, root_schema

JOB: dict[str, Any] = {
    "spec": {
        "backoffLimit": 0,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "smoke", "image": "reg/smoke@sha256:" + "1" * 64}],
            }
        },
    }
}

MINIMAL: dict[str, Any] = {"leaseRef": {"name": "checkout-2-3-1"}}

#: Every field set, so that a change anywhere can be tried.
FULL: dict[str, Any] = {
    "leaseRef": {"name": "checkout-2-3-1"},
    "paused": False,
    "tiers": [
        {"weight": 5, "soakSeconds": 120},
        {"weight": 25, "soakSeconds": 300, "approval": "Manual"},
        {"weight": 100},
    ],
    "analysis": {
        "intervalSeconds": 10,
        "windowSeconds": 30,
        "prometheusURL": "http://prometheus.monitoring:9090",
        "failureLimit": 1,
        "noData": {"rollbackAfterSeconds": 120},
        "tes": {"maxDropPercent": 5},
        "errorRate": {"maxPermille": 10},
        "cpu": {"maxPercent": 90},
        "memory": {"maxPercent": 90},
        "custom": [{"name": "p99-latency", "query": "histogram_quantile(0.99, x)", "max": 300}],
    },
    "onBreach": "Rollback",
    "postDeploy": {"jobTemplate": JOB, "timeoutSeconds": 300},
}


def spec(raw: dict[str, Any]) -> RolloutSpec:
    return parse_rollout_spec(copy.deepcopy(raw))


def digest(raw: dict[str, Any]) -> str:
    return rollout_spec_digest(spec(raw))


def edited(raw: dict[str, Any], edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    edit(out)
    return out


def floats_in(value: object, path: str = "spec") -> list[str]:
    if isinstance(value, float):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in floats_in(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in floats_in(v, f"{path}[{i}]")]
    return []


# --------------------------------------------------------------------------------------------
# The effective spec
# --------------------------------------------------------------------------------------------


def test_effective_spec_of_a_minimal_rollout_has_the_defaults_and_no_tiers() -> None:
    assert effective_rollout_spec(spec(MINIMAL)) == {
        "leaseRef": {"name": "checkout-2-3-1"},
        "analysis": {
            "intervalSeconds": 10,
            "windowSeconds": 30,
            "failureLimit": 1,
            "noData": {"rollbackAfterSeconds": 120},
        },
        "onBreach": "Rollback",
    }


def test_effective_spec_covers_every_field_but_paused() -> None:
    """A field added to RolloutSpec later is bound automatically; only `paused` is left out."""
    eff = effective_rollout_spec(spec({**FULL, "paused": True}))
    aliases = {f.alias or name for name, f in RolloutSpec.model_fields.items()}
    assert set(eff) == aliases - {"paused"}
    assert eff["tiers"][2] == {"weight": 100, "soakSeconds": 0, "approval": "Auto"}


@pytest.mark.parametrize("raw", [MINIMAL, FULL], ids=["minimal", "full"])
def test_effective_spec_has_no_floats(raw: dict[str, Any]) -> None:
    eff = effective_rollout_spec(spec(raw))
    assert floats_in(eff) == []
    json.dumps(eff, allow_nan=False)  # JSON types only


def test_digest_is_sha256_of_the_canonical_effective_spec() -> None:
    """Recomputed here with the one-liner docs/signing.md gives, not with calyx's encoder."""
    eff = effective_rollout_spec(spec(FULL))
    text = json.dumps(eff, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert rollout_spec_digest(spec(FULL)) == expected
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", expected)


def test_nulls_in_the_job_template_are_dropped() -> None:
    """Kubernetes treats a null field as unset; an apply round trip may or may not keep it."""
    with_nulls = edited(
        FULL,
        lambda s: s["postDeploy"]["jobTemplate"]["spec"].update(
            {"activeDeadlineSeconds": None, "template": {**JOB["spec"]["template"], "x": None}}
        ),
    )
    assert digest(with_nulls) == digest(FULL)


def test_a_float_in_the_job_template_is_refused_with_its_path() -> None:
    floaty = edited(
        FULL,
        lambda s: s["postDeploy"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][
            0
        ].update({"resources": {"requests": {"cpu": 0.5}}}),
    )
    with pytest.raises(CanonicalError) as err:
        digest(floaty)
    assert "spec.postDeploy.jobTemplate.spec.template.spec.containers[0].resources" in str(err)
    assert "float 0.5 is not allowed" in str(err.value)


# --------------------------------------------------------------------------------------------
# What changes the digest and what does not
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [MINIMAL, FULL], ids=["minimal", "full"])
def test_pausing_does_not_change_the_digest(raw: dict[str, Any]) -> None:
    assert digest({**raw, "paused": True}) == digest({**raw, "paused": False})
    assert digest({k: v for k, v in raw.items() if k != "paused"}) == digest(raw)


#: (explicit defaults, the same with them omitted)
SAME_AS_DEFAULTS = [
    pytest.param({**MINIMAL, "analysis": {}}, MINIMAL, id="analysis-{}"),
    pytest.param(
        {
            **MINIMAL,
            "paused": False,
            "analysis": {
                "intervalSeconds": 10,
                "windowSeconds": 30,
                "failureLimit": 1,
                "noData": {"rollbackAfterSeconds": 120},
            },
            "onBreach": "Rollback",
        },
        MINIMAL,
        id="every-top-level-default",
    ),
    pytest.param(
        {**MINIMAL, "analysis": {"noData": {}}},
        MINIMAL,
        id="noData-{}",
    ),
    pytest.param(
        {
            **MINIMAL,
            "tiers": [{"weight": 10, "soakSeconds": 0, "approval": "Auto"}, {"weight": 100}],
        },
        {**MINIMAL, "tiers": [{"weight": 10}, {"weight": 100}]},
        id="tier-defaults",
    ),
    pytest.param(
        {**MINIMAL, "postDeploy": {"jobTemplate": JOB, "timeoutSeconds": 300}},
        {**MINIMAL, "postDeploy": {"jobTemplate": JOB}},
        id="postDeploy-timeout",
    ),
    pytest.param(
        {**MINIMAL, "tiers": None, "postDeploy": None, "analysis": {"tes": None}},
        MINIMAL,
        id="explicit-nulls",
    ),
]


@pytest.mark.parametrize(("explicit", "omitted"), SAME_AS_DEFAULTS)
def test_defaults_written_out_give_the_same_digest(
    explicit: dict[str, Any], omitted: dict[str, Any]
) -> None:
    assert digest(explicit) == digest(omitted)


@pytest.mark.parametrize(
    "raw",
    [
        MINIMAL,
        FULL,
        {**MINIMAL, "tiers": [{"weight": 10}, {"weight": 100}]},
        {**MINIMAL, "analysis": {"tes": {"maxDropPercent": 5}}},
        {**MINIMAL, "postDeploy": {"jobTemplate": JOB}},
    ],
    ids=["minimal", "full", "tiers", "analysis", "postDeploy"],
)
def test_a_file_and_the_same_rollout_stored_by_the_api_server_have_one_digest(
    raw: dict[str, Any],
) -> None:
    """The API server fills in the schema defaults; the digest must not notice."""
    stored = apply_defaults(copy.deepcopy(raw), root_schema(ROLLOUT_FILE)["properties"]["spec"])
    assert stored != raw  # the server did fill something in
    assert digest(stored) == digest(raw)


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """An edit setting ``a.b[1].c`` to ``value``."""

    def edit(raw: dict[str, Any]) -> None:
        keys: list[str | int] = [
            int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)
        ]
        node: Any = raw
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for k in parents:
            node = node[k]
        del node[last]

    return edit


CHANGES = [
    # tiers
    pytest.param(_delete("tiers"), id="tiers-omitted-means-risk-recommendation"),
    pytest.param(_set("tiers[0].weight", 10), id="tier-weight"),
    pytest.param(_set("tiers[0].soakSeconds", 60), id="tier-soak"),
    pytest.param(_set("tiers[1].approval", "Auto"), id="tier-approval"),
    pytest.param(_set("tiers", [{"weight": 100}]), id="tiers-straight-to-100"),
    # analysis
    pytest.param(_set("analysis.intervalSeconds", 60), id="analysis-interval"),
    pytest.param(_set("analysis.windowSeconds", 300), id="analysis-window"),
    pytest.param(_set("analysis.prometheusURL", "http://evil:9090"), id="analysis-prometheus"),
    pytest.param(_set("analysis.prometheusURL", ""), id="analysis-prometheus-empty"),
    pytest.param(_set("analysis.failureLimit", 100), id="analysis-failure-limit"),
    pytest.param(_set("analysis.noData.rollbackAfterSeconds", 0), id="analysis-nodata"),
    pytest.param(_set("analysis.tes.maxDropPercent", 100), id="analysis-tes"),
    pytest.param(_set("analysis.errorRate.query", "vector(0)"), id="analysis-query-override"),
    pytest.param(_delete("analysis.errorRate"), id="analysis-metric-removed"),
    pytest.param(_set("analysis.custom[0].max", 3000), id="analysis-custom"),
    # onBreach
    pytest.param(_set("onBreach", "Pause"), id="onBreach"),
    # postDeploy
    pytest.param(_delete("postDeploy"), id="postDeploy-removed"),
    pytest.param(_set("postDeploy.timeoutSeconds", 3600), id="postDeploy-timeout"),
    pytest.param(
        _set("postDeploy.jobTemplate.spec.template.spec.containers[0].image", "evil/miner"),
        id="postDeploy-image",
    ),
    pytest.param(
        _set("postDeploy.jobTemplate.spec.template.spec.serviceAccountName", "admin"),
        id="postDeploy-service-account",
    ),
    # the Lease the Rollout cites
    pytest.param(_set("leaseRef.name", "other"), id="leaseRef"),
]


@pytest.mark.parametrize("edit", CHANGES)
def test_any_change_in_how_changes_the_digest(edit: Callable[[dict[str, Any]], None]) -> None:
    assert digest(edited(FULL, edit)) != digest(FULL)


def test_adding_post_deploy_changes_the_digest() -> None:
    assert digest({**MINIMAL, "postDeploy": {"jobTemplate": JOB}}) != digest(MINIMAL)


# --------------------------------------------------------------------------------------------
# binding_problem
# --------------------------------------------------------------------------------------------

LEASE: dict[str, Any] = {
    "intent": "INT-42: checkout 2.3.1",
    "targetRef": {"kind": "Deployment", "name": "checkout"},
    "change": {"containers": [{"name": "app", "image": "reg/checkout@sha256:" + "a" * 64}]},
    "expiresAt": "2026-11-25T18:00:00Z",
}
NO_POST_DEPLOY = {k: v for k, v in FULL.items() if k != "postDeploy"}
OTHER_DIGEST = "sha256:" + "0" * 64


def lease(rollout_ref: dict[str, str] | None) -> LeaseSpec:
    raw = copy.deepcopy(LEASE)
    if rollout_ref is not None:
        raw["rolloutRef"] = rollout_ref
    return parse_lease_spec(raw)


def bound_to(raw: dict[str, Any], name: str = "checkout-2-3-1") -> dict[str, str]:
    return {"name": name, "specDigest": digest(raw)}


#: (lease rolloutRef, Rollout name, Rollout spec, policy, None or words the problem must contain)
CASES: list[Any] = [
    # bound: name and digest decide, whatever the policy
    *[
        pytest.param(bound_to(FULL), "checkout-2-3-1", FULL, p, None, id=f"bound-match-{p}")
        for p in ROLLOUT_BINDINGS
    ],
    pytest.param(
        bound_to(FULL),
        "checkout-2-3-1",
        {**FULL, "paused": True},
        "always",
        None,
        id="bound-paused-later",
    ),
    pytest.param(
        bound_to(MINIMAL),
        "checkout-2-3-1",
        MINIMAL,
        "postDeploy",
        None,
        id="bound-minimal",
    ),
    pytest.param(
        bound_to(FULL, name="checkout"),
        "checkout-2-3-1",
        FULL,
        "postDeploy",
        ['lease checkout-2-3-1 binds rollout "checkout" but this Rollout is "checkout-2-3-1"'],
        id="bound-other-name",
    ),
    pytest.param(
        bound_to(FULL),
        "checkout-2-3-1",
        edited(FULL, _set("postDeploy.jobTemplate.spec.template.spec.containers[0].image", "x")),
        "postDeploy",
        [
            "Rollout spec digest sha256:",
            f"does not match the lease's rolloutRef.specDigest {bound_to(FULL)['specDigest']}",
            "calyx lease create --rollout rollout.yaml` and have it signed again",
        ],
        id="bound-postDeploy-swapped",
    ),
    pytest.param(
        {"name": "checkout-2-3-1", "specDigest": OTHER_DIGEST},
        "checkout-2-3-1",
        NO_POST_DEPLOY,
        "postDeploy",
        [f"rolloutRef.specDigest {OTHER_DIGEST}"],
        id="bound-digest-mismatch-even-without-postDeploy",
    ),
    pytest.param(
        bound_to(FULL),
        "checkout-2-3-1",
        edited(FULL, _set("postDeploy.jobTemplate.spec.parallelism", 1.5)),
        "postDeploy",
        ["no canonical form", "spec.postDeploy.jobTemplate.spec.parallelism: float 1.5"],
        id="bound-float",
    ),
    # unbound, policy postDeploy (the default): only a postDeploy Job needs the keys
    pytest.param(None, "checkout-2-3-1", NO_POST_DEPLOY, "postDeploy", None, id="unbound-plain"),
    pytest.param(None, "checkout-2-3-1", MINIMAL, "postDeploy", None, id="unbound-minimal"),
    pytest.param(
        None,
        "checkout-2-3-1",
        FULL,
        "postDeploy",
        [
            "this Rollout has postDeploy (its Job runs a pod the keys must approve) but lease "
            "checkout-2-3-1 has no rolloutRef; trust policy requireRolloutBinding=postDeploy",
            "calyx lease create --rollout",
        ],
        id="unbound-postDeploy",
    ),
    # unbound, policy always
    *[
        pytest.param(
            None,
            "checkout-2-3-1",
            raw,
            "always",
            ["lease checkout-2-3-1 has no rolloutRef; trust policy requireRolloutBinding=always"],
            id=f"unbound-always-{name}",
        )
        for name, raw in (("plain", NO_POST_DEPLOY), ("postDeploy", FULL))
    ],
]


@pytest.mark.parametrize(("ref", "name", "raw", "require", "words"), CASES)
def test_binding_problem(
    ref: dict[str, str] | None,
    name: str,
    raw: dict[str, Any],
    require: RolloutBinding,
    words: list[str] | None,
) -> None:
    problem = binding_problem(
        lease_spec=lease(ref), rollout_name=name, rollout_spec=spec(raw), require=require
    )
    if words is None:
        assert problem is None
        return
    assert problem is not None
    assert "\n" not in problem  # a condition message / Event: one line
    for w in words:
        assert w in problem
