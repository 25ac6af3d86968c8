"""Active-learning curves on real data: the evidence behind DEFAULT_STRATEGY (results in docs/al_curves.md).

For each dataset and seed it runs learning.core.simulation.run_simulation -- the same loop and ranking code as
``python -m learning.simulate`` and the retrain worker -- for every strategy variant, with the real MiniLM
embedder (vectors cached under .cache/embeddings), and prints per dataset:

- labels needed to reach 95% of the full-pool model's macro-F1 and AP (median over seeds; ">B" = not within
  the budget for most seeds). Random's figure comes from a long passive run up to the whole pool;
- the area under the learning curve (mean height over the budget) for macro-F1 and AP;
- positives found and AP at 200 labels (binary sets), and the worst gap to random at any budget >= 200;
- the goals for the default strategy, checked against these numbers.

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python bench/al_curves.py            # full run, 5 seeds, 7 datasets
    HF_HUB_OFFLINE=1 .venv/bin/python bench/al_curves.py --embedder static --datasets r52   # R52 flat and tree
    HF_HUB_OFFLINE=1 .venv/bin/python bench/al_curves.py --quick    # 1 seed, SMS 2% + BBC, smoke check
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from learning.core.embedder_registry import get_embedder  # noqa: E402
from learning.core.metrics import area_under_curve, labels_to_reach  # noqa: E402
from learning.core.simulation import (  # noqa: E402
    Items,
    SimulationData,
    embed_seed_queries,
    full_pool_scores,
    load_items,
    prepare_items,
    read_seed_queries,
    run_simulation,
    subset,
)
from learning.core.strategies import DEFAULT_STRATEGY, STRATEGIES, StrategySpec  # noqa: E402
from learning.core.taxonomy import Taxonomy  # noqa: E402

DATA = Path(os.environ.get("SIFT_DATASETS_DIR", ROOT.parent / "shared" / "data"))
if not DATA.exists():
    DATA = Path("/work/shared/data")

# What a policy lead would type as seed queries: descriptions of the abuse, not examples copied from the data.
SEED_QUERIES = {
    "sms": [
        "Congratulations, you have won a cash prize, call this number now to claim",
        "Free entry to our weekly competition, text WIN to enter",
        "Your mobile has been selected for a free reward, reply to claim before it expires",
    ],
    # Five seeds, one per line in bench/data/sms_seed_queries.txt (usable as simulate --seed-queries): the
    # rare-positive runs at 1% and 0.5% spam, where the seeds are the only way in.
    "sms5": read_seed_queries(ROOT / "bench" / "data" / "sms_seed_queries.txt"),
    "spamassassin": [
        "Make money fast working from home, limited time offer",
        "Buy cheap medication online without a prescription",
        "You have been approved for a low interest mortgage, click here",
    ],
}


@dataclass(frozen=True)
class Dataset:
    key: str
    file: str
    positive: str | None
    budget: int
    spam_share: float | None = None  # subsample the positive class to this share of the rows
    seeds_key: str | None = None
    test_file: str | None = None  # a fixed test file (R52's own split) instead of a seeded 70/30 split
    long_random: bool = True  # the passive run to the whole pool (labels-to-reach for random); costly on R52
    taxonomy: str | None = None  # a taxonomy JSON (CONTRACT.md's shape) under bench/data: guideline text, tree


@dataclass(frozen=True)
class Variant:
    """A strategy as run in the bench: a StrategySpec plus classifier parameters and seed-query use."""

    name: str
    spec: StrategySpec
    classifier: dict[str, Any] = field(default_factory=dict)
    seed_queries: bool = False
    guidelines: bool = False  # the taxonomy's label descriptions as per-class seed texts (class_vectors)
    tree: bool = False  # train with the taxonomy's tree (hierarchy.TreeClassifier) instead of the flat model
    binary_only: bool = False
    multiclass_only: bool = False


DATASETS = {
    "sms": Dataset("sms", "sms_spam.jsonl.gz", "spam", 500, seeds_key="sms"),
    "sms2": Dataset("sms2", "sms_spam.jsonl.gz", "spam", 500, spam_share=0.02, seeds_key="sms"),
    "sms1": Dataset("sms1", "sms_spam.jsonl.gz", "spam", 300, spam_share=0.01, seeds_key="sms5"),
    "sms05": Dataset("sms05", "sms_spam.jsonl.gz", "spam", 300, spam_share=0.005, seeds_key="sms5"),
    "spamassassin": Dataset("spamassassin", "spamassassin.jsonl.gz", "spam", 500, seeds_key="spamassassin"),
    "bbc": Dataset("bbc", "bbc_news.jsonl.gz", None, 300),
    # 52 long-tailed topics: the pool is R52's training split, the test its test split (every seed shares them).
    "r52": Dataset("r52", "reuters_r52_train.jsonl.gz", None, 500, test_file="reuters_r52_test.jsonl.gz",
                   long_random=False, taxonomy="r52_taxonomy.json"),
}

PLAIN = dict(exploration_rate=0.0, cold_start="random")
DEFAULT = STRATEGIES[DEFAULT_STRATEGY]
VARIANTS = [
    Variant("random", STRATEGIES["random"]),
    # The baseline to beat: textbook margin sampling, random initial set, no exploration.
    Variant("margin_plain", StrategySpec("margin_plain", "margin", **PLAIN)),  # type: ignore[arg-type]
    Variant("lc_plain", StrategySpec("lc_plain", "least_confidence", **PLAIN), multiclass_only=True),  # type: ignore[arg-type]
    Variant("entropy_plain", StrategySpec("entropy_plain", "entropy", **PLAIN), multiclass_only=True),  # type: ignore[arg-type]
    # Registry "margin": diverse cold start + 10% exploration, what a project set to margin runs.
    Variant("margin", STRATEGIES["margin"]),
    Variant("margin+div", StrategySpec("margin+div", "margin", diversity_threshold=0.9)),
    Variant("margin+exploit.3", StrategySpec("margin+exploit.3", "margin", exploitation_share=0.3)),
    # The previous default: 30% exploitation of the least-labelled class, on only while it holds fewer than
    # half an equal share of the labels.
    Variant("previous_default", StrategySpec("previous_default", "margin", exploitation_share=0.3,
                                             exploit_rule="balance_gate", diversity_threshold=0.9)),
    # The frontier past the default at common prevalence: 50% exploitation whatever the balance.
    Variant("exploit.5-always", StrategySpec("exploit.5-always", "margin", exploitation_share=0.5,
                                             exploit_rule="balance_gate", exploit_below_balance=float("inf"),
                                             diversity_threshold=0.9), binary_only=True),
    Variant("DEFAULT", DEFAULT),
    # Many-class (issue #22): the default before class balance and seeking (margin_exploit of 2 December), the
    # default with the taxonomy's guideline text, and with the R52 tree (bench/data/r52_taxonomy.json).
    Variant("old_default", StrategySpec("old_default", "margin", exploitation_share=0.5, diversity_threshold=0.9)),
    Variant("DEFAULT+guide", DEFAULT, guidelines=True, multiclass_only=True),
    Variant("DEFAULT+tree", DEFAULT, tree=True, multiclass_only=True),
    Variant("DEFAULT+guide+tree", DEFAULT, guidelines=True, tree=True, multiclass_only=True),
    Variant("margin_plain+tree", StrategySpec("margin_plain+tree", "margin", **PLAIN), tree=True,  # type: ignore[arg-type]
            multiclass_only=True),
    Variant("DEFAULT-unweighted", DEFAULT, classifier={"class_weight": None}, binary_only=True),
    Variant("DEFAULT+seeds", DEFAULT, seed_queries=True, binary_only=True),
    # Rare positives after the seeds run out (issue #22): half the exploitation picks search near the positives
    # found so far and the seed queries.
    Variant("search+seeds", StrategySpec("search+seeds", "margin", exploitation_share=0.5, diversity_threshold=0.9,
                                         search_share=0.5), seed_queries=True, binary_only=True),
]

QUICK_VARIANTS = {"random", "margin_plain", "lc_plain", "margin", "DEFAULT"}

# The full run spends its CPU where the questions are: every ablation on the rare-positive set, the multi-class
# baselines on BBC, and the baseline comparison only on the other two (the 2-core box is shared).
FULL_VARIANTS = {
    "sms2": {"random", "margin_plain", "DEFAULT", "DEFAULT+seeds", "search+seeds"},
    "bbc": {"random", "margin_plain", "lc_plain", "entropy_plain", "old_default", "DEFAULT"},
    "sms": {"random", "margin_plain", "DEFAULT"},
    "spamassassin": {"random", "margin_plain", "DEFAULT"},
    "sms1": {"random", "margin_plain", "DEFAULT+seeds", "search+seeds"},
    "sms05": {"random", "margin_plain", "DEFAULT+seeds", "search+seeds"},
    "r52": {"random", "margin_plain", "lc_plain", "entropy_plain", "old_default", "DEFAULT", "DEFAULT+guide",
            "DEFAULT+guide+tree"},
}


def load_dataset(ds: Dataset) -> Items:
    items = load_items(DATA / ds.file)
    if ds.spam_share is None or ds.positive is None:
        return items
    # Keep every negative, and a fixed (seed 0) random subset of positives making up spam_share of the rows.
    labels = np.asarray(items.labels, dtype=object)
    pos = np.flatnonzero(labels == ds.positive)
    neg = np.flatnonzero(labels != ds.positive)
    n_pos = round(ds.spam_share * len(neg) / (1.0 - ds.spam_share))
    keep = np.sort(np.concatenate([neg, np.random.default_rng(0).choice(pos, size=n_pos, replace=False)]))
    return subset(items, keep)


def load_test(ds: Dataset) -> Items | None:
    """The dataset's fixed test split, or None when each seed splits the file 70/30."""
    return load_items(DATA / ds.test_file) if ds.test_file else None


def load_taxonomy(ds: Dataset) -> Taxonomy:
    if ds.taxonomy is None:
        raise ValueError(f"{ds.key} has no taxonomy file for a tree variant")
    return Taxonomy.from_dict(json.loads((ROOT / "bench" / "data" / ds.taxonomy).read_text(encoding="utf-8")))


def guideline_texts(ds: Dataset) -> dict[str, str]:
    """Leaf key -> "name: description" from the dataset's taxonomy file (empty without one)."""
    if ds.taxonomy is None:
        return {}
    tree = json.loads((ROOT / "bench" / "data" / ds.taxonomy).read_text(encoding="utf-8"))
    out: dict[str, str] = {}

    def walk(nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            if node.get("children"):
                walk(node["children"])
            else:
                out[node["key"]] = f"{node.get('name', node['key'])}: {node.get('description', '')}"

    walk(tree["labels"])
    return out


def class_vectors(texts: dict[str, str], classes: Sequence[str], embedder: Any, cache: Path) -> np.ndarray:
    """(C, d) guideline vectors in ``classes`` order; zero rows for classes without a text."""
    out = np.zeros((len(classes), embedder.dim), dtype=np.float32)
    have = [i for i, c in enumerate(classes) if c in texts]
    if have:
        out[have] = embed_seed_queries([texts[classes[i]] for i in have], embedder, cache)
    return out


def reach(curves: list[dict[str, Any]], full: list[dict[str, float]], metric: str, target: float) -> list[int | None]:
    """Per seed: labels needed to reach target x that seed's full-pool score."""
    return [labels_to_reach(c["labels"], c[metric], target * f[metric]) for c, f in zip(curves, full, strict=True)]


def median_reach(values: Sequence[int | None], budget: int) -> str:
    """Median of per-seed labels-to-reach, treating 'never' as infinity."""
    finite = sorted(float("inf") if v is None else float(v) for v in values)
    med = float(np.median(finite)) if finite else float("inf")
    return f">{budget}" if med == float("inf") else f"{med:.0f}"


def median_value(values: Sequence[int | None]) -> float:
    finite = sorted(float("inf") if v is None else float(v) for v in values)
    return float(np.median(finite))


def at_labels(curve: dict[str, Any], key: str, n: int) -> float:
    labels = curve["labels"]
    i = int(np.searchsorted(labels, n))
    return float(curve[key][min(i, len(labels) - 1)])


def run(args: argparse.Namespace) -> dict[str, Any]:
    embedder = get_embedder(args.embedder)
    results: dict[str, Any] = {"config": vars(args) | {"data": str(DATA)}, "datasets": {}}
    t_all = time.process_time()
    for key in args.datasets:
        ds = DATASETS[key]
        budget = args.budget or ds.budget
        items = load_dataset(ds)
        test = load_test(ds)
        binary = len(set(items.labels)) == 2
        variants = [
            v for v in VARIANTS
            if v.name in (args.variants or (QUICK_VARIANTS if args.quick else FULL_VARIANTS[key]))
            and not (v.binary_only and not binary) and not (v.multiclass_only and binary)
        ]  # fmt: skip
        class_texts = guideline_texts(ds)
        seed_vectors = None
        if ds.seeds_key:
            seed_vectors = embed_seed_queries(SEED_QUERIES[ds.seeds_key], embedder, args.cache)
        per: dict[str, Any] = {"n_items": len(items.labels), "variants": {}, "full": [], "random_long": []}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            data: SimulationData = prepare_items(items, embedder=embedder, seed=seed, test=test, cache_dir=args.cache)
            f1_full, ap_full = full_pool_scores(data, seed=seed, positive=ds.positive)
            per["full"].append({"macro_f1": f1_full, "average_precision": ap_full})
            per["n_pool"] = len(data.pool.labels)
            # Random needs far more labels than the budget on rare data: its labels-to-reach comes from one long
            # passive run to the whole pool in steps of 100.
            if ds.long_random:
                long = run_simulation(
                    data,
                    strategy="random",
                    seed=seed,
                    initial=100,
                    batch_size=100,
                    budget=len(data.pool.labels),
                    positive=ds.positive,
                )
                per["random_long"].append(long)
            for v in variants:
                t0 = time.process_time()
                curve = run_simulation(
                    data, strategy=v.spec, seed=seed, initial=args.initial, batch_size=args.batch_size,
                    budget=budget, positive=ds.positive, classifier_params=v.classifier,
                    seed_vectors=seed_vectors if v.seed_queries else None,
                    class_vectors=class_vectors(class_texts, data.classes, embedder, args.cache)
                    if v.guidelines else None,
                    taxonomy=load_taxonomy(ds) if v.tree else None,
                )  # fmt: skip
                curve["cpu_s"] = time.process_time() - t0
                per["variants"].setdefault(v.name, []).append(curve)
            print(f"[{key}] seed {seed} done, cpu so far {time.process_time() - t_all:.0f}s", file=sys.stderr)
        per["budget"] = budget
        per["positive"] = ds.positive
        results["datasets"][key] = per
    results["cpu_s"] = time.process_time() - t_all
    return results


def summarise(results: dict[str, Any], target: float) -> str:
    lines: list[str] = []
    goals: list[str] = []
    for key, per in results["datasets"].items():
        budget = per["budget"]
        positive = per["positive"]
        full = per["full"]
        f1_full = float(np.mean([f["macro_f1"] for f in full]))
        ap_full = float(np.mean([f["average_precision"] for f in full]))
        lines.append(
            f"\n### {key}: {per['n_items']} items, pool {per['n_pool']}, budget {budget}, "
            f"{len(full)} seed(s); full-pool macro-F1 {f1_full:.3f}, AP {ap_full:.3f}\n"
        )
        head = "| strategy | labels to 95% F1 | labels to 95% AP | AULC F1 | AULC AP |"
        sep = "|---|---:|---:|---:|---:|"
        if positive:
            head += " positives @200 | positives @300 | AP @200 |"
            sep += "---:|---:|---:|"
        head += " worst gap to random, >=200 (pts) | cpu s/run |"
        sep += "---:|---:|"
        lines += [head, sep]

        rnd = per["variants"].get("random")
        rnd_f1 = np.mean([c["macro_f1"] for c in rnd], axis=0) if rnd else None
        stats: dict[str, dict[str, float]] = {}
        long = per["random_long"]
        for name, curves in per["variants"].items():
            # Random's labels-to-reach from its long passive run where there is one, else from its own curves.
            reached_by = long if name == "random" and long else curves
            r_f1 = reach(reached_by, full, "macro_f1", target)
            r_ap = reach(reached_by, full, "average_precision", target)
            aulc_f1 = float(np.mean([area_under_curve(c["labels"], c["macro_f1"]) for c in curves]))
            aulc_ap = float(np.mean([area_under_curve(c["labels"], c["average_precision"]) for c in curves]))
            horizon = per["n_pool"] if reached_by is long else budget
            row = (
                f"| {name} | {median_reach(r_f1, horizon)} | {median_reach(r_ap, horizon)} | "
                f"{aulc_f1:.3f} | {aulc_ap:.3f} |"
            )
            s: dict[str, float] = {
                "reach_f1": median_value(r_f1),
                "reach_ap": median_value(r_ap),
                "aulc_f1": aulc_f1,
                "aulc_ap": aulc_ap,
            }
            if positive:
                pos200 = float(np.mean([at_labels(c, "positives_found", 200) for c in curves]))
                pos300 = [at_labels(c, "positives_found", 300) for c in curves]
                ap200 = float(np.mean([at_labels(c, "average_precision", 200) for c in curves]))
                per_seed = ", ".join(f"{p:.0f}" for p in pos300)
                row += f" {pos200:.1f} | {np.mean(pos300):.1f} ({per_seed}) | {ap200:.3f} |"
                s |= {"pos200": pos200, "ap200": ap200}
            gap = float("nan")
            if rnd_f1 is not None:
                mean_f1 = np.mean([c["macro_f1"] for c in curves], axis=0)
                labels = np.asarray(curves[0]["labels"])
                mask = labels >= 200
                gap = float(np.min(mean_f1[mask] - rnd_f1[mask]) * 100) if mask.any() else float("nan")
            s["gap"] = gap
            cpu = float(np.mean([c.get("cpu_s", 0.0) for c in curves]))
            row += f" {gap:+.1f} | {cpu:.1f} |"
            lines.append(row)
            stats[name] = s
        d, r = stats.get("DEFAULT"), stats.get("random")
        if d and r:
            goals.append(
                f"- {key}: DEFAULT labels/random labels to 95% F1 = {d['reach_f1']:.0f}/{r['reach_f1']:.0f}"
                f" = {d['reach_f1'] / r['reach_f1']:.2f}; to 95% AP = {d['reach_ap']:.0f}/{r['reach_ap']:.0f}"
                f" = {d['reach_ap'] / r['reach_ap']:.2f}; worst F1 gap to random at >=200: {d['gap']:+.1f} pts"
            )
            mp = stats.get("margin_plain")
            if positive and mp:
                goals.append(
                    f"  positives @200 DEFAULT/plain margin(=least-confidence) = {d['pos200']:.1f}/"
                    f"{mp['pos200']:.1f} = {d['pos200'] / max(mp['pos200'], 1e-9):.2f}x; AP @200 "
                    f"{d['ap200']:.3f} vs {mp['ap200']:.3f}"
                )
            if not positive and mp:
                for name in ("DEFAULT", "DEFAULT+guide", "DEFAULT+guide+tree", "old_default"):
                    v = stats.get(name)
                    if v:
                        goals.append(
                            f"  {name}: AULC F1 - margin_plain {v['aulc_f1'] - mp['aulc_f1']:+.4f} (goal >= +0.01), "
                            f"- random {v['aulc_f1'] - r['aulc_f1']:+.4f} (goal >= +0.02), worst gap to random at "
                            f">=200 {v['gap']:+.1f} pts (goal >= -1.0)"
                        )
            for base in ("margin_plain", "lc_plain", "entropy_plain"):
                b = stats.get(base)
                if b and not positive:
                    goals.append(
                        f"  AULC F1 gain over random: DEFAULT {d['aulc_f1'] - r['aulc_f1']:+.4f} vs "
                        f"{base} {b['aulc_f1'] - r['aulc_f1']:+.4f}"
                    )
    lines.append("\n### Goals\n")
    lines += goals
    lines.append(f"\ntotal CPU {results['cpu_s']:.0f}s")
    return "\n".join(lines)


def merge_runs(paths: Sequence[Path]) -> dict[str, Any]:
    """Pool the seeds of several saved runs (the same datasets and variants, split by --first-seed)."""
    merged: dict[str, Any] = {"datasets": {}, "cpu_s": 0.0}
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            part = json.load(handle)
        merged["cpu_s"] += part["cpu_s"]
        for key, per in part["datasets"].items():
            into = merged["datasets"].setdefault(key, {**per, "variants": {}, "full": [], "random_long": []})
            into["full"] += per["full"]
            into["random_long"] += per["random_long"]
            for name, curves in per["variants"].items():
                into["variants"].setdefault(name, []).extend(curves)
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, SMS 2%% and BBC, main strategies only")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5, quick 1)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here (to split a run)")
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="print the tables of these saved runs (--out files) together, seeds pooled")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=None)
    parser.add_argument("--variants", nargs="+", default=None, help="only these strategy variants")
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--budget", type=int, default=None, help="override every dataset's budget")
    parser.add_argument("--embedder", choices=["minilm", "static", "hashing"], default="minilm")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "embeddings")
    parser.add_argument("--target", type=float, default=0.95, help="share of the full-pool score to reach")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "al_curves.json.gz")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 5
    if args.datasets is None:
        args.datasets = (["sms2", "bbc"] if args.quick
                         else ["sms", "sms2", "spamassassin", "bbc", "r52", "sms1", "sms05"])
    if args.merge:
        results = merge_runs(args.merge)
        print(summarise(results, args.target))
        return 0
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", encoding="utf-8") as handle:
        json.dump(results, handle, default=str)
    print(summarise(results, args.target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
