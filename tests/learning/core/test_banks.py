"""learning/core/banks.py: exact key first, then the best MinHash match at or above its bank's threshold."""

from __future__ import annotations

import numpy as np
import pytest

from learning.core.banks import BankHit, BankMatcher, EntrySignature


def _mh(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint32)


ENTRIES = [
    EntrySignature(entry_id=10, bank_id=1, threshold=0.75, exact_key="a" * 32, minhash=_mh(1, 2, 3, 4)),
    EntrySignature(entry_id=11, bank_id=1, threshold=0.75, exact_key="b" * 32, minhash=_mh(1, 2, 3, 9)),
    EntrySignature(entry_id=20, bank_id=2, threshold=0.5, exact_key="c" * 32, minhash=_mh(7, 7, 3, 4)),
]


def test_exact_key_wins_then_best_near_match_per_bank() -> None:
    matcher = BankMatcher(ENTRIES)
    hits = matcher.match([100, 101, 102], ["a" * 32, "z" * 32, "y" * 32],
                         np.stack([_mh(0, 0, 0, 0), _mh(1, 2, 3, 9), _mh(5, 6, 8, 0)]))
    assert hits == [
        # Item 100: same exact key as entry 10 (its MinHash is ignored); bank 2 is not near enough (0/4).
        BankHit(100, 10, "exact", 1.0),
        # Item 101: equal to entry 11 (1.0) beats entry 10 (0.75) in bank 1; bank 2 shares one value of four.
        BankHit(101, 11, "near", 1.0),
    ]


def test_threshold_is_per_bank_and_inclusive() -> None:
    matcher = BankMatcher(ENTRIES)
    hits = matcher.match([5], ["q" * 32], np.stack([_mh(7, 0, 3, 4)]))
    # Entry 20 shares 3 of 4 values (0.75 >= 0.5); entry 10 shares 2 of 4 (0.5 < 0.75).
    assert hits == [BankHit(5, 20, "near", 0.75)]


def test_no_entries_or_no_items_match_nothing_and_widths_must_agree() -> None:
    assert BankMatcher([]).match([1], ["a" * 32], np.stack([_mh(1, 2, 3, 4)])) == []
    assert BankMatcher(ENTRIES).match([], [], np.zeros((0, 4), dtype=np.uint32)) == []
    with pytest.raises(ValueError, match="item signatures have 3 values, the bank entries 4"):
        BankMatcher(ENTRIES).match([1], ["x"], np.stack([_mh(1, 2, 3)]))
