"""Export throughput, memory and time to first byte: ``.venv/bin/python bench/export.py [--quick]``.

Builds (once; reused while it matches) a synthetic project in PostgreSQL with COPY: 500k items
(``--quick``: 50k), overlap 2, so 1M annotations from 20 reviewers, 1% gold items, 1% decided
adjudications, 2% near-duplicate texts. Then, each in a fresh child process so that ru_maxrss is
that run's own peak, it exports to every format and prints rows/s and peak RSS, plus:

- Parquet with Dawid-Skene (all answers held as integer arrays),
- JSON Lines with ``--split`` on a fresh copy of the split column (the first, assigning export),
- time to first byte of the streamed HTTP download (Django test client, token auth, the real view).

Goal (issue 6): >= 20,000 rows/s to Parquet with peak memory under 300 MB; the streamed download
starts in under 1 s. Label Studio reference: ~200 records/s and one record per annotator.

The database is DATABASE_URL if it is PostgreSQL, else ``postgres://postgres@127.0.0.1:5432/sift_bench_export``
(created if missing). ``--drop`` removes the bench project afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/sift_bench_export"
GOAL_PARQUET_ROWS_PER_S = 20_000
GOAL_PEAK_MB = 300
GOAL_TTFB_S = 1.0
LABEL_STUDIO_RECORDS_PER_S = 200
N_REVIEWERS = 20
LABELS = ("ham", "spam", "scam", "other")
WORDS = ("free", "prize", "call", "now", "meeting", "tomorrow", "lunch", "txt", "win", "cash", "love", "home",
         "late", "sorry", "claim", "reply", "stop", "urgent", "account", "ok", "see", "you", "later", "the")


def _environment() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        os.environ["DATABASE_URL"] = DEFAULT_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if not os.environ.get("SIFT_SECRET_KEY"):
        # Not DEBUG: DEBUG keeps every query in memory and would distort the memory figure.
        os.environ["SIFT_SECRET_KEY"] = secrets.token_urlsafe(50)
    os.environ.pop("SIFT_DEBUG", None)
    os.environ.setdefault("SIFT_ALLOWED_HOSTS", "testserver")
    sys.path.insert(0, str(ROOT))


def _ensure_database() -> None:
    import psycopg

    from bench._support import admin_url, database_exists, db_name  # importable once _environment() ran

    url = os.environ["DATABASE_URL"]
    if not database_exists(url):
        with psycopg.connect(admin_url(url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db_name(url)}"')


def _setup_django(migrate: bool = False) -> None:
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)


def _copy_defaults(model: Any, given: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Column list for COPY: the fields we give, plus every other concrete column at its default.

    Generic on purpose: a column another issue adds to the model gets its default instead of
    breaking the bench.
    """
    columns, names = [], []
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        columns.append(f.column)
        names.append(f.attname)
    missing = [n for n in names if n not in given]
    for name in missing:
        f = model._meta.get_field(name.removesuffix("_id")) if name.endswith("_id") else model._meta.get_field(name)
        if f.null:
            given[name] = None
        elif f.has_default():
            value = f.get_default()
            given[name] = json.dumps(value) if f.get_internal_type() == "JSONField" else value
        else:
            given[name] = ""
    return columns, names


def build(slug: str, n_items: int, seed: int) -> dict[str, Any]:
    """Create the bench project with COPY; reuse it when it already has the expected size."""
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from labeling.models import Adjudication, Annotation, Item, Membership, Project
    from labeling.services.projects import project_create
    from learning.core.vocabulary import content_hash

    existing = Project.objects.filter(slug=slug).first()
    if existing is not None:
        n_ann = Annotation.objects.filter(project=existing).count()
        if n_ann == 2 * n_items:
            return {"project_id": existing.pk, "built_s": 0.0, "reused": True}
        _drop(existing.pk)
    started = time.perf_counter()
    taxonomy = {"name": "Bench", "multi_label": False, "labels": [{"key": k, "name": k.title()} for k in LABELS]}
    project = project_create(actor=None, slug=slug, name="Export bench", taxonomy=taxonomy, overlap=2)
    version_id = project.current_taxonomy_version_id
    user_model = get_user_model()
    reviewers = []
    for i in range(N_REVIEWERS):
        user, _ = user_model.objects.get_or_create(username=f"bench-reviewer-{i}")
        Membership.objects.get_or_create(project=project, user=user, defaults={"role": "reviewer"})
        reviewers.append(user.pk)
    engineer, _ = user_model.objects.get_or_create(username="bench-engineer")
    Membership.objects.get_or_create(project=project, user=engineer, defaults={"role": "ml_engineer"})

    rng = np.random.default_rng(seed)
    now = timezone.now()
    truth = rng.choice(len(LABELS), size=n_items, p=[0.6, 0.25, 0.1, 0.05])
    gold = rng.random(n_items) < 0.01
    duplicate_of = np.where(rng.random(n_items) < 0.02, rng.integers(0, n_items, size=n_items), -1)
    word_idx = rng.integers(0, len(WORDS), size=(n_items, 24))
    lengths = rng.integers(6, 24, size=n_items)

    item_values: dict[str, Any] = {
        "project_id": project.pk, "external_id": None, "text": None, "meta": None, "content_hash": None,
        "is_gold": None, "gold_labels": None, "n_required": 2, "n_done": 2, "boost": 0, "random_key": None,
        "split": None, "created_at": now, "updated_at": now,
    }
    columns, names = _copy_defaults(Item, item_values)
    with connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy(f"COPY {Item._meta.db_table} ({', '.join(columns)}) FROM STDIN") as copy:
            for i in range(n_items):
                source = duplicate_of[i] if duplicate_of[i] >= 0 else i
                text = " ".join(WORDS[w] for w in word_idx[source, :lengths[source]]) + f" #{source}"
                item_values.update(
                    external_id=f"bench-{i}", text=text, content_hash=content_hash(text),
                    meta=json.dumps({"source": "bench", "batch": i // 1000}), is_gold=bool(gold[i]),
                    gold_labels=json.dumps([LABELS[truth[i]]]) if gold[i] else None, random_key=float(i) / n_items,
                )
                copy.write_row([item_values[n] for n in names])
        cursor.execute(f"SELECT id FROM {Item._meta.db_table} WHERE project_id = %s ORDER BY id", [project.pk])
        item_ids = np.array([r[0] for r in cursor.fetchall()], dtype=np.int64)

    # Two distinct reviewers per item, each right 85% of the time.
    first = rng.integers(0, N_REVIEWERS, size=n_items)
    second = (first + rng.integers(1, N_REVIEWERS, size=n_items)) % N_REVIEWERS
    ann_values: dict[str, Any] = {
        "project_id": project.pk, "item_id": None, "reviewer_id": None, "lease_id": None,
        "taxonomy_version_id": version_id, "labels": None, "selection_reason": None, "selection_score": None,
        "inclusion_probability": None, "model_version": None, "created_at": None,
    }
    columns, names = _copy_defaults(Annotation, ann_values)
    reasons = ("uncertainty", "exploration", "fallback_random")
    label_json = [json.dumps([k]) for k in LABELS]
    with connection.cursor() as cursor, cursor.cursor.copy(
            f"COPY {Annotation._meta.db_table} ({', '.join(columns)}) FROM STDIN") as copy:
        for who in (first, second):
            right = rng.random(n_items) < 0.85
            wrong = (truth + rng.integers(1, len(LABELS), size=n_items)) % len(LABELS)
            answer = np.where(right, truth, wrong)
            reason = rng.integers(0, 3, size=n_items)
            for i in range(n_items):
                ann_values.update(
                    item_id=int(item_ids[i]), reviewer_id=reviewers[who[i]], labels=label_json[answer[i]],
                    selection_reason=reasons[reason[i]], selection_score=0.5,
                    inclusion_probability=0.1 if reason[i] == 1 else None, model_version=1 + i // 50_000,
                    created_at=now,
                )
                copy.write_row([ann_values[n] for n in names])
    adjudicated = np.flatnonzero(rng.random(n_items) < 0.01)
    Adjudication.objects.bulk_create([
        Adjudication(project=project, item_id=int(item_ids[i]), state=Adjudication.State.DECIDED,
                     reason=Adjudication.Reason.DISAGREEMENT, labels=[LABELS[truth[i]]], taxonomy_version_id=version_id,
                     decided_at=now)
        for i in adjudicated
    ], batch_size=5000)
    with connection.cursor() as cursor:
        for model in (Item, Annotation, Adjudication):
            cursor.execute(f"ANALYZE {model._meta.db_table}")
    return {"project_id": project.pk, "built_s": round(time.perf_counter() - started, 1), "reused": False}


def _drop(project_id: int) -> None:
    from django.db import connection

    from labeling.models import Adjudication, Annotation, AuditEvent, ExportSnapshot, Item, Project

    with connection.cursor() as cursor:
        for model in (Adjudication, Annotation, Item, ExportSnapshot):
            cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE project_id = %s", [project_id])
    AuditEvent.objects.filter(project_id=project_id).update(project=None)
    Project.objects.filter(pk=project_id).delete()


# --------------------------------------------------------------------------- children

def _server_cpu_s() -> float | None:
    """CPU seconds used so far by this connection's PostgreSQL backend (same machine only)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM), in MB.

    Not ru_maxrss: Linux carries ru_maxrss across execve, so a child forked from the (large) parent
    would report the parent's size. VmHWM belongs to the new address space and starts at exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_export(slug: str, fmt: str, aggregation: str, extra: dict[str, str]) -> dict[str, Any]:
    from labeling.models import Project
    from labeling.services.exports import export_params_parse, export_write_file

    project = Project.objects.get(slug=slug)
    params = {"format": fmt, "aggregation": aggregation, **extra}
    with tempfile.TemporaryDirectory() as tmp:
        server_before = _server_cpu_s()
        cpu_before = time.process_time()
        started = time.perf_counter()
        result = export_write_file(project=project, params=export_params_parse(params), actor=None,
                                   path=Path(tmp) / f"bench.{fmt}")
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        server_after = _server_cpu_s()
    server = server_after - server_before if server_before is not None and server_after is not None else None
    return {"rows": result.rows, "seconds": seconds, "bytes": result.size_bytes, "client_cpu_s": cpu,
            "server_cpu_s": server, "peak_mb": _peak_rss_mb()}


def child_ttfb(slug: str, fmt: str) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    token, _ = Token.objects.get_or_create(user=get_user_model().objects.get(username="bench-engineer"))
    client = Client()
    # Warm up as a running server would be: URL conf, views and their imports loaded, connection open.
    client.get("/api/projects/", secure=True, HTTP_AUTHORIZATION=f"Token {token.key}")
    started = time.perf_counter()
    response = client.get(f"/api/projects/{slug}/export", {"format": fmt}, secure=True,
                          HTTP_AUTHORIZATION=f"Token {token.key}")
    stream = iter(cast(Any, response).streaming_content)
    first = next(stream)
    ttfb = time.perf_counter() - started
    # Read a little more to show rows keep coming, then stop (closes the server-side cursors).
    more = sum(len(next(stream, b"")) for _ in range(20))
    response.close()
    return {"status": response.status_code, "ttfb_s": ttfb, "first_chunk_bytes": len(first), "next_bytes": more,
            "peak_mb": _peak_rss_mb()}


def run_child(args: list[str]) -> tuple[dict[str, Any], float]:
    """Run this script as a child; return its JSON and its own peak RSS in MB (VmHWM, see _peak_rss_mb)."""
    process = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE,
                               env=os.environ.copy())
    assert process.stdout is not None
    output = process.stdout.read()
    process.wait()
    if process.returncode != 0:
        raise SystemExit(f"child {args} failed with {process.returncode}")
    figures = json.loads(output.decode().strip().splitlines()[-1])
    return figures, figures["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50k items / 100k annotations")
    parser.add_argument("--items", type=int, help="override the number of items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop", action="store_true", help="delete the bench project afterwards")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _environment()
    if args.child:
        _setup_django()
        kind, slug, *rest = args.child
        if kind == "export":
            fmt, aggregation, *pairs = rest  # then name=value export parameters
            print(json.dumps(child_export(slug, fmt, aggregation, dict(p.split("=", 1) for p in pairs))))
        else:
            print(json.dumps(child_ttfb(slug, rest[0])))
        return

    n_items = args.items or (50_000 if args.quick else 500_000)
    slug = f"bench-export-{n_items}"
    _ensure_database()
    _setup_django(migrate=True)
    built = build(slug, n_items, args.seed)
    how = "reused" if built["reused"] else "built with COPY in {} s".format(built["built_s"])
    print(f"database {os.environ['DATABASE_URL'].rsplit('/', 1)[1]}: project {slug}: {n_items:,} items, "
          f"{2 * n_items:,} annotations ({how})")

    from django.db import connection

    from labeling.models import Item

    def reset_splits() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {Item._meta.db_table} SET split = NULL WHERE project_id = %s AND split IS NOT NULL",
                           [built["project_id"]])

    reset_splits()
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs: wall-clock rates are shared with everything else "
          "running; 'CPU rows/s' divides rows by the CPU seconds of the exporting process plus its PostgreSQL "
          "backend (what one idle core would do, client and server taking turns)")
    print(f"\n{'export':34} {'rows':>9} {'seconds':>8} {'rows/s':>9} {'cpu s':>7} {'CPU rows/s':>10} {'MB out':>7} "
          f"{'peak RSS MB':>11}")
    results: dict[str, dict[str, Any]] = {}
    runs: list[tuple[str, str, dict[str, str], str]] = [
        ("jsonl", "majority", {}, ""), ("csv", "majority", {}, ""), ("parquet", "majority", {}, ""),
        ("parquet", "dawid_skene", {}, ""), ("jsonl", "majority", {"split": "0.8,0.1,0.1"}, " + split (assigning)"),
        ("jsonl", "majority", {"raw": "true"}, " + raw answers"), ("parquet", "majority", {"raw": "true"},
                                                                   " + raw answers")]
    for fmt, aggregation, extra, suffix in runs:
        label = f"{fmt} {aggregation}{suffix}"
        figures, peak = run_child(["export", slug, fmt, aggregation, *(f"{k}={v}" for k, v in extra.items())])
        rate = figures["rows"] / figures["seconds"]
        cpu = figures["client_cpu_s"] + (figures["server_cpu_s"] or 0.0)
        cpu_rate = figures["rows"] / cpu if cpu else 0.0
        results[label] = {**figures, "rows_per_s": rate, "cpu_rows_per_s": cpu_rate, "peak_mb": peak}
        print(f"{label:34} {figures['rows']:>9,} {figures['seconds']:>8.1f} {rate:>9,.0f} {cpu:>7.1f} "
              f"{cpu_rate:>10,.0f} {figures['bytes'] / 1e6:>7.1f} {peak:>11.0f}")
    reset_splits()

    print(f"\n{'streamed HTTP download':34} {'TTFB s':>8} {'first chunk':>12} {'peak RSS MB':>12}")
    ttfbs = {}
    for fmt in ("jsonl", "csv", "parquet"):
        figures, peak = run_child(["ttfb", slug, fmt])
        ttfbs[fmt] = figures["ttfb_s"]
        print(f"{'GET /export?format=' + fmt:34} {figures['ttfb_s']:>8.3f} {figures['first_chunk_bytes']:>12,} "
              f"{peak:>12.0f}")

    parquet = results["parquet majority"]
    print("\nGoals")
    print(f"  Parquet rows/s >= {GOAL_PARQUET_ROWS_PER_S:,}: {parquet['rows_per_s']:,.0f} wall-clock "
          f"({'met' if parquet['rows_per_s'] >= GOAL_PARQUET_ROWS_PER_S else 'NOT met'} at load {load:.1f}); "
          f"{parquet['cpu_rows_per_s']:,.0f} per CPU second "
          f"({'met' if parquet['cpu_rows_per_s'] >= GOAL_PARQUET_ROWS_PER_S else 'NOT met'} on an idle core)")
    print(f"  Parquet peak RSS < {GOAL_PEAK_MB} MB: {parquet['peak_mb']:.0f} MB "
          f"({'met' if parquet['peak_mb'] < GOAL_PEAK_MB else 'NOT met'})")
    worst = max(ttfbs["jsonl"], ttfbs["csv"])
    verdict = "met" if worst < GOAL_TTFB_S else "NOT met"
    print(f"  JSONL/CSV download starts < {GOAL_TTFB_S} s: {worst:.3f} s ({verdict})")
    print(f"  vs Label Studio (~{LABEL_STUDIO_RECORDS_PER_S} records/s, one per annotator): "
          f"{parquet['rows_per_s'] / LABEL_STUDIO_RECORDS_PER_S:,.0f}x rows/s, "
          f"{2 * parquet['rows_per_s'] / LABEL_STUDIO_RECORDS_PER_S:,.0f}x annotations/s")
    if args.drop:
        _drop(built["project_id"])


if __name__ == "__main__":
    main()
