import pytest

from calyx.domain.tiers import canary_replicas, effective_percent, round_half_up


@pytest.mark.parametrize(
    ("stable", "weight", "expected"),
    [
        (20, 5, 1),  # docs/design.md §Canary math: 1 pod at 5 %
        (20, 25, 7),  # docs/design.md §Canary math: 7 pods at 25 % (6.67 rounds up)
        (4, 5, 1),  # coarse: at least one pod, really 20 %
        (4, 25, 1),  # 4*25/75 = 1.33
        (4, 50, 4),
        (3, 25, 1),  # 3*25/75 = 1.0
        (9, 25, 3),  # exactly 3
        (1, 5, 1),
        (0, 25, 1),  # no stable pods: still one canary so there is something to measure
        (100, 99, 9900),
        (13, 10, 1),  # 13*10/90 = 1.44
        (14, 10, 2),  # 14*10/90 = 1.56
        (18, 10, 2),  # 18*10/90 = 2.0
        (9, 10, 1),  # 9*10/90 = 1.0 exactly; half-up only matters at .5
        (27, 10, 3),
        (5, 50, 5),
    ],
)
def test_canary_replicas(stable: int, weight: int, expected: int) -> None:
    assert canary_replicas(stable, weight) == expected


@pytest.mark.parametrize("weight", [0, 100, -1, 101])
def test_canary_weight_out_of_range(weight: int) -> None:
    with pytest.raises(ValueError, match="canary weight must be 1-99"):
        canary_replicas(10, weight)


@pytest.mark.parametrize(
    ("num", "den", "expected"), [(1, 2, 1), (3, 2, 2), (5, 2, 3), (1, 3, 0), (2, 3, 1), (0, 5, 0)]
)
def test_round_half_up(num: int, den: int, expected: int) -> None:
    assert round_half_up(num, den) == expected


@pytest.mark.parametrize(
    ("canary", "stable", "expected"),
    [(1, 20, 5), (7, 20, 26), (1, 4, 20), (0, 0, 0), (0, 5, 0), (5, 0, 100), (1, 1, 50)],
)
def test_effective_percent(canary: int, stable: int, expected: int) -> None:
    assert effective_percent(canary, stable) == expected
