"""Item import throughput and memory: ``.venv/bin/python bench/import_items.py [--quick] [--sqlite]``.

Generates synthetic JSON Lines items into a temporary file, imports them into a fresh project of
the database named by DATABASE_URL through ``labeling.services.items_import`` (no embedding), and
prints rows/s and peak memory. Each size runs in a fresh child process, so each peak-RSS figure
is that import's own (ru_maxrss never goes down within a process). Two sizes show whether peak
memory depends on file size (it should not: the import streams in fixed-size chunks).
Also times a re-import of the same file (every row ``unchanged``).

Parquet: the same items written as a Parquet file (row groups of 100k rows) and imported at 1M rows, against the
same 1M rows as JSON Lines in the same run (rows/s of each, and each one's peak memory), to show that the Parquet
reader (labeling/services/items_parquet.py, row group by row group) keeps memory flat. ``--parquet-only`` runs just
that comparison; ``--parquet-rows N`` changes its size.

Reference: Label Studio imports about 8,200 tasks/s on this box; the ratio is printed.
Goal: >= 15,000 rows/s. The project is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LABEL_STUDIO_TASKS_PER_S = 8_200
GOAL_ROWS_PER_S = 15_000
WORDS = ("free", "prize", "call", "now", "meeting", "tomorrow", "lunch", "txt", "win", "cash", "love", "home",
         "late", "sorry", "claim", "reply", "stop", "urgent", "account", "ok", "see", "you", "later", "the")


def generate(path: Path, rows: int, seed: int) -> int:
    rng = random.Random(seed)
    size = 0
    with path.open("w", encoding="utf-8") as out:
        for n in range(rows):
            text = " ".join(rng.choices(WORDS, k=rng.randint(5, 30)))
            line = json.dumps({"external_id": f"syn-{n}", "text": f"{text} #{n}",
                               "meta": {"source": "bench", "batch": n // 1000}}) + "\n"
            size += len(line)
            out.write(line)
    return size


def generate_parquet(path: Path, rows: int, seed: int) -> int:
    """The same rows as ``generate`` (same seed, same texts), as Parquet with a struct ``meta``, in 100k-row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    schema = pa.schema([("external_id", pa.string()), ("text", pa.string()),
                        ("meta", pa.struct([("source", pa.string()), ("batch", pa.int64())]))])
    step = 100_000
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, rows, step):
            ids, texts, metas = [], [], []
            for n in range(first, min(first + step, rows)):
                text = " ".join(rng.choices(WORDS, k=rng.randint(5, 30)))
                ids.append(f"syn-{n}")
                texts.append(f"{text} #{n}")
                metas.append({"source": "bench", "batch": n // 1000})
            writer.write_table(pa.table({"external_id": ids, "text": texts, "meta": metas}, schema=schema))
    return path.stat().st_size


def _backend_cpu_seconds() -> float | None:
    """CPU seconds used so far by this connection's PostgreSQL backend (local server, Linux), else None."""
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except Exception:
        return None


def _maxrss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cleanup(project_id: int) -> None:
    """Drop the bench rows: items by one raw DELETE (no per-row cascade collection), then the project."""
    from django.db import connection

    from labeling.models import Item, Project

    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {Item._meta.db_table} WHERE project_id = %s", [project_id])
        # The project PROTECTs its current taxonomy version, which the project's deletion cascades to.
        Project.objects.filter(pk=project_id).update(current_taxonomy_version=None)
        Project.objects.filter(pk=project_id).delete()
    except Exception as exc:  # cleanup must not hide the figures
        print(f"warning: could not delete bench project {project_id}: {exc}", file=sys.stderr)


def child(rows: int, seed: int, keep: bool, orm: bool, file_format: str = "jsonl", given: str | None = None) -> None:
    """Runs in a fresh process: generate, import, re-import; print one JSON line of figures."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if not os.environ.get("SIFT_SECRET_KEY"):
        # DEBUG would keep every query in memory; a throwaway key lets the bench run as production does.
        os.environ["SIFT_SECRET_KEY"] = secrets.token_urlsafe(50)
    os.environ.pop("SIFT_DEBUG", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from labeling.models import Item
    from labeling.services.items_import import items_import
    from labeling.services.items_import import store as importer
    from labeling.services.projects import project_create

    # Import alone, without embedding: no embedding job is requested for the throwaway project.
    setattr(importer, "request_embedding", lambda *, project_id: None)  # noqa: B010
    if orm:
        # The comparison run: PostgreSQL through the portable ORM path (bulk_create/bulk_update).
        setattr(importer, "_pg_store", importer._orm_store)  # noqa: B010
    with tempfile.TemporaryDirectory() as tmp:
        if given:  # written by the parent, so that writing it cannot raise this process's peak memory
            path = Path(given)
            size = path.stat().st_size
        else:
            path = Path(tmp) / "items.jsonl"
            size = generate(path, rows, seed)
        slug = f"bench-import-{os.getpid()}-{int(time.time())}"
        project = project_create(actor=None, slug=slug, name="Import bench", taxonomy={
            "name": "bench", "labels": [{"key": "ham"}, {"key": "spam"}]})
        try:
            rss_before = _maxrss_mb()
            db_start = _backend_cpu_seconds()
            start, cpu_start = time.perf_counter(), time.process_time()
            with path.open("rb") as handle:
                summary = items_import(actor=None, project=project, source=handle, filename=path.name)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            db_end = _backend_cpu_seconds()
            db_seconds = db_end - db_start if db_start is not None and db_end is not None else None
            rss_peak = _maxrss_mb()
            assert summary.ok and summary.created == rows, summary.as_dict()
            assert Item.objects.filter(project=project).count() == rows
            start = time.perf_counter()
            with path.open("rb") as handle:
                again = items_import(actor=None, project=project, source=handle, filename=path.name)
            reimport_seconds = time.perf_counter() - start
            assert again.unchanged == rows, again.as_dict()
        finally:
            if not keep:
                _cleanup(project.pk)
    print(json.dumps({"path": "ORM bulk_create" if orm else "COPY", "format": file_format, "rows": rows,
                      "file_mb": size / 1e6,
                      "seconds": seconds, "rows_per_s": rows / seconds, "client_cpu_s": cpu_seconds,
                      "db_cpu_s": db_seconds,
                      "rows_per_cpu_s": rows / cpu_seconds,
                      "rows_per_total_cpu_s": (rows / (cpu_seconds + db_seconds)
                                               if db_seconds is not None else None),
                      "reimport_rows_per_s": rows / reimport_seconds, "rss_before_mb": rss_before,
                      "rss_peak_mb": rss_peak, "rss_delta_mb": rss_peak - rss_before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small smoke run (5k and 20k rows).")
    parser.add_argument("--sqlite", action="store_true", help="Allow running against SQLite.")
    parser.add_argument("--keep", action="store_true", help="Keep the bench projects and their items.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--orm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl", help=argparse.SUPPRESS)
    parser.add_argument("--file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parquet-rows", type=int, default=None,
                        help="Rows of the Parquet vs JSON Lines comparison (default 1,000,000; --quick 20,000).")
    parser.add_argument("--parquet-only", action="store_true", help="Run only the Parquet vs JSON Lines comparison.")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seed, args.keep, args.orm, args.format, args.file)
        return
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")) and not args.sqlite:
        sys.exit("refusing to run on SQLite: set DATABASE_URL=postgres://... (or pass --sqlite)")
    sizes = (5_000, 20_000) if args.quick else (50_000, 200_000)
    postgres = url.startswith(("postgres://", "postgresql://"))

    def run(rows: int, orm: bool = False, file_format: str = "jsonl", path: Path | None = None) -> dict[str, Any]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(rows), "--seed", str(args.seed),
               "--format", file_format, *(["--file", str(path)] if path else [])]
        cmd += ["--keep"] if args.keep else []
        cmd += ["--orm"] if orm else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    parquet_rows = args.parquet_rows or (20_000 if args.quick else 1_000_000)
    if args.parquet_only:
        compare_parquet(run, parquet_rows, args.seed)
        return
    load_start = os.getloadavg()[0]
    results = [run(rows) for rows in sizes]
    # Same run, same data, the ORM path instead of COPY: the measurement behind choosing COPY.
    orm = run(sizes[0], orm=True) if postgres else None
    db = "PostgreSQL" if postgres else "SQLite"
    print(f"item import into {db} (JSON Lines, no embedding; each run in a fresh process)")
    print(f"{'path':>16} {'rows':>9} {'file MB':>8} {'seconds':>8} {'rows/s':>9} {'client CPU-s':>13} "
          f"{'DB CPU-s':>9} {'rows/client-CPU-s':>18} {'rows/(client+DB)-CPU-s':>23} {'re-import rows/s':>17} "
          f"{'peak RSS MB':>12} {'RSS delta MB':>13}")
    for r in [*results, *([orm] if orm else [])]:
        total = f"{r['rows_per_total_cpu_s']:,.0f}" if r["rows_per_total_cpu_s"] else "n/a"
        db_cpu = f"{r['db_cpu_s']:.2f}" if r["db_cpu_s"] is not None else "n/a"
        print(f"{r['path'] if postgres else 'ORM':>16} {r['rows']:>9,} {r['file_mb']:>8.1f} {r['seconds']:>8.2f} "
              f"{r['rows_per_s']:>9,.0f} {r['client_cpu_s']:>13.2f} {db_cpu:>9} {r['rows_per_cpu_s']:>18,.0f} "
              f"{total:>23} "
              f"{r['reimport_rows_per_s']:>17,.0f} {r['rss_peak_mb']:>12.1f} {r['rss_delta_mb']:>13.1f}")
    if orm:
        same = results[0]
        cpu_ratio = (f"{same['rows_per_total_cpu_s'] / orm['rows_per_total_cpu_s']:.1f}x"
                     if same["rows_per_total_cpu_s"] and orm["rows_per_total_cpu_s"] else "n/a")
        print(f"COPY vs ORM bulk_create at {same['rows']:,} rows: {same['rows_per_s'] / orm['rows_per_s']:.1f}x the "
              f"rows/s, {cpu_ratio} the rows per (client+DB) CPU second")
    print(f"machine load average (1 min): {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on "
          f"{os.cpu_count()} CPUs. Wall-clock "
          "figures are noisy on a shared box; rows/(client+DB)-CPU-s counts the CPU this import used in both "
          "processes (the database backend's from /proc), which is what an idle core would turn into rows/s.")
    big, small = results[-1], results[0]
    print(f"throughput at {big['rows']:,} rows: {big['rows_per_s']:,.0f} rows/s = "
          f"{big['rows_per_s'] / LABEL_STUDIO_TASKS_PER_S:.2f}x Label Studio's ~{LABEL_STUDIO_TASKS_PER_S:,} tasks/s; "
          f"goal {GOAL_ROWS_PER_S:,} rows/s: {'met' if big['rows_per_s'] >= GOAL_ROWS_PER_S else 'NOT met'}")
    ratio = big["rss_delta_mb"] / max(small["rss_delta_mb"], 1e-9)
    print(f"import memory (peak RSS growth): {small['rss_delta_mb']:.1f} MB at {small['rows']:,} rows vs "
          f"{big['rss_delta_mb']:.1f} MB at {big['rows']:,} rows ({big['rows'] / small['rows']:.0f}x the rows, "
          f"{ratio:.2f}x the memory)")
    compare_parquet(run, parquet_rows, args.seed)


def compare_parquet(run: Any, rows: int, seed: int) -> None:
    """The same rows as JSON Lines and as Parquet, each imported in a fresh process, in this run."""
    with tempfile.TemporaryDirectory() as tmp:
        jsonl_path, parquet_path = Path(tmp) / "items.jsonl", Path(tmp) / "items.parquet"
        generate(jsonl_path, rows, seed)
        generate_parquet(parquet_path, rows, seed)
        load_start = os.getloadavg()
        jsonl = run(rows, file_format="jsonl", path=jsonl_path)
        parquet = run(rows, file_format="parquet", path=parquet_path)
        load_end = os.getloadavg()
    print(f"\nParquet vs JSON Lines, {rows:,} rows each (same texts and meta; each import in a fresh process)")
    print(f"{'format':>8} {'file MB':>8} {'seconds':>8} {'rows/s':>9} {'client CPU-s':>13} {'re-import rows/s':>17} "
          f"{'peak RSS MB':>12} {'RSS delta MB':>13}")
    for r in (jsonl, parquet):
        print(f"{r['format']:>8} {r['file_mb']:>8.1f} {r['seconds']:>8.2f} {r['rows_per_s']:>9,.0f} "
              f"{r['client_cpu_s']:>13.2f} {r['reimport_rows_per_s']:>17,.0f} {r['rss_peak_mb']:>12.1f} "
              f"{r['rss_delta_mb']:>13.1f}")
    print(f"Parquet is {parquet['rows_per_s'] / jsonl['rows_per_s']:.2f}x JSON Lines' rows/s; peak RSS growth "
          f"{parquet['rss_delta_mb']:.1f} MB vs {jsonl['rss_delta_mb']:.1f} MB")
    print(f"load average (1, 5, 15 min): {load_start[0]:.1f} {load_start[1]:.1f} {load_start[2]:.1f} at the start, "
          f"{load_end[0]:.1f} {load_end[1]:.1f} {load_end[2]:.1f} at the end, on {os.cpu_count()} CPUs "
          "(a noisy shared box)")


if __name__ == "__main__":
    main()
