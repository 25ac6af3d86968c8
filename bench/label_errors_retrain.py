"""What label-error detection adds to a retrain: the detector as the worker runs it (3-fold out-of-fold
probabilities + confident learning, learning/services/label_errors.py) against the retrain's own model fit on the
same labels, measured in the same run.

Synthetic but shaped like the product: unit-norm 384-dimensional vectors (the hashing/MiniLM width) around one
centre per class, K classes, 5% of answers flipped to another class. For each labelled-set size it prints the
median seconds of one ``EmbeddingClassifier`` fit (the retrain's fit), of ``out_of_fold_proba`` with 3 folds, and
of ``rank_label_errors``, the detector's total as a multiple of the fit, and how many of the flipped answers are
among the flagged ones (recall) and how many flags are flipped answers (precision).

Usage:
    flock /tmp/sift-bench.lock .venv/bin/python bench/label_errors_retrain.py            # 1k, 5k, 20k labels
    flock /tmp/sift-bench.lock .venv/bin/python bench/label_errors_retrain.py --sizes 1000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from learning.core.classifiers import EmbeddingClassifier  # noqa: E402
from learning.core.label_errors import flip_answers, out_of_fold_proba, rank_label_errors  # noqa: E402

FOLDS = 3  # SIFT_LABEL_ERRORS_FOLDS's default


def _data(n: int, k: int, dim: int, rate: float, seed: int) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    truth = rng.integers(0, k, size=n)
    vectors = centres[truth] + rng.normal(scale=2.5, size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    classes = [f"c{i}" for i in range(k)]
    answers, flipped = flip_answers([classes[t] for t in truth], classes, rate, random_state=rng)
    return vectors.astype(np.float32), answers, classes, flipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rank_label_errors(["a", "b"], np.asarray([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])  # import cleanlab once
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          "(noisy 2-core box shared with other jobs)")
    print(f"{'labels':>7} {'fit s':>7} {'oof s':>7} {'rank s':>7} {'detect/fit':>10} {'recall':>7} {'precision':>9}")
    for n in args.sizes:
        vectors, answers, classes, flipped = _data(n, args.classes, 384, args.rate, seed=n)
        fits, oofs, ranks = [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            EmbeddingClassifier(classes=classes, random_state=0).fit(vectors, answers)
            fits.append(time.perf_counter() - t)
            t = time.perf_counter()
            proba = out_of_fold_proba(vectors, answers, classes, n_folds=FOLDS, random_state=0)
            oofs.append(time.perf_counter() - t)
            t = time.perf_counter()
            ranking = rank_label_errors(answers, proba, classes)
            ranks.append(time.perf_counter() - t)
        fit, oof, rank = statistics.median(fits), statistics.median(oofs), statistics.median(ranks)
        hits = int((ranking.flagged & flipped).sum())
        recall = hits / max(1, int(flipped.sum()))
        precision = hits / max(1, ranking.n_flagged)
        ratio = (oof + rank) / fit
        print(f"{n:>7} {fit:>7.3f} {oof:>7.3f} {rank:>7.3f} {ratio:>9.2f}x {recall:>7.2f} {precision:>9.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
