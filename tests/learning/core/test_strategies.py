"""Strategies: exact scores, deterministic top-k, the near-duplicate filter and the registry."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest

from learning.core.strategies import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    StrategySpec,
    diverse_top_k,
    effective_exploitation_share,
    get_strategy,
    minority_scores,
    top_k,
    uncertainty_scores,
)

PROBA3 = np.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.9, 0.05, 0.05]], dtype=np.float32)


def test_uncertainty_measures_single_label() -> None:
    np.testing.assert_allclose(uncertainty_scores(PROBA3, "least_confidence"), [0.5, 0.6, 0.1], atol=1e-6)
    np.testing.assert_allclose(uncertainty_scores(PROBA3, "margin"), [0.8, 1.0, 0.15], atol=1e-6)
    ent = uncertainty_scores(PROBA3, "entropy")
    assert int(np.argmax(ent)) == 1 and int(np.argmin(ent)) == 2
    with pytest.raises(ValueError, match="'random' has no uncertainty score"):
        uncertainty_scores(PROBA3, "random")


def test_two_class_measures_rank_identically() -> None:
    # Random, not symmetric around 0.5: p and 1 - p tie exactly and float rounding may order ties differently.
    p = np.random.default_rng(0).random(25).astype(np.float32)
    proba = np.c_[1 - p, p]
    measures: tuple[Literal["least_confidence", "margin", "entropy"], ...] = ("least_confidence", "margin", "entropy")
    orders = {tuple(np.argsort(-uncertainty_scores(proba, m), kind="stable").tolist()) for m in measures}
    assert len(orders) == 1


def test_uncertainty_multi_label_takes_the_most_uncertain_label() -> None:
    proba = np.array([[0.5, 0.99], [0.9, 0.8], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(uncertainty_scores(proba, "margin", multi_label=True), [1.0, 0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(
        uncertainty_scores(proba, "least_confidence", multi_label=True), [0.5, 0.2, 0.0], atol=1e-6
    )
    np.testing.assert_allclose(
        uncertainty_scores(proba, "entropy", multi_label=True)[[0, 2]], [np.log(2.0), 0.0], atol=1e-6
    )


def test_minority_scores_weight_the_rare_class() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    # counts 9 ham, 1 spam -> weights (1/9, 1) / (10/9) = (0.1, 0.9)
    np.testing.assert_allclose(minority_scores(proba, np.array([9, 1])), [0.18, 0.74], atol=1e-6)
    # an unseen class counts as one label
    np.testing.assert_allclose(minority_scores(proba, np.array([0, 1])), [0.5, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="class_counts has shape"):
        minority_scores(proba, np.array([1, 2, 3]))


def test_top_k_breaks_ties_by_index() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.5, 0.0], dtype=np.float32)
    cand = np.array([0, 1, 2, 3, 4, 5])
    assert top_k(scores, cand, 3).tolist() == [1, 3, 2]
    assert top_k(scores, cand[[5, 4, 3]], 2).tolist() == [3, 4]
    assert top_k(scores, cand, 10).tolist() == [1, 3, 2, 4, 0, 5]
    assert top_k(scores, cand, 0).tolist() == []


def test_diverse_top_k_skips_near_duplicates() -> None:
    v = np.array([[1, 0], [0.999, 0.0447], [0, 1], [0.7071, 0.7071]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ordered = np.array([0, 1, 2, 3])
    assert diverse_top_k(v, ordered, 3, 0.9).tolist() == [0, 2, 3]
    # not enough distinct items: the passed-over duplicate fills the last slot
    assert diverse_top_k(v, ordered, 4, 0.9).tolist() == [0, 2, 3, 1]
    # items similar to `already` are passed over too
    assert diverse_top_k(v, np.array([1, 2]), 1, 0.9, already=np.array([0])).tolist() == [2]


def test_exploitation_only_while_imbalanced() -> None:
    spec = StrategySpec("x", "margin", exploitation_share=0.3, exploit_below_balance=0.5)
    assert effective_exploitation_share(spec, np.array([90, 10])) == 0.3  # 10 < 0.5 * 50
    assert effective_exploitation_share(spec, np.array([70, 30])) == 0.0  # 30 >= 25
    assert effective_exploitation_share(spec, np.array([30, 25, 0, 20])) == 0.0  # unseen classes do not count
    assert effective_exploitation_share(spec, np.array([5, 0])) == 0.0  # one class seen: nothing to weigh
    assert effective_exploitation_share(StrategySpec("y", "margin"), np.array([99, 1])) == 0.0


def test_registry_and_default() -> None:
    assert get_strategy("default") is STRATEGIES[DEFAULT_STRATEGY]
    assert set(STRATEGIES) >= {"random", "least_confidence", "margin", "entropy"}
    assert get_strategy("margin").exploration_rate == 0.1
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        get_strategy("nope")
    with pytest.raises(ValueError, match="exploitation_share"):
        StrategySpec("x", "margin", exploitation_share=1.5)
