"""Propagation rules (learning/core/propagation.py): coverage by threshold and a stable verification share."""

from __future__ import annotations

from learning.core.propagation import answer_policy, covered_members, verification_pick


def test_covered_members_are_those_at_or_above_the_threshold() -> None:
    assert covered_members([(1, 1.0), (2, 0.79), (3, 0.8), (4, 0.95)], threshold=0.8) == [1, 3, 4]


def test_verification_pick_is_stable_and_takes_the_share() -> None:
    picked = [i for i in range(20_000) if verification_pick(i, share=0.05, salt="p1")]
    assert len(picked) == 1025  # 5.13% of 20,000: a fixed hash, so an exact figure
    assert picked[:5] == [i for i in range(20_000) if verification_pick(i, share=0.05, salt="p1")][:5]
    assert picked != [i for i in range(20_000) if verification_pick(i, share=0.05, salt="p2")]
    assert not any(verification_pick(i, share=0.0) for i in range(100))
    assert all(verification_pick(i, share=1.0) for i in range(100))


def test_an_answer_is_only_as_automatic_as_its_least_automatic_label() -> None:
    assert answer_policy([("propagate", 0.8, 0.05)]) == ("propagate", 0.8, 0.05)
    assert answer_policy([("propagate", 0.8, 0.05), ("propagate", 0.9, 0.02)]) == ("propagate", 0.9, 0.05)
    assert answer_policy([("propagate", 0.8, 0.05), ("suggest", 0.7, 0.1)]) == ("suggest", 0.8, 0.1)
    assert answer_policy([("propagate", 0.8, 0.05), ("off", 0.8, 0.05)])[0] == "off"
    assert answer_policy([]) == ("off", 1.0, 1.0)
