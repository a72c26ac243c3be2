"""Risk score (docs/risk.md): every factor, levels, clamping, recommended tiers."""

from __future__ import annotations

from typing import Any

import pytest

from calyx.api.rollout import Risk, RolloutSpec
from calyx.domain import risk
from calyx.domain.risk import assess, level_for, parse_image, parse_semver, recommended_tiers

DIGEST = "@sha256:" + "a" * 64
CURRENT = [{"name": "app", "image": "registry.example/checkout:1.4.2"}]


def _assess(**kw: Any) -> risk.RiskAssessment:
    args: dict[str, Any] = {
        "current_containers": CURRENT,
        "change": [{"name": "app", "image": "registry.example/checkout:1.4.3" + DIGEST}],
        "replicas": 20,
        "recent_rollbacks": 0,
        "constraints": None,
    }
    args.update(kw)
    return assess(**args)


def _points(a: risk.RiskAssessment) -> dict[str, int]:
    return {f.name: f.points for f in a.factors}


# --- images and versions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "repo", "tag", "pinned", "latest"),
    [
        ("nginx", "nginx", "", False, True),
        ("nginx:latest", "nginx", "latest", False, True),
        ("nginx:1.25", "nginx", "1.25", False, False),
        ("registry:5000/team/app", "registry:5000/team/app", "", False, True),
        ("registry:5000/team/app:2.0.0", "registry:5000/team/app", "2.0.0", False, False),
        ("app" + DIGEST, "app", "", True, False),
        ("app:latest" + DIGEST, "app", "latest", True, False),  # the digest pins it
    ],
)
def test_parse_image(image: str, repo: str, tag: str, pinned: bool, latest: bool) -> None:
    ref = parse_image(image)
    assert (ref.repository, ref.tag, ref.pinned, ref.latest) == (repo, tag, pinned, latest)


@pytest.mark.parametrize(
    ("tag", "version"),
    [
        ("1.2.3", (1, 2, 3)),
        ("v2.0.0", (2, 0, 0)),
        ("2.3.1-rc1", (2, 3, 1)),
        ("1.2.3+build.7", (1, 2, 3)),
        ("1.25", (1, 25, 0)),
        ("v3", (3, 0, 0)),
        ("V1.0.0", (1, 0, 0)),
        ("20240101", None),  # a date, not a version
        ("42", None),  # a build number
        ("latest", None),
        ("", None),
        ("1.2.3.4", None),
        ("main-1.2.3", None),
    ],
)
def test_parse_semver(tag: str, version: tuple[int, int, int] | None) -> None:
    v = parse_semver(tag)
    assert (None if v is None else (v.major, v.minor, v.patch)) == version


# --- factors, one at a time ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        # a pinned patch release on 20 replicas: nothing to worry about
        ({}, {}),
        # mutable tags
        ({"change": [{"name": "app", "image": "registry.example/checkout:1.4.3"}]},
         {"mutable-tag": 15}),
        ({"change": [{"name": "app", "image": "registry.example/checkout:latest"}]},
         {"latest-tag": 30}),
        ({"change": [{"name": "app", "image": "registry.example/checkout"}]},
         {"latest-tag": 30}),
        # semver major jumps (both directions), 0.x minor, unknown versions
        ({"change": [{"name": "app", "image": "registry.example/checkout:2.0.0" + DIGEST}]},
         {"semver-major": 20}),
        ({"change": [{"name": "app", "image": "registry.example/checkout:v0.9.0" + DIGEST}]},
         {"semver-major": 20}),
        ({"current_containers": [{"name": "app", "image": "c:0.3.1"}],
          "change": [{"name": "app", "image": "c:0.4.0" + DIGEST}]},
         {"semver-major": 20}),
        ({"current_containers": [{"name": "app", "image": "c:0.3.1"}],
          "change": [{"name": "app", "image": "c:0.3.9" + DIGEST}]},
         {}),
        ({"current_containers": [{"name": "app", "image": "c" + DIGEST}],
          "change": [{"name": "app", "image": "c:9.0.0" + DIGEST}]},
         {}),
        # the major jump is compared by container name, not position
        ({"current_containers": [{"name": "side", "image": "s:1.0.0"},
                                 {"name": "app", "image": "c:1.0.0"}],
          "change": [{"name": "app", "image": "c:1.1.0" + DIGEST}]},
         {}),
        # change size
        ({"current_containers": [{"name": n, "image": f"{n}:1.0.0"} for n in "abcde"],
          "change": [{"name": n, "image": f"{n}:1.0.1{DIGEST}"} for n in "ab"]},
         {"change-size": 5}),
        ({"current_containers": [{"name": n, "image": f"{n}:1.0.0"} for n in "abcde"],
          "change": [{"name": n, "image": f"{n}:1.0.1{DIGEST}"} for n in "abcde"]},
         {"change-size": 15}),
        # an unchanged container does not count as changed
        ({"current_containers": [{"name": "a", "image": "a" + DIGEST},
                                 {"name": "b", "image": "b:1.0.0"}],
          "change": [{"name": "a", "image": "a" + DIGEST},
                     {"name": "b", "image": "b:1.0.1" + DIGEST}]},
         {}),
        # coarse canaries: N=20 -> 1 pod = 5%; N=10 -> 9%; N=5 -> 17%; N=3 -> 25%; N=1 -> 50%
        ({"replicas": 10}, {}),
        ({"replicas": 5}, {"coarse-canary": 10}),
        ({"replicas": 3}, {"coarse-canary": 20}),
        ({"replicas": 1}, {"coarse-canary": 20}),
        ({"replicas": 0}, {"coarse-canary": 20}),
        ({"replicas": 3, "first_weight": 25}, {}),
        ({"first_weight": 100}, {"no-canary": 30}),
        # recent rollbacks
        ({"recent_rollbacks": 1}, {"recent-rollbacks": 15}),
        ({"recent_rollbacks": 2}, {"recent-rollbacks": 30}),
        ({"recent_rollbacks": 9}, {"recent-rollbacks": 30}),
        # lease constraints
        ({"constraints": {"maxInitialWeight": 5, "requireAnalysis": True}}, {}),
        ({"constraints": {"maxInitialWeight": 20}}, {"max-initial-weight": 10}),
        ({"constraints": {"requireAnalysis": False}}, {"analysis-optional": 15}),
        ({"constraints": {}}, {}),
    ],
)  # fmt: skip
def test_each_factor(kw: dict[str, Any], expected: dict[str, int]) -> None:
    a = _assess(**kw)
    assert _points(a) == expected
    assert a.score == sum(expected.values())
    for f in a.factors:
        assert f.detail and "\n" not in f.detail and len(f.detail) <= 200


def test_details_explain_the_numbers() -> None:
    a = _assess(
        replicas=3,
        recent_rollbacks=2,
        change=[{"name": "app", "image": "registry.example/checkout:2.0.0"}],
    )
    details = {f.name: f.detail for f in a.factors}
    assert details["coarse-canary"] == "5% requested, but 1 canary pod beside 3 stable serve 25%"
    assert details["semver-major"] == "major version change: app 1.4.2 -> 2.0.0"
    assert "2 rollbacks" in details["recent-rollbacks"]
    assert "app" in details["mutable-tag"]


@pytest.mark.parametrize(
    ("score", "level"),
    [(0, "Low"), (29, "Low"), (30, "Medium"), (69, "Medium"), (70, "High"), (100, "High")],
)
def test_levels(score: int, level: str) -> None:
    assert level_for(score) == level


def test_score_is_clamped_to_100() -> None:
    a = _assess(
        current_containers=[{"name": n, "image": f"{n}:1.0.0"} for n in "abcd"],
        change=[{"name": n, "image": f"{n}:latest"} for n in "abc"]
        + [{"name": "d", "image": "d:2.0.0"}],
        replicas=1,
        recent_rollbacks=5,
        constraints={"maxInitialWeight": 50, "requireAnalysis": False},
    )
    assert a.raw_points > 100
    assert (a.score, a.level) == (100, "High")


def test_combined_medium() -> None:
    a = _assess(change=[{"name": "app", "image": "registry.example/checkout:2.0.0"}])
    assert (a.score, a.level) == (35, "Medium")


def test_deterministic_order() -> None:
    kw: dict[str, Any] = {
        "recent_rollbacks": 1,
        "replicas": 2,
        "constraints": {"requireAnalysis": False},
    }
    assert _assess(**kw) == _assess(**kw)
    assert [f.name for f in _assess(**kw).factors] == [
        "coarse-canary",
        "recent-rollbacks",
        "analysis-optional",
    ]


# --- recommendation and status ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "tiers"),
    [
        ("Low", [{"weight": 5, "soakSeconds": 60}, {"weight": 25, "soakSeconds": 60},
                 {"weight": 100}]),
        ("Medium", [{"weight": 5, "soakSeconds": 120}, {"weight": 25, "soakSeconds": 120},
                    {"weight": 100}]),
        ("High", [{"weight": 5, "soakSeconds": 180, "approval": "Manual"},
                  {"weight": 25, "soakSeconds": 180, "approval": "Manual"},
                  {"weight": 100, "approval": "Manual"}]),
        ("Bogus", [{"weight": 5, "soakSeconds": 180, "approval": "Manual"},
                   {"weight": 25, "soakSeconds": 180, "approval": "Manual"},
                   {"weight": 100, "approval": "Manual"}]),
    ],
)  # fmt: skip
def test_recommended_tiers(level: str, tiers: list[dict[str, Any]]) -> None:
    assert recommended_tiers(level) == tiers
    # valid Rollout YAML, accepted by the spec model
    RolloutSpec.model_validate({"leaseRef": {"name": "x"}, "tiers": recommended_tiers(level)})


def test_recommended_low_equals_the_planners_default() -> None:
    from calyx.domain.rollout_plan import DEFAULT_TIERS

    assert recommended_tiers("Low") == [dict(t) for t in DEFAULT_TIERS]


def test_to_status_fits_the_status_model() -> None:
    a = _assess(recent_rollbacks=1, replicas=3)
    status = risk.to_status(a)
    assert status == {
        "score": 35,
        "level": "Medium",
        "factors": [
            {"name": "coarse-canary", "points": 20, "detail": a.factors[0].detail},
            {"name": "recent-rollbacks", "points": 15, "detail": a.factors[1].detail},
        ],
    }
    assert Risk.model_validate(status).to_patch() == status
