"""The classifier fitted at every retrain: logistic regression on sentence embeddings.

``EmbeddingClassifier`` follows scikit-learn's estimator contract (``__init__`` stores parameters, ``fit``
returns self, learned state ends in ``_``, randomness through ``random_state``), so ``sklearn.base.clone``
and ``get_params`` work and a retrain always starts from a fresh, unfitted object: no learner keeps training
data between retrains.

Label shapes it accepts in ``fit(X, y)``:

- single-label (multi-class or binary): ``y`` is a sequence of label keys, one per row;
- multi-label: ``y`` is a sequence of collections of keys (possibly empty), fitted one-vs-rest;
- hierarchical taxonomies: pass leaf keys and roll probabilities up with ``taxonomy.rollup_proba``.

``predict_proba`` columns follow ``classes_``: the ``classes`` parameter if given (a taxonomy's leaf keys, so
column order is stable across retrains even before every label has been seen), else the sorted keys seen.

Degenerate training sets are handled explicitly rather than by scikit-learn's errors:

- single-label with one class seen: a constant model (probability 1 for that class); ``is_constant_`` is True
  and the ranking treats it as "no usable model yet" (see cold_start.can_fit);
- multi-label, a label never seen positive (or never negative): that column is the constant observed rate
  (0 or 1) instead of a logistic regression;
- classes never seen get probability 0.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from learning.core._types import FloatArray

# C=10 beats scikit-learn's C=1 on unit-norm 384-d embeddings: with small-norm inputs C=1 shrinks the logits so
# hard that probabilities crowd around the prior. Measured in docs/al_curves.md.
DEFAULT_C = 10.0
# Balanced class weights: with rare positives an unweighted model predicts "ham" almost everywhere, its
# probabilities for positives stay low, and margin sampling starves. Measured in docs/al_curves.md.
DEFAULT_CLASS_WEIGHT: str | None = "balanced"


class EmbeddingClassifier(BaseEstimator):  # type: ignore[misc]
    """Logistic regression on embeddings, single-label or one-vs-rest multi-label, with explicit degenerate cases."""

    def __init__(
        self,
        *,
        multi_label: bool = False,
        classes: Sequence[str] | None = None,
        C: float = DEFAULT_C,
        class_weight: str | None = DEFAULT_CLASS_WEIGHT,
        max_iter: int = 1000,
        random_state: int | None = None,
    ) -> None:
        self.multi_label = multi_label
        self.classes = classes
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def _new_lr(self) -> LogisticRegression:
        return LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, random_state=self.random_state
        )

    def fit(self, X: Any, y: Sequence[str] | Sequence[Collection[str]]) -> Self:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-d, got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("cannot fit on zero labelled items")
        if len(y) != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)} labels")
        self.n_features_in_ = X.shape[1]
        if self.multi_label:
            return self._fit_multi_label(X, y)
        return self._fit_single_label(X, y)

    def _fit_single_label(self, X: FloatArray, y: Sequence[Any]) -> Self:
        labels = np.array([str(v) for v in y], dtype=object)
        seen = sorted(set(labels.tolist()))
        self.classes_ = np.array(list(self.classes) if self.classes is not None else seen, dtype=object)
        unknown = set(seen) - set(self.classes_.tolist())
        if unknown:
            raise ValueError(f"labels not in classes: {sorted(unknown)}")
        self.seen_classes_ = np.array(seen, dtype=object)
        self.is_constant_ = len(seen) == 1
        self.estimators_: list[LogisticRegression | None] = []
        if not self.is_constant_:
            self.estimators_ = [self._new_lr().fit(X, labels)]
        return self

    def _fit_multi_label(self, X: FloatArray, y: Sequence[Any]) -> Self:
        sets = [{str(k) for k in row} for row in y]
        seen = sorted(set().union(*sets))
        self.classes_ = np.array(list(self.classes) if self.classes is not None else seen, dtype=object)
        unknown = set(seen) - set(self.classes_.tolist())
        if unknown:
            raise ValueError(f"labels not in classes: {sorted(unknown)}")
        self.seen_classes_ = np.array(seen, dtype=object)
        self.estimators_ = []
        rates: list[float] = []
        for key in self.classes_.tolist():
            target = np.fromiter((key in s for s in sets), dtype=bool, count=len(sets))
            rate = float(target.mean())
            rates.append(rate)
            # A label that is always (or never) present has nothing to separate: keep its observed rate.
            self.estimators_.append(self._new_lr().fit(X, target) if 0.0 < rate < 1.0 else None)
        self.constant_rates_ = np.array(rates, dtype=np.float32)
        self.is_constant_ = all(e is None for e in self.estimators_)
        return self

    def predict_proba(self, X: Any) -> FloatArray:
        """Probabilities, float32 of shape (n, len(classes_)).

        Single-label rows sum to 1. Multi-label columns are independent per-label probabilities.
        """
        if not hasattr(self, "classes_"):
            raise ValueError("EmbeddingClassifier is not fitted yet; call fit first")
        X = np.asarray(X, dtype=np.float32)
        n = X.shape[0]
        out = np.zeros((n, len(self.classes_)), dtype=np.float32)
        if self.multi_label:
            for j, est in enumerate(self.estimators_):
                out[:, j] = self.constant_rates_[j] if est is None else est.predict_proba(X)[:, 1]
            return out
        column = {c: i for i, c in enumerate(self.classes_.tolist())}
        if self.is_constant_:
            out[:, column[self.seen_classes_[0]]] = 1.0
            return out
        est = self.estimators_[0]
        assert est is not None
        proba = est.predict_proba(X)
        for i, cls in enumerate(est.classes_.tolist()):
            out[:, column[cls]] = proba[:, i]
        return out

    def predict(self, X: Any) -> Any:
        """Single-label: the most likely key per row. Multi-label: a boolean (n, k) matrix at threshold 0.5."""
        proba = self.predict_proba(X)
        if self.multi_label:
            return proba >= 0.5
        return self.classes_[np.argmax(proba, axis=1)]
