"""Replay active learning offline with a labelled file as the oracle (behind ``python -m learning.simulate``).

Each round does what the retrain worker does -- apply the cold-start rule, fit a fresh EmbeddingClassifier,
predict the pool, call ``ranking.rank_pool`` -- and then the simulated reviewers answer the first
``batch_size`` ranked positions with the file's labels. After every round the same model is scored on the
held-out test split. Nothing here is a second implementation of a strategy: if the simulation looks good, the
workers behave the same way.

A file is multi-label when any row's ``label`` is a list of other than one key (``[]`` included: "none of the
labels"). Its rows are then label sets: the classifier is one-vs-rest, the ranking gets ``multi_label``, and the
curves use per-label figures (macro-F1 at the 0.5 threshold, one-vs-rest AP), as the workers do for a
multi-label taxonomy.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from learning.core import cold_start
from learning.core._types import BoolArray, FloatArray
from learning.core.classifiers import EmbeddingClassifier
from learning.core.embedders import Embedder
from learning.core.hierarchy import TreeClassifier
from learning.core.label_errors import detect_label_errors, flip_answers, found_in_first
from learning.core.metrics import (
    average_precision_indicator,
    label_indicator,
    macro_f1,
    macro_f1_indicator,
)
from learning.core.ranking import rank_pool
from learning.core.strategies import StrategySpec, get_strategy
from learning.core.taxonomy import Taxonomy
from learning.core.vector_cache import embed_with_cache


@dataclass(frozen=True)
class Items:
    """Rows of a labelled file: parallel lists.

    ``labels`` holds each row's key; for a multi-label file it holds the row's keys sorted and joined by "|"
    (a stratification and display key only), and ``label_sets`` holds the sets themselves.
    """

    external_ids: list[str]
    texts: list[str]
    labels: list[str]
    label_sets: list[frozenset[str]] | None = None

    @property
    def multi_label(self) -> bool:
        return self.label_sets is not None

    def answers(self, rows: Sequence[int]) -> list[str] | list[frozenset[str]]:
        """The oracle's answers for these rows: keys, or key sets for a multi-label file."""
        if self.label_sets is not None:
            return [self.label_sets[i] for i in rows]
        return [self.labels[i] for i in rows]

    def key_sets(self) -> list[frozenset[str]]:
        """Each row's keys as a set, whether the file is multi-label or not."""
        return self.label_sets if self.label_sets is not None else [frozenset((key,)) for key in self.labels]


@dataclass(frozen=True)
class SimulationData:
    """A pool/test split with vectors; ``classes`` is every label key in the file (sorted)."""

    pool: Items
    test: Items
    pool_vectors: FloatArray
    test_vectors: FloatArray
    classes: tuple[str, ...]


def _open_text(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def load_items(path: str | Path) -> Items:
    """Read a labelled JSON Lines file (optionally .gz): {"external_id", "text", "label"} per line.

    ``label`` is a key, or a list of keys; the file is multi-label when any list has other than one key.
    """
    ids: list[str] = []
    texts: list[str] = []
    sets: list[tuple[str, ...]] = []
    multi_label = False
    with _open_text(Path(path)) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            label = row.get("label")
            keys = tuple(label) if isinstance(label, list) else (label,)
            if not all(isinstance(k, str) and k for k in keys) or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{line_no}: needs a string 'text' and a 'label' that is a key or a list "
                                 f"of keys, got {label!r}")
            multi_label = multi_label or len(keys) != 1
            ids.append(str(row.get("external_id", line_no)))
            texts.append(row["text"])
            sets.append(keys)
    if not ids:
        raise ValueError(f"{path}: no rows")
    if not multi_label:
        return Items(ids, texts, [keys[0] for keys in sets])
    return Items(ids, texts, ["|".join(sorted(set(keys))) for keys in sets], [frozenset(keys) for keys in sets])


def prepare_data(
    data_path: str | Path,
    *,
    embedder: Embedder,
    seed: int,
    test_path: str | Path | None = None,
    test_fraction: float = 0.3,
    cache_dir: str | Path | None = None,
) -> SimulationData:
    """Read the labelled file (and test file), split and embed: see ``prepare_items``."""
    test = load_items(test_path) if test_path is not None else None
    return prepare_items(
        load_items(data_path),
        embedder=embedder,
        seed=seed,
        test=test,
        test_fraction=test_fraction,
        cache_dir=cache_dir,
    )


def prepare_items(
    items: Items,
    *,
    embedder: Embedder,
    seed: int,
    test: Items | None = None,
    test_fraction: float = 0.3,
    cache_dir: str | Path | None = None,
) -> SimulationData:
    """Split ``items`` into pool and test (stratified by label, seeded) unless ``test`` is given, and embed both
    parts through the vector cache."""
    if test is not None:
        pool = items
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        positions = np.arange(len(items.labels))
        counts = {lab: items.labels.count(lab) for lab in set(items.labels)}
        stratify = items.labels if min(counts.values()) >= 2 else None
        pool_pos, test_pos = train_test_split(positions, test_size=test_fraction, random_state=seed, stratify=stratify)
        pool, test = subset(items, np.sort(pool_pos)), subset(items, np.sort(test_pos))
    if pool.multi_label != test.multi_label:
        raise ValueError("the data and the test file must both be single-label or both multi-label")
    vectors, _ = embed_with_cache(pool.texts + test.texts, embedder, cache_dir)
    classes = tuple(sorted(set().union(*pool.key_sets(), *test.key_sets())))
    return SimulationData(pool, test, vectors[: len(pool.texts)], vectors[len(pool.texts) :], classes)


def subset(items: Items, rows: Sequence[int] | np.ndarray) -> Items:
    """The rows of ``items`` at the given positions, in that order."""
    return Items([items.external_ids[i] for i in rows], [items.texts[i] for i in rows],
                 [items.labels[i] for i in rows],
                 None if items.label_sets is None else [items.label_sets[i] for i in rows])


def _evaluate(
    model: EmbeddingClassifier | TreeClassifier, data: SimulationData, positive: str | None
) -> tuple[float, float]:
    proba = model.predict_proba(data.test_vectors)
    classes = list(model.classes_)
    truth = label_indicator(data.test.key_sets(), classes)
    ap = average_precision_indicator(truth, proba, classes, positive=positive)
    if data.test.multi_label:
        return macro_f1_indicator(truth, proba >= 0.5), ap
    predicted = np.asarray(model.classes_)[np.argmax(proba, axis=1)]
    return macro_f1(data.test.labels, predicted.tolist(), data.classes), ap


def _classifier(data: SimulationData, seed: int, params: Mapping[str, Any],
                taxonomy: Taxonomy | None = None) -> EmbeddingClassifier | TreeClassifier:
    """The flat model, or the tree model where a taxonomy with parents is given (``hierarchy.TreeClassifier``)."""
    if taxonomy is not None and len(taxonomy.leaf_keys) < len(taxonomy.keys):
        return TreeClassifier(taxonomy=taxonomy, classes=data.classes, random_state=seed, **dict(params))
    return EmbeddingClassifier(classes=data.classes, multi_label=data.pool.multi_label, random_state=seed,
                               **dict(params))


def full_pool_scores(
    data: SimulationData,
    *,
    seed: int,
    positive: str | None = None,
    classifier_params: Mapping[str, Any] | None = None,
) -> tuple[float, float]:
    """(macro-F1, AP) of a model trained on the whole labelled pool: the ceiling the curves are compared to."""
    model = _classifier(data, seed, classifier_params or {})
    model.fit(data.pool_vectors, data.pool.answers(range(len(data.pool.labels))))
    return _evaluate(model, data, positive)


def run_simulation(
    data: SimulationData,
    *,
    strategy: str | StrategySpec,
    seed: int,
    initial: int,
    batch_size: int,
    budget: int,
    positive: str | None = None,
    seed_vectors: FloatArray | None = None,
    exploration_rate: float | None = None,
    classifier_params: Mapping[str, Any] | None = None,
    label_noise: float = 0.0,
    class_vectors: FloatArray | None = None,
    taxonomy: Taxonomy | None = None,
) -> dict[str, Any]:
    """Run the active-learning loop and return CONTRACT.md's curve JSON (as a dict).

    ``class_vectors`` (guideline text per class) go to the ranking; ``taxonomy`` (with parents) makes every
    round's model a ``hierarchy.TreeClassifier``. ``label_noise`` > 0 makes the oracle wrong on that share of
    the pool (``noisy_oracle``); the models train on its answers, the test split stays clean, and the result
    gains ``label_noise`` (``label_noise_report``).
    """
    spec = get_strategy(strategy) if isinstance(strategy, str) else strategy
    if initial < 1 or batch_size < 1 or budget < initial:
        raise ValueError("need initial >= 1, batch_size >= 1 and budget >= initial")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"--label-noise must be in [0, 1), got {label_noise}")
    if positive is not None and positive not in data.classes:
        raise ValueError(f"--positive {positive!r} is not a label in the data ({', '.join(data.classes)})")
    n_pool = len(data.pool.labels)
    budget = min(budget, n_pool)
    rng = np.random.default_rng(seed)
    multi_label = data.pool.multi_label
    # Row i, column c: pool item i carries class c (the oracle's answers, as the class counts need them).
    pool_truth = label_indicator(data.pool.key_sets(), data.classes)
    positive_column = data.classes.index(positive) if positive is not None else None
    oracle = data.pool.answers(range(n_pool))
    flipped = np.zeros(n_pool, dtype=bool)
    if label_noise > 0:
        noisy, flipped = noisy_oracle(data, label_noise, seed)
        oracle = noisy
        pool_truth = label_indicator([frozenset((a,)) for a in noisy], data.classes)

    labelled: list[int] = []
    out_labels: list[int] = []
    out_f1: list[float] = []
    out_ap: list[float] = []
    out_pos: list[int] = []
    params = dict(classifier_params or {})

    while True:
        answers = [oracle[i] for i in labelled]
        proba = None
        counts = None
        if labelled:
            model = _classifier(data, seed, params, taxonomy)
            model.fit(data.pool_vectors[labelled], answers)
            f1, ap = _evaluate(model, data, positive)
            out_labels.append(len(labelled))
            out_f1.append(f1)
            out_ap.append(ap)
            if positive_column is not None:
                # Items truly in the positive class, whatever the (noisy) oracle answered.
                out_pos.append(sum(positive in keys for keys in data.pool.answers(labelled)))
            if cold_start.can_fit(answers, multi_label=multi_label):
                proba = model.predict_proba(data.pool_vectors)
                counts = pool_truth[labelled].sum(axis=0).astype(np.int64)
        want = initial if not labelled else batch_size
        want = min(want, budget - len(labelled))
        if want <= 0:
            break
        ranking = rank_pool(
            data.pool_vectors,
            labelled_indices=np.asarray(labelled, dtype=np.int64),
            strategy=spec,
            proba=proba,
            class_counts=counts,
            multi_label=multi_label,
            seed_vectors=seed_vectors,
            exploration_rate=exploration_rate,
            depth=want,
            random_state=rng,
            class_vectors=class_vectors,
        )
        labelled.extend(int(i) for i in ranking.indices)

    result: dict[str, Any] = {
        "strategy": spec.name if not isinstance(strategy, str) else strategy,
        # What ran: "default" above is an alias that changes when the measurements pick a new default.
        "strategy_used": spec.name,
        "seed": seed,
        "n_pool": n_pool,
        "n_test": len(data.test.labels),
        "labels": out_labels,
        "macro_f1": out_f1,
        "average_precision": out_ap,
    }
    if positive is not None:
        result["positives_found"] = out_pos
    if label_noise > 0:
        result["label_noise"] = label_noise_report(data, labelled, [str(oracle[i]) for i in labelled], flipped,
                                                   label_noise, seed, params)
    return result


NOISE_STREAM = 0x5EED_401
"""Mixed into the seed for the noisy oracle's draws, so that which answers are wrong does not depend on (or
disturb) the strategy's random choices."""


def noisy_oracle(data: SimulationData, rate: float, seed: int) -> tuple[list[str], BoolArray]:
    """The file's answer for every pool item, wrong for a ``rate`` share of them (chosen with ``seed``): a wrong
    answer is another class drawn in proportion to the classes' pool shares, as a hurried reviewer confuses an
    item with a common class more often than with a rare one. Returns (answers, flipped) over the pool."""
    if data.pool.multi_label:
        raise ValueError("--label-noise needs a single-label file: a multi-label answer has no one wrong class")
    shares = [data.pool.labels.count(c) for c in data.classes]
    return flip_answers(data.pool.labels, data.classes, rate, random_state=np.random.default_rng([seed, NOISE_STREAM]),
                        weights=shares)


def label_noise_report(
    data: SimulationData,
    labelled: Sequence[int],
    answers: Sequence[str],
    flipped: BoolArray,
    rate: float,
    seed: int,
    classifier_params: Mapping[str, Any],
) -> dict[str, Any]:
    """CONTRACT.md's ``label_noise`` block: the detector ranks the labelled items by how likely their answer is
    wrong, and we count the flipped answers among the first ``flipped`` and ``2 x flipped`` of that ranking."""
    rows = np.asarray(labelled, dtype=np.int64)
    wrong = flipped[rows]
    n_flipped = int(wrong.sum())
    found = {"1x": 0, "2x": 0}
    if n_flipped and len(set(answers)) >= 2:
        ranking = detect_label_errors(data.pool_vectors[rows], answers, data.classes, random_state=seed,
                                      classifier_params=classifier_params)
        found = {"1x": found_in_first(ranking.order, wrong, n_flipped),
                 "2x": found_in_first(ranking.order, wrong, 2 * n_flipped)}
    return {"rate": rate, "labelled": int(rows.shape[0]), "flipped": n_flipped, "found_in_first": found}


def read_seed_queries(path: str | Path) -> list[str]:
    """One seed query or seed example per non-blank line."""
    with Path(path).open(encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def embed_seed_queries(texts: Sequence[str], embedder: Embedder, cache_dir: str | Path | None) -> FloatArray:
    vectors, _ = embed_with_cache(list(texts), embedder, cache_dir)
    return vectors
