"""The risk score of a change, 0-100, and the canary tiers it recommends (docs/risk.md).

The score must explain itself: it is the clamped sum of a few named factors, each with integer
points and a one-line detail that ends up in ``status.risk.factors`` and the report. Nothing
here is learned or weighted by data; the table below *is* the model, and docs/risk.md repeats
it for users. Pure: the caller gathers the inputs (the target Deployment's current containers,
the Lease's change and constraints, the count of recent rollbacks of the same target).

============================  ======  ==================================================
factor                        points  when
============================  ======  ==================================================
``change-size``               5 each  per changed container beyond the first (max 15)
``mutable-tag``               15      some new image is a tag, not ``@sha256:`` digest
``latest-tag``                30      some new image is ``:latest`` or has no tag at all
``semver-major``              20      some container's major version changes (or 0.x minor)
``coarse-canary``             10/20   the first tier's real share is >= 2x / >= 4x its weight
``no-canary``                 30      the first tier is already 100 %
``recent-rollbacks``          15 each rollbacks of the same target recently (max 30)
``max-initial-weight``        10      the Lease allows a first tier above 5 %
``analysis-optional``         15      the Lease sets ``requireAnalysis: false``
============================  ======  ==================================================

Levels: Low < 30 <= Medium < 70 <= High.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from calyx.domain.tiers import canary_replicas, effective_percent

__all__ = [
    "HIGH_AT",
    "MEDIUM_AT",
    "Factor",
    "ImageRef",
    "RiskAssessment",
    "RiskLevel",
    "Semver",
    "assess",
    "level_for",
    "parse_image",
    "parse_semver",
    "recommended_tiers",
    "to_status",
]

RiskLevel = Literal["Low", "Medium", "High"]

MEDIUM_AT: Final = 30
HIGH_AT: Final = 70
MAX_SCORE: Final = 100

# Points (the table in the module docstring and docs/risk.md).
CHANGE_SIZE_EACH: Final = 5
CHANGE_SIZE_MAX: Final = 15
MUTABLE_TAG: Final = 15
LATEST_TAG: Final = 30
SEMVER_MAJOR: Final = 20
COARSE_2X: Final = 10
COARSE_4X: Final = 20
NO_CANARY: Final = 30
ROLLBACK_EACH: Final = 15
ROLLBACK_MAX: Final = 30
MAX_INITIAL_WEIGHT: Final = 10
ANALYSIS_OPTIONAL: Final = 15

SAFE_INITIAL_WEIGHT: Final = 5
"""A first tier up to this weight (the Lease default) adds no risk."""

BASE_SOAK_SECONDS: Final = 60
SOAK_FACTOR: Final[Mapping[RiskLevel, int]] = {"Low": 1, "Medium": 2, "High": 3}

_DETAIL_MAX: Final = 200
"""A factor's detail is one line in a status field; long image names are elided."""


@dataclass(frozen=True)
class Factor:
    """One term of the score."""

    name: str
    points: int
    detail: str


@dataclass(frozen=True)
class RiskAssessment:
    """The score (clamped to 0-100), its level, and the factors that add up to it."""

    score: int
    level: RiskLevel
    factors: tuple[Factor, ...]

    @property
    def raw_points(self) -> int:
        """The unclamped sum of the factors (may exceed 100)."""
        return sum(f.points for f in self.factors)


# --------------------------------------------------------------------------------------------
# Images and versions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """An image reference split into repository, tag and digest (each may be empty)."""

    repository: str
    tag: str
    digest: str

    @property
    def pinned(self) -> bool:
        """Whether the reference names content (``@sha256:``), not a movable tag."""
        return self.digest.startswith("sha256:")

    @property
    def latest(self) -> bool:
        """``:latest`` or no tag at all (which the runtime resolves to ``latest``)."""
        return not self.pinned and self.tag in ("", "latest")


def parse_image(image: str) -> ImageRef:
    """Split ``registry:5000/team/app:1.2.3@sha256:...`` into repository, tag and digest.

    The tag is the part after the last ``:`` of the last path component, so a registry port is
    never mistaken for a tag.
    """
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return ImageRef(rest[:colon], rest[colon + 1 :], digest)
    return ImageRef(rest, "", digest)


@dataclass(frozen=True, order=True)
class Semver:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


# ``1.2``, ``1.2.3``, ``v2.0.0``, ``2.3.1-rc1``, ``1.2.3+build.5``, ``v2`` (a bare number needs the
# ``v``: tags such as ``20240101`` or ``42`` are dates and build numbers, not versions).
_SEMVER: Final = re.compile(
    r"(?:v(?P<vmajor>\d+)|v?(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?)"
    r"(?:[-+][0-9A-Za-z.+-]*)?",
    re.ASCII | re.IGNORECASE,
)


def parse_semver(tag: str) -> Semver | None:
    """The version in an image tag, or None when the tag is not a version."""
    m = _SEMVER.fullmatch(tag)
    if m is None:
        return None
    if m.group("vmajor") is not None:
        return Semver(int(m.group("vmajor")), 0, 0)
    return Semver(int(m.group("major")), int(m.group("minor")), int(m.group("patch") or 0))


def _major_change(old: Semver, new: Semver) -> bool:
    """A major version change either way; in 0.x a minor change is breaking (semver §4)."""
    if old.major != new.major:
        return True
    return old.major == 0 and old.minor != new.minor


# --------------------------------------------------------------------------------------------
# The score
# --------------------------------------------------------------------------------------------


def level_for(score: int) -> RiskLevel:
    """Low < 30 <= Medium < 70 <= High."""
    if score >= HIGH_AT:
        return "High"
    if score >= MEDIUM_AT:
        return "Medium"
    return "Low"


def assess(
    *,
    current_containers: Sequence[Mapping[str, Any]],
    change: Sequence[Mapping[str, Any]],
    replicas: int,
    recent_rollbacks: int,
    constraints: Mapping[str, Any] | None,
    first_weight: int = SAFE_INITIAL_WEIGHT,
    rollback_window_days: int = 7,
) -> RiskAssessment:
    """Score a change.

    ``current_containers``: the target Deployment's ``spec.template.spec.containers`` (``name``,
    ``image``); ``change``: the Lease's ``spec.change.containers``; ``replicas``: the target's
    ``spec.replicas`` (stable pods during the canary); ``recent_rollbacks``: rollbacks of the same
    target in the last ``rollback_window_days`` days (only used in the detail text);
    ``constraints``: the Lease's ``spec.constraints`` as written (camelCase, defaults not
    applied); ``first_weight``: weight of the first tier in force.
    """
    factors: list[Factor] = []
    current = {str(c.get("name")): str(c.get("image", "")) for c in current_containers}
    new = [(str(c.get("name")), str(c.get("image", ""))) for c in change]

    changed = [(n, i) for n, i in new if current.get(n) != i]
    if len(changed) > 1:
        points = min(CHANGE_SIZE_MAX, CHANGE_SIZE_EACH * (len(changed) - 1))
        factors.append(
            Factor(
                "change-size",
                points,
                f"{len(changed)} containers change at once: {_names(n for n, _ in changed)}",
            )
        )

    refs = [(n, parse_image(i)) for n, i in new]
    latest = [n for n, r in refs if r.latest]
    mutable = [n for n, r in refs if not r.pinned and not r.latest]
    if mutable:
        factors.append(
            Factor(
                "mutable-tag",
                MUTABLE_TAG,
                f"image of {_names(mutable)} is a tag, not a digest: what runs can change "
                "after signing",
            )
        )
    if latest:
        factors.append(
            Factor(
                "latest-tag",
                LATEST_TAG,
                f"image of {_names(latest)} is :latest (or untagged): no version, no pinning",
            )
        )

    jumps: list[str] = []
    for name, ref in refs:
        old_image = current.get(name)
        if old_image is None:
            continue
        old_v = parse_semver(parse_image(old_image).tag)
        new_v = parse_semver(ref.tag)
        if old_v is not None and new_v is not None and _major_change(old_v, new_v):
            jumps.append(f"{name} {old_v} -> {new_v}")
    if jumps:
        factors.append(
            Factor("semver-major", SEMVER_MAJOR, "major version change: " + ", ".join(jumps))
        )

    coarse = _coarse_canary(replicas, first_weight)
    if coarse is not None:
        factors.append(coarse)

    if recent_rollbacks > 0:
        points = min(ROLLBACK_MAX, ROLLBACK_EACH * recent_rollbacks)
        plural = "s" if recent_rollbacks != 1 else ""
        factors.append(
            Factor(
                "recent-rollbacks",
                points,
                f"{recent_rollbacks} rollback{plural} of this target in the last "
                f"{rollback_window_days} days",
            )
        )

    constraints = constraints or {}
    max_initial = constraints.get("maxInitialWeight")
    if (
        isinstance(max_initial, int)
        and not isinstance(max_initial, bool)
        and max_initial > SAFE_INITIAL_WEIGHT
    ):
        factors.append(
            Factor(
                "max-initial-weight",
                MAX_INITIAL_WEIGHT,
                f"the lease allows a first tier of up to {max_initial}% "
                f"(default {SAFE_INITIAL_WEIGHT}%)",
            )
        )
    if constraints.get("requireAnalysis") is False:
        factors.append(
            Factor(
                "analysis-optional",
                ANALYSIS_OPTIONAL,
                "the lease sets requireAnalysis: false: the canary may run unwatched",
            )
        )

    factors = [Factor(f.name, f.points, _clip(f.detail)) for f in factors]
    score = max(0, min(MAX_SCORE, sum(f.points for f in factors)))
    return RiskAssessment(score, level_for(score), tuple(factors))


def _coarse_canary(replicas: int, weight: int) -> Factor | None:
    """How far the first tier's real share of pods exceeds its requested weight."""
    if weight >= 100:
        return Factor("no-canary", NO_CANARY, "the first tier is 100%: no canary step at all")
    weight = max(1, weight)
    stable = max(0, replicas)
    canary = canary_replicas(stable, weight)
    share = effective_percent(canary, stable)
    if share >= 4 * weight:
        points = COARSE_4X
    elif share >= 2 * weight:
        points = COARSE_2X
    else:
        return None
    pods = "pod" if canary == 1 else "pods"
    return Factor(
        "coarse-canary",
        points,
        f"{weight}% requested, but {canary} canary {pods} beside {stable} stable serve {share}%",
    )


def _names(names: Any) -> str:
    return ", ".join(sorted(set(names)))


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"


# --------------------------------------------------------------------------------------------
# What the score recommends, and how it is stored
# --------------------------------------------------------------------------------------------


def recommended_tiers(level: str) -> list[dict[str, Any]]:
    """The tiers used when ``spec.tiers`` is omitted (camelCase, as in Rollout YAML).

    Low: 5/25/100 with 60 s soak; Medium: soak doubled; High: soak tripled and every tier
    (promotion included) waits for a signed human approval. An unknown level is treated as High.
    """
    lvl: RiskLevel = level if level in ("Low", "Medium") else "High"  # type: ignore[assignment]
    soak = BASE_SOAK_SECONDS * SOAK_FACTOR[lvl]
    tiers: list[dict[str, Any]] = [
        {"weight": 5, "soakSeconds": soak},
        {"weight": 25, "soakSeconds": soak},
        {"weight": 100},
    ]
    if lvl == "High":
        for t in tiers:
            t["approval"] = "Manual"
    return tiers


def to_status(assessment: RiskAssessment) -> dict[str, Any]:
    """``status.risk``: ``{score, level, factors: [{name, points, detail}]}``."""
    return {
        "score": assessment.score,
        "level": assessment.level,
        "factors": [
            {"name": f.name, "points": f.points, "detail": f.detail} for f in assessment.factors
        ],
    }
