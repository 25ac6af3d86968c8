"""Turning several reviewers' answers on one item into one answer: majority vote and Dawid-Skene.

Pure functions over label *indices* (positions in the target taxonomy version's key list); no
Django here, so the rules are easy to test and to reuse.

Majority vote (per item, streamed)
----------------------------------
``soft[k]`` is the share of voting annotators whose answer contains label ``k``.

* Single-label: the label with the most votes wins. **Ties give no hard label**: the row gets
  ``labels == []`` and ``label_source == "tie"``, and the split vote is still visible in the soft
  scores. We do not break ties by taxonomy order or severity because either would silently bake a
  policy choice into the training set; a tie is what adjudication is for, and a decided adjudication
  overrides the aggregate.
* Multi-label: each label is decided on its own; it is in the answer when **strictly more than
  half** of the voters chose it. Exactly half is a tie for that label and leaves it out; when that
  leaves the answer empty, the row is a tie too.

Dawid-Skene (whole export, in memory)
-------------------------------------
One confusion matrix per reviewer, fitted by EM (Dawid & Skene, 1979). Multi-label taxonomies run
one independent binary model per label. Deterministic: initialised from the majority-vote shares,
a fixed maximum number of iterations and a fixed tolerance on the mean log-likelihood per
observation; no randomness anywhere.

Why our own ~80 lines instead of crowd-kit's ``DawidSkene`` (1.4.2 installs cleanly with our pins,
and tests/labeling/services/test_aggregation.py uses it as the oracle our posteriors must match): crowd-kit
works on a pandas DataFrame and joins/groups it several times per iteration. Measured on this machine
for 1M annotations (500k items, 20 workers, 2 labels, integer ids): 208 MB RSS just to import it,
444 MB peak during the fit, 8.2 s for 20 iterations; string ids cost more. Our exports must stay under
300 MB, so here every annotation is three small integers in numpy arrays (item, worker, label: 12
bytes each, 12 MB per million) and each EM step is a handful of ``np.bincount`` calls. It is also
single-label only and breaks posterior ties by column order, which we want stated, not implied.

Memory: O(n_observations) int32 + O(n_items * n_labels) float64 for the posteriors +
O(n_workers * n_labels^2) for the confusion matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# Floor for probabilities before taking logs (same role as crowd-kit's _EPS).
EPS = 1e-10
DS_MAX_ITER = 100
DS_TOL = 1e-7
# Posteriors closer than this are a tie (no hard label), as for majority vote.
TIE_TOL = 1e-9

IntArray = npt.NDArray[np.integer[Any]]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Decision:
    """A hard answer (label indices, ascending) and whether it came from a tie."""

    labels: tuple[int, ...]
    tie: bool


def majority_soft(votes: Sequence[Sequence[int]], n_labels: int) -> list[float]:
    """Share of voters whose answer contains each label (0.0 for every label when nobody voted)."""
    counts = [0] * n_labels
    for vote in votes:
        for k in set(vote):
            counts[k] += 1
    n = len(votes)
    if n == 0:
        return [0.0] * n_labels
    return [c / n for c in counts]


def decide(soft: Sequence[float], *, multi_label: bool) -> Decision:
    """The hard answer from soft scores, with the module's tie rules.

    Single-label: the unique arg-max (a shared maximum is a tie: no label). Multi-label: every
    label with a score strictly above one half (exactly one half is a tie for that label).
    """
    if not soft:
        return Decision((), False)
    if multi_label:
        chosen = tuple(k for k, s in enumerate(soft) if s > 0.5 + TIE_TOL)
        tied = any(abs(s - 0.5) <= TIE_TOL for s in soft)
        return Decision(chosen, tied and not chosen)
    best = max(soft)
    if best <= 0.0:
        return Decision((), False)
    winners = [k for k, s in enumerate(soft) if best - s <= TIE_TOL]
    if len(winners) > 1:
        return Decision((), True)
    return Decision((winners[0],), False)


@dataclass(frozen=True)
class DawidSkeneFit:
    """Posteriors per item (rows in the order items were given) and how the fit went."""

    posteriors: FloatArray  # (n_items, n_labels): P(true label = k) or, multi-label, P(label k present)
    n_iter: int
    converged: bool


def _one_model(item: IntArray, worker: IntArray, label: IntArray, n_items: int, n_workers: int, n_labels: int,
               gold: IntArray | None, max_iter: int, tol: float) -> tuple[FloatArray, int, bool]:
    """EM for one categorical model; ``gold[i] >= 0`` pins item i's posterior to that label.

    Memory is kept to the posteriors, one (items x labels) work matrix and one float per observation:
    indices stay in their given (int32) arrays and every per-observation gather reuses one buffer.
    """
    n_obs = len(item)
    cell = worker.astype(np.int64) * n_labels + label  # (worker, observed label) cell of each observation
    # Initialisation: majority-vote shares (the usual Dawid-Skene start, and crowd-kit's).
    post = np.bincount(item.astype(np.int64) * n_labels + label,
                       minlength=n_items * n_labels).astype(np.float64).reshape(n_items, n_labels)
    totals = post.sum(axis=1, keepdims=True)
    post = np.divide(post, totals, out=np.full_like(post, 1.0 / n_labels), where=totals > 0)
    gold_rows = None
    if gold is not None:
        gold_rows = np.flatnonzero(gold >= 0)
        post[gold_rows] = 0.0
        post[gold_rows, gold[gold_rows]] = 1.0
    gather = np.empty(n_obs)  # reused: one float per observation
    work = np.empty((n_items, n_labels))
    confusion = np.empty((n_workers, n_labels, n_labels))
    previous = -np.inf
    converged = False
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        # M-step: priors and confusion[w, true c, observed k], each row normalised over k.
        priors = np.clip(post.mean(axis=0), EPS, None)
        for c in range(n_labels):
            np.take(post[:, c], item, out=gather, mode="clip")
            confusion[:, c, :] = np.bincount(cell, weights=gather,
                                             minlength=n_workers * n_labels).reshape(n_workers, n_labels)
        np.clip(confusion, EPS, None, out=confusion)
        confusion /= confusion.sum(axis=2, keepdims=True)
        log_conf = np.log(confusion)
        # E-step: log posterior = log prior + sum of log P(observed | true) over the item's answers.
        for c in range(n_labels):
            np.take(log_conf[:, c, :].ravel(), cell, out=gather, mode="clip")
            work[:, c] = np.bincount(item, weights=gather, minlength=n_items)
        work += np.log(priors)
        top = work.max(axis=1, keepdims=True)
        work -= top
        np.exp(work, out=work)
        total = work.sum(axis=1, keepdims=True)
        work /= total
        post, work = work, post
        if gold_rows is not None:
            post[gold_rows] = 0.0
            post[gold_rows, gold[gold_rows]] = 1.0  # type: ignore[index]
        log_likelihood = float((top + np.log(total)).sum()) / max(n_obs, 1)
        if abs(log_likelihood - previous) < tol:
            converged = True
            break
        previous = log_likelihood
    return post, iteration, converged


def dawid_skene(*, item: IntArray, worker: IntArray, label: IntArray, n_items: int, n_workers: int,
                n_labels: int, gold: Sequence[Sequence[int] | None] | None = None,
                max_iter: int = DS_MAX_ITER, tol: float = DS_TOL) -> DawidSkeneFit:
    """Fit single-label Dawid-Skene on observations ``(item[j], worker[j], label[j])``.

    Items are ``0..n_items-1`` and every one should have at least one observation. ``gold[i]``
    (label indices, or None) pins item i's posterior to its known answer during EM, so gold items
    anchor the reviewers' confusion matrices.
    """
    if n_items == 0:
        return DawidSkeneFit(np.zeros((0, n_labels)), 0, True)
    gold_arr = None
    if gold is not None:
        gold_arr = np.array([g[0] if g else -1 for g in gold], dtype=np.int64)
    post, n_iter, converged = _one_model(np.asarray(item), np.asarray(worker), np.asarray(label),
                                         n_items, n_workers, n_labels, gold_arr, max_iter, tol)
    return DawidSkeneFit(post, n_iter, converged)


def dawid_skene_multilabel(*, answer_item: IntArray, answer_worker: IntArray, chosen_answer: IntArray,
                           chosen_label: IntArray, n_items: int, n_workers: int, n_labels: int,
                           gold: Sequence[Sequence[int] | None] | None = None,
                           max_iter: int = DS_MAX_ITER, tol: float = DS_TOL) -> DawidSkeneFit:
    """One binary Dawid-Skene per label: is label k present? ``posteriors[i, k] = P(k present)``.

    Answers are ``(answer_item[a], answer_worker[a])``; answer ``chosen_answer[j]`` chose
    ``chosen_label[j]``. Every answer is an observation for every label (absent = "not chosen").
    """
    posts = np.zeros((n_items, n_labels))
    worst_iter, all_converged = 0, True
    if n_items == 0:
        return DawidSkeneFit(posts, 0, True)
    a_item = np.asarray(answer_item)
    a_worker = np.asarray(answer_worker)
    observed = np.zeros(len(a_item), dtype=np.int32)
    for k in range(n_labels):
        observed[:] = 0
        observed[chosen_answer[chosen_label == k]] = 1
        gold_arr = None
        if gold is not None:
            gold_arr = np.array([(1 if k in g else 0) if g is not None else -1 for g in gold], dtype=np.int64)
        post, n_iter, converged = _one_model(a_item, a_worker, observed, n_items, n_workers, 2, gold_arr,
                                             max_iter, tol)
        posts[:, k] = post[:, 1]
        worst_iter = max(worst_iter, n_iter)
        all_converged = all_converged and converged
    return DawidSkeneFit(posts, worst_iter, all_converged)
