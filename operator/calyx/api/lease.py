"""``leases.calyx.io`` -- what is authorized (docs/api.md, "Lease").

A Lease names one workload, the exact new images, bounds on how the rollout may proceed, and an
expiry. Cosigners sign the spec (docs/signing.md), so:

* the spec is **immutable** once created (CEL ``self == oldSelf`` on the server, see
  :mod:`calyx.api.crdgen`): editing it would silently invalidate -- or worse, appear to keep --
  signatures;
* the schema declares **no defaults**: the server must store exactly what the author wrote, so the
  digest of a Lease in Git equals the digest of the Lease on the API server. Defaults are applied in
  code: :meth:`LeaseSpec.max_initial_weight`, :meth:`LeaseSpec.requires_analysis`.

The kind name ``Lease`` also exists in ``coordination.k8s.io``; always say ``leases.calyx.io`` (or
the short name ``clease``) in code, docs and CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import Field, StringConstraints, field_validator

from calyx.api.common import (
    CONDITIONS_LIST_MAP,
    DNS_SUBDOMAIN_PATTERN,
    OUTBOX_MAX_ITEMS,
    RFC3339_UTC_PATTERN,
    Condition,
    DnsLabel,
    ObjectModelMixin,
    ObjectRef,
    OutboxEntry,
    SpecModel,
    StatusModel,
    TargetRef,
    Time,
    parse_rfc3339_utc,
)
from calyx.api.errors import parse_spec
from calyx.api.rollout import MAX_NAME_LENGTH as MAX_ROLLOUT_NAME_LENGTH

KIND: Final = "Lease"
PLURAL: Final = "leases"
SINGULAR: Final = "lease"
SHORT_NAME: Final = "clease"
QUALIFIED_NAME: Final = "leases.calyx.io"

DEFAULT_MAX_INITIAL_WEIGHT: Final = 5
"""Applied in code when ``constraints.maxInitialWeight`` is omitted: the first tier may expose the
change to at most 5 % of traffic unless the signers explicitly allowed more."""

DEFAULT_REQUIRE_ANALYSIS: Final = True
"""Applied in code when ``constraints.requireAnalysis`` is omitted: a canary that nobody watches is
not a canary."""

MAX_CONTAINERS: Final = 32

SPEC_DIGEST_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"
"""``sha256:`` and 64 lowercase hex digits: the form of every digest Calyx computes."""

LeasePhase = Literal["Pending", "Verified", "Rejected", "Expired", "Consumed"]

#: Condition types on a Lease.
CONDITION_VERIFIED: Final = "Verified"


class ContainerImage(SpecModel):
    """One container of the target's pod template and the exact image it must run."""

    name: DnsLabel
    """Container name in the target Deployment's pod template."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^\S+$")]
    """The new image. A digest (`repo@sha256:...`) pins exactly what was signed; a mutable tag is
    allowed but raises the risk score."""


class Change(SpecModel):
    """The change being authorized: new images, by container name."""

    containers: Annotated[
        list[ContainerImage],
        Field(
            min_length=1,
            max_length=MAX_CONTAINERS,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ]
    """The exact new images (at least one). Container names are unique."""

    @field_validator("containers")
    @classmethod
    def _unique_names(cls, containers: list[ContainerImage]) -> list[ContainerImage]:
        seen: set[str] = set()
        for c in containers:
            if c.name in seen:
                raise ValueError(f"duplicate container name {c.name!r}")
            seen.add(c.name)
        return containers


class LeaseConstraints(SpecModel):
    """Bounds the signers place on how a Rollout may use this Lease. All optional."""

    max_initial_weight: Annotated[int, Field(ge=1, le=100)] | None = None
    """The first tier's weight may not exceed this (1-100). Omitted means 5."""

    require_analysis: bool | None = None
    """The Rollout must configure at least one metric analysis. Omitted means true."""

    def effective_max_initial_weight(self) -> int:
        """``maxInitialWeight`` with the default applied."""
        if self.max_initial_weight is None:
            return DEFAULT_MAX_INITIAL_WEIGHT
        return self.max_initial_weight

    def effective_require_analysis(self) -> bool:
        """``requireAnalysis`` with the default applied."""
        if self.require_analysis is None:
            return DEFAULT_REQUIRE_ANALYSIS
        return self.require_analysis


class RolloutRef(SpecModel):
    """The one Rollout (same namespace) this Lease may be rolled out by, and exactly how.

    Without it the keys sign *what* changes but not *how*: whoever can write a Rollout could pick
    the tiers, turn analysis down or attach a ``postDeploy`` Job -- a pod the operator runs with
    its own rights. See docs/signing.md, "Binding the rollout (rolloutRef)".
    """

    name: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=MAX_ROLLOUT_NAME_LENGTH, pattern=DNS_SUBDOMAIN_PATTERN
        ),
    ]
    """Name of the Rollout (`rollouts.calyx.io`, same namespace) allowed to use this Lease."""

    spec_digest: Annotated[
        str, StringConstraints(min_length=71, max_length=71, pattern=SPEC_DIGEST_PATTERN)
    ]
    """`sha256:<hex>` of the Rollout's effective spec (defaults applied, `paused` left out), as
    printed by `calyx rollout digest -f rollout.yaml`."""


class LeaseSpec(SpecModel):
    """What is authorized. Immutable after creation: create a new Lease to change anything."""

    intent: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    """Why this change is made, free text (ticket id and summary). Shown to signers."""

    target_ref: TargetRef
    """The Deployment to change, in the Lease's namespace."""

    change: Change
    """The exact new images."""

    constraints: LeaseConstraints | None = None
    """Bounds on how the Rollout may proceed (all optional)."""

    expires_at: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            json_schema_extra={"format": "date-time", "pattern": RFC3339_UTC_PATTERN},
        ),
    ]
    """When the authorization ends, RFC 3339 in UTC (`2026-11-25T18:00:00Z`). A rollout still
    running at that moment is rolled back."""

    @field_validator("expires_at")
    @classmethod
    def _rfc3339_utc(cls, value: str) -> str:
        parse_rfc3339_utc(value)  # kept as the original string: signatures cover the text
        return value

    rollout_ref: RolloutRef | None = None
    """Binds how the change is rolled out: the Rollout's name and the digest of its effective
    spec. Omitted: any Rollout spec satisfying `constraints` may use the Lease, unless the trust
    policy `requireRolloutBinding` demands a binding."""

    def expires_at_datetime(self) -> datetime:
        """``expiresAt`` as an aware UTC datetime."""
        return parse_rfc3339_utc(self.expires_at)

    def max_initial_weight(self) -> int:
        """``constraints.maxInitialWeight`` with the default applied."""
        return (self.constraints or LeaseConstraints()).effective_max_initial_weight()

    def requires_analysis(self) -> bool:
        """``constraints.requireAnalysis`` with the default applied."""
        return (self.constraints or LeaseConstraints()).effective_require_analysis()

    def signed_dict(self) -> dict[str, Any]:
        """The spec as signed: exactly the fields the author set, camelCase, JSON types.

        Equal to the raw ``spec`` the model was validated from (strict parsing coerces nothing
        and the schema has no defaults), so either may be used for the digest (docs/signing.md §2).
        """
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Cosigner(StatusModel):
    """The verification result for one ``cosign.calyx.io/<signer-id>`` annotation."""

    id: str
    """Signer id (the annotation key suffix)."""

    role: str = ""
    """Role claimed by the annotation (`human` or `agent`); reported as written, even if invalid."""

    signed_at: str = ""
    """`signedAt` as written in the annotation."""

    valid: bool
    """Whether this cosignature counts."""

    reason: str = ""
    """Why it does not count (empty when valid)."""

    sig_sha256: str | None = None
    """sha256 of the signature bytes: identifies the signature without repeating it."""


class LeaseStatus(StatusModel):
    """Observed state of a Lease, written only by the operator."""

    phase: LeasePhase | None = None
    """Summary for `kubectl get`: Pending, Verified, Rejected, Expired or Consumed."""

    digest: str | None = None
    """Lease digest `sha256:<hex>` over namespace, name and spec: what the cosigners signed."""

    cosigners: Annotated[list[Cosigner], Field(max_length=64)] | None = None
    """Every cosignature annotation found and whether it counts."""

    consumed_by: ObjectRef | None = None
    """The Rollout that claimed this Lease (a Lease authorizes one rollout)."""

    conditions: Annotated[list[Condition], Field(json_schema_extra=CONDITIONS_LIST_MAP)] | None = (
        None
    )
    """Standard conditions; `Verified` tells whether the Lease currently verifies."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` last processed."""

    verified_at: Time | None = None
    """When the Lease last passed verification."""

    outbox: Annotated[list[OutboxEntry], Field(max_length=OUTBOX_MAX_ITEMS)] | None = None
    """Announcements stored with their decision and not yet confirmed posted."""

    audit_head: str | None = None
    """Hash of this Lease's last audit record (its chain continues from here)."""

    audit_seq: Annotated[int, Field(ge=0)] | None = None
    """Sequence number of this Lease's last audit record."""


class LeaseObject(ObjectModelMixin, SpecModel):
    """A whole ``leases.calyx.io`` object as returned by the API server or read from a file.

    ``metadata`` is kept as a plain dict (the API server owns its shape); ``status`` is parsed
    leniently (see :class:`~calyx.api.common.StatusModel`).
    """

    api_version: Literal["calyx.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Lease"]
    metadata: dict[str, Any] = Field(default_factory=dict, strict=False)
    spec: LeaseSpec
    status: LeaseStatus | None = Field(default=None, strict=False)


def parse_lease_spec(raw: Mapping[str, Any] | None) -> LeaseSpec:
    """Validate a raw Lease ``spec`` dict; raises :class:`~calyx.api.errors.InvalidSpecError`
    with a one-line message naming each bad field (``spec.change.containers: ...``)."""
    return parse_spec(LeaseSpec, raw, kind=QUALIFIED_NAME)
