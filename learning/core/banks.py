"""Matching an item's signature against the entries of match banks: exact key first, then MinHash Jaccard.

Plain Python over arrays (no Django): learning/services/banks.py loads the entries and the items' stored
signatures (the clustering worker's exact keys and MinHash values, learning/core/clusters.py) and writes the
matches. The rule, per item and bank: an entry with the same exact key matches with similarity 1.0 (kind
``exact``); otherwise the entry with the highest estimated Jaccard similarity (the share of equal MinHash values)
matches if it reaches its bank's threshold (kind ``near``). An item can match several banks, at most once each.

A bank's entries are few (hundreds to thousands, confirmed by people), so a near match compares the batch of
items with every entry in one vectorised step rather than keeping an LSH index: exact, and simple.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

MatchKind = Literal["exact", "near"]


@dataclass(frozen=True, slots=True)
class EntrySignature:
    entry_id: int
    bank_id: int
    threshold: float
    exact_key: str
    minhash: np.ndarray  # uint32, num_perm values


@dataclass(frozen=True, slots=True)
class BankHit:
    item_id: int
    entry_id: int
    kind: MatchKind
    similarity: float


class BankMatcher:
    """The confirmed entries of some banks, ready to match batches of item signatures."""

    def __init__(self, entries: Sequence[EntrySignature]) -> None:
        self.entries = list(entries)
        self._by_key: dict[str, list[int]] = {}
        for row, entry in enumerate(self.entries):
            self._by_key.setdefault(entry.exact_key, []).append(row)
        width = self.entries[0].minhash.shape[0] if self.entries else 0
        if any(entry.minhash.shape[0] != width for entry in self.entries):
            raise ValueError("bank entries have MinHash signatures of different lengths")
        self._minhashes = (np.stack([e.minhash for e in self.entries]).astype(np.uint32) if self.entries
                           else np.zeros((0, 0), dtype=np.uint32))
        self._banks = np.array([e.bank_id for e in self.entries], dtype=np.int64)
        self._thresholds = np.array([e.threshold for e in self.entries], dtype=np.float64)

    def match(self, item_ids: Sequence[int], exact_keys: Sequence[str],
              minhashes: np.ndarray) -> list[BankHit]:
        """The hits of a batch of items (``minhashes``: one row per item), at most one per (item, bank)."""
        if not self.entries or not len(item_ids):
            return []
        if minhashes.shape[1] != self._minhashes.shape[1]:
            raise ValueError(f"item signatures have {minhashes.shape[1]} values, the bank entries "
                             f"{self._minhashes.shape[1]}")
        # (items, entries): the share of equal MinHash values estimates the Jaccard similarity.
        similarity = (minhashes[:, None, :] == self._minhashes[None, :, :]).mean(axis=2)
        hits: list[BankHit] = []
        for i, item_id in enumerate(item_ids):
            exact_rows = self._by_key.get(exact_keys[i], [])
            taken: set[int] = set()
            for row in exact_rows:
                bank = int(self._banks[row])
                if bank not in taken:
                    taken.add(bank)
                    hits.append(BankHit(int(item_id), self.entries[row].entry_id, "exact", 1.0))
            candidates = np.flatnonzero(similarity[i] >= self._thresholds)
            # Best first, so the first candidate of each bank is its best near match.
            for row in candidates[np.argsort(-similarity[i][candidates], kind="stable")]:
                bank = int(self._banks[row])
                if bank not in taken:
                    taken.add(bank)
                    hits.append(BankHit(int(item_id), self.entries[row].entry_id, "near",
                                        round(float(similarity[i][row]), 4)))
        return hits
