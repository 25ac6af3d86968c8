"""Majority vote with its tie rules, and our numpy Dawid-Skene checked against crowd-kit's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labeling.services.aggregation import Decision, dawid_skene, dawid_skene_multilabel, decide, majority_soft


def test_majority_soft_is_the_share_of_voters_per_label() -> None:
    assert majority_soft([[0], [0], [2]], 3) == [2 / 3, 0.0, 1 / 3]
    assert majority_soft([[0, 1], [1]], 3) == [0.5, 1.0, 0.0]
    assert majority_soft([], 2) == [0.0, 0.0]


@pytest.mark.parametrize(("soft", "multi", "expected"), [
    ([2 / 3, 0.0, 1 / 3], False, Decision((0,), False)),
    ([0.5, 0.5, 0.0], False, Decision((), True)),          # single-label tie: no hard label
    ([1 / 3, 1 / 3, 1 / 3], False, Decision((), True)),
    ([0.0, 0.0], False, Decision((), False)),               # nobody voted
    ([0.5, 1.0, 0.0], True, Decision((1,), False)),         # multi-label: exactly half is left out
    ([0.75, 0.6, 0.2], True, Decision((0, 1), False)),
    ([0.5, 0.5, 0.0], True, Decision((), True)),            # nothing above half and a half: a tie
    ([0.4, 0.0], True, Decision((), False)),
])
def test_decide_tie_rules(soft: list[float], multi: bool, expected: Decision) -> None:
    assert decide(soft, multi_label=multi) == expected


def synthetic(seed: int = 7, n_items: int = 400, n_labels: int = 3, per_item: int = 3
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Workers of very different accuracy answering a 3-class task; returns obs arrays and the truth."""
    rng = np.random.default_rng(seed)
    accuracy = np.array([0.95, 0.9, 0.75, 0.55, 0.4])
    truth = rng.integers(0, n_labels, size=n_items)
    items, workers, labels = [], [], []
    for i in range(n_items):
        for w in rng.choice(len(accuracy), size=per_item, replace=False):
            correct = rng.random() < accuracy[w]
            label = truth[i] if correct else rng.choice([k for k in range(n_labels) if k != truth[i]])
            items.append(i)
            workers.append(int(w))
            labels.append(int(label))
    return np.array(items), np.array(workers), np.array(labels), truth


@pytest.mark.filterwarnings("ignore::Warning:crowdkit.*")
def test_dawid_skene_matches_crowd_kit_iteration_for_iteration() -> None:
    from crowdkit.aggregation import DawidSkene

    items, workers, labels, truth = synthetic()
    frame = pd.DataFrame({"task": items, "worker": workers, "label": labels})
    # Same start (majority shares), same E/M steps: a fixed number of iterations must agree to
    # rounding. (A negative tolerance switches early stopping off in both.)
    for n_iter in (1, 5, 60):
        ours = dawid_skene(item=items, worker=workers, label=labels, n_items=400, n_workers=5, n_labels=3,
                           max_iter=n_iter, tol=-1.0)
        theirs = DawidSkene(n_iter=n_iter, tol=-1.0).fit(frame).probas_
        theirs = theirs.reindex(index=range(400), columns=[0, 1, 2]).to_numpy()
        assert ours.n_iter == n_iter
        # crowd-kit floors posteriors at 1e-10 when it computes its ELBO; that is the only difference.
        assert np.abs(ours.posteriors - theirs).max() < 1e-9
    converged = dawid_skene(item=items, worker=workers, label=labels, n_items=400, n_workers=5, n_labels=3)
    assert converged.converged
    # And it beats majority vote on this data (the point of modelling reviewer skill).
    majority = np.array([np.bincount(labels[items == i], minlength=3).argmax() for i in range(400)])
    assert (converged.posteriors.argmax(axis=1) == truth).mean() > (majority == truth).mean()


def test_dawid_skene_is_deterministic_and_rows_sum_to_one() -> None:
    items, workers, labels, _ = synthetic(seed=11)
    first = dawid_skene(item=items, worker=workers, label=labels, n_items=400, n_workers=5, n_labels=3)
    second = dawid_skene(item=items, worker=workers, label=labels, n_items=400, n_workers=5, n_labels=3)
    assert np.array_equal(first.posteriors, second.posteriors)
    assert first.n_iter == second.n_iter
    assert np.allclose(first.posteriors.sum(axis=1), 1.0)
    assert first.posteriors.dtype == np.float64


def test_gold_answers_are_pinned_and_teach_who_to_trust() -> None:
    # Worker 0 is always right, worker 1 always wrong, and they answer the same 20 items.
    # Items 0-9 are gold; on items 10-19 the two disagree and only their record can break the tie.
    truth = np.array([0, 1] * 10)
    items = np.repeat(np.arange(20), 2)
    workers = np.tile([0, 1], 20)
    labels = np.empty(40, dtype=np.int64)
    labels[0::2] = truth
    labels[1::2] = 1 - truth
    gold: list[list[int] | None] = [[int(t)] for t in truth[:10]] + [None] * 10
    fit = dawid_skene(item=items, worker=workers, label=labels, n_items=20, n_workers=2, n_labels=2, gold=gold)
    assert (fit.posteriors[:10] == np.eye(2)[truth[:10]]).all()
    assert (fit.posteriors[10:].argmax(axis=1) == truth[10:]).all()
    assert (fit.posteriors[10:].max(axis=1) > 0.99).all()


def test_multilabel_dawid_skene_is_one_binary_model_per_label() -> None:
    # 3 items x 2 answers; answers choose label sets.
    answer_item = np.array([0, 0, 1, 1, 2, 2])
    answer_worker = np.array([0, 1, 0, 1, 0, 1])
    chosen = {0: [0, 1], 1: [0, 1], 2: [2], 3: [2], 4: [], 5: []}
    chosen_answer = np.array([a for a, ks in chosen.items() for _ in ks])
    chosen_label = np.array([k for ks in chosen.values() for k in ks])
    fit = dawid_skene_multilabel(answer_item=answer_item, answer_worker=answer_worker, chosen_answer=chosen_answer,
                                 chosen_label=chosen_label, n_items=3, n_workers=2, n_labels=3)
    hard = [decide(list(row), multi_label=True).labels for row in fit.posteriors]
    assert hard == [(0, 1), (2,), ()]
    assert fit.posteriors.shape == (3, 3)


def test_empty_input() -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert dawid_skene(item=empty, worker=empty, label=empty, n_items=0, n_workers=0,
                       n_labels=2).posteriors.shape == (0, 2)
