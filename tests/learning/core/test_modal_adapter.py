"""modAL stays behind learning/core/modal_adapter.py; these tests pin why and what it gives."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

from learning.core import modal_adapter

CORE = Path(__file__).resolve().parents[3] / "learning" / "core"

PROBA = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.3], [1.0, 0.0]], dtype=np.float32)


def _sklearn_at_least(major: int, minor: int) -> bool:
    found = re.match(r"(\d+)\.(\d+)", sklearn.__version__)
    assert found is not None
    return (int(found.group(1)), int(found.group(2))) >= (major, minor)


def test_adapter_measures_exact_values() -> None:
    np.testing.assert_allclose(modal_adapter.least_confidence(PROBA), [0.5, 0.1, 0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(modal_adapter.margin(PROBA), [1.0, 0.2, 0.7, 0.0], atol=1e-6)
    # scipy's entropy renormalises the third row (sum 0.9) to (2/3, 1/3).
    expected = [
        np.log(2.0),
        -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)),
        -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)),
        0.0,
    ]
    np.testing.assert_allclose(modal_adapter.entropy(PROBA), expected, atol=1e-6)
    assert modal_adapter.margin(PROBA).dtype == np.float32


def test_adapter_rejects_one_dimensional_input() -> None:
    with pytest.raises(ValueError, match="expected an \\(n, k\\) probability array"):
        modal_adapter.margin(np.array([0.2, 0.8]))


def test_entropy_of_all_zero_row_is_zero_not_nan() -> None:
    assert modal_adapter.entropy(np.zeros((1, 3))).tolist() == [0.0]


def test_modal_teach_is_broken_on_installed_sklearn_and_core_never_calls_it() -> None:
    """ActiveLearner.teach passes force_all_finite to check_X_y, which scikit-learn 1.8 removed. We document
    the break here (so an upgrade that fixes or worsens it is noticed) and check that nothing in the core
    builds an ActiveLearner or calls teach()."""
    from modAL.models import ActiveLearner

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = np.r_[np.zeros(10), np.ones(10)]
    learner = ActiveLearner(estimator=LogisticRegression(), X_training=X[5:15], y_training=y[5:15])
    if _sklearn_at_least(1, 8):
        with pytest.raises(TypeError, match="force_all_finite"):
            learner.teach(X[:2], y[:2])
    else:
        learner.teach(X[:2], y[:2])

    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"teach", "ActiveLearner"}, f"{path}:{node.lineno}"
            if isinstance(node, ast.Name):
                assert node.id != "ActiveLearner", f"{path}:{node.lineno}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("modAL"):
                assert path.name == "modal_adapter.py", f"{path} imports modAL; only the adapter may"
                assert all(alias.name != "ActiveLearner" for alias in node.names)
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("modAL") for a in node.names), f"{path}:{node.lineno}"
