"""Evaluation figures for models and learning curves, and the Horvitz-Thompson prevalence estimate.

Conventions: a learning curve is two equal-length sequences, ``labels`` (how many items were labelled, rising)
and ``values`` (a metric measured after each round). Classes with no positive in the evaluation set are left
out of macro averages of AP, because AP is undefined for them (scikit-learn would warn and return 0).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, f1_score

from learning.core._types import FloatArray


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over ``classes`` (a class never predicted nor present scores 0)."""
    return float(f1_score(list(y_true), list(y_pred), labels=list(classes), average="macro", zero_division=0))


def average_precision(
    y_true: Sequence[str], proba: FloatArray, classes: Sequence[str], *, positive: str | None = None
) -> float:
    """AP of the ``positive`` class's probability column; without ``positive``, the macro mean of one-vs-rest AP
    over the classes that occur in ``y_true``. Returns nan when no class occurs (there is nothing to rank)."""
    truth = np.asarray(list(y_true), dtype=object)[:, None] == np.asarray(list(classes), dtype=object)[None, :]
    return average_precision_indicator(truth, proba, classes, positive=positive)


def label_indicator(label_sets: Sequence[Collection[str]], classes: Sequence[str]) -> np.ndarray:
    """Multi-label truth as a boolean (n, len(classes)) matrix: row i, column c is whether row i carries c."""
    column = {c: j for j, c in enumerate(classes)}
    out = np.zeros((len(label_sets), len(classes)), dtype=bool)
    for i, keys in enumerate(label_sets):
        for key in keys:
            out[i, column[key]] = True
    return out


def macro_f1_indicator(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Multi-label macro-F1: the unweighted mean over columns of each label's F1 (0 where undefined)."""
    return float(f1_score(truth, predicted, average="macro", zero_division=0))


def average_precision_indicator(truth: np.ndarray, proba: FloatArray, classes: Sequence[str], *,
                                positive: str | None = None) -> float:
    """AP from a boolean truth matrix (``label_indicator``): the ``positive`` class's column, else the macro
    mean over the classes that occur in ``truth`` (nan when none does), each column its own yes/no ranking."""
    names = list(classes)
    if positive is not None and positive not in names:
        raise ValueError(f"class {positive!r} is not one of the model's classes")
    columns = [names.index(positive)] if positive is not None else range(len(names))
    scores = np.asarray(proba, dtype=np.float64)
    values = [float(average_precision_score(truth[:, j], scores[:, j])) for j in columns if truth[:, j].any()]
    return float(np.mean(values)) if values else float("nan")


def area_under_curve(labels: Sequence[float], values: Sequence[float]) -> float:
    """Normalised area under a learning curve: the trapezoid integral divided by the label range, i.e. the
    curve's mean height over the budget (in the metric's own units; 1.0 means perfect from the first label)."""
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.shape[0] == 0:
        raise ValueError("labels and values must be non-empty and of equal length")
    if x.shape[0] == 1 or x[-1] == x[0]:
        return float(y[0])
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def labels_to_reach(labels: Sequence[int], values: Sequence[float], target: float) -> int | None:
    """The first label count at which the curve reaches ``target`` (e.g. 0.95 x the full-pool score), or None
    when it never does within the budget."""
    for n, v in zip(labels, values, strict=True):
        if v >= target:
            return int(n)
    return None


def horvitz_thompson_total(y: Sequence[float], inclusion_probabilities: Sequence[float]) -> float:
    """Unbiased estimate of a population total from a probability sample: sum of y_i / pi_i.

    Use it with the items a ranking selected with reason "exploration" (or "random"): ``y`` is 1 for a positive
    answer and 0 otherwise, pi_i their recorded inclusion probability (m/N, or j/N when only the first j of the
    ranking's exploration items were labelled). Dividing by N gives the prevalence in the unlabelled pool.
    """
    yv = np.asarray(y, dtype=np.float64)
    pi = np.asarray(inclusion_probabilities, dtype=np.float64)
    if yv.shape != pi.shape:
        raise ValueError("y and inclusion_probabilities must have the same length")
    if np.any((pi <= 0.0) | (pi > 1.0)):
        raise ValueError("inclusion probabilities must lie in (0, 1]")
    return float(np.sum(yv / pi))
