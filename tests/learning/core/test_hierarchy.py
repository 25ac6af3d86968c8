"""TreeClassifier (learning.core.hierarchy): parent x leaf-within-parent probabilities, parent answers."""

from __future__ import annotations

import numpy as np
import pytest

from learning.core.hierarchy import TreeClassifier
from learning.core.taxonomy import Taxonomy

TREE = Taxonomy.from_dict({
    "labels": [
        {"key": "energy", "children": [{"key": "crude"}, {"key": "gas"}]},
        {"key": "metals", "children": [{"key": "gold"}, {"key": "tin"}, {"key": "zinc"}]},
    ],
})  # fmt: skip
LEAVES = ["crude", "gas", "gold", "tin", "zinc"]


def _data() -> tuple[np.ndarray, list[str]]:
    """Energy leaves near axis 0, metal leaves near axis 1; siblings differ along axes 2-4."""
    rng = np.random.default_rng(0)
    rows, answers = [], []
    where = {"crude": (0, 2), "gas": (0, 3), "gold": (1, 2), "tin": (1, 3), "zinc": (1, 4)}
    for leaf, (branch, sub) in where.items():
        for _ in range(6):
            v = np.zeros(6, dtype=np.float32)
            v[branch], v[sub] = 1.0, 0.5
            v += 0.05 * rng.standard_normal(6).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
            answers.append(leaf)
    return np.stack(rows), answers


def test_leaf_probability_is_parent_times_leaf_within_parent() -> None:
    X, y = _data()
    model = TreeClassifier(taxonomy=TREE, classes=LEAVES, random_state=0).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (30, 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    parent = model.parent_proba(X)
    assert model.parents_ == ("energy", "metals")
    # Summing a parent's leaves gives back the parent model's probability exactly.
    np.testing.assert_allclose(proba[:, :2].sum(axis=1), parent[:, 0], atol=1e-5)
    np.testing.assert_allclose(proba[:, 2:].sum(axis=1), parent[:, 1], atol=1e-5)
    assert (model.predict(X) == np.array(y, dtype=object)).mean() >= 0.9


def test_parent_answers_count_for_the_parent_only() -> None:
    X, y = _data()
    # Every metal answer given at the parent level: the parent model still learns metals, the leaf model has no
    # metal answer, so each metal leaf gets an even third of P(metals).
    answers = ["metals" if a in ("gold", "tin", "zinc") else a for a in y]
    model = TreeClassifier(taxonomy=TREE, classes=LEAVES, random_state=0).fit(X, answers)
    proba = model.predict_proba(X[12:13])  # a gold item
    p_metals = float(model.parent_proba(X[12:13])[0, 1])
    assert p_metals > 0.9
    np.testing.assert_allclose(proba[0, 2:], [p_metals / 3] * 3, atol=1e-5)


def test_only_parent_answers_split_evenly_and_errors() -> None:
    X, y = _data()
    answers = ["energy" if a in ("crude", "gas") else "metals" for a in y]
    model = TreeClassifier(taxonomy=TREE, classes=LEAVES, random_state=0).fit(X, answers)
    assert model.leaf_model_ is None
    p = model.predict_proba(X[:1])
    np.testing.assert_allclose(p[0, 0], p[0, 1], atol=1e-6)
    with pytest.raises(ValueError, match="not in the taxonomy"):
        TreeClassifier(taxonomy=TREE).fit(X[:2], ["crude", "oil"])
    with pytest.raises(ValueError, match="single-label"):
        TreeClassifier(taxonomy=TREE).fit(X[:1], [frozenset({"crude"})])
    with pytest.raises(ValueError, match="not fitted"):
        TreeClassifier(taxonomy=TREE).predict_proba(X)
