"""The cold-start rule, seed-query neighbours and diverse picks."""

from __future__ import annotations

import numpy as np

from learning.core.cold_start import can_fit, diverse_picks, seed_query_neighbours


def test_can_fit_single_label() -> None:
    assert can_fit([]) is False
    assert can_fit(["ham", "ham", "ham"]) is False
    assert can_fit(["ham", "spam"]) is True


def test_can_fit_multi_label() -> None:
    assert can_fit([], multi_label=True) is False
    assert can_fit([{"a"}, {"a"}], multi_label=True) is False
    assert can_fit([set(), set()], multi_label=True) is False
    assert can_fit([{"a"}, set()], multi_label=True) is True
    assert can_fit([{"a", "b"}, {"a"}], multi_label=True) is True


def _unit(rows: list[list[float]]) -> np.ndarray:
    v = np.array(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_seed_neighbours_round_robin_without_repeats() -> None:
    pool = _unit([[1, 0], [0.95, 0.3], [0, 1], [0.3, 0.95], [0.9, 0.4], [-1, 0]])
    seeds = _unit([[1, 0], [0, 1]])
    picks, sims = seed_query_neighbours(pool, np.arange(6), seeds, 4)
    # seed 0's best (0), seed 1's best (2), seed 0's second (1), seed 1's second (3)
    assert picks.tolist() == [0, 2, 1, 3]
    np.testing.assert_allclose(sims, [1.0, 1.0, pool[1, 0], pool[3, 1]], atol=1e-6)
    # labelled items are simply not candidates
    picks, _ = seed_query_neighbours(pool, np.array([1, 3, 4, 5]), seeds, 2)
    assert picks.tolist() == [1, 3]


def test_diverse_picks_prefers_uncovered_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    pool = np.repeat(centres, 20, axis=0) + rng.normal(scale=0.02, size=(60, 3)).astype(np.float32)
    pool = (pool / np.linalg.norm(pool, axis=1, keepdims=True)).astype(np.float32)
    labelled = np.array([0])  # one item of the first cluster is labelled already
    candidates = np.arange(1, 60)
    picks, scores = diverse_picks(pool, candidates, labelled, 2, random_state=np.random.default_rng(1))
    assert len(picks) == 2
    assert sorted(int(p) // 20 for p in picks) == [1, 2]
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)
    again, _ = diverse_picks(pool, candidates, labelled, 2, random_state=np.random.default_rng(1))
    assert again.tolist() == picks.tolist()


def test_diverse_picks_with_nothing_to_pick() -> None:
    pool = _unit([[1, 0]])
    picks, scores = diverse_picks(
        pool, np.zeros(0, dtype=np.int64), np.array([0]), 3, random_state=np.random.default_rng(0)
    )
    assert picks.tolist() == [] and scores.tolist() == []
