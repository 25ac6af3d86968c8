"""Label-error detection (learning.core.label_errors): out-of-fold probabilities, the confident-learning ranking,
the noisy oracle and the simulation's label_noise block."""

from __future__ import annotations

import numpy as np
import pytest

from learning.core.embedders import HashingEmbedder
from learning.core.label_errors import (
    detect_label_errors,
    flip_answers,
    found_in_first,
    out_of_fold_proba,
    rank_label_errors,
)
from learning.core.simulation import Items, prepare_items, run_simulation


def _clusters(n_per: int, classes: list[str], seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Well-separated unit vectors: class c sits around basis vector c."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for c, key in enumerate(classes):
        centre = np.zeros(16, dtype=np.float32)
        centre[c] = 1.0
        pts = centre + 0.05 * rng.standard_normal((n_per, 16)).astype(np.float32)
        rows.append(pts / np.linalg.norm(pts, axis=1, keepdims=True))
        labels += [key] * n_per
    return np.concatenate(rows).astype(np.float32), labels


def test_rank_label_errors_puts_the_confidently_contradicted_answers_first() -> None:
    classes = ["a", "b", "c"]
    # Rows 0-3: the model is sure of the given answer. Rows 4 and 5: it is sure of another class.
    answers = ["a", "b", "c", "a", "b", "c", "a", "b", "c"]
    proba = np.array([
        [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.8, 0.1, 0.1],
        [0.95, 0.03, 0.02], [0.02, 0.96, 0.02],
        [0.7, 0.2, 0.1], [0.1, 0.85, 0.05], [0.1, 0.1, 0.8],
    ])  # fmt: skip
    ranking = rank_label_errors(answers, proba.astype(np.float32), classes)
    assert ranking.flagged.tolist() == [False, False, False, False, True, True, False, False, False]
    # Flagged first (row 5: self-confidence 0.02 < row 4's 0.03), then the rest by ascending self-confidence.
    assert ranking.order.tolist() == [5, 4, 6, 3, 8, 7, 0, 1, 2]
    assert ranking.n_flagged == 2
    assert ranking.self_confidence[4] == pytest.approx(0.03)


def test_rank_label_errors_ignores_classes_nobody_answered() -> None:
    # Column "z" has no answer; it is dropped and the rows renormalised over a and b.
    proba = np.array([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.0, 0.9, 0.1]], dtype=np.float32)
    ranking = rank_label_errors(["a", "a", "a", "b"], proba, ["a", "b", "z"])
    assert ranking.self_confidence.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert ranking.order[0] == 1


def test_rank_label_errors_rejects_bad_input() -> None:
    proba = np.full((2, 2), 0.5, dtype=np.float32)
    with pytest.raises(ValueError, match="not one of the classes"):
        rank_label_errors(["a", "x"], proba, ["a", "b"])
    with pytest.raises(ValueError, match="at least two classes"):
        rank_label_errors(["a", "a"], proba, ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        rank_label_errors(["a", "b", "a"], proba, ["a", "b"])


def test_out_of_fold_proba_never_lets_a_row_see_its_own_answer() -> None:
    vectors, labels = _clusters(10, ["a", "b"])
    labels[3] = "b"  # a wrong answer deep inside cluster a
    proba = out_of_fold_proba(vectors, labels, ["a", "b", "unused"], n_folds=5, random_state=0)
    assert proba.shape == (20, 3)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (proba[:, 2] == 0).all()
    # Held out, row 3 is predicted as its cluster's class despite its answer.
    assert proba[3, 0] > 0.5
    with pytest.raises(ValueError, match="at least two classes"):
        out_of_fold_proba(vectors, ["a"] * 20, ["a", "b"])
    with pytest.raises(ValueError, match="not in classes"):
        out_of_fold_proba(vectors, ["q"] * 20, ["a", "b"])


def test_detect_label_errors_ranks_the_flipped_answers_first() -> None:
    vectors, labels = _clusters(20, ["a", "b", "c"])
    wrong = np.zeros(60, dtype=bool)
    for i, new in ((2, "b"), (25, "c"), (47, "a")):
        labels[i] = new
        wrong[i] = True
    ranking = detect_label_errors(vectors, labels, ["a", "b", "c"], random_state=0)
    assert sorted(ranking.order[:3].tolist()) == [2, 25, 47]
    assert sorted(np.flatnonzero(ranking.flagged).tolist()) == [2, 25, 47]
    assert sorted(ranking.order.tolist()) == list(range(60))
    assert found_in_first(ranking.order, wrong, 3) == 3
    assert found_in_first(ranking.order, wrong, 0) == 0


def test_found_in_first_counts_the_prefix() -> None:
    order = np.array([4, 0, 3, 1, 2])
    wrong = np.array([True, False, False, True, True])
    assert [found_in_first(order, wrong, n) for n in range(7)] == [0, 1, 2, 3, 3, 3, 3]
    with pytest.raises(ValueError):
        found_in_first(order, wrong, -1)


def test_flip_answers_flips_to_another_class_by_weight() -> None:
    rng = np.random.default_rng(7)
    answers = ["a"] * 1000
    noisy, flipped = flip_answers(answers, ["a", "b", "c"], 0.2, random_state=rng, weights=[5.0, 3.0, 0.0])
    assert int(flipped.sum()) == sum(x != "a" for x in noisy)
    # Never to "c" (weight 0), never to the answer itself: every flip lands on "b".
    assert {x for x, f in zip(noisy, flipped, strict=True) if f} == {"b"}
    assert 150 < int(flipped.sum()) < 250
    same, none = flip_answers(answers, ["a", "b"], 0.0, random_state=np.random.default_rng(0))
    assert same == answers and not none.any()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flip_answers(answers, ["a", "b"], 1.5, random_state=rng)
    with pytest.raises(ValueError, match="two classes"):
        flip_answers(answers, ["a"], 0.1, random_state=rng)


def _items(n: int) -> Items:
    texts, labels = [], []
    for i in range(n):
        spam = i % 4 == 0
        texts.append(f"win cash prize now claim {i}" if spam else f"see you at lunch tomorrow {i}")
        labels.append("spam" if spam else "ham")
    return Items([f"x{i}" for i in range(n)], texts, labels)


def test_simulation_reports_label_noise_in_the_contract_shape() -> None:
    data = prepare_items(_items(200), embedder=HashingEmbedder(), seed=0)
    kwargs = dict(strategy="margin", seed=1, initial=20, batch_size=20, budget=100, positive="spam")
    clean = run_simulation(data, **kwargs)  # type: ignore[arg-type]
    noisy = run_simulation(data, label_noise=0.1, **kwargs)  # type: ignore[arg-type]
    assert "label_noise" not in clean
    block = noisy["label_noise"]
    assert set(block) == {"rate", "labelled", "flipped", "found_in_first"}
    assert (block["rate"], block["labelled"]) == (0.1, 100)
    assert 1 <= block["flipped"] <= 30
    assert set(block["found_in_first"]) == {"1x", "2x"}
    assert 0 <= block["found_in_first"]["1x"] <= block["found_in_first"]["2x"] <= block["flipped"]
    # The clean test split scores both runs; the noisy oracle's answers are what the model trained on.
    assert noisy["labels"] == clean["labels"]
    assert noisy == run_simulation(data, label_noise=0.1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label-noise"):
        run_simulation(data, label_noise=1.0, **kwargs)  # type: ignore[arg-type]
