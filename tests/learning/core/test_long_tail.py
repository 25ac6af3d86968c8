"""Many-class ranking (issue #22): class-balanced batch composition, seeking unseen classes, guideline text."""

from __future__ import annotations

import numpy as np
import pytest

from learning.core.cold_start import guideline_neighbours
from learning.core.ranking import rank_pool
from learning.core.strategies import StrategySpec, per_class_top, round_robin_by_group, seeking_share


def test_per_class_top_goes_round_robin_and_skips_repeats() -> None:
    proba = np.array([
        [0.9, 0.1, 0.0],   # 0: best for class 0
        [0.1, 0.8, 0.1],   # 1: best for class 1
        [0.0, 0.3, 0.7],   # 2: best for class 2
        [0.5, 0.45, 0.05],  # 3: second for class 0 and for class 1
        [0.2, 0.2, 0.6],   # 4: second for class 2
    ], dtype=np.float32)  # fmt: skip
    cands = np.arange(5)
    # Class order 2, 0, 1: round one 2 -> 0 -> 1, round two 4 (class 2), 3 (class 0), class 1's 3 is taken.
    assert per_class_top(proba, cands, [2, 0, 1], 5).tolist() == [2, 0, 1, 4, 3]
    assert per_class_top(proba, cands, [2, 0, 1], 2).tolist() == [2, 0]
    assert per_class_top(proba, np.array([1, 3]), [0], 5).tolist() == [3, 1]
    assert per_class_top(proba, cands, [], 3).tolist() == []


def test_round_robin_by_group_takes_each_groups_best_in_turn() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=np.float32)
    groups = np.array([0, 0, 0, 1, 2, 1])
    cands = np.arange(6)
    # Order 1, 2, 0: group 1's best (3), group 2's (4), group 0's (0), then group 1's second (5), group 0's (1).
    assert round_robin_by_group(scores, groups, cands, [1, 2, 0], 6).tolist() == [3, 4, 0, 5, 1, 2]
    # A group missing from the order comes after the listed ones.
    assert round_robin_by_group(scores, groups, cands, [2], 4).tolist() == [4, 0, 3, 1]
    assert round_robin_by_group(scores, groups, np.array([1, 5]), [0, 1], 9).tolist() == [1, 5]


def test_seeking_share_fades_as_classes_are_seen() -> None:
    spec = StrategySpec("s", "margin", seek_share=0.4)
    assert seeking_share(spec, np.array([3, 0, 0, 1])) == pytest.approx(0.2)
    assert seeking_share(spec, np.array([3, 2])) == 0.0
    assert seeking_share(StrategySpec("t", "margin"), np.array([0, 0, 1])) == 0.0
    with pytest.raises(ValueError, match="seek_share"):
        StrategySpec("u", "margin", seek_share=1.5)


def _unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_guideline_neighbours_and_the_give_up_rule() -> None:
    vectors = _unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1], [0, 0, 1], [0.1, 0, 0.9]])
    texts = _unit([[1, 0, 0], [0, 0, 1]])
    # Nothing labelled: each text's nearest candidate, round-robin (text 0 -> item 0, text 1 -> item 4, ...).
    picks, sims = guideline_neighbours(vectors, np.arange(6), np.zeros(0, np.int64), texts, 4)
    assert picks.tolist() == [0, 4, 1, 5]
    assert sims[0] == pytest.approx(1.0)
    # Items 0 and 1 already labelled near text 0 (and not answered as its class): with tries=2 text 0 is given
    # up, so only text 1 is sought.
    cands = np.array([2, 3, 4, 5])
    picks, _ = guideline_neighbours(vectors, cands, np.array([0, 1]), texts, 3, tries=2)
    assert picks.tolist() == [4, 5, 3]
    # An all-zero row means "no text": nothing to seek.
    picks, _ = guideline_neighbours(vectors, cands, np.zeros(0, np.int64), np.zeros((2, 3), np.float32), 3)
    assert picks.tolist() == []


def _pool(n_per: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:4]
    vecs = np.concatenate([c + 0.1 * rng.standard_normal((n_per, 8)).astype(np.float32) for c in centres])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = np.repeat(np.arange(4), n_per)
    return vecs, labels


def test_class_balance_changes_nothing_on_two_classes() -> None:
    vecs, labels = _pool()
    proba = np.stack([(labels < 2).astype(np.float32) * 0.8 + 0.1, (labels >= 2).astype(np.float32) * 0.8 + 0.1], 1)
    proba += np.linspace(0, 0.05, proba.shape[0], dtype=np.float32)[:, None] * np.array([1, -1], dtype=np.float32)
    base = StrategySpec("b", "margin", exploitation_share=0.5, diversity_threshold=0.9)
    balanced = StrategySpec("c", "margin", exploitation_share=0.5, diversity_threshold=0.9, class_balance=True,
                            seek_share=0.3)
    kwargs = dict(labelled_indices=[0, 100], proba=proba, class_counts=[1, 1], depth=20, random_state=3)
    a = rank_pool(vecs, strategy=base, **kwargs)  # type: ignore[arg-type]
    b = rank_pool(vecs, strategy=balanced, **kwargs)  # type: ignore[arg-type]
    assert a.indices.tolist() == b.indices.tolist()
    assert a.reasons.tolist() == b.reasons.tolist()


def test_class_balanced_batch_covers_every_predicted_class() -> None:
    vecs, labels = _pool()
    proba = np.full((120, 4), 0.02, dtype=np.float32)
    proba[np.arange(120), labels] = 0.94
    # Class 0 items are the most uncertain: plain margin would spend the whole batch there.
    proba[labels == 0, 0] = 0.5
    proba[labels == 0, 1] = 0.46
    spec = StrategySpec("c", "margin", class_balance=True, exploration_rate=0.0)
    plain = StrategySpec("p", "margin", exploration_rate=0.0)
    kwargs = dict(labelled_indices=[1, 31, 61, 91], proba=proba, class_counts=[1, 3, 2, 5], depth=8,
                  random_state=0)
    got = rank_pool(vecs, strategy=spec, **kwargs)  # type: ignore[arg-type]
    # Round-robin over predicted classes, fewest labels first: 0, 2, 1, 3, then again.
    assert labels[got.indices].tolist() == [0, 2, 1, 3, 0, 2, 1, 3]
    assert set(got.reasons.tolist()) == {"uncertainty"}
    assert set(labels[rank_pool(vecs, strategy=plain, **kwargs).indices].tolist()) == {0}  # type: ignore[arg-type]


def test_seeking_finds_an_unseen_class_by_its_guideline_text() -> None:
    vecs, labels = _pool()
    proba = np.full((120, 4), 0.0, dtype=np.float32)
    proba[:, :3] = 1 / 3  # the model knows classes 0-2; class 3 has no label yet
    texts = np.zeros((4, 8), dtype=np.float32)
    texts[3, 3] = 1.0  # class 3's guideline points at its cluster
    spec = StrategySpec("s", "margin", seek_share=0.8, exploration_rate=0.0)
    got = rank_pool(vecs, strategy=spec, labelled_indices=[0, 30, 60], proba=proba, class_counts=[1, 1, 1, 0],
                    depth=10, random_state=0, class_vectors=texts)
    # share 0.8 x 1/4 unseen = 0.2 of 10 positions: positions 0 and 5, both near class 3's text.
    assert got.reasons.tolist()[0] == "seed_query" and got.reasons.tolist()[5] == "seed_query"
    assert labels[got.indices[[0, 5]]].tolist() == [3, 3]
    assert (got.reasons == "seed_query").sum() == 2
    # Without guideline text the seeking positions are k-means picks.
    no_text = rank_pool(vecs, strategy=spec, labelled_indices=[0, 30, 60], proba=proba, class_counts=[1, 1, 1, 0],
                        depth=10, random_state=0)
    assert no_text.reasons.tolist()[0] == "cold_start_diverse" and (no_text.reasons == "cold_start_diverse").sum() == 2
    assert len(set(no_text.indices.tolist())) == 10


def test_search_share_keeps_looking_near_seeds_and_found_positives() -> None:
    rng = np.random.default_rng(1)
    centres = {0: [1, 0, 0, 0], 1: [0, 1, 0, 0], 2: [0, 0, 1, 0]}  # ham, spam style A, spam style B
    groups = np.repeat([0, 1, 2], [80, 10, 10])
    vecs = np.array([centres[g] for g in groups], dtype=np.float32) + 0.1 * rng.standard_normal((100, 4)).astype(
        np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    # The model only knows style A spam (one labelled, item 80); style B looks like ham to it.
    p_spam = np.select([groups == 1, groups == 2], [0.9, 0.01], 0.05).astype(np.float32)
    p_spam += np.linspace(0, 0.01, 100, dtype=np.float32)
    proba = np.stack([1 - p_spam, p_spam], axis=1)
    seeds = np.array([[0, 0, 1, 0]], dtype=np.float32)  # the lead's seed query describes style B
    kwargs = dict(labelled_indices=[0, 1, 80], proba=proba, class_counts=[2, 1], depth=10, random_state=0,
                  exploration_rate=0.0, seed_vectors=seeds)
    plain = StrategySpec("p", "margin", exploitation_share=0.5)
    search = StrategySpec("s", "margin", exploitation_share=0.5, search_share=0.5)
    a = rank_pool(vecs, strategy=plain, **kwargs)  # type: ignore[arg-type]
    b = rank_pool(vecs, strategy=search, **kwargs)  # type: ignore[arg-type]
    assert (groups[a.indices] == 2).sum() == 0
    found_b = int((groups[b.indices] == 2).sum())
    assert found_b >= 1
    assert len(set(b.indices.tolist())) == 10 and not set(b.indices.tolist()) & {0, 1, 80}
    with pytest.raises(ValueError, match="search_share"):
        StrategySpec("x", "margin", search_share=-0.1)
