"""A 1M-item project on one box: page and API latency over HTTP, retrain-to-active time, peak worker memory.

``.venv/bin/python bench/million.py [--quick] [--reuse] [--rounds N] [--clients N]``

1. Builds, in its own database (``BENCH_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/sift_bench_mil``
   / ``..._quick``), one project of 1M synthetic items (``--quick``: 100k) with overlap 2 and synthetic 384-d
   float16 vectors in the vector cache, items and vectors loaded with COPY (the helpers of bench/retrain_loop.py),
   plus 50k answers (``--quick``: 5k) from 6 reviewers over 25k items, spread over 30 days, with lead times,
   10% of them from the exploration sample. ``--reuse`` keeps a dataset already there.
2. Starts a real Celery worker (bench/retrain_loop.py's) and lets it train the first model and write its ranking
   of the whole pool; then commits one more answer the way a submit does and times commit -> the new ranking
   being active (the retrain loop's own measurement). Meanwhile it samples the worker's resident memory; the
   peak (VmHWM, and the sampled sum over the worker's process group) is the memory figure. Goal <= 4 GB.
3. Starts gunicorn (bench/queue_latency.py's: gthread workers, production settings, DEBUG off) and, over
   keep-alive HTTP connections, measures each page and endpoint below: the home page, the labelling page and
   the dashboard page (a policy lead's session cookie), ``/api/projects/``, ``/api/projects/{slug}/``, the stats
   summary and its five sub-endpoints, ``/models/``, and ``queue/next`` (reviewer tokens; each lease is skipped
   afterwards so the queue is not drained). First one request per stats endpoint on an empty stats cache (the
   cost of a recomputation, after a write), then ``--rounds`` rounds over every URL from ``--clients``
   concurrent clients, and prints p50/p95/p99 per URL. Goal: every page and endpoint <= 250 ms at p95.

Label Studio, measured on this box at 100k tasks: task list 56 ms, all-projects page 527 ms (issue 8).
The machine is a noisy, shared 2-core box: client, server, worker and database share the cores.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import os
import random
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from bench import queue_latency, retrain_loop  # noqa: E402
from bench._support import database_exists, db_name, recreate_database, stop_process_group  # noqa: E402
from learning.core.vocabulary import content_hash  # noqa: E402

SLUG = "bench-million"
OWNED_DATABASES = ("sift_bench_mil",)
TAXONOMY = retrain_loop.TAXONOMY
REVIEWERS = 6
PAGE_GOAL_MS = 250.0
MEMORY_GOAL_GB = 4.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k items, 5k answers, fewer rounds")
    parser.add_argument("--reuse", action="store_true", help="reuse the dataset if the bench database holds it")
    parser.add_argument("--items", type=int)
    parser.add_argument("--answers", type=int)
    parser.add_argument("--rounds", type=int, help="requests per URL per client")
    parser.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--worker-threads", type=int, default=1, help="BLAS threads in the Celery worker")
    args = parser.parse_args()
    args.items = args.items or (100_000 if args.quick else 1_000_000)
    args.answers = args.answers or (5_000 if args.quick else 50_000)
    args.rounds = args.rounds or (15 if args.quick else 30)
    default = "postgres://postgres@127.0.0.1:5432/sift_bench_mil" + ("_quick" if args.quick else "")
    args.database_url = os.environ.get("BENCH_DATABASE_URL", default)
    args.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/5")
    return args


class _Defaults(argparse.Namespace):
    """An option the other bench grew since (a store_true flag, say) reads as unset rather than crashing."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def _sub_args(args: argparse.Namespace, **extra: Any) -> argparse.Namespace:
    """The other benches' helpers read their own argument names; give each the slice it expects."""
    return _Defaults(database_url=args.database_url, redis_url=args.redis_url, **extra)


# --- the dataset ------------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    project_id: int
    lead_id: int
    reviewer_ids: list[int]
    tokens: list[str]  # reviewers' API tokens
    lead_token: str


def existing(n_items: int) -> Dataset | None:
    from labeling.models import ItemCount, Project

    project = Project.objects.filter(slug=SLUG).first()
    if project is None or ItemCount.objects.counts([project.pk])[project.pk].items != n_items:
        return None
    return _dataset(project.pk)


def _dataset(project_id: int) -> Dataset:
    from rest_framework.authtoken.models import Token

    tokens = dict(Token.objects.filter(user__username__startswith="mil-").values_list("user__username", "key"))
    from django.contrib.auth import get_user_model

    users = dict(get_user_model().objects.filter(username__startswith="mil-").values_list("username", "pk"))
    names = [f"mil-r{n}" for n in range(REVIEWERS)]
    return Dataset(project_id, users["mil-lead"], [users[n] for n in names], [tokens[n] for n in names],
                   tokens["mil-lead"])


def build(n_items: int, n_answers: int) -> Dataset:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from labeling.models import Annotation, Item, Membership, Project
    from labeling.services.projects import project_create
    from learning.services.embedding import embedder_for

    started = time.perf_counter()
    project = project_create(actor=None, slug=SLUG, name="A million items", taxonomy=TAXONOMY, overlap=2)
    Project.objects.filter(pk=project.pk).update(embedder=retrain_loop.EMBEDDER)
    user_model = get_user_model()
    users = [user_model.objects.create(username=f"mil-r{n}") for n in range(REVIEWERS)]
    lead = user_model.objects.create(username="mil-lead")
    Membership.objects.bulk_create([Membership(project=project, user=u, role="reviewer") for u in users]
                                   + [Membership(project=project, user=lead, role="policy_lead")])
    for user in [*users, lead]:
        Token.objects.create(user=user)
    rng = np.random.default_rng(20261202)
    classes = (rng.random(n_items) < 0.1).astype(np.int64)
    words = ("win", "cash", "prize", "call", "now", "meeting", "tomorrow", "lunch", "free", "offer", "reply", "stop")
    cache_name = embedder_for(retrain_loop.EMBEDDER).name
    now = datetime.now(UTC)
    chunk = 100_000
    with connection.cursor() as cursor:
        for start in range(0, n_items, chunk):
            stop = min(n_items, start + chunk)
            picks = rng.integers(0, len(words), size=(stop - start, 6))
            texts = [f"message {n}: " + " ".join(words[w] for w in row) for n, row in zip(range(start, stop), picks,
                                                                                           strict=True)]
            hashes = [content_hash(t) for t in texts]
            with cursor.cursor.copy(
                "COPY labeling_item (project_id, external_id, text, meta, content_hash, is_gold, n_required, n_done,"
                " boost, random_key, created_at, updated_at) FROM STDIN"
            ) as copy:
                for n, (text, digest) in enumerate(zip(texts, hashes, strict=True), start=start):
                    copy.write_row((project.pk, f"m{n}", text, json.dumps({"n": n}), digest, False, 2, 0, 0,
                                    random.random(), now, now))
            retrain_loop.copy_embeddings(cursor.cursor, cache_name, hashes,
                                         retrain_loop.synthetic_vectors(stop - start, rng, classes[start:stop]))
    loaded = time.perf_counter()
    # The answers: two reviewers per labelled item (overlap 2), mostly truthful, 30 days of history.
    ids = list(Item.objects.filter(project=project).order_by("id").values_list("id", flat=True))
    n_labelled = n_answers // 2
    chosen = rng.choice(len(ids), size=n_labelled, replace=False)
    truth = np.array(["ham", "spam"])
    version = project.current_taxonomy_version
    rows = []
    for k, i in enumerate(chosen):
        first = k % REVIEWERS
        for reviewer in (users[first], users[(first + 1 + k % (REVIEWERS - 1)) % REVIEWERS]):
            label = truth[classes[i]] if rng.random() > 0.08 else truth[1 - classes[i]]
            rows.append(Annotation(project=project, item_id=ids[i], reviewer=reviewer, taxonomy_version=version,
                                   labels=[str(label)], lead_time_ms=int(rng.integers(1500, 20000)),
                                   selection_reason="exploration" if k % 10 == 0 else "uncertainty",
                                   inclusion_probability=0.1 if k % 10 == 0 else 1.0, model_version=None))
    Annotation.objects.bulk_create(rows, batch_size=5000)
    with connection.cursor() as cursor:
        # Spread over 30 days (the timeline's buckets), and mark the items done (the ledger's triggers count them).
        cursor.execute("UPDATE labeling_annotation SET created_at = now() - (id %% 30) * interval '1 day' "
                       "- (id %% 86400) * interval '1 second' WHERE project_id = %s", [project.pk])
        cursor.execute("UPDATE labeling_item SET n_done = 2 WHERE id IN (SELECT item_id FROM labeling_annotation "
                       "WHERE project_id = %s)", [project.pk])
    connection.close()
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE labeling_item")
        conn.execute("VACUUM ANALYZE learning_embedding")
        conn.execute("VACUUM ANALYZE labeling_annotation")
    print(f"built {n_items:,} items + vectors in {loaded - started:.0f}s (COPY), {len(rows):,} answers over "
          f"{n_labelled:,} items, in {time.perf_counter() - started:.0f}s overall")
    return _dataset(project.pk)


def count_costs(project_id: int) -> tuple[float, float]:
    """The item counts the pages show, from the ledger vs the live aggregate over the pool (what every page
    request paid before the ledger), best of 5 each; and they must agree."""
    from labeling.models import ItemCount, ItemCounts
    from labeling.models.counters import ItemCountManager

    def best(fn: Any) -> tuple[float, Any]:
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            out = fn()
            runs.append(time.perf_counter() - started)
        return min(runs), out

    ledger, maintained = best(lambda: ItemCount.objects.counts([project_id])[project_id])
    live, counted = best(lambda: ItemCountManager._live([project_id], {project_id: ItemCounts()})[project_id])
    if maintained != counted:
        raise SystemExit(f"the ledger disagrees with the items: {maintained} != {counted}")
    return ledger, live


# --- the worker: retrain-to-active and memory -------------------------------------------------------------------


class MemorySampler(threading.Thread):
    """Sums VmRSS over the worker's process group every 0.1 s; VmHWM of its main process is the kernel's peak."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.peak_rss = 0
        self.stop_event = threading.Event()

    @staticmethod
    def _status(pid: int, key: str) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def group(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == self.pgid:
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak_rss = max(self.peak_rss, sum(self._status(pid, "VmRSS") for pid in self.group()))
            time.sleep(0.1)

    def hwm(self) -> int:
        return max((self._status(pid, "VmHWM") for pid in self.group()), default=0)


def retrain(args: argparse.Namespace, dataset: Dataset) -> dict[str, Any]:
    from labeling.models import Item
    from learning.jobs import signal as request_now
    from learning.models import ModelVersion

    worker = retrain_loop.Worker(_sub_args(args, threads=args.worker_threads))
    sampler = MemorySampler(os.getpgid(worker.proc.pid))
    sampler.start()
    try:
        first_started = time.perf_counter()
        first: float | None = None  # None: a reused dataset already had its first model
        if not ModelVersion.objects.filter(project_id=dataset.project_id, status="active").exists():
            request_now(kind="retrain", project_id=dataset.project_id)
            retrain_loop.wait_idle(dataset.project_id)
            first = time.perf_counter() - first_started
        item_id = Item.objects.filter(project_id=dataset.project_id, n_done=0).order_by("-id").values_list(
            "id", flat=True).first()
        assert item_id is not None
        retrain_loop.wait_idle(dataset.project_id)
        seconds, version = retrain_loop.submit_and_wait(dataset.project_id, item_id, dataset.reviewer_ids[0])
        retrain_loop.wait_idle(dataset.project_id)
        timings = ModelVersion.objects.get(project_id=dataset.project_id, version=version).timings
    finally:
        sampler.stop_event.set()
        sampler.join(timeout=5)
        hwm = sampler.hwm()
        worker.stop()
    return {"first": first, "e2e": seconds, "version": version, "timings": timings, "hwm": hwm,
            "sampled_peak": sampler.peak_rss}


# --- HTTP -------------------------------------------------------------------------------------------------------


class Client:
    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str) -> tuple[int, bytes, float]:
        for attempt in range(2):
            try:
                started = time.perf_counter()
                self.conn.request(method, path, headers=self.headers)
                response = self.conn.getresponse()
                body = response.read()
                return response.status, body, (time.perf_counter() - started) * 1000
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def lead_session(dataset: Dataset) -> tuple[str, str]:
    """A logged-in session for the policy lead, made the way login makes one (cookie name, value)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model

    user = get_user_model().objects.get(pk=dataset.lead_id)
    session = importlib.import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[-1]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return settings.SESSION_COOKIE_NAME, str(session.session_key)


def urls() -> list[tuple[str, str, str]]:
    """(name, kind, path): kind is the credential a URL is fetched with."""
    api = f"/api/projects/{SLUG}"
    return [
        ("home page /", "session", "/"),
        ("labelling page", "session", f"/projects/{SLUG}/label/"),
        ("dashboard page", "session", f"/projects/{SLUG}/dashboard/"),
        ("GET /api/projects/", "token", "/api/projects/"),
        ("GET /api/projects/{slug}/", "token", f"{api}/"),
        ("stats/", "token", f"{api}/stats/"),
        ("stats/agreement", "token", f"{api}/stats/agreement"),
        ("stats/reviewers", "token", f"{api}/stats/reviewers"),
        ("stats/prevalence", "token", f"{api}/stats/prevalence"),
        ("stats/queue-health", "token", f"{api}/stats/queue-health"),
        ("stats/timeline", "token", f"{api}/stats/timeline"),
        ("models/", "token", f"{api}/models/"),
        ("progress", "token", f"{api}/progress"),
        ("POST queue/next", "reviewer", f"{api}/queue/next"),
    ]


@dataclass
class Timings:
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def http_phase(args: argparse.Namespace, dataset: Dataset) -> tuple[Timings, dict[str, float]]:
    import redis

    secret = os.environ["SIFT_SECRET_KEY"]
    cookie_name, cookie = lead_session(dataset)
    server = queue_latency.start_server(
        _sub_args(args, port=args.port, workers=args.workers, threads=args.threads, no_retrain_signal=False),
        secret, dataset.lead_token)
    session = {"Cookie": f"{cookie_name}={cookie}"}
    token = {"Authorization": f"Token {dataset.lead_token}"}
    timings = Timings()
    cold: dict[str, float] = {}
    try:
        # The cost of a recomputation: each stats endpoint once on an empty stats cache (what the first read
        # after a write pays).
        redis.Redis.from_url(args.redis_url).flushdb()
        client = Client(args.port, token)
        for name, kind, path in urls():
            if kind == "token" and "/stats/" in path:
                status, body, ms = client.request("GET", path)
                if status != 200:
                    raise SystemExit(f"{path}: {status} {body[:300]!r}")
                cold[name] = ms
        # Warm-up (gunicorn workers import lazily; one request per URL per worker).
        for _ in range(args.workers):
            for _name, kind, path in urls():
                if kind != "reviewer":
                    Client(args.port, session if kind == "session" else token).request("GET", path)

        def run(index: int) -> None:
            clients = {"session": Client(args.port, session), "token": Client(args.port, token)}
            reviewer = Client(args.port, {"Authorization": f"Token {dataset.tokens[index % len(dataset.tokens)]}",
                                          "Content-Type": "application/json"})
            order = urls()
            for _round in range(args.rounds):
                random.Random(index * 1000 + _round).shuffle(order)
                for name, kind, path in order:
                    if kind == "reviewer":
                        status, body, ms = reviewer.request("POST", path)
                        if status == 200:
                            lease = json.loads(body)["lease"]["id"]
                            reviewer.request("POST", f"/api/leases/{lease}/skip")
                        elif status != 204:
                            timings.errors.append(f"{path}: {status} {body[:200]!r}")
                    else:
                        status, body, ms = clients[kind].request("GET", path)
                        if status != 200:
                            timings.errors.append(f"{path}: {status} {body[:200]!r}")
                    timings.samples.setdefault(name, []).append(ms)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stop_process_group(server, timeout=20)
    return timings, cold


# --- main -------------------------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    secret = secrets.token_urlsafe(40)
    fresh = not args.reuse or not database_exists(args.database_url)
    if fresh:
        recreate_database(args.database_url, OWNED_DATABASES)
    queue_latency.setup_django(_sub_args(args), secret)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    dataset = None if fresh else existing(args.items)
    if dataset is None:
        if not fresh:
            from django.db import connection

            connection.close()
            recreate_database(args.database_url, OWNED_DATABASES)
            call_command("migrate", verbosity=0)
        dataset = build(args.items, args.answers)
    else:
        print(f"reusing the {args.items:,}-item dataset in {db_name(args.database_url)}")
    host = urlsplit(args.redis_url)
    print(f"million bench: {args.items:,} items, {args.answers:,} answers; redis {host.netloc}{host.path}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")

    ledger, live = count_costs(dataset.project_id)
    print(f"item counts for the pages: ledger {ledger * 1000:.1f} ms vs counting the pool {live * 1000:.0f} ms "
          f"({live / ledger:.0f}x; both give the same figures)")

    loop = retrain(args, dataset)
    t = loop["timings"]
    first = "reused" if loop["first"] is None else f"{loop['first']:.1f}s"
    print(f"\nretrain at {args.items:,}: first model (cold worker) {first}; commit -> new ranking active "
          f"{loop['e2e']:.1f}s (v{loop['version']}; load {t.get('load', float('nan')):.1f}s, fit "
          f"{t.get('fit', float('nan')):.1f}s, score {t.get('score', float('nan')):.1f}s, write "
          f"{t.get('write', float('nan')):.1f}s, activate {t.get('activate', float('nan')):.2f}s)")
    gb = max(loop["hwm"], loop["sampled_peak"]) / 2**30
    print(f"worker peak memory: VmHWM {loop['hwm'] / 2**30:.2f} GB, sampled RSS peak {loop['sampled_peak'] / 2**30:.2f}"
          f" GB (goal <= {MEMORY_GOAL_GB:.0f} GB) -> {'met' if gb <= MEMORY_GOAL_GB else 'NOT met'}")
    print(f"load average after the retrains: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    timings, cold = http_phase(args, dataset)
    print(f"\nHTTP, gunicorn {args.workers}x{args.threads} threads, {args.clients} concurrent clients, {args.rounds} "
          f"rounds each (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    print(f"  {'page / endpoint':<28} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'cold ms':>8}")
    misses = []
    for name, _kind, _path in urls():
        values = timings.samples.get(name, [])
        p95 = queue_latency.percentile(values, 95)
        coldness = f"{cold[name]:8.0f}" if name in cold else f"{'':>8}"
        print(f"  {name:<28} {len(values):>5} {queue_latency.percentile(values, 50):8.1f} {p95:8.1f} "
              f"{queue_latency.percentile(values, 99):8.1f} {coldness}")
        if not p95 <= PAGE_GOAL_MS:
            misses.append(f"{name}: p95 {p95:.0f} ms > {PAGE_GOAL_MS:.0f} ms")
    print("  (cold: the first request on an empty stats cache, i.e. the recomputation a write triggers)")
    print("Label Studio at 100k tasks on this box: task list 56 ms, all-projects page 527 ms.")
    if gb > MEMORY_GOAL_GB:
        misses.append(f"worker memory {gb:.2f} GB > {MEMORY_GOAL_GB:.0f} GB")
    if timings.errors:
        print(f"errors: {len(timings.errors)}, e.g. {timings.errors[:3]}")
    print("\nall goals met" if not misses and not timings.errors else "\ngoals missed:\n  " + "\n  ".join(misses))
    if timings.errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
