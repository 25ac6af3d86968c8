"""Reviewer-queue latency at 1M items: next + submit over HTTP, against the same SQL with nothing on top.

``.venv/bin/python bench/queue_latency.py [--quick] [--reuse]``

1. Builds a project of 1M synthetic items (``--quick``: 100k) with overlap 2 in its own PostgreSQL database
   (``BENCH_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/sift_queue_bench`` / ``..._quick``),
   items loaded with COPY, plus an active ranking of every item. By default the database is new (dropped and
   rebuilt); ``--reuse`` keeps a dataset that is already there and only resets its labels and leases.
   Then it runs everything below once per *database state* (``--states``, default ``fresh,analyzed,history``):
   ``fresh``, no statistics at all (a new deployment, a bulk load before autovacuum); ``analyzed``, after
   ANALYZE (the long-lived database); ``history``, with ``--history`` answered items of earlier work (leases
   and annotations by other reviewers) and the statistics taken while those tables were still empty.
2. Prints EXPLAIN (ANALYZE) of the checkout's scans on that data, to show the index walks.
3. Starts gunicorn (gthread workers, production settings: DEBUG off) and runs 64 reviewer clients
   (``--quick``: 16), each a keep-alive HTTP connection, paced so that together they offer ``--rate`` cycles/s
   (200; a reviewer's think time), for ``--duration`` seconds after a warm-up, in two phases:
   a. two calls per item: queue/next, then submit;
   b. one call per item: submit with ``next: true``, whose answer carries the next lease (the labelling page's
      loop); timed as "submit+next", the reviewer's whole wait between two items.
4. Stops the server and runs the *raw SQL floor* with the same clients and pacing, in the same two shapes: the
   statements the service issues (imported from labeling/services/queues.py: membership lock, held-lease probe,
   claim scan, claim; then the submit's locks, INSERTs, UPDATEs, audit chain and retrain flag), in plain
   psycopg, one connection per client, no Django, no HTTP.
5. Prints p50/p95/p99 for both, their ratios, the achieved cycles/s, CPU ms per cycle of the server, this
   database's PostgreSQL backends and the client process, the load average, and checks the goals: next-item p99
   <= 50 ms at the offered rate in every state, API <= 3x the raw floor, and the cost per labelled item: web +
   PostgreSQL CPU ms per cycle <= 8. Then it checks the queue's invariant on what the run wrote (no item
   over-held, one annotation per item and reviewer). A table per state closes the output.

Label Studio, for reference: next-task p99 of 6 s with 8 annotators and 39 s with 32.
The machine is a shared 2-core box: client, server and database compete for the same cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from bench._support import admin_url, database_exists, db_name, recreate_database, stop_process_group  # noqa: E402
from learning.core.vocabulary import content_hash  # noqa: E402

SLUG = "bench-queue"
TAXONOMY = {"name": "Bench", "multi_label": False,
            "labels": [{"key": "ham", "name": "Ham"}, {"key": "spam", "name": "Spam"}]}
WORDS = ("win", "cash", "prize", "call", "now", "meeting", "tomorrow", "lunch", "free", "offer", "reply", "stop")


# --- configuration ----------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k items, 16 clients, short run")
    parser.add_argument("--reuse", action="store_true", help="reuse the bench database if it holds the dataset")
    parser.add_argument("--states", default="fresh,analyzed,history",
                        help="database states to run, in order (fresh, analyzed, history)")
    parser.add_argument("--history", type=int, default=None,
                        help="items answered by earlier work in the history state (default: a tenth of --items)")
    parser.add_argument("--items", type=int)
    parser.add_argument("--clients", type=int)
    parser.add_argument("--rate", type=float, help="offered cycles/s over all clients (0: as fast as possible)")
    parser.add_argument("--duration", type=float, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds at the start of each phase")
    parser.add_argument("--workers", type=int, default=6, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--no-audit", action="store_true",
                        help="skip the submit's audit row (server and raw floor), to attribute the audit chain's cost")
    parser.add_argument("--no-retrain-signal", action="store_true",
                        help="stub learning.scheduling.request_retrain in the server, to attribute its cost")
    args = parser.parse_args()
    defaults = ({"items": 100_000, "clients": 16, "rate": 100.0, "duration": 10.0, "warmup": 5.0} if args.quick
                else {"items": 1_000_000, "clients": 64, "rate": 200.0, "duration": 20.0, "warmup": 5.0})
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    default_url = "postgres://postgres@127.0.0.1:5432/sift_queue_bench" + ("_quick" if args.quick else "")
    args.database_url = os.environ.get("BENCH_DATABASE_URL", default_url)
    args.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/3")
    return args


def server_env(args: argparse.Namespace, secret: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIFT_")}
    env.update({
        "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url, "SIFT_SECRET_KEY": secret,
        "SIFT_DEBUG": "0", "SIFT_SSL_REDIRECT": "0", "SIFT_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SIFT_LOG_LEVEL": "WARNING", "SIFT_DB_CONN_MAX_AGE": "600", "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore:No directory at:UserWarning",
    })
    return env


# --- the database -----------------------------------------------------------------------------------------------


OWNED_DATABASES = ("sift_queue_bench", "sift_bench_")


def setup_django(args: argparse.Namespace, secret: str) -> None:
    os.environ.update(server_env(args, secret))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


@dataclass
class Dataset:
    project_id: int
    reviewers: list[tuple[int, str]]  # (user id, API token)
    version_id: int


def dataset_matches(n_items: int, n_clients: int) -> Dataset | None:
    from labeling.models import Item, Project

    project = Project.objects.filter(slug=SLUG).first()
    if project is None or Item.objects.filter(project=project).count() != n_items:
        return None
    return load_reviewers(project, n_clients)


def load_reviewers(project: Any, n_clients: int) -> Dataset | None:
    from rest_framework.authtoken.models import Token

    tokens = list(Token.objects.filter(user__memberships__project=project, user__username__startswith="bench-r")
                  .order_by("user__username").values_list("user_id", "key"))
    if len(tokens) < n_clients:
        return None
    return Dataset(project.pk, tokens[:n_clients], project.current_taxonomy_version_id)


def build_dataset(n_items: int, n_clients: int, overlap: int) -> Dataset:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from labeling.models import Membership, Project, RankingEntry
    from labeling.services.projects import project_create

    call_command("migrate", verbosity=0)
    project = project_create(actor=None, slug=SLUG, name="Queue bench", taxonomy=TAXONOMY, overlap=overlap)
    user_model = get_user_model()
    users = user_model.objects.bulk_create([user_model(username=f"bench-r{n:03d}") for n in range(max(n_clients, 64))])
    Membership.objects.bulk_create([Membership(project=project, user=user, role="reviewer") for user in users])
    for user in users:
        Token.objects.create(user=user)

    started = time.perf_counter()
    now = datetime.now(UTC)
    rng = random.Random(20240601)
    with connection.cursor() as cursor, cursor.cursor.copy(
        "COPY labeling_item (project_id, external_id, text, meta, content_hash, is_gold, n_required, n_done, "
        "boost, random_key, created_at, updated_at) FROM STDIN"
    ) as copy:
        for n in range(n_items):
            text = f"message {n}: " + " ".join(rng.choice(WORDS) for _ in range(8))
            copy.write_row((project.pk, f"b{n}", text, Jsonb({"n": n}), content_hash(text),
                            False, overlap, 0, 0, rng.random(), now, now))
    loaded = time.perf_counter()
    # A ranking of every item in an order unrelated to random_key (so ranking and fallback differ).
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO labeling_rankingentry (project_id, ranking_version, rank, item_id, score, reason,
                                               inclusion_probability, suggested_label, suggested_confidence)
            SELECT project_id, 1, (row_number() OVER (ORDER BY hashtext(id::text), id)) - 1, id,
                   0.5, CASE WHEN id %% 10 = 0 THEN 'exploration' ELSE 'uncertainty' END,
                   CASE WHEN id %% 10 = 0 THEN 0.1 END, CASE WHEN id %% 2 = 0 THEN 'spam' ELSE 'ham' END, 0.7
            FROM labeling_item WHERE project_id = %s""", [project.pk])
    RankingEntry.objects.activate(project_id=project.pk, ranking_version=1)
    print(f"built {n_items:,} items in {loaded - started:.1f}s (COPY) and a ranking of them in "
          f"{time.perf_counter() - loaded:.1f}s")
    dataset = load_reviewers(Project.objects.get(pk=project.pk), n_clients)
    assert dataset is not None
    return dataset


def reset_state(dataset: Dataset) -> None:
    """Back to no labels and no leases, so every run starts from the same queue."""
    from django.db import connection

    from labeling.models import Project
    from labeling.services.queues import queue_rank_floor_reset

    with connection.cursor() as cursor:
        for sql in ("DELETE FROM labeling_adjudication WHERE project_id = %s",
                    "DELETE FROM labeling_annotation WHERE project_id = %s",
                    "DELETE FROM labeling_lease WHERE project_id = %s",
                    "UPDATE labeling_item SET n_done = 0 WHERE project_id = %s AND n_done > 0"):
            cursor.execute(sql, [dataset.project_id])
        # The audit log is append-only (a trigger refuses row deletes); the bench database holds nothing but this
        # project, so its log and chain heads are emptied whole (TRUNCATE is the owner's statement, not a row event).
        cursor.execute("TRUNCATE labeling_auditevent")
        cursor.execute("DELETE FROM labeling_auditchainhead")
    queue_rank_floor_reset(project=Project.objects.get(pk=dataset.project_id))
    connection.close()
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM labeling_item, labeling_lease, labeling_annotation, labeling_auditevent")


QUEUE_TABLES = ("labeling_item", "labeling_rankingentry", "labeling_lease", "labeling_annotation",
                "labeling_membership")


def enter_state(state: str, dataset: Dataset, history: int) -> None:
    """Put the statistics (and, for ``history``, earlier work) in the shape of ``state``; see the docstring."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        if state == "fresh":
            # As a new database has them: no pg_statistic rows, no size estimates (needs a superuser).
            oids = [row[0] for row in conn.execute(
                "SELECT c.oid FROM pg_class c WHERE c.relname = ANY(%s) OR c.oid IN (SELECT indexrelid FROM pg_index "
                "i JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname = ANY(%s))",
                [list(QUEUE_TABLES), list(QUEUE_TABLES)]).fetchall()]
            conn.execute("DELETE FROM pg_statistic WHERE starelid = ANY(%s)", [oids])
            conn.execute("UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid = ANY(%s)", [oids])
        elif state == "analyzed":
            conn.execute("ANALYZE " + ", ".join(QUEUE_TABLES))
        elif state == "history":
            conn.execute("ANALYZE " + ", ".join(QUEUE_TABLES))  # while leases and answers are still empty
            others = [row[0] for row in conn.execute(
                "SELECT u.id FROM auth_user u WHERE u.username LIKE 'bench-h%%' ORDER BY u.id").fetchall()]
            if not others:
                others = [row[0] for row in conn.execute(
                    "INSERT INTO auth_user (username, password, is_superuser, is_staff, is_active, first_name, "
                    "last_name, email, date_joined) SELECT 'bench-h' || g, '!', false, false, true, '', '', '', now() "
                    "FROM generate_series(1, 8) g RETURNING id").fetchall()]
                conn.execute("INSERT INTO labeling_membership (project_id, user_id, role, created_at) "
                             "SELECT %s, unnest(%s::bigint[]), 'reviewer', now()", [dataset.project_id, others])
            # One submitted lease and one answer per item (of overlap 2) on the last `history` items by id: the
            # lease and annotation tables grow, the checkout's probes must stay index look-ups.
            conn.execute(
                "WITH picked AS (SELECT id, row_number() OVER (ORDER BY id DESC) AS n FROM labeling_item "
                "WHERE project_id = %s ORDER BY id DESC LIMIT %s), "
                "leased AS (INSERT INTO labeling_lease (project_id, item_id, reviewer_id, state, created_at, "
                "expires_at, renewals, closed_at, taxonomy_version_id, selection_reason, suggestion_hidden) "
                "SELECT %s, p.id, (%s::bigint[])[1 + p.n %% %s], 'submitted', now(), now(), 0, now(), %s, "
                "'uncertainty', false FROM picked p RETURNING id, item_id, reviewer_id) "
                "INSERT INTO labeling_annotation (project_id, item_id, reviewer_id, lease_id, taxonomy_version_id, "
                "labels, comment, selection_reason, created_at) SELECT %s, l.item_id, l.reviewer_id, l.id, %s, "
                "'[\"ham\"]', '', 'uncertainty', now() FROM leased l",
                [dataset.project_id, history, dataset.project_id, others, len(others), dataset.version_id,
                 dataset.project_id, dataset.version_id])
            conn.execute("UPDATE labeling_item SET n_done = 1 WHERE project_id = %s AND id IN (SELECT item_id FROM "
                         "labeling_annotation WHERE project_id = %s)", [dataset.project_id, dataset.project_id])
        else:
            raise SystemExit(f"unknown state {state!r}: fresh, analyzed or history")


# --- plans ------------------------------------------------------------------------------------------------------


def print_plans(dataset: Dataset, *, when: str) -> None:
    from labeling.services import queues

    reviewer_id = dataset.reviewers[0][0]
    now = datetime.now(UTC)
    params = {"project": dataset.project_id, "reviewer": reviewer_id, "now": now, "batch": queues.CLAIM_BATCH,
              "version": 1, "floor": 0, "expires": now + timedelta(seconds=60), "taxonomy_version": dataset.version_id,
              "reason": "uncertainty", "score": 0.5, "model_version": 1, "inclusion": None, "suggestion": None,
              "hidden": False}
    print(f"\nEXPLAIN ANALYZE of the checkout's statements on this data (first reviewer, {when}; each after the "
          "checkout's first statement, which sets the planner up):")
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        first = conn.execute("SELECT item_id FROM labeling_rankingentry WHERE project_id = %s AND ranking_version = 1 "
                             "AND rank = 0", [dataset.project_id]).fetchone()
        params["item"] = first[0] if first else 0
        for name, template in (("first open rank", queues.FIRST_OPEN_RANK_SQL),
                               ("held lease + any boosted?", queues.HELD_AND_BOOSTED_SQL),
                               ("boost scan", queues.BOOST_SCAN_SQL), ("ranking scan", queues.RANKING_SCAN_SQL),
                               ("fallback scan", queues.FALLBACK_SCAN_SQL), ("claim", queues.CLAIM_SQL)):
            sql, _ = render(template)
            lock, _ = render(queues.MEMBERSHIP_LOCK_SQL)
            conn.execute(lock, params)
            rows = conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + sql, params).fetchall()
            conn.rollback()  # EXPLAIN ANALYZE really takes the row locks
            lines = [row[0] for row in rows]
            interesting = [line.strip() for line in lines if any(
                word in line for word in ("Index", "Seq Scan", "Execution Time", "Limit", "LockRows", "SubPlan"))]
            print(f"  {name}:")
            for line in interesting[:12]:
                print(f"      {line}")


def render(template: str, rejected: list[int] | None = None) -> tuple[str, dict[str, int]]:
    from labeling.services import queues

    return queues.render_sql(template, rejected=rejected or [])


# --- clients ----------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float
    next_ms: float
    submit_ms: float


@dataclass
class ClientResult:
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cycles: int = 0


class HttpClient:
    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else b""
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, (json.loads(data) if data else None)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")


Cycle = Callable[[], tuple[float, float] | None]  # -> (next ms, submit ms), or None when the queue is empty


CpuProbe = Callable[[], dict[str, float]]  # -> CPU seconds used so far, per part (server, postgres, client)


def paced_run(cycles: list[Cycle], *, rate: float, warmup: float, duration: float,
              cpu: CpuProbe | None = None) -> tuple[list[ClientResult], float, dict[str, float]]:
    """Run each client's cycle on its own thread, together offering ``rate`` cycles/s, and time them.

    Returns the results, the measured window's length and the CPU seconds each part used in that window.
    """
    results = [ClientResult() for _ in cycles]
    interval = len(cycles) / rate if rate > 0 else 0.0
    start = time.perf_counter() + 0.5
    measure_from, stop_at = start + warmup, start + warmup + duration

    def loop(index: int) -> None:
        result = results[index]
        due = start + (interval * index / len(cycles))
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            if due > now:
                time.sleep(due - now)
            began = time.perf_counter()
            try:
                timing = cycles[index]()
            except Exception as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                return
            if timing is None:
                return
            result.cycles += 1
            if began >= measure_from and began < stop_at:
                result.samples.append(Sample(began, *timing))
            due = max(due + interval, began) if interval else began

    used: dict[str, float] = {}

    def watch() -> None:
        time.sleep(max(0.0, measure_from - time.perf_counter()))
        first = cpu() if cpu else {}
        time.sleep(max(0.0, stop_at - time.perf_counter()))
        last = cpu() if cpu else {}
        used.update({part: last[part] - first.get(part, 0.0) for part in last})

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(cycles))]
    threads.append(threading.Thread(target=watch))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, duration, used


def api_cycle(client: HttpClient, counter: list[int]) -> Cycle:
    def cycle() -> tuple[float, float] | None:
        t0 = time.perf_counter()
        status, body = client.post(f"/api/projects/{SLUG}/queue/next")
        t1 = time.perf_counter()
        if status == 204:
            return None
        if status != 200:
            raise RuntimeError(f"queue/next answered {status}: {body}")
        counter[0] += 1
        label = "spam" if counter[0] % 3 else "ham"
        status, body = client.post(f"/api/leases/{body['lease']['id']}/submit",
                                   {"labels": [label], "idempotency_key": secrets.token_hex(8), "lead_time_ms": 1500})
        t2 = time.perf_counter()
        if status != 201:
            raise RuntimeError(f"submit answered {status}: {body}")
        return (t1 - t0) * 1000, (t2 - t1) * 1000

    return cycle


def api_chained_cycle(client: HttpClient, counter: list[int]) -> Cycle:
    """The labelling page's loop: one submit with ``next: true`` per item, whose answer carries the next lease.

    Times the whole round trip (the reviewer's wait for the next item) as the "next" sample; the very first
    item of each client comes from queue/next and is not timed.
    """
    held: list[int] = []

    def cycle() -> tuple[float, float] | None:
        if not held:
            status, body = client.post(f"/api/projects/{SLUG}/queue/next")
            if status != 200:
                return None
            held.append(body["lease"]["id"])
        counter[0] += 1
        label = "spam" if counter[0] % 3 else "ham"
        t0 = time.perf_counter()
        status, body = client.post(f"/api/leases/{held.pop()}/submit",
                                   {"labels": [label], "idempotency_key": secrets.token_hex(8), "lead_time_ms": 1500,
                                    "next": True})
        t1 = time.perf_counter()
        if status != 201:
            raise RuntimeError(f"submit answered {status}: {body}")
        if body["next"] is None:
            return None
        held.append(body["next"]["lease"]["id"])
        return (t1 - t0) * 1000, float("nan")

    return cycle


class RawQueue:
    """The service's statements in plain psycopg: the floor under the ORM, DRF, auth and HTTP."""

    def __init__(self, url: str, dataset: Dataset, reviewer_id: int, lease_seconds: int, floors: dict[str, float],
                 lock: threading.Lock) -> None:
        self.conn = psycopg.connect(url)
        self.dataset, self.reviewer_id, self.lease_seconds = dataset, reviewer_id, lease_seconds
        self.floors, self.lock = floors, lock
        self.version = 1
        self.held: int | None = None
        self.with_audit = True

    def floor(self) -> int | None:
        # The service keeps this hint in the cache and re-reads it every RANK_FLOOR_REFRESH s; here it is shared
        # process memory with the same refresh period (no cache round trip: a fair floor).
        from labeling.services import queues

        with self.lock:
            known, checked = self.floors.get("floor", 0), self.floors.get("checked", 0.0)
        if time.monotonic() - checked < queues.RANK_FLOOR_REFRESH:
            return int(known)
        sql, _ = render(queues.FIRST_OPEN_RANK_SQL)
        row = self.conn.execute(sql, {"project": self.dataset.project_id, "version": self.version,
                                      "floor": known}).fetchone()
        if row is None:
            return None
        with self.lock:
            self.floors["floor"] = max(self.floors.get("floor", 0), row[0])
            self.floors["checked"] = time.monotonic()
        return int(row[0])

    def checkout(self) -> int | None:
        from labeling.services import queues

        conn, p, me = self.conn, self.dataset.project_id, self.reviewer_id
        sql, _ = render(queues.MEMBERSHIP_LOCK_SQL)
        conn.execute(sql, {"project": p, "reviewer": me})
        floor = self.floor()  # inside the checkout, under its planner settings, as the service reads it
        sql, _ = render(queues.HELD_AND_BOOSTED_SQL)
        held_row = conn.execute(sql, {"project": p, "reviewer": me, "now": datetime.now(UTC)}).fetchone()
        assert held_row is not None
        held, boosted = held_row
        if held is not None:
            conn.execute("SELECT l.id, i.external_id, i.text, i.meta FROM labeling_lease l "
                         "JOIN labeling_item i ON i.id = l.item_id WHERE l.id = %s", [held]).fetchone()
            conn.commit()
            return int(held)
        rejected: list[int] = []
        stages: list[tuple[str, dict[str, Any]]] = [(queues.BOOST_SCAN_SQL, {})] if boosted else []
        if floor is not None:
            stages.append((queues.RANKING_SCAN_SQL, {"version": self.version, "floor": floor}))
        stages.append((queues.FALLBACK_SCAN_SQL, {}))
        for template, extra in stages:
            for _round in range(queues.MAX_SCAN_ROUNDS):
                sql, names = render(template, rejected)
                rows = conn.execute(sql, {"project": p, "reviewer": me, "now": datetime.now(UTC),
                                          "batch": queues.CLAIM_BATCH, **extra, **names}).fetchall()
                if not rows:
                    break
                for row in rows:
                    lease_id = self.claim(row, from_ranking=template is queues.RANKING_SCAN_SQL)
                    if lease_id is not None:
                        conn.commit()
                        return lease_id
                    rejected.append(row[0])
        conn.commit()
        return None

    def claim(self, row: tuple[Any, ...], *, from_ranking: bool) -> int | None:
        from labeling.services import queues

        now = datetime.now(UTC)
        if from_ranking:
            _id, _ext, _text, _meta, _rank, score, reason, inclusion, label, confidence = row
            suggestion = Jsonb({"label": label, "confidence": confidence}) if label else None
            selection = {"reason": reason, "score": score, "model_version": self.version, "inclusion": inclusion}
        else:
            suggestion = None
            selection = {"reason": "fallback_random", "score": None, "model_version": None, "inclusion": None}
        sql, _ = render(queues.CLAIM_SQL)
        created = self.conn.execute(sql, {
            "item": row[0], "reviewer": self.reviewer_id, "now": now,
            "expires": now + timedelta(seconds=self.lease_seconds), "taxonomy_version": self.dataset.version_id,
            "suggestion": suggestion, "hidden": False, **selection}).fetchone()
        return None if created is None else int(created[0])

    def submit(self, lease_id: int, label: str) -> None:
        from labeling.services.queues import queue_planner_settings
        from labeling.services.taxonomy_migrations import _ANSWER_LOCK_FOR_LEASE_SQL, ANSWER_LOCK_CLASS

        conn = self.conn
        # The submit's first statement: the project's answer lock, shared, and the queue's planner settings.
        conn.execute(_ANSWER_LOCK_FOR_LEASE_SQL.format(also=", " + queue_planner_settings()),
                     [ANSWER_LOCK_CLASS, lease_id]).fetchall()
        # The item lock also reads the current taxonomy version, and the lease lock the lease's (as the service's,
        # labeling/services/submit_rows.py).
        item = conn.execute(
            "SELECT i.id, i.is_gold, i.gold_labels, i.n_done, i.n_required, p.current_taxonomy_version_id "
            "FROM labeling_item i JOIN labeling_project p ON p.id = i.project_id "
            "WHERE i.id = (SELECT item_id FROM labeling_lease WHERE id = %s) FOR NO KEY UPDATE OF i",
            [lease_id]).fetchone()
        lease = conn.execute(
            "SELECT l.id, l.reviewer_id, l.state, l.expires_at, l.selection_reason, l.selection_score, "
            "l.inclusion_probability, l.model_version, l.suggestion, l.project_id, v.number "
            "FROM labeling_lease l LEFT JOIN LATERAL (SELECT * FROM labeling_taxonomyversion v "
            "WHERE v.id = l.taxonomy_version_id OFFSET 0) v ON true WHERE l.id = %s FOR NO KEY UPDATE OF l",
            [lease_id]).fetchone()
        assert item is not None and lease is not None
        now = datetime.now(UTC)
        if lease[1] != self.reviewer_id or lease[2] != "active" or lease[3] <= now:
            raise RuntimeError(f"raw submit refused: {lease}")
        # The answer, the lease's close and the item's count in one statement (the service's CTE).
        annotation = conn.execute(
            "WITH answer AS (INSERT INTO labeling_annotation (project_id, item_id, reviewer_id, lease_id, "
            "taxonomy_version_id, labels, comment, lead_time_ms, selection_reason, selection_score, "
            "inclusion_probability, model_version, suggestion_shown, gold_correct, idempotency_key, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, '', 1500, %s, %s, %s, %s, %s, NULL, %s, %s) RETURNING id), "
            "closed AS (UPDATE labeling_lease SET state = 'submitted', closed_at = %s WHERE id = %s), "
            "counted AS (UPDATE labeling_item SET n_done = n_done + 1 WHERE id = %s) SELECT id FROM answer",
            [lease[9], item[0], self.reviewer_id, lease_id, self.dataset.version_id, Jsonb([label]), lease[4],
             lease[5], lease[6], lease[7], Jsonb(lease[8]) if lease[8] is not None else None,
             secrets.token_hex(8), now, now, lease_id, item[0]]).fetchone()
        assert annotation is not None
        if item[3] + 1 >= item[4]:
            # A submit that finishes the item asks whether it needs adjudication (its answers, any open case).
            from labeling.services import adjudication

            conn.execute(adjudication._ANSWERS_SQL, [item[0]]).fetchall()
        if self.with_audit:
            self.audit(project_id=lease[9], annotation_id=annotation[0], now=now,
                       data={"lease_id": lease_id, "item_id": item[0], "labels": [label],
                             "taxonomy_version": lease[10]})
        # The label counter, the submit's last write (labeling/models/label_counter.py).
        conn.execute("INSERT INTO labeling_labelcounter (project_id, value) VALUES (%s, 1) ON CONFLICT (project_id) "
                     "DO UPDATE SET value = labeling_labelcounter.value + 1", [lease[9]])
        conn.commit()
        # The retrain request after commit (learning.jobs.signal): nothing but a read while a retrain is
        # already pending; otherwise set the dirty flag and try the enqueue CAS.
        from learning import jobs

        stale_before = now - jobs.queued_stale_after()
        pending = conn.execute(jobs._ALREADY_PENDING_SQL, [lease[9], "retrain", stale_before]).fetchone()
        conn.commit()
        if pending is None:
            conn.execute("UPDATE learning_learningjob SET dirty = true, requested_at = %s "
                         "WHERE project_id = %s AND kind = 'retrain'", [now, lease[9]])
            conn.commit()
            conn.execute("UPDATE learning_learningjob SET queued_at = %s WHERE project_id = %s AND kind = 'retrain' "
                         "AND dirty AND (queued_at IS NULL OR queued_at < %s) AND running_token IS NULL",
                         [now, lease[9], stale_before])
            conn.commit()

    def audit(self, *, project_id: int, annotation_id: int, now: datetime, data: dict[str, Any]) -> None:
        """audit_record's statements (imported, so the floor follows them): move the chain head, append the row."""
        from labeling.models import AuditEvent, audit_chain_key
        from labeling.models.audit import canonical_json
        from labeling.services import audit

        chain = audit_chain_key(project_id, self.reviewer_id)
        head = self.conn.execute(audit._BUMP_HEAD, [chain]).fetchone()
        assert head is not None
        payload = canonical_json(data)
        event = AuditEvent(project_id=project_id, actor_id=self.reviewer_id, action="annotation.submit",
                           object_type="annotation", object_id=str(annotation_id), data=json.loads(payload),
                           created_at=now, chain=chain, seq=head[0], prev_hash=head[1])
        row_hash = event.compute_hash()
        self.conn.execute(audit._INSERT_AND_MOVE_HEAD, [
            project_id, self.reviewer_id, event.action, event.object_type, event.object_id, payload, now,
            chain, head[0], head[1], row_hash, row_hash, chain]).fetchone()

    def chained_cycle(self) -> tuple[float, float] | None:
        """The chained API's floor: submit, then check out the next item, timed together."""
        if self.held is None:
            self.held = self.checkout()
            if self.held is None:
                return None
        t0 = time.perf_counter()
        self.submit(self.held, "spam")
        self.held = self.checkout()
        t1 = time.perf_counter()
        if self.held is None:
            return None
        return (t1 - t0) * 1000, float("nan")

    def cycle(self) -> tuple[float, float] | None:
        t0 = time.perf_counter()
        lease_id = self.checkout()
        t1 = time.perf_counter()
        if lease_id is None:
            return None
        self.submit(lease_id, "spam")
        t2 = time.perf_counter()
        return (t1 - t0) * 1000, (t2 - t1) * 1000


# --- the server -------------------------------------------------------------------------------------------------


# Each worker, once the app is loaded: import every view now (Django loads the URLconf, and with it every API
# module and their libraries, on the first request: seconds on this box), so the first measured requests are not
# cold starts. Optionally stub out the learning side's retrain signal, or the submit's audit row, to attribute
# their cost (never a configuration to run: both are part of a submit).
GUNICORN_CONFIG = """
STUB_RETRAIN = {stub}
STUB_AUDIT = {stub_audit}


def post_worker_init(worker):
    from django.urls import get_resolver

    get_resolver().url_patterns
    if STUB_RETRAIN:
        import learning.scheduling

        learning.scheduling.request_retrain = lambda *, project_id: None
    if STUB_AUDIT:
        import labeling.services.annotations

        labeling.services.annotations.audit_record = lambda **kwargs: None
"""


def start_server(args: argparse.Namespace, secret: str, token: str) -> subprocess.Popen[bytes]:
    # The checkout's own venv (make bench), else the one running this benchmark (a git worktree has no .venv).
    gunicorn = ROOT / ".venv/bin/gunicorn"
    if not gunicorn.exists():
        gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "config.wsgi:application", "--bind", f"127.0.0.1:{args.port}",
               "--workers", str(args.workers), "--threads", str(args.threads), "--worker-class", "gthread",
               "--keep-alive", "75", "--backlog", "2048", "--log-level", "warning"]
    config = Path(tempfile.mkdtemp()) / "gunicorn_bench.py"
    config.write_text(GUNICORN_CONFIG.format(stub=bool(args.no_retrain_signal), stub_audit=bool(args.no_audit)))
    command += ["--config", str(config)]
    server = subprocess.Popen(command, cwd=ROOT, env=server_env(args, secret), start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5)
            conn.request("GET", "/api/projects/", headers={"Authorization": f"Token {token}"})
            if conn.getresponse().status == 200:
                conn.close()
                return server
        except OSError:
            pass
        time.sleep(0.3)
    stop_process_group(server, timeout=20)
    raise SystemExit("gunicorn did not answer within 60 s")


# --- figures ----------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Figures:
    name: str
    next_ms: list[float]
    submit_ms: list[float]
    cycles_per_s: float
    errors: list[str]
    cpu_ms: dict[str, float]  # CPU ms per cycle, per part

    def row(self, which: str) -> str:
        values = self.next_ms if which != "submit" else self.submit_ms
        return (f"{self.name:<12} {which:<12} p50 {percentile(values, 50):7.1f}  p95 {percentile(values, 95):7.1f}  "
                f"p99 {percentile(values, 99):7.1f} ms   (n={len(values)})")

    def rate_row(self, offered: float) -> str:
        cpu = ", ".join(f"{part} {ms:.1f}" for part, ms in sorted(self.cpu_ms.items()))
        return (f"{self.name:<12} cycles/s {self.cycles_per_s:7.1f} (offered {offered:g});  CPU ms per cycle: {cpu}"
                + (f"   errors: {len(self.errors)} e.g. {self.errors[0]}" if self.errors else ""))


def summarise(name: str, results: list[ClientResult], duration: float, cpu: dict[str, float]) -> Figures:
    samples = [s for r in results for s in r.samples]
    return Figures(name, [s.next_ms for s in samples], [s.submit_ms for s in samples if s.submit_ms == s.submit_ms],
                   len(samples) / duration, [e for r in results for e in r.errors],
                   {part: seconds * 1000 / max(1, len(samples)) for part, seconds in cpu.items()})


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, all its threads included; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_probe(database_url: str, server: subprocess.Popen[bytes] | None) -> CpuProbe:
    """Where the CPU goes: the gunicorn processes, this database's PostgreSQL backends, and this process (the
    clients). Backends are found by database name, so other engineers' databases are not counted."""
    watcher = psycopg.connect(admin_url(database_url), autocommit=True)
    name = db_name(database_url)

    def probe() -> dict[str, float]:
        backends = [row[0] for row in watcher.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name]).fetchall()]
        used = {"postgres": sum(_proc_cpu(pid) for pid in backends), "client": time.process_time()}
        if server is not None:
            workers = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                                          text=True, check=False).stdout.split()]
            used["server"] = sum(_proc_cpu(pid) for pid in [server.pid, *workers])
        return used

    return probe


def check_invariants(project_id: int) -> tuple[int, int]:
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        overfull = conn.execute(
            "SELECT count(*) FROM labeling_item i WHERE i.project_id = %s AND i.n_done > 0 AND i.n_done + "
            "(SELECT count(*) FROM labeling_lease l WHERE l.item_id = i.id AND l.state = 'active' "
            "AND l.expires_at > now()) > i.n_required", [project_id]).fetchone()
        doubles = conn.execute(
            "SELECT count(*) FROM (SELECT item_id, reviewer_id FROM labeling_annotation WHERE project_id = %s "
            "GROUP BY item_id, reviewer_id HAVING count(*) > 1) d", [project_id]).fetchone()
    assert overfull is not None and doubles is not None
    return int(overfull[0]), int(doubles[0])


def main() -> None:
    args = parse_args()
    secret = secrets.token_urlsafe(50)
    if not args.reuse or not database_exists(args.database_url):
        recreate_database(args.database_url, OWNED_DATABASES)
    setup_django(args, secret)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    dataset = dataset_matches(args.items, args.clients) if args.reuse else None
    if dataset is None:
        if args.reuse:
            print("no matching dataset to reuse; building one")
            from django.db import connection

            connection.close()
            recreate_database(args.database_url, OWNED_DATABASES)
            call_command("migrate", verbosity=0)
        dataset = build_dataset(args.items, args.clients, args.overlap)
    else:
        print(f"reusing the {args.items:,}-item dataset in {db_name(args.database_url)}")
    from labeling.models import Project

    lease_seconds = Project.objects.get(pk=dataset.project_id).lease_seconds
    history = args.history if args.history is not None else args.items // 10
    states = [name.strip() for name in args.states.split(",") if name.strip()]
    print(f"\n{args.clients} clients offering {args.rate:g} cycles/s for {args.duration:g}s "
          f"(+{args.warmup:g}s warm-up) per phase; gunicorn {args.workers} workers x {args.threads} threads (gthread)"
          + ("; retrain signal stubbed out" if args.no_retrain_signal else "")
          + ("; submit audit rows stubbed out (attribution only)" if args.no_audit else "")
          + f"; database states: {', '.join(states)}")
    table: list[tuple[str, Figures]] = []
    failed = False
    for state in states:
        reset_state(dataset)
        enter_state(state, dataset, history)
        figures, state_failed = run_state(args, secret, dataset, lease_seconds, state)
        table += [(state, f) for f in figures]
        failed = failed or state_failed
    print(f"\nper database state ({args.items:,} items, overlap {args.overlap}, {args.clients} clients, offered "
          f"{args.rate:g} cycles/s; CPU ms per cycle, web = gunicorn, pg = this database's backends):")
    print(f"{'state':<9} {'path':<12} {'cycles/s':>8} {'p50':>7} {'p95':>7} {'p99':>7} {'submit p99':>10} "
          f"{'web':>6} {'pg':>6} {'web+pg':>7} {'client':>7}")
    for state, f in table:
        web, pg = f.cpu_ms.get("server", 0.0), f.cpu_ms.get("postgres", 0.0)
        submit_p99 = percentile(f.submit_ms, 99) if f.submit_ms else float("nan")
        print(f"{state:<9} {f.name:<12} {f.cycles_per_s:8.1f} {percentile(f.next_ms, 50):7.1f} "
              f"{percentile(f.next_ms, 95):7.1f} {percentile(f.next_ms, 99):7.1f} {submit_p99:10.1f} "
              f"{web:6.1f} {pg:6.1f} {web + pg:7.1f} {f.cpu_ms.get('client', 0.0):7.1f}")
    print(f"load average at the end: {load_average()}")
    if failed:
        raise SystemExit(1)


def run_state(args: argparse.Namespace, secret: str, dataset: Dataset, lease_seconds: int,
              state: str) -> tuple[list[Figures], bool]:
    """The API phases and the raw floor's, on the database as ``state`` left it; prints its section."""
    print(f"\n=== database state: {state} (load average {load_average()})")
    print_plans(dataset, when=f"{state}, before the run")
    pace = {"rate": args.rate, "warmup": args.warmup, "duration": args.duration}
    server = start_server(args, secret, dataset.reviewers[0][1])
    try:
        counter = [0]
        probe = cpu_probe(args.database_url, server)
        clients = [HttpClient(args.port, token) for _, token in dataset.reviewers]
        results, duration, cpu = paced_run([api_cycle(c, counter) for c in clients], cpu=probe, **pace)
        api = summarise("api", results, duration, cpu)
        clients = [HttpClient(args.port, token) for _, token in dataset.reviewers]
        results, duration, cpu = paced_run([api_chained_cycle(c, counter) for c in clients], cpu=probe, **pace)
        api_chained = summarise("api chained", results, duration, cpu)
    finally:
        stop_process_group(server, timeout=20)
    load_after_api = load_average()

    floors: dict[str, float] = {}
    lock = threading.Lock()
    probe = cpu_probe(args.database_url, None)
    raws = [RawQueue(args.database_url, dataset, user_id, lease_seconds, floors, lock)
            for user_id, _ in dataset.reviewers]
    for queue in raws:
        queue.with_audit = not args.no_audit
    results, duration, cpu = paced_run([raw.cycle for raw in raws], cpu=probe, **pace)
    raw = summarise("raw sql", results, duration, cpu)
    results, duration, cpu = paced_run([raw.chained_cycle for raw in raws], cpu=probe, **pace)
    raw_chained = summarise("raw chained", results, duration, cpu)
    for queue in raws:
        queue.conn.close()

    overfull, doubles = check_invariants(dataset.project_id)
    print("two calls per item (queue/next, then submit):")
    for figures in (api, raw):
        print(figures.row("next"))
        print(figures.row("submit"))
        print(figures.rate_row(args.rate))
    ratios = {q: percentile(api.next_ms, q) / percentile(raw.next_ms, q) for q in (50, 95, 99)}
    submit_ratios = {q: percentile(api.submit_ms, q) / percentile(raw.submit_ms, q) for q in (50, 99)}
    print("api / raw   next: " + "  ".join(f"p{q} {r:.2f}x" for q, r in ratios.items())
          + "   submit: " + "  ".join(f"p{q} {r:.2f}x" for q, r in submit_ratios.items()))
    print("one call per item (submit with next: true; the labelling page's loop):")
    for figures in (api_chained, raw_chained):
        print(figures.row("submit+next"))
        print(figures.rate_row(args.rate))
    chained_ratios = {q: percentile(api_chained.next_ms, q) / percentile(raw_chained.next_ms, q) for q in (50, 95, 99)}
    print("api / raw   submit+next: " + "  ".join(f"p{q} {r:.2f}x" for q, r in chained_ratios.items()))
    print(f"load average: {load_after_api} after the API phases, {load_average()} after the raw phases")

    def rate_ok(figures: Figures) -> bool:
        return figures.cycles_per_s >= 0.95 * args.rate

    next_p99, chained_p99 = percentile(api.next_ms, 99), percentile(api_chained.next_ms, 99)
    print(f"goal next p99 <= 50 ms at {args.rate:g} cycles/s: queue/next {next_p99:.1f} ms at "
          f"{api.cycles_per_s:.0f} cycles/s -> {'met' if next_p99 <= 50 and rate_ok(api) else 'NOT met'}; "
          f"submit+next {chained_p99:.1f} ms at {api_chained.cycles_per_s:.0f} cycles/s -> "
          f"{'met' if chained_p99 <= 50 and rate_ok(api_chained) else 'NOT met'}")
    print(f"goal API <= 3x raw SQL (p99): queue/next {ratios[99]:.2f}x -> {'met' if ratios[99] <= 3 else 'NOT met'}; "
          f"submit+next {chained_ratios[99]:.2f}x -> {'met' if chained_ratios[99] <= 3 else 'NOT met'}")
    # The cost per labelled item: the CPU one cycle takes on the server side (web and PostgreSQL; the clients are
    # the bench's own), which two cores can measure whatever rate they can sustain.
    for figures in (api, api_chained):
        cost = figures.cpu_ms.get("server", 0.0) + figures.cpu_ms.get("postgres", 0.0)
        print(f"goal <= 8 ms CPU per labelled item (web + PostgreSQL), {figures.name}: {cost:.1f} ms -> "
              f"{'met' if cost <= 8 else 'NOT met'}")
    # The budget behind the rate goal: the CPU each path spends per cycle (server, PostgreSQL, this client),
    # times the offered rate, is the number of cores that rate keeps busy before any queueing.
    cores = os.cpu_count() or 1
    for figures in (api, api_chained, raw, raw_chained):
        per_cycle = sum(figures.cpu_ms.values())
        print(f"CPU budget {figures.name:<12} {per_cycle:5.1f} ms per cycle -> {per_cycle * args.rate / 1000:.2f} "
              f"of this box's {cores} cores at {args.rate:g} cycles/s")
    print(f"invariants after the run: over-held items {overfull}, duplicate (item, reviewer) annotations {doubles}")
    failed = bool(overfull or doubles or any(f.errors for f in (api, api_chained, raw, raw_chained)))
    return [api, api_chained, raw, raw_chained], failed


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
