"""Strategies: exact scores, deterministic top-k, the near-duplicate filter and the registry."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.core.strategies import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    StrategySpec,
    diverse_top_k,
    effective_exploitation_share,
    get_strategy,
    minority_scores,
    prevalence_balance,
    prevalence_estimate,
    rarity_scores,
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


def _one_by_one_diverse_top_k(
    vectors: np.ndarray, ordered: np.ndarray, k: int, threshold: float, already: np.ndarray | None
) -> list[int]:
    """The filter's definition, one candidate at a time: keep a candidate iff its cosine to every item kept so
    far (and to ``already``) is below the threshold; fill up with the passed-over ones in order."""
    kept: list[int] = []
    others = [] if already is None else [int(a) for a in already]
    for i in ordered.tolist():
        if len(kept) == k:
            break
        against = kept + others
        if not against or float((vectors[against] @ vectors[i]).max()) < threshold:
            kept.append(int(i))
    kept += [int(i) for i in ordered.tolist() if i not in kept][: k - len(kept)]
    return kept


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 600),
    k=st.integers(1, 400),
    threshold=st.sampled_from([0.3, 0.6, 0.9, 0.99]),
    n_already=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_blocked_diverse_top_k_matches_the_one_by_one_definition(
    n: int, k: int, threshold: float, n_already: int, seed: int
) -> None:
    """Across block boundaries (DIVERSITY_BLOCK = 256), with copies and near-copies in the pool."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(max(n // 3, 1), 5)).astype(np.float32)
    v = base[rng.integers(0, base.shape[0], size=n)] + rng.normal(scale=0.05, size=(n, 5)).astype(np.float32)
    v[rng.random(n) < 0.2] = v[0]  # exact copies too
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ordered = rng.permutation(n)
    already = rng.choice(n, size=min(n_already, n), replace=False) if n_already else None
    expected = _one_by_one_diverse_top_k(v, ordered, min(k, n), threshold, already)
    assert diverse_top_k(v, ordered, k, threshold, already=already).tolist() == expected


def test_balance_gate_exploits_only_while_imbalanced() -> None:
    spec = StrategySpec("x", "margin", exploitation_share=0.3, exploit_rule="balance_gate", exploit_below_balance=0.5)
    assert effective_exploitation_share(spec, np.array([90, 10])) == 0.3  # 10 < 0.5 * 50
    assert effective_exploitation_share(spec, np.array([70, 30])) == 0.0  # 30 >= 25
    assert effective_exploitation_share(spec, np.array([30, 25, 0, 20])) == 0.0  # unseen classes do not count
    assert effective_exploitation_share(spec, np.array([5, 0])) == 0.0  # one class seen: nothing to weigh
    assert effective_exploitation_share(StrategySpec("y", "margin"), np.array([99, 1])) == 0.0


def test_prevalence_estimate_and_balance() -> None:
    proba = np.array([[0.9, 0.1, 0.0], [0.7, 0.3, 0.0]], dtype=np.float32)
    pi = prevalence_estimate(proba, np.array([5, 2, 0]))
    np.testing.assert_allclose(pi, [0.8, 0.2, 0.0], atol=1e-6)  # unseen class: 0
    # two seen classes, rarest at 0.2 of the pool: balance 2 * 0.2
    assert prevalence_balance(pi, np.array([5, 2, 0])) == pytest.approx(0.4)
    assert prevalence_balance(np.array([0.25, 0.25, 0.25, 0.25]), np.array([1, 1, 1, 1])) == pytest.approx(1.0)
    assert prevalence_balance(np.array([1.0, 0.0]), np.array([3, 0])) == 1.0  # one class seen: nothing to weigh
    # multi-label: each label its own yes/no question; the rarest label (5%) decides
    multi = prevalence_estimate(np.array([[0.05, 0.5]], dtype=np.float32), np.array([1, 1]), multi_label=True)
    np.testing.assert_allclose(multi, [0.05, 0.5], atol=1e-6)
    assert prevalence_balance(multi, np.array([1, 1]), multi_label=True) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="class_counts has shape"):
        prevalence_estimate(proba, np.array([1, 2]))


def test_prevalence_rule_scales_exploitation_by_imbalance() -> None:
    spec = StrategySpec("x", "margin", exploitation_share=0.5)
    assert spec.exploit_rule == "prevalence"
    counts = np.array([50, 50])
    assert effective_exploitation_share(spec, counts, np.array([0.98, 0.02])) == pytest.approx(0.5 * 0.96)
    assert effective_exploitation_share(spec, counts, np.array([0.87, 0.13])) == pytest.approx(0.5 * 0.74)
    assert effective_exploitation_share(spec, counts, np.array([0.5, 0.5])) == 0.0
    assert effective_exploitation_share(spec, np.array([9, 0]), np.array([1.0, 0.0])) == 0.0
    with pytest.raises(ValueError, match="needs a prevalence estimate"):
        effective_exploitation_share(spec, counts)
    with pytest.raises(ValueError, match="exploit_rule"):
        StrategySpec("z", "margin", exploit_rule="nope")  # type: ignore[arg-type]


def test_rarity_scores_order_by_the_rarer_class_whatever_the_label_counts() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    scores = rarity_scores(proba, np.array([0.8, 0.2]))
    # weights (1/0.8, 1/0.2) / 6.25 = (0.2, 0.8)
    np.testing.assert_allclose(scores, [0.26, 0.68, 0.44], atol=1e-6)
    assert np.argsort(-scores).tolist() == np.argsort(-proba[:, 1]).tolist()
    # a class with no estimated share gets no weight
    np.testing.assert_allclose(rarity_scores(proba, np.array([0.0, 1.0])), proba[:, 1], atol=1e-6)
    with pytest.raises(ValueError, match="prevalence has shape"):
        rarity_scores(proba, np.array([1.0]))


def test_registry_and_default() -> None:
    assert get_strategy("default") is STRATEGIES[DEFAULT_STRATEGY]
    assert set(STRATEGIES) >= {"random", "least_confidence", "margin", "entropy"}
    assert get_strategy("margin").exploration_rate == 0.1
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        get_strategy("nope")
    with pytest.raises(ValueError, match="exploitation_share"):
        StrategySpec("x", "margin", exploitation_share=1.5)
