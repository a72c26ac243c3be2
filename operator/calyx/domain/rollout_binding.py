"""The keys sign how, not only what: a Lease's ``spec.rolloutRef`` (docs/signing.md, "Binding the
rollout (rolloutRef)").

A Lease names the images; a Rollout says how they reach production -- tiers, analysis,
``onBreach`` and an optional ``postDeploy`` Job, which is a pod the operator creates with its own
rights. Without a binding, whoever may write a Rollout chooses all of that. ``rolloutRef`` pins
the Rollout's name and the digest of its **effective spec**, so the signers approve both.

The effective spec is defined so that a Rollout file in Git and the same Rollout stored by the API
server have the same digest:

* the Rollout schema carries defaults that the API server fills in; the models have the same
  defaults (tests/unit/api/test_crds.py checks it), so parsing and dumping *with* defaults gives one
  form for both -- writing ``onBreach: Rollback`` or leaving it out is the same approval;
* ``paused`` is left out: pausing and resuming are human controls (docs/cli.md) that must not
  invalidate the signed approval;
* omitted ``tiers`` stay omitted: they mean "the risk recommendation", which depends on cluster
  state at run time, so the signers approve that rule rather than a particular outcome;
* ``null`` mapping values are dropped everywhere, including inside ``postDeploy.jobTemplate``
  (which the schema keeps as written): Kubernetes treats a null field as unset, and a
  ``kubectl apply`` round trip may or may not keep it.

Pure: no I/O, no clock, no Kubernetes client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from calyx.api.lease import LeaseSpec
from calyx.api.rollout import RolloutSpec
from calyx.domain.canonical import CanonicalError, canonical_json
from calyx.domain.trust import RolloutBinding

__all__ = [
    "binding_problem",
    "effective_rollout_spec",
    "rollout_spec_digest",
]

_EXCLUDED = frozenset({"paused"})
"""Spec fields outside the binding: human controls that must not void a signature."""

_RECREATE_HINT = (
    "re-create the lease with `calyx lease create --rollout rollout.yaml` and have it signed again"
)


def effective_rollout_spec(spec: RolloutSpec) -> dict[str, Any]:
    """The Rollout ``spec`` as the binding sees it: camelCase, operator defaults applied,
    ``paused`` and null values left out.

    Only JSON types come out (strings, integers, booleans, objects, arrays). The typed fields
    of :class:`~calyx.api.rollout.RolloutSpec` are integers by construction; a float can only
    come from ``postDeploy.jobTemplate`` (free-form), and :func:`rollout_spec_digest` refuses it
    with its path rather than hashing a value whose bytes differ between languages.
    """
    dumped = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: _drop_nulls(value) for key, value in dumped.items() if key not in _EXCLUDED}


def rollout_spec_digest(spec: RolloutSpec) -> str:
    """``"sha256:" + hex(sha256(canonical_json(effective_rollout_spec(spec))))``.

    Raises :class:`~calyx.domain.canonical.CanonicalError` naming the path (``spec.postDeploy.
    jobTemplate.spec...``) when the spec has no canonical form, e.g. a float in the Job template
    (write ``cpu: "500m"``, not ``cpu: 0.5``).
    """
    payload = canonical_json(effective_rollout_spec(spec), root="spec")
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def binding_problem(
    *,
    lease_spec: LeaseSpec,
    rollout_name: str,
    rollout_spec: RolloutSpec,
    require: RolloutBinding,
) -> str | None:
    """Why this Rollout may not use this Lease under the binding rules, or ``None``.

    * The Lease has ``rolloutRef``: the Rollout's name and effective-spec digest must equal it.
    * It has none: refused when ``require`` is ``always``, or when it is ``postDeploy`` and the
      Rollout has ``postDeploy`` (the Job's pod is chosen by whoever writes the Rollout).

    The result is one line for a ``ConstraintViolated`` condition and Event: what differs and
    what to do. The Lease is named by the Rollout's ``leaseRef`` (same namespace).
    """
    lease_name = rollout_spec.lease_ref.name
    ref = lease_spec.rollout_ref
    if ref is not None:
        if ref.name != rollout_name:
            return (
                f'lease {lease_name} binds rollout "{ref.name}" but this Rollout is '
                f'"{rollout_name}" (a bound lease authorizes exactly one Rollout; create the '
                f"Rollout under that name, or {_RECREATE_HINT})"
            )
        try:
            digest = rollout_spec_digest(rollout_spec)
        except CanonicalError as exc:
            return (
                f"Rollout spec has no canonical form, so it cannot match the lease's "
                f"rolloutRef.specDigest: {exc}"
            )
        if digest != ref.spec_digest:
            return (
                f"Rollout spec digest {digest} does not match the lease's "
                f"rolloutRef.specDigest {ref.spec_digest} (restore the Rollout spec that was "
                f"signed, or {_RECREATE_HINT}; `calyx rollout digest -f rollout.yaml` prints "
                "a file's digest)"
            )
        return None
    if require == "always":
        return (
            f"lease {lease_name} has no rolloutRef; trust policy requireRolloutBinding=always "
            f"requires every lease to bind its Rollout ({_RECREATE_HINT})"
        )
    if rollout_spec.post_deploy is not None:
        return (
            "this Rollout has postDeploy (its Job runs a pod the keys must approve) but lease "
            f"{lease_name} has no rolloutRef; trust policy requireRolloutBinding=postDeploy "
            f"({_RECREATE_HINT}, or remove postDeploy)"
        )
    return None


def _drop_nulls(value: Any) -> Any:
    """``value`` with null mapping values removed at every depth (list items are kept: dropping
    one would shift the others)."""
    if isinstance(value, Mapping):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value
