"""Campaigns: what near-duplicate clusters and label propagation save, and what clustering costs at 1M items.

Two parts, one run:

1. **Human answers to label 95% of the pool at >= 99% precision**, with propagation off and on, on
   (a) the shared SMS spam set (/work/shared/data/sms_spam.jsonl.gz, 4,862 messages) and
   (b) a synthetic flood: a few scam templates with thousands of small variations each (numbers, names, links,
       case, punctuation, a word added or swapped) mixed into the same real traffic.
   Items are clustered with learning.core.clusters (the worker's rule: exact key, then MinHash; no embedding
   here, so paraphrases are not counted) and answered by a simulated reviewer who is always right (the dataset's
   label). Off: every labelled item is a human answer. On (learning.core.propagation, the product's rule): the
   queue serves one item per cluster, largest clusters first; a human answer on a representative covers the
   members at or above the similarity threshold, except a fixed verification share that still goes to a human;
   the rest of the pool is answered one by one. Precision is measured against the dataset's labels over every
   labelled item (human and propagated).
2. **Cluster build time and memory at 1M items** (synthetic texts: 30% campaign variations of 500 templates, 70%
   distinct messages from a 20k-word vocabulary), in a child process: wall time, items/s, peak RSS of the child
   and RSS before the build (the texts themselves), and the index's own arrays.

Usage (wrap in the shared benchmark lock on the shared box):
    flock /tmp/sift-bench.lock .venv/bin/python bench/campaigns.py [--items 1000000] [--skip-build]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learning.core.clusters import ClusterIndex
from learning.core.propagation import covered_members, verification_pick

SMS = Path(os.environ.get("SIFT_SMS_DATA", "/work/shared/data/sms_spam.jsonl.gz"))
TEMPLATES = [
    "URGENT! Your mobile number has won a {amount} pound prize. Call {phone} now to claim, code {code}. Valid 12hrs",
    "Your parcel is held at the depot. Pay the {amount}p customs fee at {url} within 24 hours or it is returned",
    "Hi {name}, your bank account has been suspended. Verify your details at {url} to restore access today",
    "Congratulations {name}! You have been selected for a free {item}. Reply YES to {phone} to receive it now",
    "Final notice: your {item} subscription renews today for {amount} pounds. Cancel at {url} or call {phone}",
]
NAMES = ["Sam", "Alex", "Jo", "Chris", "Pat", "Lee", "Kim", "Max", "Ana", "Raj", "Mia", "Tom"]
ITEMS = ["iPhone", "holiday", "gift card", "tablet", "camera", "TV licence", "phone plan", "voucher"]
FILLERS = ["now", "today", "please", "asap", "!!", "urgent", "free", "txt"]


def flood_text(template: str, rng: random.Random) -> str:
    text = template.format(amount=rng.choice([500, 1000, 2000, 5000]) + rng.randrange(0, 99),
                           phone=f"0{rng.randrange(10**9, 10**10)}", code=f"{rng.choice('ABKLXZ')}{rng.randrange(999)}",
                           url=f"http://{rng.choice(['bit.ly', 'tinyurl.com', 'x.co'])}/{rng.randrange(10**6):x}",
                           name=rng.choice(NAMES), item=rng.choice(ITEMS))
    words = text.split()
    edit = rng.random()
    if edit < 0.3:
        words.insert(rng.randrange(len(words)), rng.choice(FILLERS))
    elif edit < 0.45:
        words[rng.randrange(len(words))] = rng.choice(FILLERS)
    text = " ".join(words)
    return text.upper() if rng.random() < 0.1 else text


def load_sms() -> tuple[list[str], list[str]]:
    with gzip.open(SMS, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def flood_pool(texts: list[str], labels: list[str], *, per_template: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    mixed = [(t, y) for t, y in zip(texts, labels, strict=True)]
    mixed += [(flood_text(template, rng), "spam") for template in TEMPLATES for _ in range(per_template)]
    rng.shuffle(mixed)  # campaigns arrive interleaved with real traffic
    return [t for t, _ in mixed], [y for _, y in mixed]


@dataclass
class Outcome:
    human: int
    propagated: int
    labelled: int
    precision: float
    verified: int
    verified_agree: int


def simulate(labels: list[str], reps: dict[int, list[tuple[int, float]]], *, propagate: bool, threshold: float,
             share: float, target_share: float = 0.95) -> Outcome:
    n = len(labels)
    target = math.ceil(target_share * n)
    if not propagate:
        return Outcome(human=target, propagated=0, labelled=target, precision=1.0, verified=0, verified_agree=0)
    given: dict[int, str] = {}
    human = propagated = verified = agree = 0
    later: list[int] = []
    for rep in sorted(reps, key=lambda r: (-len(reps[r]), r)):
        if len(given) >= target:
            break
        given[rep] = labels[rep]
        human += 1
        members = reps[rep]
        covered = set(covered_members(members, threshold=threshold))
        for member, _similarity in members:
            if member not in covered:
                later.append(member)  # served on its own once the representative is answered
            elif verification_pick(member, share=share, salt="bench"):
                given[member] = labels[member]
                human += 1
                verified += 1
                agree += labels[member] == labels[rep]
            else:
                given[member] = labels[rep]
                propagated += 1
    for item in later:
        if len(given) >= target:
            break
        if item not in given:
            given[item] = labels[item]
            human += 1
    correct = sum(given[i] == labels[i] for i in given)
    return Outcome(human=human, propagated=propagated, labelled=len(given), precision=correct / len(given),
                   verified=verified, verified_agree=agree)


def clusters_of(texts: list[str]) -> tuple[dict[int, list[tuple[int, float]]], float]:
    started = time.perf_counter()
    out = ClusterIndex(random_state=0).assign(list(range(len(texts))), texts)
    reps: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for a in out:
        if a.kind == "representative":
            reps[a.item_id]
        else:
            reps[a.representative_id].append((a.item_id, a.similarity))
    return reps, time.perf_counter() - started


def campaign_table(name: str, texts: list[str], labels: list[str], thresholds: list[float], share: float) -> None:
    reps, seconds = clusters_of(texts)
    sizes = sorted((len(m) + 1 for m in reps.values()), reverse=True)
    print(f"\n## {name}: {len(texts):,} items, {len(reps):,} clusters (largest {sizes[:5]}), "
          f"clustered in {seconds:.1f} s")
    print("| propagation | threshold | human answers | propagated | labelled | precision | verified (agree) |")
    print("|---|---|---|---|---|---|---|")
    off = simulate(labels, reps, propagate=False, threshold=1.0, share=share)
    print(f"| off | - | {off.human:,} | 0 | {off.labelled:,} | {off.precision:.4f} | - |")
    for threshold in thresholds:
        on = simulate(labels, reps, propagate=True, threshold=threshold, share=share)
        flag = "" if on.precision >= 0.99 else " (below 99%)"
        print(f"| on | {threshold} | {on.human:,} ({on.human / off.human:.0%} of off) | {on.propagated:,} | "
              f"{on.labelled:,} | {on.precision:.4f}{flag} | {on.verified} ({on.verified_agree}) |")


def synthetic_million(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randrange(3, 9))) for _ in range(20_000)]
    templates = [" ".join(rng.choice(vocab) for _ in range(rng.randrange(10, 25))) for _ in range(500)]
    texts = []
    for _ in range(n):
        if rng.random() < 0.3:
            words = rng.choice(templates).split()
            words[rng.randrange(len(words))] = rng.choice(vocab)
            texts.append(" ".join(words) + f" call 0{rng.randrange(10**9)}")
        else:
            texts.append(" ".join(rng.choice(vocab) for _ in range(rng.randrange(6, 30))))
    return texts


def build_child(n: int) -> None:
    """Runs in a child process: its peak RSS is the build's alone (plus the interpreter and the texts)."""
    texts = synthetic_million(n, seed=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index = ClusterIndex(random_state=0)
    started = time.perf_counter()
    batch = 10_000
    founded = 0
    for start in range(0, n, batch):
        out = index.assign(list(range(start, min(n, start + batch))), texts[start : start + batch])
        founded += sum(a.kind == "representative" for a in out)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"items": n, "seconds": seconds, "clusters": founded, "rss_before_mb": before / 1024,
                      "rss_peak_mb": peak / 1024, "index_arrays_mb": index.nbytes / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="items for the build measurement")
    parser.add_argument("--per-template", type=int, default=2_000, help="flood variations per template")
    parser.add_argument("--share", type=float, default=0.05, help="verification share of propagated items")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--build-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_child:
        build_child(args.build_child)
        return
    print(f"# bench/campaigns.py  (load average {os.getloadavg()[0]:.2f} at start; 2 shared cores)")
    texts, labels = load_sms()
    thresholds = [0.6, 0.8, 0.9]
    campaign_table("SMS spam", texts, labels, thresholds, args.share)
    flood_texts, flood_labels = flood_pool(texts, labels, per_template=args.per_template, seed=7)
    campaign_table(f"SMS + flood ({len(TEMPLATES)} templates x {args.per_template:,} variations)", flood_texts,
                   flood_labels, thresholds, args.share)
    if not args.skip_build:
        result = subprocess.run([sys.executable, __file__, "--build-child", str(args.items)], check=True,
                                capture_output=True, text=True)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"\n## Cluster build at {figures['items']:,} items (exact key + MinHash, no vectors)")
        print(f"- {figures['seconds']:.0f} s ({figures['items'] / figures['seconds']:,.0f} items/s), "
              f"{figures['clusters']:,} clusters")
        print(f"- peak RSS {figures['rss_peak_mb']:,.0f} MB (of which {figures['rss_before_mb']:,.0f} MB before the "
              f"build: interpreter, numpy, the texts); index arrays {figures['index_arrays_mb']:,.0f} MB")
    print(f"\n(load average {os.getloadavg()[0]:.2f} at end)")


if __name__ == "__main__":
    main()
