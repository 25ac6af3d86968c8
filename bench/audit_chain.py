"""Cost of the hash-chained audit log on the write path: ``.venv/bin/python bench/audit_chain.py [--quick]``.

Every submit writes one audit row last in its transaction (labeling/services/annotations.py), so the chain's
price is paid on the hottest write. In its own PostgreSQL database (``BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/sift_audit_bench``; dropped and rebuilt each run) this times, per row, each
in its own committed transaction:

- baseline: a plain INSERT of an audit row (what the log cost before the chain), same columns;
- ``audit_record``: lock the chain head, hash, INSERT, move the head (what it costs now);
- the same with THREADS writers on ONE project's chain (they queue on its head lock until each commits), and
  on one chain EACH (projects never wait for each other), as rows per second.

The ratios are measured in the same run; run it under ``flock /tmp/sift-bench.lock``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._support import recreate_database  # noqa: E402

THREADS = 4


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sift_audit_bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 rows per measurement instead of 2,000")
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    url = database_url()
    recreate_database(url, ["sift_audit_bench", "sift_bench_"])
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SIFT_DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from labeling.models import Project
    from labeling.services.audit import audit_record, audit_verify

    call_command("migrate", verbosity=0)
    projects = [Project.objects.create(slug=f"bench-{i}", name=f"Bench {i}") for i in range(THREADS)]
    data = {"lease_id": 123456, "item_id": 654321, "labels": ["spam"], "taxonomy_version": 3}

    def plain(count: int) -> float:
        sql = ("INSERT INTO labeling_auditevent (project_id, actor_id, action, object_type, object_id, data, "
               "created_at, chain, seq, prev_hash, row_hash) VALUES (%s, NULL, 'bench.plain', 'annotation', '1', "
               "'{}', now(), -1, %s, '', '')")
        start = time.perf_counter()
        for i in range(count):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [projects[0].pk, i + 1])
        return time.perf_counter() - start

    def chained(project: Project, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            with transaction.atomic():
                audit_record(actor=None, action="annotation.submit", obj=project, project=project, data=data)
        return time.perf_counter() - start

    def threaded(targets: list[Project], count: int) -> float:
        barrier = threading.Barrier(len(targets) + 1)

        def work(project: Project) -> None:
            barrier.wait()
            chained(project, count)
            connection.close()

        threads = [threading.Thread(target=work, args=(p,)) for p in targets]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start

    chained(projects[0], 50)  # warm up (the first row of a chain also creates its head)
    base = plain(n)
    single = chained(projects[0], n)
    per = n // THREADS
    one_chain = threaded([projects[0]] * THREADS, per)
    own_chains = threaded(projects, per)
    started = time.perf_counter()
    report = audit_verify(project=projects[0])
    verify_s = time.perf_counter() - started
    print(f"audit log write cost, {n} rows per measurement, each row its own committed transaction")
    print(f"  plain INSERT (before the chain):       {base / n * 1000:7.3f} ms/row")
    print(f"  audit_record (lock, hash, insert, head): {single / n * 1000:7.3f} ms/row  "
          f"ratio {single / base:.2f}x the plain insert")
    print(f"  {THREADS} writers, one chain:   {THREADS * per / one_chain:8.0f} rows/s")
    print(f"  {THREADS} writers, own chains:  {THREADS * per / own_chains:8.0f} rows/s  "
          f"(one chain is {own_chains / one_chain:.2f}x of that)")
    print(f"  single writer:              {n / single:8.0f} rows/s")
    print(f"verify_audit_log of the busiest chain, {report.rows} rows: {verify_s:.2f} s, ok={report.ok}")
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
