"""What a taxonomy publish costs the reviewers who keep labelling: ``.venv/bin/python bench/publish.py [--quick]``.

In its own PostgreSQL database (``BENCH_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/sift_bench_publish``;
dropped and rebuilt each run) a project gets ANSWERS answers of history (a fifth of them ``hate``) plus open items,
and REVIEWERS threads label at a paced rate through the real services (checkout, then submit), in two phases, in the
same run:

- baseline (first, ``--baseline-seconds``): nobody publishes;
- publish: after a second, a policy lead publishes a split of ``hate`` into two labels (every answer is mapped,
  every ``hate`` item re-queued), and the reviewers go on until a second after it commits.

It prints each phase's checkout and submit latency (p50, p95, p99, max), the publish's own duration and how long it
held the answer lock EXCLUSIVE (the only part of a publish a submit can wait for; labeling/services/
taxonomy_migrations.py's essay), and how many reviewer calls failed (deadlocks and the like: must be 0).
Run it under ``flock /tmp/sift-bench.lock`` so two benchmarks do not share the two cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._support import recreate_database  # noqa: E402

REVIEWERS = 6
CYCLE_SECONDS = 0.1  # each reviewer starts a checkout + submit every 100 ms: 60 cycles/s offered in all


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sift_bench_publish")


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def build(answers: int, open_items: int) -> tuple[Any, Any, list[Any]]:
    from django.db import connection

    from labeling.services.taxonomy import taxonomy_draft_save
    from tests.factories import ProjectFactory, member

    taxonomy: dict[str, Any] = {"name": "Abuse", "multi_label": False, "labels": [
        {"key": "ok", "name": "OK"}, {"key": "spam", "name": "Spam"}, {"key": "hate", "name": "Hate"}]}
    project = ProjectFactory(slug="publish-bench", taxonomy=taxonomy, overlap=1)
    lead = member(project, username="lead", role="policy_lead")
    history = [member(project, username=f"past{i}", role="reviewer") for i in range(4)]
    reviewers = [member(project, username=f"rev{i}", role="reviewer") for i in range(REVIEWERS)]
    version = project.current_taxonomy_version_id
    answered = answers // len(history)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO labeling_item (project_id, external_id, text, meta, content_hash, is_gold, n_required, n_done,"
            " boost, random_key, created_at, updated_at) SELECT %s, 'item-' || g, 'message number ' || g, '{}',"
            " md5(g::text), false, %s, CASE WHEN g <= %s THEN %s ELSE 0 END, 0, random(), now(), now()"
            " FROM generate_series(1, %s) g",
            [project.pk, len(history), answered, len(history), answered + open_items])
        cursor.execute(
            "INSERT INTO labeling_annotation (project_id, item_id, reviewer_id, taxonomy_version_id, labels, comment,"
            " selection_reason, created_at) SELECT %s, i.id, r.id, %s, CASE WHEN i.id %% 5 = 0 THEN '[\"hate\"]'"
            " WHEN i.id %% 3 = 0 THEN '[\"spam\"]' ELSE '[\"ok\"]' END::jsonb, '', 'fallback_random', now()"
            " FROM labeling_item i CROSS JOIN unnest(%s::bigint[]) AS r(id) WHERE i.project_id = %s AND i.n_done > 0",
            [project.pk, version, [u.pk for u in history], project.pk])
        cursor.execute("ANALYZE")
    new = {**taxonomy, "labels": [taxonomy["labels"][0], taxonomy["labels"][1],
                                  {"key": "hate/slur", "name": "Slur"}, {"key": "hate/threat", "name": "Threat"}]}
    taxonomy_draft_save(actor=lead, project=project, document=new, migrations=[
        {"kind": "split", "sources": ["hate"], "targets": ["hate/slur", "hate/threat"], "requeue_priority": 5}])
    return project, lead, reviewers


class Reviewer(threading.Thread):
    def __init__(self, project: Any, user: Any, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.project, self.user, self.stop = project, user, stop
        self.checkouts: list[tuple[float, float]] = []  # (started, seconds)
        self.submits: list[tuple[float, float]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        from django.db import connection

        from labeling.services.annotations import annotation_submit
        from labeling.services.queues import queue_checkout_next

        try:
            while not self.stop.is_set():
                began = time.monotonic()
                try:
                    lease = queue_checkout_next(project=self.project, reviewer=self.user)
                    self.checkouts.append((began, time.monotonic() - began))
                    if lease is None:
                        return
                    version = lease.taxonomy_version.number if lease.taxonomy_version else 1
                    started = time.monotonic()
                    annotation_submit(lease_id=lease.pk, reviewer=self.user,
                                      labels=["hate"] if version == 1 else ["hate/slur"])
                    self.submits.append((started, time.monotonic() - started))
                except Exception as exc:  # counted and printed: a benchmark reports, the tests assert
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self.stop.wait(max(0.0, CYCLE_SECONDS - (time.monotonic() - began)))
        finally:
            connection.close()


def run_phase(project: Any, users: list[Any], seconds: float | None,
              publish: Any = None) -> tuple[list[Reviewer], dict[str, float]]:
    stop = threading.Event()
    threads = [Reviewer(project, user, stop) for user in users]
    for thread in threads:
        thread.start()
    timings: dict[str, float] = {}
    if publish is None:
        assert seconds is not None
        time.sleep(seconds)
    else:
        time.sleep(1.0)
        publish(timings)
        time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(60)
    return threads, timings


def report(name: str, threads: list[Reviewer], window: tuple[float, float] | None = None) -> None:
    for kind in ("checkouts", "submits"):
        values = [seconds * 1000 for thread in threads for began, seconds in getattr(thread, kind)
                  if window is None or window[0] <= began <= window[1]]
        if not values:
            print(f"  {name:<26} {kind:<9} (none)")
            continue
        print(f"  {name:<26} {kind:<9} n={len(values):>5}  p50 {statistics.median(values):7.1f} ms  "
              f"p95 {percentile(values, 0.95):7.1f}  p99 {percentile(values, 0.99):7.1f}  max {max(values):7.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 answers instead of 100,000")
    parser.add_argument("--answers", type=int, default=None)
    parser.add_argument("--baseline-seconds", type=float, default=8.0, help="length of the phase with no publish")
    args = parser.parse_args()
    answers = args.answers or (10_000 if args.quick else 100_000)
    url = database_url()
    recreate_database(url, ["sift_bench_publish", "sift_bench_"])
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SIFT_DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from unittest import mock

    from django.core.management import call_command

    from labeling.models import Annotation
    from labeling.services import taxonomy_migrations
    from labeling.services.taxonomy import taxonomy_draft_publish

    call_command("migrate", verbosity=0)
    began = time.monotonic()
    project, lead, reviewers = build(answers, open_items=20_000)
    print(f"built {answers:,} answers + 20,000 open items in {time.monotonic() - began:.1f} s; "
          f"{REVIEWERS} reviewers, one checkout + submit each every {CYCLE_SECONDS * 1000:.0f} ms")
    real_exclusive = taxonomy_migrations.answer_lock_exclusive

    def publish(timings: dict[str, float]) -> None:
        def timed_exclusive(**kwargs: Any) -> None:
            real_exclusive(**kwargs)
            timings["exclusive_from"] = time.monotonic()

        timings["start"] = time.monotonic()
        with mock.patch("labeling.services.taxonomy.answer_lock_exclusive", side_effect=timed_exclusive):
            taxonomy_draft_publish(actor=lead, project=project, changelog="split hate")
        timings["end"] = time.monotonic()

    baseline, _ = run_phase(project, reviewers, args.baseline_seconds)
    with_publish, timings = run_phase(project, reviewers, None, publish)
    duration = timings["end"] - timings["start"]
    mapped = Annotation.objects.filter(project=project, mapped_taxonomy_version__isnull=False).count()
    exclusive = timings["end"] - timings["exclusive_from"]
    print(f"publish: {duration:.2f} s in all, answer lock held EXCLUSIVE {exclusive:.3f} s; {mapped:,} answers "
          "mapped onto v2")
    print("reviewer latency (in-process services, real PostgreSQL):")
    report("baseline, no publish", baseline)
    report("publish run, whole run", with_publish)
    report("publish run, during it", with_publish, (timings["start"], timings["end"]))
    errors = [e for thread in [*baseline, *with_publish] for e in thread.errors]
    print(f"reviewer errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
