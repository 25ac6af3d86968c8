"""Where a labelled item's CPU goes: the queue's two hot requests, one at a time, counted and profiled.

``.venv/bin/python bench/queue_cost.py [--items 100000] [--cycles 400] [--states fresh,analyzed,history]
[--profile web.prof] [--reuse]``

bench/queue_latency.py measures the cost per labelled item under load (gunicorn, 32 paced clients); on a shared
2-core box its CPU figures move with whatever else runs. This benchmark measures the same cost serially, where it
can be attributed: it drives Django's WSGI application in this process (production settings: DEBUG off, the same
middleware, token authentication, throttling and audit as gunicorn's workers run) with real HTTP-shaped requests,
one at a time, on one PostgreSQL connection, and reports per labelled item:

- the web CPU (this process's CPU time while it serves the requests: Django, DRF, the ORM, psycopg, the retrain
  signal's Redis round trip),
- the PostgreSQL CPU (the connection's own backend, read from /proc: same box),
- the SQL statements per request (``connection.execute_wrapper``), listed by their first words with ``--statements``,
- with ``--profile FILE``, a cProfile of the web side (its top functions are printed; the file opens in snakeviz).

Both shapes of a cycle: two calls (queue/next, then submit) and the labelling page's one (submit with
``next: true``). Each state as bench/queue_latency.py builds it (fresh, analyzed, history), on its dataset
(``BENCH_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/sift_queue_cost_bench``).
What gunicorn adds (HTTP parsing, its threads) is not here: queue_latency's figures include it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import queue_latency  # noqa: E402
from bench._support import database_exists, recreate_database  # noqa: E402

OWNED = ("sift_queue_cost",)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--reviewers", type=int, default=8, help="reviewers taking turns (one request at a time)")
    parser.add_argument("--cycles", type=int, default=400, help="measured cycles per shape and state")
    parser.add_argument("--warmup", type=int, default=60, help="unmeasured cycles first")
    parser.add_argument("--chunks", type=int, default=10, help="measure in this many chunks (median and least)")
    parser.add_argument("--states", default="fresh,analyzed,history")
    parser.add_argument("--reuse", action="store_true", help="reuse the database if it holds the dataset")
    parser.add_argument("--profile", help="write a cProfile of the measured web side to this file (last state)")
    parser.add_argument("--statements", action="store_true", help="list the statements of one cycle of each shape")
    args = parser.parse_args()
    args.database_url = os.environ.get("BENCH_DATABASE_URL",
                                       "postgres://postgres@127.0.0.1:5432/sift_queue_cost_bench")
    args.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/3")
    # queue_latency's helpers read these names.
    args.quick, args.clients, args.overlap = False, args.reviewers, 2
    return args


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Wsgi:
    """Requests straight into the WSGI application, as gunicorn hands them over."""

    def __init__(self, token: str) -> None:
        from config.wsgi import application

        self.app = application
        self.token = token

    def post(self, path: str, body: bytes = b"") -> tuple[int, bytes]:
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8765", "HTTP_HOST": "127.0.0.1:8765",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
            "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
            "HTTP_AUTHORIZATION": f"Token {self.token}", "HTTP_CONNECTION": "keep-alive",
        }
        status: list[str] = []

        def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            status.append(line)
            return lambda data: None

        result = self.app(environ, start_response)
        try:
            data = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return int(status[0].split()[0]), data


class Statements:
    """Counts the SQL statements the web side sends, per request path kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.kind = "?"
        self.log: list[str] | None = None

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.counts[self.kind] += 1
        if self.log is not None:
            self.log.append(" ".join(sql.split())[:140])
        return execute(sql, params, many, context)


def main() -> None:
    import json

    args = parse_args()
    secret = secrets.token_urlsafe(50)
    if not args.reuse or not database_exists(args.database_url):
        recreate_database(args.database_url, OWNED)
    queue_latency.setup_django(args, secret)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    dataset = queue_latency.dataset_matches(args.items, args.reviewers) if args.reuse else None
    if dataset is None:
        if args.reuse:
            connection.close()
            recreate_database(args.database_url, OWNED)
            call_command("migrate", verbosity=0)
        dataset = queue_latency.build_dataset(args.items, args.reviewers, 2)
    history = args.items // 10
    clients = [Wsgi(token) for _user, token in dataset.reviewers]
    statements = Statements()
    slug = queue_latency.SLUG
    held: dict[int, int] = {}

    def next_item(n: int) -> int | None:
        statements.kind = "queue/next"
        status, body = clients[n].post(f"/api/projects/{slug}/queue/next")
        if status == 204:
            return None
        assert status == 200, (status, body)
        return int(json.loads(body)["lease"]["id"])

    def submit(n: int, lease_id: int, *, chained: bool) -> int | None:
        statements.kind = "submit+next" if chained else "submit"
        payload = {"labels": ["spam" if n % 3 else "ham"], "idempotency_key": secrets.token_hex(8),
                   "lead_time_ms": 1500, **({"next": True} if chained else {})}
        status, body = clients[n].post(f"/api/leases/{lease_id}/submit", json.dumps(payload).encode())
        assert status == 201, (status, body)
        following = json.loads(body).get("next")
        return int(following["lease"]["id"]) if following else None

    def two_calls(n: int) -> None:
        lease_id = next_item(n)
        assert lease_id is not None
        submit(n, lease_id, chained=False)

    def chained(n: int) -> None:
        lease_id = held.pop(n, None) or next_item(n)
        assert lease_id is not None
        following = submit(n, lease_id, chained=True)
        if following is not None:
            held[n] = following

    shapes: list[tuple[str, Callable[[int], None]]] = [("two calls", two_calls), ("chained", chained)]
    rows: list[str] = []
    # CPU time, not wall: on a shared box the wall clock mostly measures the other jobs and the waits for PostgreSQL.
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    with connection.execute_wrapper(statements):
        for state in [s.strip() for s in args.states.split(",") if s.strip()]:
            connection.close()
            queue_latency.reset_state(dataset)
            queue_latency.enter_state(state, dataset, history)
            held.clear()
            for name, cycle in shapes:
                for n in range(args.warmup):
                    cycle(n % len(clients))
                if args.statements:
                    statements.log = []
                    cycle(0)
                    print(f"\n{state}, {name}: one cycle's statements ({len(statements.log)})")
                    for line in statements.log:
                        print("   ", line)
                    statements.log = None
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    backend = cursor.fetchone()[0]
                statements.counts.clear()
                # In chunks: on a shared box other jobs inflate CPU time too (cache, SMT siblings), never deflate
                # it, so besides the median of the chunks the least one is printed, the figure nearest the code's own.
                chunk_web: list[float] = []
                chunk_pg: list[float] = []
                wall0 = time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                per_chunk = max(1, args.cycles // args.chunks)
                for chunk in range(args.chunks):
                    web0, pg0 = time.process_time(), _proc_cpu(backend)
                    for n in range(chunk * per_chunk, (chunk + 1) * per_chunk):
                        cycle(n % len(clients))
                    chunk_web.append((time.process_time() - web0) * 1000 / per_chunk)
                    chunk_pg.append((_proc_cpu(backend) - pg0) * 1000 / per_chunk)
                if profiler is not None:
                    profiler.disable()
                done = per_chunk * args.chunks
                wall = time.perf_counter() - wall0
                both = sorted(w + p for w, p in zip(chunk_web, chunk_pg, strict=True))
                web, pg = statistics.median(chunk_web), statistics.median(chunk_pg)
                per_request = ", ".join(f"{kind} {count / done:.1f}"
                                        for kind, count in sorted(statements.counts.items()))
                rows.append(f"{state:<9} {name:<10} {web:7.2f} {pg:7.2f} {statistics.median(both):7.2f} "
                            f"{both[0]:7.2f} {wall * 1000 / done:8.2f}   {per_request}")
                print(rows[-1], flush=True)
    print(f"\n{args.items:,} items, {len(clients)} reviewers taking turns, {args.cycles} cycles per row in "
          f"{args.chunks} chunks; CPU ms per labelled item (serial, in-process WSGI, production settings)")
    print(f"{'state':<9} {'shape':<10} {'web':>7} {'pg':>7} {'web+pg':>7} {'least':>7} {'wall':>8}   "
          "statements per cycle   (medians of the chunks; least: the cheapest chunk's web+pg)")
    for row in rows:
        print(row)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if profiler is not None:
        profiler.dump_stats(args.profile)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(35)
        stats.sort_stats("cumulative").print_stats(45)
        print(out.getvalue())


if __name__ == "__main__":
    main()
