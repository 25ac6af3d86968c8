"""Loop speed: from a committed submit to a new ranking being active, at 100k and 1M items, on PostgreSQL.

``.venv/bin/python bench/retrain_loop.py [--quick] [--reuse] [--repeat N] [--labels N] [--threads N]``

1. Builds, in its own database (``BENCH_DATABASE_URL``, default
   ``postgres://postgres@127.0.0.1:5432/sift_retrain_bench``), one project per size with synthetic 384-d
   unit vectors (two classes, 10% positives) stored the way the embed task stores them (float16 bytes in the
   (embedder, content hash) cache), plus ``--labels`` (2,000) labelled items. Items and vectors go in with COPY.
   ``--reuse`` keeps a dataset already there.
2. Measures the parts in this process, same run: the pool read three ways (the service's binary COPY; the ORM,
   at 100k only; a local .npy file, the alternative design), a 10k-row ranking batch written with COPY vs
   bulk_create, and the floor: the pure scoring matmul over the pool (float32 X @ w).
3. Starts a real Celery worker (``celery -A config worker -Q default,embedding,training --pool solo``) on the
   bench database and ``REDIS_URL`` (default ``redis://127.0.0.1:6379/13``), then ``--repeat`` times: commits
   one annotation with ``request_retrain`` inside the transaction (what a submit does) and times commit ->
   ``Project.active_ranking_version`` moving. The worker's own breakdown (load, fit, score, rank, write,
   activate) comes from ``ModelVersion.timings``.
4. Meanwhile a thread takes the next item through the queue's checkout service
   (``labeling.services.queues.queue_checkout_next``, then skips it) at ``--rate`` checkouts/s, as reviewers
   would; its p50/p99 while the reprioritisation runs is printed next to the same thread's idle p99.

Goals: commit -> active <= 5 s at 100k and <= 30 s at 1M; next-item p99 <= 100 ms during it.
``--quick``: 100k only, two repeats. The machine is a noisy, shared 2-core box: worker, database, this process
and other people's jobs compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench._support import database_exists, recreate_database, stop_process_group  # noqa: E402
from learning.core.vocabulary import content_hash  # noqa: E402

TAXONOMY = {"name": "Bench", "multi_label": False,
            "labels": [{"key": "ham", "name": "Ham"}, {"key": "spam", "name": "Spam"}]}
EMBEDDER = "hashing"  # the project setting; vectors are stored under its cache name (never computed here)
DIM = 384
REVIEWERS = 40
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k items only, two repeats")
    parser.add_argument("--reuse", action="store_true", help="reuse datasets already in the bench database")
    parser.add_argument("--sizes", type=str, help="comma-separated pool sizes (default 100000,1000000)")
    parser.add_argument("--repeat", type=int, help="measured retrains per size (default 3, quick 2)")
    parser.add_argument("--labels", type=int, default=2000, help="labelled items per project")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads in the worker (SIFT_WORKER_THREADS)")
    parser.add_argument("--rate", type=float, default=20.0, help="next-item checkouts per second during the run")
    args = parser.parse_args()
    if args.sizes:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    else:
        args.sizes = [100_000] if args.quick else [100_000, 1_000_000]
    args.repeat = args.repeat or (2 if args.quick else 3)
    args.database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sift_retrain_bench")
    args.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")
    return args


# --- database and Django ------------------------------------------------------------------------------------------


def prepare_database(args: argparse.Namespace) -> None:
    if not (args.reuse and database_exists(args.database_url)):
        recreate_database(args.database_url, ["sift_retrain_bench", "sift_bench_"])


def bench_env(args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIFT_", "PYTEST_"))}
    env.update({"DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url, "SIFT_DEBUG": "1",
                "SIFT_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "SIFT_WORKER_THREADS": str(args.threads), "SIFT_AXES_ENABLED": "0"})
    return env


def setup_django(args: argparse.Namespace) -> None:
    os.environ.update(bench_env(args))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- the dataset --------------------------------------------------------------------------------------------------


def synthetic_vectors(n: int, rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
    """Unit vectors around two class centres, float16: a separable-but-noisy stand-in for MiniLM output."""
    centres = rng.standard_normal((2, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((n, DIM)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    v = 0.45 * centres[classes] + noise
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    out: np.ndarray = v.astype("<f2")
    return out


def copy_embeddings(cursor: Any, embedder_name: str, hashes: list[str], vectors: np.ndarray) -> None:
    """Binary COPY of (embedder, content_hash, vector, created_at) rows built as one numpy buffer."""
    name = embedder_name.encode()
    width = vectors.shape[1] * 2
    row = np.dtype([("n", ">i2"), ("l1", ">i4"), ("emb", f"S{len(name)}"), ("l2", ">i4"), ("hash", "S64"),
                    ("l3", ">i4"), ("vec", "u1", (width,)), ("l4", ">i4"), ("ts", ">i8")])
    rows = np.zeros(len(hashes), dtype=row)
    rows["n"], rows["l1"], rows["emb"], rows["l2"] = 4, len(name), name, 64
    rows["hash"] = np.array(hashes, dtype="S64")
    rows["l3"], rows["l4"] = width, 8
    rows["vec"] = np.ascontiguousarray(vectors).view("u1").reshape(len(hashes), width)
    rows["ts"] = int((datetime.now(UTC) - PG_EPOCH).total_seconds() * 1_000_000)
    with cursor.copy("COPY learning_embedding (embedder, content_hash, vector, created_at) FROM STDIN "
                     "(FORMAT BINARY)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
        copy.write(rows.tobytes())
        copy.write((-1).to_bytes(2, "big", signed=True))


def build_project(size: int, n_labels: int) -> int:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from labeling.models import Annotation, Item, Membership, Project
    from labeling.services.projects import project_create
    from learning.services.embedding import embedder_for

    slug = f"bench-loop-{size}"
    existing = Project.objects.filter(slug=slug).first()
    if existing is not None and Item.objects.filter(project=existing).count() == size:
        print(f"  reusing {slug}")
        return int(existing.pk)
    if existing is not None:
        raise SystemExit(f"{slug} exists with the wrong size; run without --reuse")
    started = time.perf_counter()
    project = project_create(actor=None, slug=slug, name=f"Loop bench {size}", taxonomy=TAXONOMY)
    Project.objects.filter(pk=project.pk).update(embedder=EMBEDDER)
    user_model = get_user_model()
    users = [user_model.objects.get_or_create(username=f"bench-loop-r{n:02d}")[0] for n in range(REVIEWERS)]
    Membership.objects.bulk_create([Membership(project=project, user=u, role="reviewer") for u in users],
                                   ignore_conflicts=True)
    rng = np.random.default_rng(size)
    classes = (rng.random(size) < 0.1).astype(np.int64)
    labels = np.array(["ham", "spam"])[classes]
    cache_name = embedder_for(EMBEDDER).name
    now = datetime.now(UTC)
    chunk = 100_000
    with connection.cursor() as cursor:
        for start in range(0, size, chunk):
            stop = min(size, start + chunk)
            texts = [f"synthetic item {size}:{n}" for n in range(start, stop)]
            hashes = [content_hash(t) for t in texts]
            with cursor.cursor.copy(
                "COPY labeling_item (project_id, external_id, text, meta, content_hash, is_gold, n_required, n_done,"
                " boost, random_key, created_at, updated_at) FROM STDIN"
            ) as copy:
                for n, (text, h) in enumerate(zip(texts, hashes, strict=True), start=start):
                    copy.write_row((project.pk, f"s{n}", text, json.dumps({"label": str(labels[n])}), h, False, 1, 0, 0,
                                    random.random(), now, now))
            copy_embeddings(cursor.cursor, cache_name, hashes, synthetic_vectors(stop - start, rng,
                                                                                  classes[start:stop]))
    loaded = time.perf_counter()
    # The labelled part: n_labels random items, answered truthfully by the reviewers, as the queue records them.
    ids = list(Item.objects.filter(project=project).order_by("id").values_list("id", flat=True))
    chosen = rng.choice(len(ids), size=n_labels, replace=False)
    Annotation.objects.bulk_create([
        Annotation(project=project, item_id=ids[i], reviewer=users[k % REVIEWERS],
                   taxonomy_version=project.current_taxonomy_version, labels=[str(labels[i])],
                   selection_reason="exploration" if k % 10 == 0 else "uncertainty",
                   inclusion_probability=0.1 if k % 10 == 0 else 1.0)
        for k, i in enumerate(chosen)
    ], batch_size=2000)
    Item.objects.filter(id__in=[ids[i] for i in chosen]).update(n_done=1)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE labeling_item")
        cursor.execute("VACUUM ANALYZE learning_embedding")
        cursor.execute("ANALYZE")
    print(f"  built {slug}: {size:,} items + vectors in {loaded - started:.1f}s (COPY), {n_labels:,} labels")
    return int(project.pk)


# --- component measurements (this process) ------------------------------------------------------------------------


def timed(fn: Any, *a: Any, **k: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - t, out


def components(project_id: int, size: int) -> dict[str, float]:
    from django.db import connection

    from labeling.models import Item, RankingEntry, RankingRow
    from learning.models import Embedding
    from learning.services.embedding import embedder_for
    from learning.services.pool import load_pool

    name = embedder_for(EMBEDDER).name
    out: dict[str, float] = {}
    out["pool_copy"], pool = timed(load_pool, project_id=project_id, embedder_name=name)
    # The alternative design: a worker-side .npy of the vectors (what it would save per retrain).
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vectors.npy"
        np.save(path, pool.vectors)
        out["pool_npy"], _ = timed(np.load, path)
    if size <= 100_000:
        def orm() -> int:
            hashes = dict(Item.objects.filter(project_id=project_id).values_list("content_hash", "id"))
            rows = Embedding.objects.filter(embedder=name, content_hash__in=list(hashes)).values_list(
                "content_hash", "vector").iterator(chunk_size=5000)
            return sum(1 for _ in rows)
        out["pool_orm"], _ = timed(orm)
    # A 10k-row ranking batch: COPY (the write path) vs a multi-row INSERT, under a scratch version.
    rows = [RankingRow(item_id=int(i), score=0.5, reason="uncertainty", inclusion_probability=1.0,
                       suggested_label="ham", suggested_confidence=0.8) for i in pool.item_ids[:10_000]]
    out["write10k_copy"], _ = timed(RankingEntry.objects.write_batch, project_id=project_id,
                                    ranking_version=999_999, start_rank=0, rows=rows)
    entries = [RankingEntry(project_id=project_id, ranking_version=999_998, rank=n, item_id=r.item_id, score=r.score,
                            reason=r.reason, inclusion_probability=1.0, suggested_label="ham",
                            suggested_confidence=0.8) for n, r in enumerate(rows)]
    out["write10k_insert"], _ = timed(RankingEntry.objects.bulk_create, entries, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM labeling_rankingentry WHERE ranking_version IN (999998, 999999)")
    # The floor: scoring is one matmul over the pool (plus the float16 -> float32 widening the worker does).
    w = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    half = pool.vectors
    x32 = half.astype(np.float32)
    out["matmul"] = min(timed(np.dot, x32, w)[0] for _ in range(3))
    out["widen_matmul"] = min(timed(lambda: half.astype(np.float32) @ w)[0] for _ in range(3))
    return out


# --- the worker and the loop --------------------------------------------------------------------------------------


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.log = Path(tempfile.mkstemp(prefix="sift-bench-worker-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,embedding,training",
                 "--pool", "solo", "-n", f"bench-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "-l", "INFO"],
                cwd=ROOT, env=bench_env(args), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while "ready" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("worker did not start:\n" + self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.log.unlink(missing_ok=True)


class Checkouts(threading.Thread):
    """Paced next-item requests through the queue's checkout service, each lease skipped afterwards."""

    def __init__(self, project_id: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.project_id = project_id
        self.period = 1.0 / rate
        self.samples: list[tuple[float, float]] = []  # (monotonic start, seconds)
        self.stop_event = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db import connection

        from labeling.models import Project
        from labeling.services.annotations import lease_skip
        from labeling.services.queues import queue_checkout_next

        users = list(get_user_model().objects.filter(username__startswith="bench-loop-r").order_by("username"))
        n = 0
        next_at = time.monotonic()
        try:
            while not self.stop_event.is_set():
                user = users[n % len(users)]
                n += 1
                start = time.monotonic()
                project = Project.objects.get(pk=self.project_id)  # as the view does: sees pointer switches
                lease = queue_checkout_next(project=project, reviewer=user)
                self.samples.append((start, time.monotonic() - start))
                if lease is not None:
                    lease_skip(lease_id=lease.pk, reviewer=user)
                next_at += self.period
                time.sleep(max(0.0, next_at - time.monotonic()))
        except Exception as exc:  # reported in the summary rather than killing the bench
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    def window(self, start: float, stop: float) -> list[float]:
        return [s for t, s in self.samples if start <= t <= stop]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_idle(project_id: int, timeout: float = 900) -> None:
    from learning.models import LearningJob

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = LearningJob.objects.filter(project_id=project_id, kind="retrain").first()
        if job is not None and not job.dirty and job.queued_at is None and job.running_token is None:
            return
        time.sleep(0.1)
    raise SystemExit("the worker never went idle")


def submit_and_wait(project_id: int, item_id: int, reviewer_id: int, timeout: float = 900) -> tuple[float, int]:
    """Commit one annotation the way a submit does (request_retrain inside the transaction); time commit ->
    active pointer moving. Returns (seconds, new active version)."""
    from django.db import transaction
    from django.db.models import F

    from labeling.models import Annotation, Item, Project
    from learning.scheduling import request_retrain

    before = Project.objects.values_list("active_ranking_version", flat=True).get(pk=project_id)
    tv = Project.objects.values_list("current_taxonomy_version_id", flat=True).get(pk=project_id)
    with transaction.atomic():
        Annotation.objects.create(project_id=project_id, item_id=item_id, reviewer_id=reviewer_id,
                                  taxonomy_version_id=tv, labels=["ham"], selection_reason="uncertainty",
                                  inclusion_probability=1.0)
        Item.objects.filter(pk=item_id).update(n_done=F("n_done") + 1)
        request_retrain(project_id=project_id)
        # Taken as the block exits: the measured time includes the COMMIT and the on_commit send (a few ms).
        committed = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = Project.objects.values_list("active_ranking_version", flat=True).get(pk=project_id)
        if now is not None and now != before:
            return time.perf_counter() - committed, now
        time.sleep(0.01)
    raise SystemExit("no new ranking became active")


def run_size(args: argparse.Namespace, size: int, worker: Worker) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from labeling.models import Item
    from learning.models import ModelVersion

    project_id = build_project(size, args.labels)
    comp = components(project_id, size)
    reviewer = get_user_model().objects.get(username="bench-loop-r00")
    # Warm-up: the first retrain imports scikit-learn and fills caches in the worker.
    if not ModelVersion.objects.filter(project_id=project_id, status="active").exists():
        from learning.jobs import signal as request_now

        request_now(kind="retrain", project_id=project_id)
        wait_idle(project_id)
    open_items = list(Item.objects.filter(project_id=project_id, n_done=0).order_by("-id")
                      .values_list("id", flat=True)[: args.repeat + 1])
    checkouts = Checkouts(project_id, args.rate)
    checkouts.start()
    time.sleep(5.0)  # idle baseline window
    idle_stop = time.monotonic()
    runs = []
    for k in range(args.repeat):
        wait_idle(project_id)
        start = time.monotonic()
        seconds, version = submit_and_wait(project_id, open_items[k], reviewer.pk)
        stop = time.monotonic()
        wait_idle(project_id)  # the worker stores the timings (and prunes) just after the switch
        timings = ModelVersion.objects.get(project_id=project_id, version=version).timings
        runs.append({"e2e": seconds, "version": version, "timings": timings,
                     "during": checkouts.window(start, stop)})
    wait_idle(project_id)
    checkouts.stop_event.set()
    checkouts.join(timeout=30)
    idle = [s for t, s in checkouts.samples if t <= idle_stop]
    mv = ModelVersion.objects.filter(project_id=project_id, status="active").first()
    return {"size": size, "components": comp, "runs": runs, "idle": idle, "errors": checkouts.errors,
            "n_ranked": mv.n_ranked if mv else 0, "n_labels": mv.n_labels if mv else 0}


def report(result: dict[str, Any]) -> list[str]:
    size, comp, runs = result["size"], result["components"], result["runs"]
    goal = 5.0 if size <= 100_000 else 30.0
    print(f"\n== {size:,} items ({result['n_labels']:,} labels, {result['n_ranked']:,} ranked positions) ==")
    keys = ("load_pool", "load", "fit", "score", "rank", "write", "activate", "total")
    print("  run  commit->active  " + "  ".join(f"{k:>9}" for k in keys))
    for n, run in enumerate(runs, start=1):
        t = run["timings"]
        print(f"  {n:>3}  {run['e2e']:>13.2f}s  " + "  ".join(f"{t.get(k, float('nan')):>8.2f}s" for k in keys))
    e2e = statistics.median(r["e2e"] for r in runs)
    hop = statistics.median(r["e2e"] - r["timings"].get("total", 0.0) for r in runs)
    print(f"  median commit->active {e2e:.2f}s (goal <= {goal:.0f}s); queue hop + claim {hop:.2f}s")
    print(f"  floor: scoring matmul {comp['matmul'] * 1000:.1f} ms (with float16 widening "
          f"{comp['widen_matmul'] * 1000:.1f} ms); median/floor = {e2e / comp['matmul']:.0f}x")
    line = f"  pool read: binary COPY {comp['pool_copy']:.2f}s, local .npy {comp['pool_npy']:.2f}s"
    if "pool_orm" in comp:
        line += f", ORM {comp['pool_orm']:.2f}s (COPY is {comp['pool_orm'] / comp['pool_copy']:.1f}x faster)"
    print(line)
    print(f"  10k ranking rows: COPY {comp['write10k_copy'] * 1000:.0f} ms vs INSERT "
          f"{comp['write10k_insert'] * 1000:.0f} ms ({comp['write10k_insert'] / comp['write10k_copy']:.1f}x)")
    during = [s for r in runs for s in r["during"]]
    p99, idle99 = percentile(during, 99) * 1000, percentile(result["idle"], 99) * 1000
    print(f"  next-item during reprioritisation: n={len(during)} p50 {percentile(during, 50) * 1000:.1f} ms, "
          f"p99 {p99:.1f} ms, max {max(during, default=float('nan')) * 1000:.1f} ms (goal p99 <= 100 ms); "
          f"idle p99 {idle99:.1f} ms (ratio {p99 / idle99:.1f}x)")
    if result["errors"]:
        print(f"  checkout errors: {result['errors'][:3]}")
    misses = []
    if e2e > goal:
        misses.append(f"{size:,}: commit->active {e2e:.2f}s > {goal:.0f}s")
    if p99 > 100:
        misses.append(f"{size:,}: next-item p99 {p99:.0f} ms > 100 ms")
    return misses


def main() -> None:
    args = parse_args()
    prepare_database(args)
    setup_django(args)
    import redis

    try:
        redis.Redis.from_url(args.redis_url, socket_connect_timeout=2).ping()
    except Exception as exc:
        raise SystemExit(f"Redis at {args.redis_url} is needed for the worker: {exc}") from exc
    redis.Redis.from_url(args.redis_url).delete("default", "embedding", "training", "unacked", "unacked_index")
    print(f"retrain loop bench: sizes {args.sizes}, {args.repeat} runs each, worker BLAS threads {args.threads}, "
          f"{args.rate:g} checkouts/s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    worker = Worker(args)
    misses: list[str] = []
    try:
        for size in args.sizes:
            misses += report(run_size(args, size, worker))
    finally:
        worker.stop()
    print("\nall goals met" if not misses else "\ngoals missed:\n  " + "\n  ".join(misses))


if __name__ == "__main__":
    main()
