"""Building blocks shared by the ``leases.calyx.io`` and ``rollouts.calyx.io`` models.

Two model bases, because spec and status have opposite compatibility needs:

* :class:`SpecModel` -- what a human or a pipeline writes. Strict (``5.0`` and ``"5"`` are not
  integers, ``"true"`` is not a boolean) and closed (``extra="forbid"``): a typo such as
  ``soakSecond`` must fail loudly instead of silently meaning "use the default", and a Lease's
  signatures cover exactly the bytes its author wrote, so nothing may be coerced.
* :class:`StatusModel` -- what the operator writes. Lenient about unknown fields
  (``extra="ignore"``) so that an older operator (e.g. during a rolling upgrade of the operator
  itself) can still read a status written by a newer one.

Both use camelCase aliases on the wire (Kubernetes API conventions) and snake_case in Python; both
accept either spelling on input and dump by alias.

This module is the bottom layer (docs/architecture.md, "Layers"): it imports nothing else from
calyx and does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

GROUP: Final = "calyx.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# --------------------------------------------------------------------------------------------
# Model bases
# --------------------------------------------------------------------------------------------


class SpecModel(BaseModel):
    """Base of every spec model: strict, closed, immutable, camelCase on the wire."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=True,
        use_attribute_docstrings=True,
    )


class StatusModel(BaseModel):
    """Base of every status model: tolerant of fields added by newer operator versions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    def to_patch(self) -> dict[str, Any]:
        """The JSON-ready dict to send to the status subresource (unset/None fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------------------------
# Constrained scalar types (bounded so that CEL cost estimation on the server passes)
# --------------------------------------------------------------------------------------------

DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

#: A DNS-1123 label: container names, custom metric names.
DnsLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
#: A DNS-1123 subdomain: names of namespaced objects.
ObjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
]

#: A short free-text field in status (reasons, details).
ShortText = Annotated[str, StringConstraints(max_length=1024)]
#: A long free-text field in status (messages).
LongText = Annotated[str, StringConstraints(max_length=32768)]


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, the way Kubernetes writes ``metav1.Time``.

    Sub-second precision is kept only when present: rollback timings (``breachAt`` ...
    ``verifiedAt``) are meaningful below one second, condition times normally are not.
    """
    value = value.astimezone(UTC)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")


#: A timestamp in status: timezone-aware ``datetime`` in Python, RFC 3339 UTC on the wire.
Time = Annotated[AwareDatetime, PlainSerializer(format_time, return_type=str)]

_RFC3339_UTC: Final = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$"
)
RFC3339_UTC_PATTERN: Final = _RFC3339_UTC.pattern


def parse_rfc3339_utc(text: str) -> datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SS[.frac]Z`` into an aware UTC datetime.

    Raises ``ValueError`` with a user-facing message for anything else (offsets other than ``Z``
    included: a Lease is read by people in many time zones, and ``Z`` leaves no doubt).
    """
    if not _RFC3339_UTC.match(text):
        raise ValueError(
            f"must be an RFC 3339 UTC timestamp such as 2026-11-25T18:00:00Z (got {text!r})"
        )
    try:
        # fromisoformat handles "Z" and up to 6 fractional digits; trim nanoseconds.
        main, _, frac = text[:-1].partition(".")
        parsed = datetime.fromisoformat(main + ("." + frac[:6] if frac else "") + "+00:00")
    except ValueError as exc:
        raise ValueError(f"is not a valid date-time: {text!r} ({exc})") from None
    return parsed


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------


class TargetRef(SpecModel):
    """The workload a Lease authorizes changing, in the Lease's own namespace.

    Only ``Deployment`` for now: the canary mechanics (docs/design.md §Canary math) rely on a
    Deployment's replica count and pod template.
    """

    kind: Literal["Deployment"]
    """Kind of the target workload. Only `Deployment` is supported."""

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=246, pattern=DNS_SUBDOMAIN_PATTERN)
    ]
    """Name of the Deployment (same namespace). At most 246 characters, so that the canary
    Deployment `<name>-canary` is still a valid name."""


class ObjectRef(StatusModel):
    """A reference to an object in the same namespace, as recorded in status."""

    name: str
    """Object name."""

    uid: str | None = None
    """Object UID: distinguishes a re-created object of the same name."""


# --------------------------------------------------------------------------------------------
# Conditions (Kubernetes API conventions / metav1.Condition)
# --------------------------------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]

#: kstatus condition types, on both kinds (docs/gitops.md, "Conditions"): exactly one is True.
CONDITION_READY: Final = "Ready"
CONDITION_RECONCILING: Final = "Reconciling"
CONDITION_STALLED: Final = "Stalled"
KSTATUS_CONDITION_TYPES: Final = (CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED)

CONDITION_TYPE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class OutboxEntry(StatusModel):
    """An announcement (Event + audit record) decided and stored with its decision, not yet
    confirmed as posted: a restarted operator posts it exactly once (docs/audit.md, "Outbox")."""

    id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    """Names the Event (`<object>.<id>`) and tags the audit record, so a repeat is a no-op."""

    type: Literal["Normal", "Warning"]
    reason: Annotated[str, StringConstraints(max_length=128)]
    message: LongText
    audit: str | None = None
    """Seed event name of the audit record (e.g. `deploy_event.COMPLETED`), when it has one."""

    time: Time
    """When the decision was made: also the audit record's time."""


OUTBOX_MAX_ITEMS: Final = 64


class Condition(StatusModel):
    """One observation of the object's state, exactly the shape of ``metav1.Condition``.

    Using the standard shape means generic tooling (``kubectl wait --for=condition=...``, Argo CD
    health checks, kstatus) understands Calyx objects without custom code.
    """

    type: Annotated[
        str, StringConstraints(min_length=1, max_length=316, pattern=CONDITION_TYPE_PATTERN)
    ]
    """Condition type in CamelCase, e.g. `Verified`. Unique within the list."""

    status: ConditionStatus
    """`True`, `False` or `Unknown`."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` this condition was computed from."""

    last_transition_time: Time
    """When `status` last changed (not when the condition was last written)."""

    reason: Annotated[
        str, StringConstraints(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    ]
    """Machine-readable CamelCase reason for the last transition."""

    message: LongText = ""
    """Human-readable details."""


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of the given type, or ``None``."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition],
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return a new list with the condition ``type_`` set, per the API conventions.

    ``lastTransitionTime`` is kept when ``status`` does not change, so it answers "since when",
    not "when did the operator last look". Other conditions keep their order; a new type is
    appended. The clock is passed in (pure function).
    """
    previous = find_condition(conditions, type_)
    if previous is not None and previous.status == status:
        transition = previous.last_transition_time
    else:
        transition = now
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=observed_generation,
        last_transition_time=transition,
    )
    out = [new if c.type == type_ else c for c in conditions]
    if previous is None:
        out.append(new)
    return out


#: Schema extras making a ``conditions`` list a list-map keyed by ``type`` (server-side apply
#: merges per condition type, and the server rejects duplicate types).
CONDITIONS_LIST_MAP: Final[dict[str, Any]] = {
    "maxItems": 32,
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class ObjectModelMixin:
    """``name``/``namespace`` accessors shared by the whole-object models (Lease, Rollout)."""

    metadata: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))
