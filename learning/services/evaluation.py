"""A model version's figures: cross-validated on all its labels, and on the exploration sample alone.

Labels picked by uncertainty are, by design, the hardest items in the pool, so figures over all labels say
little about the pool as a whole (they are usually pessimistic, and move as the strategy changes). Items picked
by exploration are a uniform random sample of the pool with known inclusion probabilities, so the same
out-of-fold predictions restricted to them estimate the model's quality on the pool without that bias, and
their answers estimate class prevalence (Hajek's ratio estimator, weights 1/pi).

The figures are computed after the new ranking is active: they never delay the queue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score
from sklearn.model_selection import KFold, StratifiedKFold

from learning.core import EmbeddingClassifier, average_precision, macro_f1

CV_MAX_LABELS = 5000
"""Cross-validation runs on at most this many labels (exploration items always included): five fits of a
logistic regression on 5k x 384 take about a second; more would only tighten an interval nobody reads."""

CV_FOLDS = 5

MIN_LABELS_PER_GROUP = 20
"""A language gets its own cross-validated figures from this many labels (and two classes present) on: fewer
give an AP that swings by tens of points from one label to the next."""


def _round(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def model_metrics(
    X: np.ndarray,
    labels: Sequence[Any],
    *,
    classes: Sequence[str],
    multi_label: bool,
    sampled: np.ndarray,
    inclusion: np.ndarray,
    random_state: int,
    groups: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """{"cv": {...} | None, "exploration": {...} | None, "class_counts": {...}} for one fitted model's labels.

    ``groups`` (one per label: the item's language) adds ``cv["by_language"]``: the same out-of-fold
    predictions scored per group with at least ``MIN_LABELS_PER_GROUP`` labels and two classes among them. The
    model is the project's one model, trained on every language: these say how well it serves each one.
    """
    n = len(labels)
    counts: Counter[str] = Counter()
    for label in labels:
        counts.update(label if multi_label else [label])
    out: dict[str, Any] = {"class_counts": {c: int(counts.get(c, 0)) for c in classes}, "cv": None,
                           "exploration": None}
    rng = np.random.default_rng(random_state)
    sampled = np.asarray(sampled, dtype=bool)
    keep = np.arange(n)
    if n > CV_MAX_LABELS:
        others = np.flatnonzero(~sampled)
        room = max(CV_MAX_LABELS - int(sampled.sum()), 0)
        keep = np.sort(np.concatenate([np.flatnonzero(sampled), rng.choice(others, size=min(room, others.size),
                                                                           replace=False)]))
    y = [labels[int(i)] for i in keep]
    Xk = np.asarray(X[keep], dtype=np.float32)
    oof = _out_of_fold_proba(Xk, y, classes=classes, multi_label=multi_label, random_state=random_state)
    if oof is None:
        out["cv_note"] = "too few labels per class for cross-validation"
    else:
        proba, folds = oof
        out["cv"] = {"folds": folds, "n": len(y), **_scores(y, proba, classes, multi_label)}
        if groups is not None:
            out["cv"]["by_language"] = _group_scores([groups[int(i)] for i in keep], y, proba, classes, multi_label)
        sample = sampled[keep]
        if sample.any():
            ys = [y[int(i)] for i in np.flatnonzero(sample)]
            out["exploration"] = {
                "n": int(sample.sum()),
                **_scores(ys, proba[sample], classes, multi_label),
                "prevalence": _prevalence(ys, np.asarray(inclusion)[keep][sample], classes, multi_label),
            }
    if out["exploration"] is None and sampled.any():
        ys = [labels[int(i)] for i in np.flatnonzero(sampled)]
        out["exploration"] = {"n": int(sampled.sum()),
                              "prevalence": _prevalence(ys, np.asarray(inclusion)[sampled], classes, multi_label)}
    return out


def _out_of_fold_proba(X: np.ndarray, y: Sequence[Any], *, classes: Sequence[str], multi_label: bool,
                       random_state: int) -> tuple[np.ndarray, int] | None:
    n = len(y)
    if multi_label:
        if n < 2 * CV_FOLDS:
            return None
        splitter: Any = KFold(n_splits=CV_FOLDS, shuffle=True, random_state=random_state)
        splits = splitter.split(X)
        folds = CV_FOLDS
    else:
        smallest = min(Counter(y).values()) if n else 0
        if len(set(y)) < 2 or smallest < 2:
            return None
        folds = min(CV_FOLDS, smallest)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
        splits = splitter.split(X, list(y))
    proba = np.zeros((n, len(classes)), dtype=np.float32)
    for train, test in splits:
        model = EmbeddingClassifier(multi_label=multi_label, classes=list(classes), random_state=random_state)
        model.fit(X[train], [y[i] for i in train])
        proba[test] = model.predict_proba(X[test])
    return proba, folds


def _group_scores(groups: Sequence[str | None], y: Sequence[Any], proba: np.ndarray, classes: Sequence[str],
                  multi_label: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for group in sorted({g for g in groups if g}):
        rows = [i for i, g in enumerate(groups) if g == group]
        ys = [y[i] for i in rows]
        distinct = {c for label in ys for c in label} if multi_label else set(ys)
        if len(rows) >= MIN_LABELS_PER_GROUP and len(distinct) >= 2:
            out[group] = {"n": len(rows), **_scores(ys, proba[rows], classes, multi_label)}
    return out


def _scores(y: Sequence[Any], proba: np.ndarray, classes: Sequence[str], multi_label: bool) -> dict[str, Any]:
    if not multi_label:
        predicted = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)]
        present = [c for c in classes if c in set(y)]
        return {
            "macro_f1": _round(macro_f1(list(y), predicted.tolist(), present)),
            "accuracy": _round(float(np.mean(predicted == np.asarray(list(y), dtype=object)))),
            "average_precision": _round(average_precision(list(y), proba, list(classes))),
        }
    truth = np.array([[c in s for c in classes] for s in y], dtype=bool)
    predicted_ml = proba >= 0.5
    cols = [j for j in range(len(classes)) if truth[:, j].any()]
    ap = [float(average_precision_score(truth[:, j], proba[:, j])) for j in cols]
    return {
        "macro_f1": _round(float(f1_score(truth[:, cols], predicted_ml[:, cols], average="macro", zero_division=0)))
        if cols else None,
        "average_precision": _round(float(np.mean(ap))) if ap else None,
    }


def _prevalence(y: Sequence[Any], inclusion: np.ndarray, classes: Sequence[str],
                multi_label: bool) -> dict[str, float | None]:
    """Hajek estimate of each class's share of the pool from the probability sample: sum(w*y) / sum(w)."""
    w = 1.0 / np.asarray(inclusion, dtype=np.float64)
    total = float(w.sum())
    out: dict[str, float | None] = {}
    for c in classes:
        hit = np.array([(c in label) if multi_label else (label == c) for label in y], dtype=np.float64)
        out[c] = _round(float((w * hit).sum() / total)) if total > 0 else None
    return out
