"""The label-error figure: how many flipped answers the detector ranks first, against a random re-check.

For SMS spam (13% spam, seeded 70/30 split) and Reuters R52 (52 topics, its own train/test split), with 5% and
10% of answers flipped by the noisy oracle of ``learning.core.simulation.noisy_oracle`` (a wrong answer is
another class in proportion to the classes' pool shares), it measures two settings:

- ``after AL``: ``run_simulation(..., label_noise=RATE)`` with the default strategy up to the budget: exactly
  what ``python -m learning.simulate --label-noise RATE`` reports in its ``label_noise`` block;
- ``whole pool``: every pool item labelled by the noisy oracle, then the detector over all of them (a team that
  has labelled its whole backlog and wants to know which answers to re-check).

For each it prints the flipped answers found in the first F and first 2F flags (F = number flipped), as a share
of F, and what a random re-check of the same 2F answers finds in expectation: 2F x F / N, a share of 2F / N.
Means over seeds.

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python bench/label_errors.py              # 5 seeds, budget 500
    HF_HUB_OFFLINE=1 .venv/bin/python bench/label_errors.py --seeds 1    # smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.al_curves import DATASETS, load_dataset, load_test  # noqa: E402
from learning.core.embedder_registry import get_embedder  # noqa: E402
from learning.core.label_errors import detect_label_errors, found_in_first  # noqa: E402
from learning.core.simulation import noisy_oracle, prepare_items, run_simulation  # noqa: E402


def whole_pool(data_rows: int, answers: list[str], flipped: np.ndarray, vectors: np.ndarray,
               classes: Sequence[str], seed: int) -> dict[str, int]:
    """The detector over every pool item, each answered by the noisy oracle."""
    ranking = detect_label_errors(vectors, answers, classes, random_state=seed)
    n_flipped = int(flipped.sum())
    return {"labelled": data_rows, "flipped": n_flipped, "1x": found_in_first(ranking.order, flipped, n_flipped),
            "2x": found_in_first(ranking.order, flipped, 2 * n_flipped)}


def pooled_share(found: np.ndarray, flipped: np.ndarray) -> float:
    """Found over flipped, pooled over seeds."""
    return float(found.sum() / max(float(flipped.sum()), 1.0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", default=["sms", "r52"], choices=sorted(DATASETS))
    parser.add_argument("--rates", nargs="+", type=float, default=[0.05, 0.10])
    parser.add_argument("--budget", type=int, default=500, help="labels in the active-learning setting")
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--embedder", choices=["minilm", "static", "hashing"], default="minilm")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "embeddings")
    args = parser.parse_args(argv)
    embedder = get_embedder(args.embedder)
    t0 = time.process_time()
    rows: list[str] = []
    for key in args.datasets:
        ds = DATASETS[key]
        items, test = load_dataset(ds), load_test(ds)
        for rate in args.rates:
            per: dict[str, list[dict[str, int]]] = {"after AL": [], "whole pool": []}
            strategy_used = ""
            for seed in range(args.seeds):
                data = prepare_items(items, embedder=embedder, seed=seed, test=test, cache_dir=args.cache)
                curve = run_simulation(data, strategy=args.strategy, seed=seed, initial=20, batch_size=20,
                                       budget=args.budget, positive=ds.positive, label_noise=rate)
                strategy_used = curve["strategy_used"]
                block = curve["label_noise"]
                per["after AL"].append({"labelled": block["labelled"], "flipped": block["flipped"],
                                        **block["found_in_first"]})
                answers, flipped = noisy_oracle(data, rate, seed)
                per["whole pool"].append(whole_pool(len(answers), answers, flipped, data.pool_vectors,
                                                    data.classes, seed))
                print(f"[{key} {rate:.2f}] seed {seed} done, cpu {time.process_time() - t0:.0f}s", file=sys.stderr)
            for setting, runs in per.items():
                n = float(np.mean([r["labelled"] for r in runs]))
                f = np.array([r["flipped"] for r in runs], dtype=float)
                one = np.array([r["1x"] for r in runs], dtype=float)
                two = np.array([r["2x"] for r in runs], dtype=float)
                random_share = float(np.mean(np.minimum(2 * f / np.array([r["labelled"] for r in runs]), 1.0)))
                rows.append(
                    f"| {key} | {rate:.0%} | {setting} ({strategy_used if setting == 'after AL' else 'all'}) | "
                    f"{n:.0f} | {f.mean():.1f} | {one.mean():.1f} ({pooled_share(one, f):.0%}) | "
                    f"{two.mean():.1f} ({pooled_share(two, f):.0%}) | {random_share:.0%} |"
                )
    print(f"\nLabel-error detection, {args.seeds} seed(s), embedder {args.embedder}, "
          f"budget {args.budget} in the active-learning setting\n")
    print("| data | flipped | setting | labelled | flipped (mean) | found in first 1x | found in first 2x "
          "| random re-check of 2x (expected share) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\ntotal CPU {time.process_time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
