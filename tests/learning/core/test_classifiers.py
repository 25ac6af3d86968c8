"""EmbeddingClassifier: the scikit-learn contract, label shapes and degenerate training sets."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from learning.core.classifiers import DEFAULT_C, DEFAULT_CLASS_WEIGHT, EmbeddingClassifier

# Two well-separated blobs in 4-d: class "a" along +x, class "b" along -x.
X = np.array(
    [[1, 0.1, 0, 0], [0.9, -0.1, 0, 0.1], [1, 0, 0.1, 0], [-1, 0.1, 0, 0], [-0.9, 0, -0.1, 0], [-1, 0, 0, 0.1]],
    dtype=np.float32,
)
Y = ["a", "a", "a", "b", "b", "b"]


def test_init_only_stores_params_and_clone_works() -> None:
    model = EmbeddingClassifier(C=3.0, random_state=7)
    assert model.get_params() == {
        "C": 3.0,
        "class_weight": DEFAULT_CLASS_WEIGHT,
        "classes": None,
        "max_iter": 1000,
        "multi_label": False,
        "random_state": 7,
    }
    assert not hasattr(model, "classes_")
    fitted = model.fit(X, Y)
    assert fitted is model
    fresh = clone(model)
    assert not hasattr(fresh, "classes_")
    assert (DEFAULT_C, DEFAULT_CLASS_WEIGHT) == (10.0, "balanced")


def test_binary_probabilities() -> None:
    model = EmbeddingClassifier(random_state=0).fit(X, Y)
    proba = model.predict_proba(X)
    assert proba.shape == (6, 2)
    assert proba.dtype == np.float32
    assert model.classes_.tolist() == ["a", "b"]
    np.testing.assert_allclose(proba.sum(axis=1), np.ones(6), atol=1e-6)
    assert model.predict(X).tolist() == Y
    assert model.is_constant_ is False


def test_classes_param_fixes_columns_and_unseen_classes_get_zero() -> None:
    model = EmbeddingClassifier(classes=("c", "b", "a"), random_state=0).fit(X, Y)
    proba = model.predict_proba(X)
    assert model.classes_.tolist() == ["c", "b", "a"]
    assert proba[:, 0].tolist() == [0.0] * 6
    assert model.predict(X).tolist() == Y


def test_one_class_seen_gives_constant_model() -> None:
    model = EmbeddingClassifier(classes=("a", "b")).fit(X[:3], ["a", "a", "a"])
    assert model.is_constant_ is True
    assert model.predict_proba(X).tolist() == [[1.0, 0.0]] * 6


def test_unknown_label_and_empty_fit_are_errors() -> None:
    with pytest.raises(ValueError, match=r"labels not in classes: \['z'\]"):
        EmbeddingClassifier(classes=("a", "b")).fit(X[:2], ["a", "z"])
    with pytest.raises(ValueError, match="cannot fit on zero labelled items"):
        EmbeddingClassifier().fit(np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="not fitted yet"):
        EmbeddingClassifier().predict_proba(X)
    with pytest.raises(ValueError, match="X has 6 rows but y has 2 labels"):
        EmbeddingClassifier().fit(X, ["a", "b"])


def test_multi_class() -> None:
    extra = np.array([[0, 0, 1, 0], [0, 0.1, 0.9, 0], [0, 0, 1, 0.1]], dtype=np.float32)
    X3 = np.vstack([X, extra]).astype(np.float32)
    y3 = [*Y, "c", "c", "c"]
    model = EmbeddingClassifier(random_state=0).fit(X3, y3)
    proba = model.predict_proba(X3)
    assert proba.shape == (9, 3)
    assert model.predict(X3).tolist() == y3


def test_multi_label_one_vs_rest_with_constant_columns() -> None:
    y = [{"a", "spam"}, {"a"}, {"a", "spam"}, {"b"}, {"b", "spam"}, {"b"}]
    model = EmbeddingClassifier(multi_label=True, classes=("a", "b", "spam", "never"), random_state=0).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (6, 4)
    assert model.estimators_[3] is None
    assert proba[:, 3].tolist() == [0.0] * 6
    assert model.predict(X)[:, 0].tolist() == [True, True, True, False, False, False]
    assert model.is_constant_ is False


def test_multi_label_all_present_is_constant_one() -> None:
    model = EmbeddingClassifier(multi_label=True).fit(X[:2], [{"a"}, {"a"}])
    assert model.is_constant_ is True
    assert model.predict_proba(X[:1]).tolist() == [[1.0]]
