"""Propagation rules (learning/core/propagation.py): coverage by threshold and a stable verification share."""

from __future__ import annotations

from learning.core.propagation import covered_members, verification_pick


def test_covered_members_are_those_at_or_above_the_threshold() -> None:
    assert covered_members([(1, 1.0), (2, 0.79), (3, 0.8), (4, 0.95)], threshold=0.8) == [1, 3, 4]


def test_verification_pick_is_stable_and_takes_the_share() -> None:
    picked = [i for i in range(20_000) if verification_pick(i, share=0.05, salt="p1")]
    assert len(picked) == 1025  # 5.13% of 20,000: a fixed hash, so an exact figure
    assert picked[:5] == [i for i in range(20_000) if verification_pick(i, share=0.05, salt="p1")][:5]
    assert picked != [i for i in range(20_000) if verification_pick(i, share=0.05, salt="p2")]
    assert not any(verification_pick(i, share=0.0) for i in range(100))
    assert all(verification_pick(i, share=1.0) for i in range(100))
