"""A classifier that trains and predicts with the taxonomy's tree (single-label taxonomies with parents).

``TreeClassifier`` fits two logistic regressions on the same embeddings:

- a *parent* model over the top-level nodes: every answer counts for its top-level ancestor, and an answer at a
  parent (where the taxonomy allows non-leaf answers) counts there and nowhere else;
- a *leaf* model over the leaf keys, fitted on leaf answers only.

A leaf's probability is P(parent) x P(leaf | parent), where P(leaf | parent) is the leaf model's probability
renormalised over that parent's leaves. Why: with few labels per leaf, the leaf model cannot tell the topics
of one parent from another's, but twenty "energy" answers spread over seven leaves are twenty answers for the
parent model. The parent decides the branch early; the leaf model only has to split siblings. As leaves fill
up the product tends to the leaf model's own view (both agree on the branch).

The output has leaf columns in ``classes`` order, exactly like ``EmbeddingClassifier``, so the ranking,
uncertainty (the reviewer decides a leaf: margin over leaf probabilities) and metrics are unchanged.
``parent_proba`` exposes the parent level for callers that rank or report there.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator

from learning.core._types import FloatArray
from learning.core.classifiers import DEFAULT_C, DEFAULT_CLASS_WEIGHT, EmbeddingClassifier
from learning.core.taxonomy import Taxonomy


class TreeClassifier(BaseEstimator):  # type: ignore[misc]
    """P(top-level parent) x P(leaf | parent) over a single-label taxonomy's leaves (see the module docstring)."""

    def __init__(
        self,
        *,
        taxonomy: Taxonomy,
        classes: Sequence[str] | None = None,
        C: float = DEFAULT_C,
        class_weight: str | None = DEFAULT_CLASS_WEIGHT,
        max_iter: int = 1000,
        random_state: int | None = None,
    ) -> None:
        self.taxonomy = taxonomy
        self.classes = classes
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def _top(self, key: str) -> str:
        chain = self.taxonomy.ancestors(key)
        return chain[-1] if chain else key

    def _model(self, classes: Sequence[str]) -> EmbeddingClassifier:
        return EmbeddingClassifier(classes=list(classes), C=self.C, class_weight=self.class_weight,
                                   max_iter=self.max_iter, random_state=self.random_state)

    def fit(self, X: Any, y: Sequence[str] | Sequence[Collection[str]]) -> Self:
        if self.taxonomy.multi_label or not all(isinstance(a, str) for a in y):
            raise ValueError("TreeClassifier is for single-label taxonomies: one key per answer")
        X = np.asarray(X, dtype=np.float32)
        answers = [str(a) for a in y]
        if X.shape[0] != len(answers) or X.shape[0] == 0:
            raise ValueError(f"need as many answers as rows, and at least one: {X.shape[0]} rows, {len(answers)}")
        unknown = {a for a in answers if a not in self.taxonomy.parent}
        if unknown:
            raise ValueError(f"answers not in the taxonomy: {sorted(unknown)}")
        leaves = list(self.classes) if self.classes is not None else list(self.taxonomy.leaf_keys)
        self.classes_ = np.array(leaves, dtype=object)
        self.parents_ = tuple(dict.fromkeys(self._top(k) for k in leaves))
        self.leaf_parent_ = np.array([self.parents_.index(self._top(k)) for k in leaves], dtype=np.int64)
        self.parent_model_ = self._model(self.parents_).fit(X, [self._top(a) for a in answers])
        at_leaf = [i for i, a in enumerate(answers) if self.taxonomy.is_leaf(a)]
        self.leaf_model_: EmbeddingClassifier | None = None
        if at_leaf:
            self.leaf_model_ = self._model(leaves).fit(X[at_leaf], [answers[i] for i in at_leaf])
        self.is_constant_ = bool(self.parent_model_.is_constant_ and (self.leaf_model_ is None
                                                                     or self.leaf_model_.is_constant_))
        return self

    def parent_proba(self, X: Any) -> FloatArray:
        """Probabilities over the top-level parents, in ``parents_`` order."""
        out: FloatArray = self.parent_model_.predict_proba(X)
        return out

    def predict_proba(self, X: Any) -> FloatArray:
        if not hasattr(self, "classes_"):
            raise ValueError("TreeClassifier is not fitted yet; call fit first")
        X = np.asarray(X, dtype=np.float32)
        parent = self.parent_model_.predict_proba(X)
        n_leaves = len(self.classes_)
        if self.leaf_model_ is None:
            # No leaf answers yet: split each parent's probability evenly over its leaves.
            within = np.ones((X.shape[0], n_leaves), dtype=np.float64)
        else:
            within = self.leaf_model_.predict_proba(X).astype(np.float64)
        # Renormalise within each parent's leaves; a parent whose leaves all got 0 splits evenly.
        sums = np.zeros((X.shape[0], len(self.parents_)), dtype=np.float64)
        np.add.at(sums.T, self.leaf_parent_, within.T)
        counts = np.bincount(self.leaf_parent_, minlength=len(self.parents_)).astype(np.float64)
        denom = sums[:, self.leaf_parent_]
        conditional = np.where(denom > 0, within / np.where(denom > 0, denom, 1.0), 1.0 / counts[self.leaf_parent_])
        out: FloatArray = (parent[:, self.leaf_parent_] * conditional).astype(np.float32)
        return out

    def predict(self, X: Any) -> Any:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
