"""Canary sizing (docs/design.md §Canary math): how many canary pods make a tier's weight.

With N stable pods and weight w < 100, c = max(1, round-half-up(N·w / (100 - w))) so that
c / (N + c) ≈ w / 100. Integer arithmetic only: a float rounding 6.5 to 6 on one machine and 7
on another would make two operators disagree about the same Rollout.
"""

from __future__ import annotations


def round_half_up(numerator: int, denominator: int) -> int:
    """round(numerator / denominator) with halves going up, for non-negative inputs."""
    return (2 * numerator + denominator) // (2 * denominator)


def canary_replicas(stable: int, weight: int) -> int:
    """Canary pods for ``weight`` percent beside ``stable`` stable pods (at least one)."""
    if not 1 <= weight <= 99:
        raise ValueError(f"canary weight must be 1-99, got {weight}")
    if stable <= 0:
        return 1
    return max(1, round_half_up(stable * weight, 100 - weight))


def effective_percent(canary_ready: int, stable_ready: int) -> int:
    """The share of ready pods that run the canary, in whole percent (what is really served)."""
    total = canary_ready + stable_ready
    if total <= 0:
        return 0
    return round_half_up(100 * canary_ready, total)
