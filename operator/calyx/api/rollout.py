"""``rollouts.calyx.io`` -- how an authorized change is rolled out (docs/api.md, "Rollout").

A Rollout cites a Lease (``leaseRef``) and takes target and images **from the Lease**, never
duplicating them, so that what runs is always what was signed. The spec only says *how*: canary
tiers, metric analysis, what to do on a breach, and an optional post-deploy Job.

Unlike the Lease, the Rollout schema carries its defaults (``paused``, ``soakSeconds``,
``approval``, ``analysis.*``, ``onBreach``, ``postDeploy.timeoutSeconds``): they are applied by
the API server, so ``kubectl get -o yaml`` shows the values actually in force, and they equal the
model defaults here, so a Rollout read from a Git file behaves the same. The one exception is
``tiers``, whose default depends on the risk score (docs/risk.md) and is therefore left unset.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import Field, StringConstraints, WithJsonSchema, field_validator

from calyx.api.common import (
    CONDITIONS_LIST_MAP,
    OUTBOX_MAX_ITEMS,
    Condition,
    DnsLabel,
    LongText,
    ObjectModelMixin,
    ObjectName,
    OutboxEntry,
    SpecModel,
    StatusModel,
    Time,
)
from calyx.api.errors import parse_spec

KIND: Final = "Rollout"
PLURAL: Final = "rollouts"
SINGULAR: Final = "rollout"
SHORT_NAME: Final = "crollout"
QUALIFIED_NAME: Final = "rollouts.calyx.io"

MAX_TIERS: Final = 10
MAX_CUSTOM_METRICS: Final = 10
MAX_NAME_LENGTH: Final = 63
"""A Rollout's name is used as a label value (``calyx.io/rollout``), so at most 63 characters."""

Approval = Literal["Auto", "Manual"]
OnBreach = Literal["Rollback", "Pause"]
RolloutPhase = Literal[
    "Pending",
    "WaitingForLease",
    "Progressing",
    "Paused",
    "WaitingForApproval",
    "Promoting",
    "Validating",
    "Completed",
    "RollingBack",
    "RolledBack",
    "Failed",
]
Verdict = Literal["Pass", "Breach", "NoData"]
TierResult = Literal["Pending", "Running", "Passed", "Failed", "RolledBack"]
RiskLevel = Literal["Low", "Medium", "High"]
RollbackTrigger = Literal[
    "Breach", "LeaseInvalid", "LeaseExpired", "Manual", "PostDeployFailed", "Deleted"
]

# Analysis defaults, each defined here and nowhere else: the models below carry them (and so the
# CRD schema), and calyx.domain.analysis applies them in code to a Rollout read without the
# schema (docs/api.md, "Defaults"; docs/architecture.md, "Who owns each default").
DEFAULT_INTERVAL_SECONDS: Final = 10
MIN_INTERVAL_SECONDS: Final = 1
DEFAULT_WINDOW_SECONDS: Final = 30
DEFAULT_FAILURE_LIMIT: Final = 1
DEFAULT_NO_DATA_ROLLBACK_AFTER_SECONDS: Final = 120
DEFAULT_ON_BREACH: Final[OnBreach] = "Rollback"
#: Thresholds applied by calyx.domain.analysis when a metric's entry omits its limit (the schema
#: requires the limit, so only a Rollout read without it, e.g. from a file, relies on these).
DEFAULT_TES_MAX_DROP_PERCENT: Final = 5
DEFAULT_ERROR_RATE_MAX_PERMILLE: Final = 10
DEFAULT_CPU_MAX_PERCENT: Final = 90
DEFAULT_MEMORY_MAX_PERCENT: Final = 90

#: Condition types on a Rollout.
CONDITION_LEASE_VERIFIED: Final = "LeaseVerified"
CONDITION_PROGRESSING: Final = "Progressing"
CONDITION_HEALTHY: Final = "Healthy"
CONDITION_COMPLETED: Final = "Completed"
CONDITION_ROLLED_BACK: Final = "RolledBack"

#: Query text: PromQL with the template variables of docs/analysis.md, "Template variables".
Query = Annotated[str, StringConstraints(min_length=1, max_length=4096)]

# --------------------------------------------------------------------------------------------
# Server-side (CEL) rules; the pydantic validators below enforce the same in the operator.
# --------------------------------------------------------------------------------------------

LEASE_REF_IMMUTABLE: Final[dict[str, Any]] = {
    "rule": "self == oldSelf",
    "message": (
        "leaseRef is immutable: a Rollout is bound to the Lease that authorized it; "
        "create a new Rollout for another Lease"
    ),
}

#: CEL has no pairwise loop, so iterate over literal indexes; ``maxItems`` bounds the cost.
_INDEXES: Final = ", ".join(str(i) for i in range(MAX_TIERS - 1))
TIERS_VALIDATIONS: Final[list[dict[str, Any]]] = [
    {
        "rule": f"[{_INDEXES}].all(i, i >= self.size() - 1 || self[i].weight < self[i + 1].weight)",
        "message": "tier weights must be strictly increasing",
    },
    {
        "rule": "self.size() == 0 || self[self.size() - 1].weight == 100",
        "message": "the last tier must have weight 100 (promotion)",
    },
]

# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


class LeaseRef(SpecModel):
    """The Lease (``leases.calyx.io``, same namespace) that authorizes this rollout."""

    name: ObjectName
    """Name of the Lease."""


class Tier(SpecModel):
    """One canary step: expose `weight` % of pods to the change, then watch for `soakSeconds`."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Requested share of pods running the change, 1-100. Weights strictly increase across tiers
    and the last tier is 100 (promotion)."""

    soak_seconds: Annotated[int, Field(ge=0, le=604800)] = 0
    """How long the tier must run without a breach before advancing (0-604800). Ignored for the
    weight-100 tier, which promotes."""

    approval: Approval = "Auto"
    """`Manual` waits for a signed human approval (`approve.calyx.io/<signer>`) before entering
    this tier. Breaches are still evaluated while waiting."""


class NoDataPolicy(SpecModel):
    """What to do when a query returns no data: never advance, and eventually roll back."""

    rollback_after_seconds: Annotated[int, Field(ge=0, le=86400)] = (
        DEFAULT_NO_DATA_ROLLBACK_AFTER_SECONDS
    )
    """Roll back after this long without data (0 = hold forever, never roll back for no data)."""


class TesThreshold(SpecModel):
    """Canary TES (the application's quality score, higher is better) against the baseline."""

    max_drop_percent: Annotated[int, Field(ge=0, le=100)] = DEFAULT_TES_MAX_DROP_PERCENT
    """Breach when canary TES is more than this many percent below the baseline."""

    query: Query | None = None
    """PromQL overriding the default template."""


class ErrorRateThreshold(SpecModel):
    """Canary error rate, in per mille (10 = 1 %), so that it stays an integer."""

    max_permille: Annotated[int, Field(ge=0, le=1000)] = DEFAULT_ERROR_RATE_MAX_PERMILLE
    """Breach when the canary error rate exceeds this many per mille of requests."""

    query: Query | None = None
    """PromQL overriding the default template."""


class CpuThreshold(SpecModel):
    """Canary CPU usage as a percentage of requests (may exceed 100 when limits allow)."""

    max_percent: Annotated[int, Field(ge=1, le=1000)] = DEFAULT_CPU_MAX_PERCENT
    """Breach when canary CPU usage exceeds this percentage of its requests."""

    query: Query | None = None
    """PromQL overriding the default template."""


class MemoryThreshold(SpecModel):
    """Canary memory working set as a percentage of limits."""

    max_percent: Annotated[int, Field(ge=1, le=100)] = DEFAULT_MEMORY_MAX_PERCENT
    """Breach when canary working-set memory exceeds this percentage of its limits."""

    query: Query | None = None
    """PromQL overriding the default template."""


class CustomMetric(SpecModel):
    """A user-defined metric: breach when the query's value exceeds ``max``."""

    name: DnsLabel
    """Metric name (unique), used in status and reports."""

    query: Query
    """PromQL returning one number for the canary."""

    max: int
    """Breach when the value is greater than this (an integer: scale the query if needed)."""


class Analysis(SpecModel):
    """Metric analysis, evaluated every ``intervalSeconds`` for canary and baseline.

    A metric is checked only when configured; with none configured there is no analysis, which a
    Lease forbids by default (``constraints.requireAnalysis``).
    """

    interval_seconds: Annotated[int, Field(ge=MIN_INTERVAL_SECONDS, le=3600)] = (
        DEFAULT_INTERVAL_SECONDS
    )
    """Seconds between evaluations (minimum 1). Bounds breach detection time; evaluations are
    aligned to just after Prometheus's scrapes land (docs/analysis.md, "Scrape-aligned")."""

    window_seconds: Annotated[int, Field(ge=1, le=86400)] = DEFAULT_WINDOW_SECONDS
    """PromQL range window (`{{ window }}`) in seconds."""

    prometheus_url: (
        Annotated[str, StringConstraints(max_length=2048, pattern=r"^(https?://\S+)?$")] | None
    ) = Field(default=None, alias="prometheusURL")
    """Prometheus base URL; omitted or empty means the operator's setting."""

    failure_limit: Annotated[int, Field(ge=0, le=100)] = DEFAULT_FAILURE_LIMIT
    """Consecutive breaching evaluations tolerated: `onBreach` fires on breach
    number `failureLimit + 1` in a row; 0 acts on the first breach, 1 ignores a single
    breaching sample."""

    no_data: Annotated[NoDataPolicy, Field(json_schema_extra={"default": {}})] = Field(
        default_factory=NoDataPolicy
    )
    """Missing data holds the rollout (never advances); see `rollbackAfterSeconds`."""

    tes: TesThreshold | None = None
    """TES drop against the baseline."""

    error_rate: ErrorRateThreshold | None = None
    """Error rate ceiling."""

    cpu: CpuThreshold | None = None
    """CPU ceiling."""

    memory: MemoryThreshold | None = None
    """Memory ceiling."""

    custom: (
        Annotated[
            list[CustomMetric],
            Field(
                max_length=MAX_CUSTOM_METRICS,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    """Additional metrics, unique by name."""

    @field_validator("custom")
    @classmethod
    def _unique_custom_names(cls, custom: list[CustomMetric] | None) -> list[CustomMetric] | None:
        seen: set[str] = set()
        for metric in custom or []:
            if metric.name in seen:
                raise ValueError(f"duplicate custom metric name {metric.name!r}")
            seen.add(metric.name)
        return custom

    def has_metrics(self) -> bool:
        """Whether any metric is configured (what ``requireAnalysis`` asks for)."""
        return bool(self.tes or self.error_rate or self.cpu or self.memory or (self.custom or []))


#: The postDeploy.jobTemplate schema: a batch/v1 JobTemplateSpec, validated by the Job API when
#: the operator creates the Job; here only its outline is declared.
_JOB_TEMPLATE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A batch/v1 JobTemplateSpec (`metadata`, `spec`) for the validation Job.",
    "properties": {
        "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
    "required": ["spec"],
}


class PostDeploy(SpecModel):
    """Validation after promotion: a Job that must succeed within ``timeoutSeconds``."""

    job_template: Annotated[
        dict[str, Any], WithJsonSchema(_JOB_TEMPLATE_SCHEMA), Field(strict=False)
    ]
    """batch/v1 JobTemplateSpec. Failure or timeout rolls the change back."""

    timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = 300
    """How long the Job may take."""

    @field_validator("job_template")
    @classmethod
    def _has_spec(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("spec"), dict):
            raise ValueError("must be a JobTemplateSpec with a 'spec' object")
        if "metadata" in value and not isinstance(value["metadata"], dict):
            raise ValueError("'metadata' must be an object")
        return value


class RolloutSpec(SpecModel):
    """How to roll out the change authorized by ``leaseRef``."""

    lease_ref: Annotated[
        LeaseRef, Field(json_schema_extra={"x-kubernetes-validations": [LEASE_REF_IMMUTABLE]})
    ]
    """The Lease authorizing this rollout. Immutable."""

    paused: bool = False
    """Hold at the current tier (never blocks an automated rollback)."""

    tiers: (
        Annotated[
            list[Tier],
            Field(
                min_length=1,
                max_length=MAX_TIERS,
                json_schema_extra={"x-kubernetes-validations": TIERS_VALIDATIONS},
            ),
        ]
        | None
    ) = None
    """Canary steps, weights strictly increasing, last one 100. Omitted: chosen from the risk
    score (5/25/100 with soak and approval depending on the risk level)."""

    analysis: Annotated[Analysis, Field(json_schema_extra={"default": {}})] = Field(
        default_factory=Analysis
    )
    """Metric analysis and thresholds."""

    on_breach: OnBreach = DEFAULT_ON_BREACH
    """`Rollback` (default) reverts at once; `Pause` holds for a human."""

    post_deploy: PostDeploy | None = None
    """Optional validation Job after promotion."""

    @field_validator("tiers")
    @classmethod
    def _tiers_increase_to_100(cls, tiers: list[Tier] | None) -> list[Tier] | None:
        if not tiers:
            return tiers
        for i, (prev, cur) in enumerate(itertools.pairwise(tiers), start=1):
            if cur.weight <= prev.weight:
                raise ValueError(
                    "tier weights must be strictly increasing "
                    f"(tier {i} has weight {cur.weight} after {prev.weight})"
                )
        if tiers[-1].weight != 100:
            raise ValueError(f"the last tier must have weight 100 (got {tiers[-1].weight})")
        return tiers


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


class WorkloadRef(StatusModel):
    """The target workload, copied from the Lease."""

    kind: str
    name: str


class ContainerImageStatus(StatusModel):
    """A container and its new image, copied from the Lease."""

    name: str
    image: str


class ChangeStatus(StatusModel):
    """The change being rolled out, copied from the Lease."""

    containers: Annotated[list[ContainerImageStatus], Field(max_length=32)]


class SnapshotRef(StatusModel):
    """The rollback pack written before the first mutation."""

    config_map: str
    """ConfigMap `<rollout>-snapshot`."""

    sha256: str
    """sha256 of the snapshot content, checked before restoring."""


class RiskFactor(StatusModel):
    """One term of the risk score, so the score explains itself."""

    name: str
    points: int
    detail: str = ""


class Risk(StatusModel):
    """Risk score 0-100: Low < 30 <= Medium < 70 <= High."""

    score: Annotated[int, Field(ge=0, le=100)]
    level: RiskLevel
    factors: Annotated[list[RiskFactor], Field(max_length=64)] | None = None


#: A metric value in status: integers stay integers (the analysis writes ``23``, not ``23.0``),
#: a ``number`` in the schema either way.
MetricValue = Annotated[int | float, WithJsonSchema({"type": "number"})]


class MetricSample(StatusModel):
    """One metric's values at an evaluation. Missing values mean no data."""

    canary: MetricValue | None = None
    baseline: MetricValue | None = None
    threshold: str | None = None
    """The limit the value was compared against, in words with its unit (e.g. `<= 10‰`)."""

    verdict: Verdict | None = None


class AnalysisGap(StatusModel):
    """A stretch of a tier's soak that no evaluation covered."""

    since: Time
    until: Time
    seconds: Annotated[float, Field(ge=0)]


class TierStatus(StatusModel):
    """Progress and metrics of one tier."""

    weight: int
    started_at: Time | None = None
    soak_started_at: Time | None = None
    """When the tier's canary pods were all ready: the soak is counted from here (and restarts
    when a paused rollout resumes)."""

    completed_at: Time | None = None
    result: TierResult | None = None
    approved_by: str | None = None
    """Signer id of the approval that let this tier start (`approval: Manual`)."""

    metrics: dict[str, MetricSample] | None = None
    """Last values per metric (`tes`, `errorRate`, `cpu`, `memory`, custom names)."""

    soaked_seconds: Annotated[float, Field(ge=0)] | None = None
    """Soak time covered by passing evaluations; the tier passes when it reaches `soakSeconds`
    (with analysis configured; without, wall-clock time since `soakStartedAt` counts)."""

    soak_mark_at: Time | None = None
    """Time of the last evaluation counted (or skipped) for the soak."""

    analysis_gaps: Annotated[list[AnalysisGap], Field(max_length=10)] | None = None
    """Stretches longer than two intervals without an evaluation (API or Prometheus outage,
    operator down): not counted toward the soak. The last 10."""


class AnalysisStateStatus(StatusModel):
    """The streaks compared with `failureLimit` and `noData.rollbackAfterSeconds`."""

    consecutive_breaches: Annotated[int, Field(ge=0)] = 0
    first_breach_at: Time | None = None
    no_data_since: Time | None = None
    last_pass_at: Time | None = None


class AnalysisStatus(StatusModel):
    """The last evaluation, plus the counters that must survive an operator restart."""

    time: Time
    verdict: Verdict
    action: Literal["none", "hold", "rollback", "pause"] | None = None
    """What the evaluation asked for: `hold` never advances a tier."""

    reason: LongText = ""
    values: dict[str, MetricSample] | None = None
    state: AnalysisStateStatus | None = None
    """Counters that must survive an operator restart."""


class RollbackStatus(StatusModel):
    """Why and how fast the change was reverted."""

    trigger: RollbackTrigger
    reason: LongText = ""
    breach_at: Time | None = None
    """Time of the breaching sample."""

    detected_at: Time | None = None
    reverted_at: Time | None = None
    """When the revert actions were issued."""

    verified_at: Time | None = None
    """When the stable Deployment was verified restored."""

    detect_seconds: float | None = None
    revert_seconds: float | None = None
    restore_attempts: Annotated[int, Field(ge=0)] | None = None
    """Restore patches issued so far: at most one per 5 s after the first three."""

    last_restore_at: Time | None = None
    stuck: bool | None = None
    """The restore has not converged after three attempts (Warning `RollbackStuck` posted)."""


class ApprovalRecord(StatusModel):
    """A tier approval the operator has seen, kept so each is judged and announced once."""

    signer: str
    to_weight: int | None = None
    valid: bool
    reason: LongText = ""
    sig_sha256: str
    seen_at: Time | None = None


class ValidationStatus(StatusModel):
    """The post-deploy validation Job (`spec.postDeploy`) and its outcome."""

    job: str
    started_at: Time | None = None
    completed_at: Time | None = None
    result: Literal["Running", "Succeeded", "Failed", "TimedOut"] | None = None
    message: LongText = ""


class RolloutStatus(StatusModel):
    """Observed state of a Rollout, written only by the operator."""

    phase: RolloutPhase | None = None
    """Summary for `kubectl get`."""

    message: LongText | None = None
    """One line saying what the rollout is doing or waiting for, in words."""

    outbox: Annotated[list[OutboxEntry], Field(max_length=OUTBOX_MAX_ITEMS)] | None = None
    """Announcements stored with their decision and not yet confirmed posted."""

    approval_for_tier: Annotated[int, Field(ge=0)] | None = None
    """While `WaitingForApproval`: index of the tier whose entry needs a signed approval."""

    approvals: Annotated[list[ApprovalRecord], Field(max_length=20)] | None = None
    """The last tier approvals seen (valid or refused, with the reason)."""

    target: WorkloadRef | None = None
    """The target workload, from the Lease."""

    change: ChangeStatus | None = None
    """The images being rolled out, from the Lease."""

    lease_digest: str | None = None
    """Digest (`sha256:<hex>`) of the Lease this rollout was verified against."""

    current_tier: Annotated[int, Field(ge=0)] | None = None
    """Index into the tiers in force."""

    current_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Requested weight of the current tier."""

    effective_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    """Canary ready pods / all ready pods, rounded: the share actually served."""

    canary_replicas: Annotated[int, Field(ge=0)] | None = None
    stable_replicas: Annotated[int, Field(ge=0)] | None = None
    snapshot: SnapshotRef | None = None
    risk: Risk | None = None
    tiers: Annotated[list[TierStatus], Field(max_length=MAX_TIERS)] | None = None
    """The tiers in force (from spec or the risk recommendation) and their progress."""

    last_analysis: AnalysisStatus | None = None
    validation: ValidationStatus | None = None
    rollback: RollbackStatus | None = None
    conditions: Annotated[list[Condition], Field(json_schema_extra=CONDITIONS_LIST_MAP)] | None = (
        None
    )
    """Standard conditions: LeaseVerified, Progressing, Healthy, Completed, RolledBack, and the
    kstatus trio Ready (Completed), Reconciling (in progress), Stalled (RolledBack, Failed)."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` last processed."""


class RolloutObject(ObjectModelMixin, SpecModel):
    """A whole ``rollouts.calyx.io`` object as returned by the API server or read from a file."""

    api_version: Literal["calyx.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Rollout"]
    metadata: dict[str, Any] = Field(default_factory=dict, strict=False)
    spec: RolloutSpec
    status: RolloutStatus | None = Field(default=None, strict=False)


def parse_rollout_spec(raw: Mapping[str, Any] | None) -> RolloutSpec:
    """Validate a raw Rollout ``spec`` dict; raises :class:`~calyx.api.errors.InvalidSpecError`
    with a one-line message naming each bad field (``spec.tiers[1].weight: ...``)."""
    return parse_spec(RolloutSpec, raw, kind=QUALIFIED_NAME)
