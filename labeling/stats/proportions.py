"""Intervals for proportions and their differences (pure functions)."""

from __future__ import annotations

import math
from statistics import NormalDist


def wilson_interval(successes: float, n: float, confidence: float = 0.95, *,
                    continuity: bool = True) -> tuple[float, float]:
    """Wilson score interval for a proportion; with ``continuity`` (the default) Newcombe's continuity-corrected
    form (Newcombe 1998, method 4), whose coverage stays at or above the nominal level for the small counts a
    rare label produces, where the plain Wilson interval dips below it. ``successes`` may be fractional."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0.0 <= successes <= n:
        raise ValueError("successes must lie between 0 and n")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    z2 = z * z
    p = successes / n
    if not continuity:
        centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n)
        half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / (1.0 + z2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    denominator = 2.0 * (n + z2)
    low = 0.0
    if successes > 0:
        root = max(0.0, z2 - 2.0 - 1.0 / n + 4.0 * p * (n * (1.0 - p) + 1.0))
        low = max(0.0, (2.0 * n * p + z2 - 1.0 - z * math.sqrt(root)) / denominator)
    high = 1.0
    if successes < n:
        root = max(0.0, z2 + 2.0 - 1.0 / n + 4.0 * p * (n * (1.0 - p) - 1.0))
        high = min(1.0, (2.0 * n * p + z2 + 1.0 + z * math.sqrt(root)) / denominator)
    return low, high


def difference_interval(x1: float, n1: float, x2: float, n2: float,
                        confidence: float = 0.95) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score interval (Newcombe 1998, method 10, from the two Wilson intervals).

    Used for automation bias: the rate at which reviewers agree with a suggestion they were shown, minus the
    rate at which they agree with one that was withheld (a random hold-out, so the two groups are comparable).
    """
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence, continuity=False)
    l2, u2 = wilson_interval(x2, n2, confidence, continuity=False)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
