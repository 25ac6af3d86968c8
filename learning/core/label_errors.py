"""Label-error detection: which answers does the model confidently disagree with? (confident learning)

The method is Northcutt et al.'s confident learning, through ``cleanlab`` (imported lazily: it costs about two
seconds and only the detector needs it):

1. ``out_of_fold_proba``: every labelled item gets probabilities from a model that never saw its answer
   (stratified k-fold over the labelled set, a fresh ``EmbeddingClassifier`` per fold). A model that saw the
   answer would simply agree with it, right or wrong.
2. ``rank_label_errors``: confident learning estimates the joint of (given answer, true class) from per-class
   confidence thresholds and flags the answers whose off-diagonal cells it must prune
   (``filter_by="prune_by_noise_rate"``). The ranking puts the flagged answers first, then every other one,
   each part by ascending self-confidence (the out-of-fold probability of the given answer): a reviewer who
   re-checks the first n items of the ranking re-checks the n most suspect answers, and the ranking covers
   every labelled item, so "how many of the flipped answers are in the first 2 x flipped" is well defined.

Single-label only: a multi-label answer has no one "other class" to be flipped to. Classes with no answer in
the labelled set are dropped from the probability columns (rows renormalised) before cleanlab sees them,
because its noise-rate estimate needs every column to be a class somebody answered.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from learning.core._types import BoolArray, Float64Array, FloatArray, IntArray
from learning.core.classifiers import EmbeddingClassifier

DEFAULT_FOLDS = 5
"""Folds for the out-of-fold probabilities: cleanlab's own default, and 80% of the labels per fold model."""


@dataclass(frozen=True)
class LabelErrorRanking:
    """Every labelled item, most suspect first.

    order:           positions into the labelled arrays, most suspect answer first (a permutation).
    flagged:         per labelled position, whether confident learning flags the answer as an issue.
    self_confidence: per labelled position, the out-of-fold probability of the given answer.
    """

    order: IntArray
    flagged: BoolArray
    self_confidence: Float64Array

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())


def out_of_fold_proba(
    vectors: FloatArray,
    answers: Sequence[str],
    classes: Sequence[str],
    *,
    n_folds: int = DEFAULT_FOLDS,
    random_state: int = 0,
    classifier_params: Mapping[str, Any] | None = None,
) -> FloatArray:
    """(n, len(classes)) probabilities for each labelled row from a model fitted on the other folds.

    Folds are stratified by answer (a class with fewer answers than folds lands in fewer folds; a fold model
    that never saw a class gives it probability 0). ``n_folds`` is capped at the number of rows.
    """
    X = np.asarray(vectors, dtype=np.float32)
    y = np.asarray([str(a) for a in answers], dtype=object)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"vectors has {X.shape[0]} rows but there are {y.shape[0]} answers")
    unknown = set(y.tolist()) - set(classes)
    if unknown:
        raise ValueError(f"answers not in classes: {sorted(unknown)}")
    if len(set(y.tolist())) < 2:
        raise ValueError("out-of-fold probabilities need answers from at least two classes")
    folds = min(int(n_folds), X.shape[0])
    if folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    out = np.zeros((X.shape[0], len(classes)), dtype=np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        # "The least populated class has only 1 member": expected on long-tailed taxonomies, handled above.
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(X, y))
    for train, held_out in splits:
        model = EmbeddingClassifier(classes=list(classes), random_state=random_state, **dict(classifier_params or {}))
        model.fit(X[train], y[train].tolist())
        out[held_out] = model.predict_proba(X[held_out])
    return out


def rank_label_errors(answers: Sequence[str], proba: FloatArray, classes: Sequence[str]) -> LabelErrorRanking:
    """Rank labelled items by how likely their answer is wrong, given out-of-fold ``proba`` (see the module
    docstring): confident learning's flagged answers first, then the rest, each by ascending self-confidence;
    ties keep the labelled order."""
    from cleanlab.filter import find_label_issues  # lazy: a two-second import only the detector needs

    proba = np.asarray(proba, dtype=np.float64)
    column = {c: i for i, c in enumerate(classes)}
    if proba.shape != (len(answers), len(classes)):
        raise ValueError(f"proba has shape {proba.shape}, expected ({len(answers)}, {len(classes)})")
    try:
        given = np.fromiter((column[str(a)] for a in answers), dtype=np.int64, count=len(answers))
    except KeyError as exc:
        raise ValueError(f"answer {exc.args[0]!r} is not one of the classes") from None
    seen = np.unique(given)
    if seen.shape[0] < 2:
        raise ValueError("label-error ranking needs answers from at least two classes")
    # Compact to the answered classes: cleanlab's labels are 0..K-1 with a column for each.
    compact = proba[:, seen]
    totals = compact.sum(axis=1, keepdims=True)
    uniform = np.full_like(compact, 1.0 / seen.shape[0])
    compact = np.where(totals > 0, compact / np.where(totals > 0, totals, 1.0), uniform)
    labels = np.searchsorted(seen, given)
    self_confidence = np.asarray(compact[np.arange(labels.shape[0]), labels], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about classes with one answer; they still rank
        flagged = np.asarray(find_label_issues(labels, compact, filter_by="prune_by_noise_rate"), dtype=bool)
    positions = np.arange(labels.shape[0])
    order = np.lexsort((positions, self_confidence, ~flagged)).astype(np.int64)
    return LabelErrorRanking(order=order, flagged=flagged, self_confidence=self_confidence)


def detect_label_errors(
    vectors: FloatArray,
    answers: Sequence[str],
    classes: Sequence[str],
    *,
    n_folds: int = DEFAULT_FOLDS,
    random_state: int = 0,
    classifier_params: Mapping[str, Any] | None = None,
) -> LabelErrorRanking:
    """Out-of-fold probabilities, then ``rank_label_errors``: the detector the simulation and the worker run."""
    proba = out_of_fold_proba(vectors, answers, classes, n_folds=n_folds, random_state=random_state,
                              classifier_params=classifier_params)
    return rank_label_errors(answers, proba, classes)


def found_in_first(order: IntArray, is_wrong: BoolArray, n: int) -> int:
    """How many of the truly wrong answers are among the first ``n`` positions of ``order``."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    wrong = np.asarray(is_wrong, dtype=bool)
    return int(wrong[np.asarray(order, dtype=np.int64)[:n]].sum())


def flip_answers(
    answers: Sequence[str],
    classes: Sequence[str],
    rate: float,
    *,
    random_state: np.random.Generator,
    weights: Sequence[float] | None = None,
) -> tuple[list[str], BoolArray]:
    """A noisy oracle: each answer is replaced, with probability ``rate``, by a different class drawn in
    proportion to ``weights`` (per class; default equal) over the other classes. Returns (answers, flipped)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"label noise rate must be in [0, 1], got {rate}")
    if len(classes) < 2:
        raise ValueError("label noise needs at least two classes")
    w = np.ones(len(classes)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(classes),) or (w < 0).any():
        raise ValueError("weights must be one non-negative number per class")
    column = {c: i for i, c in enumerate(classes)}
    flipped = random_state.random(len(answers)) < rate
    out = [str(a) for a in answers]
    for i in np.flatnonzero(flipped):
        others = w.copy()
        others[column[out[i]]] = 0.0
        if others.sum() <= 0:
            others = np.ones(len(classes))
            others[column[out[i]]] = 0.0
        out[i] = str(classes[int(random_state.choice(len(classes), p=others / others.sum()))])
    return out, flipped
