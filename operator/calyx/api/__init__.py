"""Calyx API: pydantic models for ``leases.calyx.io`` and ``rollouts.calyx.io`` (docs/api.md).

The models are the single source of truth: the CRDs in ``crds/`` are generated from them by
``python -m calyx.api.crdgen`` (:func:`calyx.api.crdgen.crd_manifests` gives them in memory).

Typical use in the operator::

    spec = parse_rollout_spec(body["spec"])        # raises InvalidSpecError (one clear line)
    status = RolloutStatus.model_validate(body.get("status") or {})
    patch = {"status": status.to_patch()}          # camelCase, JSON types, no nulls

This is the bottom layer: it imports nothing else from calyx and does no I/O.
"""

from calyx.api.common import (
    API_VERSION,
    GROUP,
    VERSION,
    Condition,
    ConditionStatus,
    ObjectRef,
    SpecModel,
    StatusModel,
    TargetRef,
    find_condition,
    format_time,
    parse_rfc3339_utc,
    set_condition,
)
from calyx.api.errors import InvalidSpecError, describe_validation_error, parse_spec
from calyx.api.lease import (
    DEFAULT_MAX_INITIAL_WEIGHT,
    DEFAULT_REQUIRE_ANALYSIS,
    Change,
    ContainerImage,
    Cosigner,
    LeaseConstraints,
    LeaseObject,
    LeasePhase,
    LeaseSpec,
    LeaseStatus,
    RolloutRef,
    parse_lease_spec,
)
from calyx.api.rollout import (
    Analysis,
    AnalysisStatus,
    CustomMetric,
    LeaseRef,
    MetricSample,
    PostDeploy,
    Risk,
    RiskFactor,
    RollbackStatus,
    RolloutObject,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    SnapshotRef,
    Tier,
    TierStatus,
    WorkloadRef,
    parse_rollout_spec,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_INITIAL_WEIGHT",
    "DEFAULT_REQUIRE_ANALYSIS",
    "GROUP",
    "VERSION",
    "Analysis",
    "AnalysisStatus",
    "Change",
    "Condition",
    "ConditionStatus",
    "ContainerImage",
    "Cosigner",
    "CustomMetric",
    "InvalidSpecError",
    "LeaseConstraints",
    "LeaseObject",
    "LeasePhase",
    "LeaseRef",
    "LeaseSpec",
    "LeaseStatus",
    "MetricSample",
    "ObjectRef",
    "PostDeploy",
    "Risk",
    "RiskFactor",
    "RollbackStatus",
    "RolloutObject",
    "RolloutPhase",
    "RolloutRef",
    "RolloutSpec",
    "RolloutStatus",
    "SnapshotRef",
    "SpecModel",
    "StatusModel",
    "TargetRef",
    "Tier",
    "TierStatus",
    "WorkloadRef",
    "describe_validation_error",
    "find_condition",
    "format_time",
    "parse_lease_spec",
    "parse_rfc3339_utc",
    "parse_rollout_spec",
    "parse_spec",
    "set_condition",
]
