"""Cost of the quality stats at 1M items: ``.venv/bin/python bench/quality_stats.py [--quick]``.

Builds, in its own PostgreSQL database (``BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/sift_quality_bench``, ``..._quick`` with ``--quick``; dropped and rebuilt
each run), a project of 1M items (``--quick``: 100k) loaded with one INSERT ... SELECT, of which 25k (5k) items
carry two answers each from 8 reviewers, with leases, exploration picks over 10 rankings, gold answers and
adjudications. Then it times every stats endpoint's selector (median of 3 warm runs) and reports, per endpoint,
how many SQL statements it issued, how many of them read the items table, and the time those took: the point
is that no endpoint counts the 1M items more than once per request, and that everything else scales with
the number of answers, not the pool.

Also prints EXPLAIN (ANALYZE, BUFFERS) of the one item aggregate, the only statement that grows with the pool.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._support import recreate_database  # noqa: E402

REVIEWERS = 8


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k items, 5k labelled (a smoke run).")
    parser.add_argument("--items", type=int, help="Pool size (default 1M, quick 100k).")
    parser.add_argument("--labelled", type=int, help="Items with two answers (default 25k, quick 5k).")
    return parser.parse_args()


def database_url(quick: bool) -> str:
    default = "postgres://postgres@127.0.0.1:5432/sift_quality_bench" + ("_quick" if quick else "")
    return os.environ.get("BENCH_DATABASE_URL", default)


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SIFT_DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def build(n_items: int, n_labelled: int) -> Any:
    """The project and its history, written with a handful of set-based statements."""
    from django.db import connection

    from labeling.models import Adjudication, Annotation, Item, Lease, Project
    from labeling.services.projects import project_create
    from tests.factories import UserFactory, member

    taxonomy = {"name": "Bench", "multi_label": False, "labels": [
        {"key": "ok", "name": "OK"}, {"key": "spam", "name": "Spam", "severity": 2},
        {"key": "threat", "name": "Threat", "severity": 5}]}
    project = project_create(actor=None, slug="bench", name="Bench", taxonomy=taxonomy, overlap=2, gold_rate=0.05,
                             gold_accuracy_threshold=0.8)
    reviewers = [member(project, username=f"r{i}", role="reviewer") for i in range(REVIEWERS)]
    UserFactory(username="lead")
    version_id = project.current_taxonomy_version_id
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"""
            INSERT INTO {Item._meta.db_table} (project_id, external_id, text, meta, content_hash, is_gold, gold_labels,
                n_required, n_done, boost, random_key, created_at, updated_at)
            SELECT %s, 'item-' || g, 'synthetic message ' || g, '{{}}'::jsonb, md5(g::text) || md5(g::text),
                   g > %s, CASE WHEN g > %s THEN '["spam"]'::jsonb END, 2,
                   CASE WHEN g <= %s THEN 2 ELSE 0 END, 0, random(), now(), now()
            FROM generate_series(1, %s) AS g
        """, [project.pk, n_items - 200, n_items - 200, n_labelled, n_items])
        first_item = Item.objects.filter(project=project).order_by("id").values_list("id", flat=True).first()
        # Two answers per labelled item, from reviewers (g mod 8) and (g+3 mod 8); 10% exploration picks over
        # 10 rankings; 12% spam, with reviewers disagreeing on about 1 item in 12.
        ids = [r.pk for r in reviewers]
        cursor.execute(f"""
            INSERT INTO {Lease._meta.db_table} (project_id, item_id, reviewer_id, state, created_at, expires_at,
                renewals, taxonomy_version_id, selection_reason, model_version, inclusion_probability,
                suggestion, suggestion_hidden)
            SELECT %(p)s, %(first)s + g - 1, (%(ids)s::bigint[])[1 + ((g + k * 3) %% 8)], 'submitted',
                   now() - ((%(n)s - g) || ' seconds')::interval, now(), 0, %(v)s,
                   CASE WHEN g %% 10 = 0 THEN 'exploration' ELSE 'uncertainty' END, 1 + (g * 10 / (%(n)s + 1)),
                   CASE WHEN g %% 10 = 0 THEN 0.1 ELSE 1.0 END,
                   CASE WHEN g %% 4 = 0 THEN NULL ELSE '{{"label": "spam", "confidence": 0.6}}'::jsonb END,
                   g %% 4 = 0
            FROM generate_series(1, %(n)s) AS g, generate_series(0, 1) AS k
        """, {"p": project.pk, "first": first_item, "ids": ids, "n": n_labelled, "v": version_id})
        cursor.execute(f"""
            INSERT INTO {Annotation._meta.db_table} (project_id, item_id, reviewer_id, lease_id, taxonomy_version_id,
                labels, comment, lead_time_ms, selection_reason, selection_score, inclusion_probability,
                model_version, suggestion_shown, created_at)
            SELECT l.project_id, l.item_id, l.reviewer_id, l.id, l.taxonomy_version_id,
                   CASE WHEN (l.item_id - %(first)s) %% 8 = 0 THEN '["spam"]'::jsonb
                        WHEN (l.item_id - %(first)s) %% 12 = 1 AND l.reviewer_id = (%(ids)s::bigint[])[1]
                             THEN '["spam"]'::jsonb
                        ELSE '["ok"]'::jsonb END,
                   '', 2000 + (l.id %% 9000), l.selection_reason, 0.5, l.inclusion_probability, l.model_version,
                   CASE WHEN l.suggestion_hidden THEN NULL ELSE l.suggestion END, l.created_at
            FROM {Lease._meta.db_table} l WHERE l.project_id = %(p)s
        """, {"p": project.pk, "first": first_item, "ids": ids})
        cursor.execute(f"""
            INSERT INTO {Annotation._meta.db_table} (project_id, item_id, reviewer_id, taxonomy_version_id, labels,
                comment, selection_reason, gold_correct, created_at)
            SELECT %(p)s, i.id, r.id, %(v)s, '["spam"]'::jsonb, '', 'gold', (i.id + r.id) %% 5 <> 0, now()
            FROM {Item._meta.db_table} i CROSS JOIN unnest(%(ids)s::bigint[]) AS r(id)
            WHERE i.project_id = %(p)s AND i.is_gold AND (i.id + r.id) %% 4 = 0
        """, {"p": project.pk, "ids": ids, "v": version_id})
        cursor.execute(f"""
            INSERT INTO {Adjudication._meta.db_table} (project_id, item_id, state, reason, note, created_at)
            SELECT %(p)s, id, 'pending', 'disagreement', '', now() FROM {Item._meta.db_table}
            WHERE project_id = %(p)s AND id < %(first)s + %(n)s AND (id - %(first)s) %% 12 = 1
        """, {"p": project.pk, "first": first_item, "n": n_labelled})
        cursor.execute("ANALYZE")
    print(f"built {n_items:,} items, {Annotation.objects.filter(project=project).count():,} answers, "
          f"{Lease.objects.filter(project=project).count():,} leases in {time.perf_counter() - t0:.1f} s")
    return Project.objects.get(pk=project.pk)


def measure(project: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from labeling.models import Item
    from labeling.selectors import quality as q
    from labeling.selectors.adjudication import adjudication_list

    endpoints: dict[str, Callable[[Any], Any]] = {
        "GET stats/ (summary)": q.stats_summary, "stats/agreement": q.agreement_figures,
        "stats/reviewers": q.reviewer_figures, "stats/prevalence": q.prevalence_figures,
        "stats/queue-health": q.queue_health, "stats/timeline": q.timeline,
        "adjudications/ (page of 50)": lambda p: adjudication_list(p, state="pending"),
    }
    table = Item._meta.db_table
    print(f"\n{'endpoint':30} {'median s':>9} {'queries':>8} {'item-table':>10} {'item s':>7}")
    for name, selector in endpoints.items():
        selector(project)  # warm
        times = []
        for _ in range(3):
            with CaptureQueriesContext(connection) as captured:
                t0 = time.perf_counter()
                selector(project)
                times.append(time.perf_counter() - t0)
        touching = [c for c in captured.captured_queries if f'FROM "{table}"' in c["sql"]]
        item_seconds = sum(float(c["time"]) for c in touching)
        print(f"{name:30} {statistics.median(times):9.3f} {len(captured.captured_queries):8d} {len(touching):10d} "
              f"{item_seconds:7.3f}")
    with connection.cursor() as cursor:
        cursor.execute(f"""EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(id), COUNT(id) FILTER (WHERE is_gold),
            COUNT(id) FILTER (WHERE n_done >= n_required AND NOT is_gold), COUNT(id) FILTER (WHERE n_done > 0
            AND NOT is_gold) FROM {table} WHERE project_id = %s""", [project.pk])
        print("\nthe item aggregate (progress):")
        for (line,) in cursor.fetchall():
            print("  " + line)


def main() -> None:
    args = parse_args()
    n_items = args.items or (100_000 if args.quick else 1_000_000)
    n_labelled = args.labelled or (5_000 if args.quick else 25_000)
    url = database_url(args.quick)
    recreate_database(url, ["sift_quality_bench"])
    setup_django(url)
    project = build(n_items, n_labelled)
    measure(project)


if __name__ == "__main__":
    main()
