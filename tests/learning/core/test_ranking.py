"""rank_pool: exact layouts, reasons, inclusion probabilities, errors and speed."""

from __future__ import annotations

import numpy as np
import pytest

from learning.core.ranking import (
    REASONS,
    EmptyPool,
    PoolExhausted,
    exploration_slots,
    leading_slots,
    rank_pool,
)
from learning.core.strategies import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    StrategySpec,
    effective_exploitation_share,
    prevalence_estimate,
)


def _pool(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _proba(n: int, seed: int = 1) -> np.ndarray:
    p = np.random.default_rng(seed).random(n).astype(np.float32)
    return np.c_[1 - p, p]


def test_slot_layouts() -> None:
    assert np.flatnonzero(exploration_slots(30, 0.1)).tolist() == [9, 19, 29]
    assert np.flatnonzero(exploration_slots(5, 0.1)).tolist() == []
    assert np.flatnonzero(exploration_slots(4, 0.5)).tolist() == [1, 3]
    # A phase shifts the slots, keeping them evenly spaced; the count becomes floor(n * rate + phase).
    assert np.flatnonzero(exploration_slots(30, 0.1, 0.5)).tolist() == [4, 14, 24]
    assert np.flatnonzero(exploration_slots(5, 0.1, 0.95)).tolist() == [0]
    assert np.flatnonzero(exploration_slots(25, 0.1, 0.5)).tolist() == [4, 14, 24]
    with pytest.raises(ValueError, match="phase"):
        exploration_slots(10, 0.1, 1.0)
    assert np.flatnonzero(leading_slots(10, 0.3)).tolist() == [0, 3, 6]
    assert np.flatnonzero(leading_slots(6, 0.5)).tolist() == [0, 2, 4]


def test_plain_margin_ranks_by_uncertainty_with_exploration_slots() -> None:
    vectors = _pool(100)
    proba = _proba(100)
    ranking = rank_pool(
        vectors, labelled_indices=[0, 1], strategy="margin", proba=proba, depth=20, random_state=3,
        exploration_phase=0.0,
    )
    assert len(ranking) == 20
    assert ranking.reasons.tolist().count("exploration") == 2
    assert [i for i, r in enumerate(ranking.reasons) if r == "exploration"] == [9, 19]
    unc = ranking.indices[ranking.reasons == "uncertainty"]
    closeness = np.abs(proba[:, 1] - 0.5)
    closeness[[0, 1]] = np.inf
    closeness[ranking.indices[ranking.reasons == "exploration"]] = np.inf
    assert unc.tolist() == np.argsort(closeness, kind="stable")[:18].tolist()
    assert ranking.inclusion_probabilities[ranking.reasons == "exploration"].tolist() == [2 / 98, 2 / 98]
    assert ranking.inclusion_probabilities[ranking.reasons == "uncertainty"].tolist() == [1.0] * 18


def test_exploration_rate_zero_and_override() -> None:
    vectors, proba = _pool(50), _proba(50)
    none = rank_pool(vectors, labelled_indices=[], strategy="margin", proba=proba, exploration_rate=0.0, depth=10)
    assert set(none.reasons.tolist()) == {"uncertainty"}
    half = rank_pool(
        vectors, labelled_indices=[], strategy="margin", proba=proba, exploration_rate=0.5, depth=10, random_state=0
    )
    assert half.reasons.tolist().count("exploration") == 5


def test_default_strategy_exploits_the_rare_class_in_proportion_to_its_rarity() -> None:
    vectors = _pool(200)
    p = np.random.default_rng(1).beta(0.5, 8.0, size=200).astype(np.float32)  # a rare class: mean about 6%
    proba = np.c_[1 - p, p]
    spec = STRATEGIES[DEFAULT_STRATEGY]
    # Without exploration the model fills all 20 positions and the estimate covers the whole unlabelled pool.
    ranking = rank_pool(vectors, labelled_indices=[3], proba=proba, class_counts=[9, 1], depth=20,
                        exploration_rate=0.0, random_state=0)
    unlabelled = np.delete(np.arange(200), 3)
    share = effective_exploitation_share(spec, np.array([9.0, 1.0]), prevalence_estimate(proba[unlabelled],
                                                                                           np.array([9, 1])))
    assert 0.4 < share < 0.5  # 0.5 * (1 - 2 * 0.06)
    n_exploit = int(leading_slots(20, share).sum())
    assert ranking.reasons.tolist().count("exploitation") == n_exploit == 9
    assert ranking.reasons[0] == "exploitation"
    exploit = ranking.indices[ranking.reasons == "exploitation"]
    # the most likely rare-class (column 1) items, subject to the near-duplicate filter
    assert float(proba[exploit, 1].min()) > float(np.quantile(proba[:, 1], 0.8))
    # The rare class is exploited even once it has more labels than the common one.
    flipped = rank_pool(vectors, labelled_indices=[3], proba=proba, class_counts=[1, 9], depth=20,
                        exploration_rate=0.0, random_state=0)
    assert flipped.indices[flipped.reasons == "exploitation"].tolist() == exploit.tolist()
    # No rare class at all (one class seen): plain uncertainty.
    one_class = rank_pool(vectors, labelled_indices=[3], proba=proba, class_counts=[9, 0], depth=20,
                          random_state=0)
    assert "exploitation" not in one_class.reasons.tolist()
    with pytest.raises(ValueError, match="needs class_counts"):
        rank_pool(vectors, labelled_indices=[3], proba=proba, depth=20)


def test_random_strategy_is_one_simple_random_sample() -> None:
    ranking = rank_pool(_pool(40), labelled_indices=range(20), strategy="random", depth=10, random_state=0)
    assert set(ranking.reasons.tolist()) == {"random"}
    assert ranking.inclusion_probabilities.tolist() == [0.5] * 10
    assert ranking.indices.min() >= 20


def test_cold_start_seed_queries_go_first() -> None:
    vectors = _pool(100)
    ranking = rank_pool(
        vectors, labelled_indices=[], proba=None, seed_vectors=vectors[[42, 7]], depth=10, random_state=0,
        exploration_phase=0.0,
    )
    assert ranking.indices[:3].tolist()[0] == 42
    assert ranking.reasons.tolist() == ["seed_query", "cold_start_diverse"] * 4 + ["seed_query", "exploration"]
    assert ranking.indices[2] == 7
    assert set(ranking.reasons.tolist()) <= set(REASONS)


def test_cold_start_without_seeds_is_diverse() -> None:
    ranking = rank_pool(_pool(100), labelled_indices=[0], proba=None, depth=10, random_state=0,
                        exploration_phase=0.0)
    assert ranking.reasons.tolist() == ["cold_start_diverse"] * 9 + ["exploration"]


def test_random_cold_start_spec() -> None:
    spec = StrategySpec("classic", "margin", cold_start="random")
    ranking = rank_pool(_pool(30), labelled_indices=[], strategy=spec, proba=None, depth=6, random_state=0)
    assert ranking.reasons.tolist() == ["random"] * 6
    assert ranking.inclusion_probabilities.tolist() == [0.2] * 6


def test_depth_is_capped_by_unlabelled_count() -> None:
    ranking = rank_pool(_pool(12), labelled_indices=range(10), strategy="margin", proba=_proba(12), depth=50)
    assert sorted(ranking.indices.tolist()) == [10, 11]


def test_errors() -> None:
    with pytest.raises(EmptyPool):
        rank_pool(np.zeros((0, 4), dtype=np.float32), labelled_indices=[])
    with pytest.raises(PoolExhausted):
        rank_pool(_pool(3), labelled_indices=[0, 1, 2], proba=_proba(3), class_counts=[1, 2])
    with pytest.raises(IndexError):
        rank_pool(_pool(3), labelled_indices=[3])
    with pytest.raises(ValueError, match="proba has 2 rows"):
        rank_pool(_pool(3), labelled_indices=[], proba=_proba(2))
    with pytest.raises(ValueError, match="depth must be positive"):
        rank_pool(_pool(3), labelled_indices=[], depth=0)


@pytest.mark.slow
def test_ranks_a_million_items_warm_and_cold() -> None:
    """The whole path at production scale (1M x 384): picks are valid and labelled items never come back.

    How fast it is belongs to a benchmark, not a test: bench/retrain_loop.py times load, fit, score, write and
    activate at 100k and 1M items against the scoring matmul as its floor.
    """
    rng = np.random.default_rng(0)
    n = 1_000_000
    vectors = rng.standard_normal((n, 384), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    p = rng.random(n, dtype=np.float32)
    proba = np.c_[1 - p, p]
    labelled = rng.choice(n, size=5000, replace=False)
    ranking = rank_pool(
        vectors, labelled_indices=labelled, proba=proba, class_counts=[4900, 100], depth=1000, random_state=0
    )
    assert len(ranking) == 1000
    assert np.unique(ranking.indices).size == 1000
    assert np.intersect1d(ranking.indices, labelled).size == 0

    # The cold start at the same scale: seed neighbours over the whole pool plus k-means on a sample.
    cold = rank_pool(
        vectors, labelled_indices=labelled[:3], proba=None, seed_vectors=vectors[:3], depth=1000, random_state=0
    )
    assert len(cold) == 1000
    assert np.unique(cold.indices).size == 1000
    assert np.intersect1d(cold.indices, labelled[:3]).size == 0
    assert set(cold.reasons.tolist()) == {"seed_query", "cold_start_diverse", "exploration"}
