"""Embedding tiers: speed against a raw ``model.encode``, quality against MiniLM, and 1-vs-2 worker scaling.

``.venv/bin/python bench/embedding.py [--quick] [--no-quality] [--no-workers] [--workers-only] [--threads N]``

1. Speed, same process, same texts (SMS messages: short texts, the shape of moderation traffic), same torch
   threads (``--threads``, default every core). Baseline: a raw ``SentenceTransformer.encode`` with default
   settings on the packaged all-MiniLM-L6-v2, measured in this run, interleaved with our MiniLM path
   (``SentenceTransformerEmbedder``) and the best of ``--repeat`` timings of each kept. Then the static tier
   (model2vec table distilled locally from the same MiniLM; built first if it is not on disk, the build time is
   printed apart) and the hashing embedder. Prints texts/s, our MiniLM path / raw encode (issue #4: >= 0.90),
   each tier's speed-up over our MiniLM path, and the extrapolated time for 1M short texts (issue #8: a tier
   >= 10x MiniLM, 1M in < 15 min).
2. Quality: average precision of the positive class (spam) on SMS spam and SpamAssassin, the core's classifier
   (``EmbeddingClassifier``: logistic regression on the vectors), stratified 70/30 splits over ``--seeds``
   seeds, each tier next to MiniLM on the same splits. Vectors come through the on-disk vector cache
   (``--cache``, default ``.cache/embeddings``, shared with bench/al_curves.py): quality is not a timing.
   ``--quick`` uses a stratified 1,500-message sample of SpamAssassin (long e-mails are slow under MiniLM).
   Goal: AP within 2 points of MiniLM.
3. Workers (PostgreSQL + Redis): imports ``--items`` SMS messages into a project of its own database
   (``BENCH_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/sift_bench_embedding``), then, with 1
   and then 2 ``celery -A config worker -Q embedding --concurrency 1`` processes (one torch thread each,
   ``SIFT_WORKER_THREADS=1``), clears the project's vectors, sends the real ``sift.learning.embed_project``
   task and times until every item has a MiniLM vector. The embed task splits the backlog into
   ``sift.learning.embed_items`` chunks (``SIFT_EMBED_CHUNK``), which is what lets two workers share one
   project. Workers are warmed (model loaded) before the clock starts. Prints items/s and the 2/1 ratio.

The box is a shared, noisy 2-core machine: the load average is printed next to each section.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from bench._support import recreate_database, stop_process_group  # noqa: E402

DATASETS = Path(os.environ.get("SIFT_DATASETS_DIR", str(ROOT.parent / "shared" / "data")))
TIERS = ("static", "hashing")
ONE_MILLION = 1_000_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer texts, one SpamAssassin sample, 3 seeds")
    parser.add_argument("--texts", type=int, help="SMS texts timed per tier (default all 4,862; quick 1,500)")
    parser.add_argument("--repeat", type=int, help="timed passes per MiniLM variant, best kept (default 3; quick 2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for the speed part")
    parser.add_argument("--seeds", type=int, help="train/test splits per dataset (default 5; quick 3)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "embeddings", help="vector cache directory")
    parser.add_argument("--no-workers", action="store_true", help="skip the worker-scaling section")
    parser.add_argument("--no-quality", action="store_true", help="skip the AP section")
    parser.add_argument("--workers-only", action="store_true", help="only the worker-scaling section")
    parser.add_argument("--items", type=int, help="items embedded per worker phase (default 1,600; quick 1,000)")
    parser.add_argument("--chunk", type=int, default=100, help="SIFT_EMBED_CHUNK for the workers")
    args = parser.parse_args()
    args.texts = args.texts or (1500 if args.quick else 4862)
    args.repeat = args.repeat or (2 if args.quick else 3)
    args.seeds = args.seeds or (3 if args.quick else 5)
    args.items = args.items or (1000 if args.quick else 1600)
    args.database_url = os.environ.get("BENCH_DATABASE_URL",
                                       "postgres://postgres@127.0.0.1:5432/sift_bench_embedding")
    args.redis_url = os.environ.get("BENCH_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"))
    return args


def load_rows(name: str) -> list[dict[str, Any]]:
    with gzip.open(DATASETS / f"{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def uptime() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


# --- 1. speed ---------------------------------------------------------------------------------------------------


def best_rate(fn: Callable[[], Any], n: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return n / min(times)


def speed(args: argparse.Namespace) -> None:
    import torch

    from learning.core.embedders import HashingEmbedder, SentenceTransformerEmbedder
    from learning.core.static_embedder import StaticEmbedder

    texts = [r["text"] for r in load_rows("sms_spam")][: args.texts]
    n = len(texts)
    mean_chars = statistics.fmean(len(t) for t in texts)
    print(f"## Speed: {n} SMS texts (mean {mean_chars:.0f} characters), {args.threads} torch thread(s), "
          f"best of {args.repeat}; {uptime()}")
    ours = SentenceTransformerEmbedder(num_threads=args.threads)
    model = ours._load()  # the same weights object serves the raw baseline: identical compute, identical threads
    torch.set_num_threads(args.threads)
    warm = texts[:64]
    model.encode(warm)
    ours.embed(warm)

    raw_times: list[float] = []
    our_times: list[float] = []
    for _ in range(args.repeat):  # interleaved, so a burst of load from other jobs hits both alike
        started = time.perf_counter()
        raw = model.encode(texts)
        raw_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        mine = ours.embed(texts)
        our_times.append(time.perf_counter() - started)
    raw_rate, our_rate = n / min(raw_times), n / min(our_times)
    max_diff = float(np.abs(np.asarray(raw, dtype=np.float32)
                            / np.linalg.norm(raw, axis=1, keepdims=True) - mine).max())

    static = StaticEmbedder()
    build = ""
    if not (static.model_path / "model.safetensors").is_file():
        started = time.perf_counter()
        static.ensure_built()
        build = f" (table distilled in this run: {time.perf_counter() - started:.0f} s, once per machine)"
    static.embed(warm)
    hashing = HashingEmbedder()
    hashing.embed(warm)
    static_rate = best_rate(lambda: static.embed(texts), n, max(3, args.repeat))
    hashing_rate = best_rate(lambda: hashing.embed(texts), n, max(3, args.repeat))

    rows = [("raw model.encode (baseline)", raw_rate), ("minilm (ours)", our_rate),
            (f"static ({static.name})", static_rate), ("hashing (tests only)", hashing_rate)]
    print(f"{'tier':<48} {'texts/s':>10} {'x minilm':>9} {'1M texts':>10}")
    for label, rate in rows:
        print(f"{label:<48} {rate:>10.1f} {rate / our_rate:>9.1f} {fmt_duration(ONE_MILLION / rate):>10}")
    print(f"minilm (ours) / raw model.encode: {our_rate / raw_rate:.3f}  (goal >= 0.90; max |vector diff| "
          f"{max_diff:.1e})")
    print(f"static / minilm: {static_rate / our_rate:.1f}x  (goal >= 10x); 1M short texts in "
          f"{fmt_duration(ONE_MILLION / static_rate)} (goal < 15 min){build}")
    print(f"after the speed runs: {uptime()}")


def fmt_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --- 2. quality -------------------------------------------------------------------------------------------------


def stratified_sample(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    if n >= len(rows):
        return rows
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(rows)), train_size=n, random_state=seed,
                               stratify=[r["label"] for r in rows])
    return [rows[i] for i in sorted(keep)]


def average_precisions(vectors: np.ndarray, labels: Sequence[str], seeds: int,
                       positive: str | None = "spam") -> list[float]:
    """AP over ``seeds`` stratified 70/30 splits: of ``positive``, or the macro mean over classes when None."""
    from sklearn.model_selection import train_test_split

    from learning.core.classifiers import EmbeddingClassifier
    from learning.core.metrics import average_precision

    y = np.asarray(labels, dtype=object)
    classes = tuple(sorted(set(labels)))
    out = []
    for seed in range(seeds):
        train, test = train_test_split(np.arange(len(y)), test_size=0.3, random_state=seed, stratify=y)
        model = EmbeddingClassifier(classes=classes, random_state=seed).fit(vectors[train], list(y[train]))
        out.append(average_precision(list(y[test]), model.predict_proba(vectors[test]), list(model.classes_),
                                     positive=positive))
    return out


def quality(args: argparse.Namespace) -> None:
    from learning.core.embedder_registry import get_embedder
    from learning.core.vector_cache import embed_with_cache

    print(f"\n## Quality: AP of 'spam', logistic regression on each tier's vectors, {args.seeds} stratified 70/30 "
          f"splits (mean +/- sd); {uptime()}")
    datasets = [("sms_spam", load_rows("sms_spam"))]
    spam = load_rows("spamassassin")
    if args.quick:
        spam = stratified_sample(spam, 1500, seed=0)
    datasets.append(("spamassassin" + (" (1,500 sample)" if args.quick else ""), spam))
    print(f"{'dataset':<28} {'tier':<10} {'AP':>15} {'vs minilm':>10}")
    for name, rows in datasets:
        texts = [r["text"] for r in rows]
        labels = [r["label"] for r in rows]
        reference: float | None = None
        for tier in ("minilm", *TIERS):
            started = time.perf_counter()
            vectors, fresh = embed_with_cache(texts, get_embedder(tier), args.cache)
            aps = average_precisions(vectors, labels, args.seeds)
            mean = statistics.fmean(aps)
            reference = mean if reference is None else reference
            delta = f"{100 * (mean - reference):+.1f} pt" if tier != "minilm" else ""
            note = f"  ({fresh} embedded now, {time.perf_counter() - started:.0f} s)" if fresh else ""
            print(f"{name:<28} {tier:<10} {mean:>8.4f} +/- {statistics.pstdev(aps):.3f} {delta:>10}{note}")
    print("goal: the fast tier within 2 points of MiniLM")


# --- 3. workers -------------------------------------------------------------------------------------------------


def bench_env(args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIFT_", "PYTEST_"))}
    env.update({"DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url, "SIFT_DEBUG": "1",
                "SIFT_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "SIFT_WORKER_THREADS": "1", "SIFT_WORKER_NICE": "0", "SIFT_EMBED_CHUNK": str(args.chunk),
                "SIFT_AXES_ENABLED": "0",
                "SIFT_DATA_DIR": os.environ.get("SIFT_DATA_DIR", tempfile.gettempdir() + "/sift-bench-embedding")})
    return env


def prepare_database(args: argparse.Namespace) -> None:
    recreate_database(args.database_url, ["sift_bench"])
    os.environ.update(bench_env(args))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class Worker:
    """One ``celery -A config worker -Q embedding --concurrency 1`` process (prefork, one child)."""

    def __init__(self, args: argparse.Namespace, index: int) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"sift-bench-embed-worker{index}-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "embedding", "--concurrency", "1",
                 "-n", f"embed-bench-{index}-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "-l", "INFO"],
                cwd=ROOT, env=bench_env(args), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        while "ready" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("worker did not start:\n" + self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.2)

    def tasks_done(self) -> int:
        return self.log.read_text(errors="replace").count("succeeded in")

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.log.unlink(missing_ok=True)


def _project(slug: str, rows: list[dict[str, Any]]) -> int:
    from django.core.management import call_command

    from labeling.models import Project

    with tempfile.TemporaryDirectory() as tmp:
        taxonomy = Path(tmp) / "taxonomy.json"
        taxonomy.write_text(json.dumps({"name": "SMS", "multi_label": False, "labels": [
            {"key": "ham", "name": "Ham"}, {"key": "spam", "name": "Spam"}]}))
        items = Path(tmp) / "items.jsonl"
        items.write_text("".join(json.dumps({"external_id": str(i), "text": r["text"]}) + "\n"
                                 for i, r in enumerate(rows)))
        with open(os.devnull, "w") as quiet:
            call_command("create_project", slug=slug, name=slug, taxonomy=str(taxonomy), stdout=quiet)
            call_command("import_items", str(items), project=slug, stdout=quiet)
    return int(Project.objects.get(slug=slug).pk)


def _reset(project_ids: list[int]) -> None:
    """No vectors, no queued messages, no claims: every phase starts from the same state."""
    import redis

    from labeling.models import Item
    from learning.core.embedders import MINILM_NAME
    from learning.models import Embedding, LearningJob

    hashes = set(Item.objects.filter(project_id__in=project_ids).values_list("content_hash", flat=True))
    Embedding.objects.filter(embedder=MINILM_NAME, content_hash__in=hashes).delete()
    LearningJob.objects.filter(project_id__in=project_ids).update(dirty=False, queued_at=None, running_token=None,
                                                                   running_since=None)
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.delete("embedding", "training", "default")


def _wait_embedded(project_id: int, timeout: float) -> float:
    from learning.core.embedders import MINILM_NAME
    from learning.services.embedding import project_has_pending

    started = time.perf_counter()
    while project_has_pending(project_id=project_id, embedder_name=MINILM_NAME):
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"project {project_id} not embedded after {timeout:.0f} s")
        time.sleep(0.1)
    return time.perf_counter() - started


def workers(args: argparse.Namespace) -> None:
    from celery import current_app

    from config.celery import app  # noqa: F401  (configures current_app from the settings)

    prepare_database(args)
    rows = list({r["text"]: r for r in load_rows("sms_spam")}.values())  # distinct texts: no cache hits
    main_rows, warm_rows = rows[: args.items], rows[args.items : args.items + 8]
    main_id, warm_id = _project("embed-bench", main_rows), _project("embed-warm", warm_rows)
    print(f"\n## Workers: {len(main_rows)} SMS items, MiniLM, chunks of {args.chunk}, each worker "
          f"`celery -A config worker -Q embedding --concurrency 1` with SIFT_WORKER_THREADS=1; {uptime()}")
    rates: dict[int, float] = {}
    for n_workers in (1, 2):
        _reset([main_id, warm_id])
        pool = [Worker(args, i) for i in range(n_workers)]
        try:
            for w in pool:
                w.wait_ready()
            # Warm-up: one-item chunks until every worker has loaded the model and run a task.
            from labeling.models import Item

            warm_ids = list(Item.objects.filter(project_id=warm_id).values_list("pk", flat=True))
            for item_id in warm_ids:
                current_app.send_task("sift.learning.embed_items", args=[warm_id, [item_id]])
            _wait_embedded(warm_id, 300)
            deadline = time.monotonic() + 60
            while any(w.tasks_done() == 0 for w in pool) and time.monotonic() < deadline:
                time.sleep(0.2)
            load = uptime()
            current_app.send_task("sift.learning.embed_project", args=[main_id])
            seconds = _wait_embedded(main_id, 1800)
            rates[n_workers] = len(main_rows) / seconds
            shares = [w.tasks_done() for w in pool]
            print(f"{n_workers} worker(s): {len(main_rows)} items in {seconds:.1f} s = {rates[n_workers]:.1f} items/s"
                  f"  (tasks per worker, warm-up included: {shares}; {load} before, {uptime()} after)")
        finally:
            for w in pool:
                w.stop()
    _reset([main_id, warm_id])
    print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x  (goal: close to 2x)")


def main() -> int:
    args = parse_args()
    print(f"bench/embedding.py{' --quick' if args.quick else ''}: {os.cpu_count()} cores; {uptime()}")
    if not args.workers_only:
        speed(args)
        if not args.no_quality:
            quality(args)
    if not args.no_workers:
        workers(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
