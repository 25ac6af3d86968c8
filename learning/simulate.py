"""``python -m learning.simulate``: offline active-learning simulation with a labelled file as the oracle.

The flags and the output JSON are CONTRACT.md's; ``--exploration-rate`` is an addition (default: the
strategy's own rate). Runs without Django: it imports only learning.core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# Set before anything can import transformers: no hub traffic, no tokenizer thread pools on a shared box.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from learning.core.embedder_registry import EMBEDDER_NAMES, get_embedder
from learning.core.simulation import (
    embed_seed_queries,
    prepare_data,
    read_seed_queries,
    run_simulation,
)
from learning.core.vocabulary import STRATEGY_CHOICES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m learning.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="labelled JSON Lines file (.jsonl or .jsonl.gz)")
    parser.add_argument("--strategy", required=True, choices=STRATEGY_CHOICES)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--initial", required=True, type=int, help="labels chosen before the first model")
    parser.add_argument("--batch-size", required=True, type=int, help="labels per round")
    parser.add_argument("--budget", required=True, type=int, help="total labels, initial ones included")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--test-fraction", type=float, default=0.3)
    split.add_argument("--test", type=Path, help="a separate labelled test file instead of a split")
    parser.add_argument("--positive", help="the positive class for average precision and positives_found")
    parser.add_argument("--embedder", choices=EMBEDDER_NAMES, default="minilm",
                        help="minilm (the reference); static (the fast tier: a model2vec table distilled from "
                        "the packaged MiniLM on first use); multilingual (multilingual-e5-small, one model for about "
                        "100 languages); hashing (tests)")
    parser.add_argument("--cache", type=Path, help="directory of the on-disk vector cache")
    parser.add_argument("--seed-queries", type=Path, help="text file, one seed query or seed example per line")
    parser.add_argument("--exploration-rate", type=float, help="override the strategy's exploration share")
    parser.add_argument("--label-noise", type=float, default=0.0, metavar="RATE",
                        help="the oracle answers a wrong label for this share of items; the output's label_noise "
                        "block says how many the label-error detector ranks first")
    parser.add_argument("--out", required=True, type=Path, help="where to write the curve JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    embedder = get_embedder(args.embedder)
    try:
        data = prepare_data(
            args.data,
            embedder=embedder,
            seed=args.seed,
            test_path=args.test,
            test_fraction=args.test_fraction,
            cache_dir=args.cache,
        )
        seed_vectors = None
        if args.seed_queries is not None:
            seed_vectors = embed_seed_queries(read_seed_queries(args.seed_queries), embedder, args.cache)
        result = run_simulation(
            data,
            strategy=args.strategy,
            seed=args.seed,
            initial=args.initial,
            batch_size=args.batch_size,
            budget=args.budget,
            positive=args.positive,
            seed_vectors=seed_vectors,
            exploration_rate=args.exploration_rate,
            label_noise=args.label_noise,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
