"""Database states a checkout meets in the field, built fast in plain SQL, and the plans its statements get there.

Shared by tests/labeling/services/test_queue_plans.py (asserts the shapes) and bench/queue_latency.py (times them). Each
state is a project whose ranking's head is already finished (the walk steps over ``finished_ranked`` rows), with:

- ``fresh``: a small project and no statistics at all (a new database, or a test run);
- ``analyzed``: ``n_items`` open items, then ANALYZE (a long-lived database);
- ``history``: as ``analyzed``, plus one submitted lease and one answer per item of ``history`` other reviewers'
  work (the lease and annotation tables are big, the probes must still be index look-ups);
- ``stale_history``: the same history, but ANALYZE ran while the lease and annotation tables were still empty (the
  planner believes a scan of them costs nothing);
- ``mid_import``: ANALYZE ran when the project was small, then a bulk import multiplied it (the statistics
  call it tiny; autovacuum has not caught up);
- ``clustered``: as ``analyzed``, with every item in a near-duplicate cluster of ``cluster_size`` consecutive ids
  (the first is the representative), and a ranking written before the clustering (members still in it): every
  candidate also probes its cluster row and its representative, and the walk steps over waiting members;
- ``languages_100k``: as ``analyzed``, the items' languages cycling through ``LANGUAGES`` by id (one in ten Hindi,
  one in ten undetermined): the checkout of a Hindi reviewer with reviewer languages in use steps over the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.utils import timezone

ACTIVE_LEASES = 500  # leases other reviewers hold at once in the history states: every "held" probe must skip them

QUEUE_TABLES = ("labeling_item", "labeling_rankingentry", "labeling_lease", "labeling_annotation",
                "labeling_membership", "labeling_clustermember")


@dataclass(frozen=True)
class QueueState:
    name: str
    n_items: int
    history: int = 0  # items with a submitted lease and an answer by another reviewer (n_done stays below n_required)
    # "after": ANALYZE once built; "never": wipe statistics; "before": ANALYZE when the project was small;
    # "before_history": ANALYZE once the items are in, before the leases and answers.
    analyze: str = "after"
    ranked: int = 20_000
    finished_ranked: int = 600
    cluster_size: int = 0  # > 0: every item is in a cluster of this many consecutive ids
    languages: bool = False  # items' languages cycle through LANGUAGES


LANGUAGES = ("hi", "ar", "en", "es", "fr", "de", "zh", "ru", "id", "")

STATES = {
    "fresh": QueueState("fresh", 2_000, analyze="never", ranked=1_000),
    "analyzed_10k": QueueState("analyzed_10k", 10_000, ranked=5_000),
    "analyzed_100k": QueueState("analyzed_100k", 100_000),
    "history_100k": QueueState("history_100k", 100_000, history=100_000),
    "stale_history_100k": QueueState("stale_history_100k", 100_000, history=100_000, analyze="before_history"),
    "mid_import_100k": QueueState("mid_import_100k", 100_000, analyze="before"),
    "analyzed_1m": QueueState("analyzed_1m", 1_000_000),
    "clustered_100k": QueueState("clustered_100k", 100_000, cluster_size=10),
    "languages_100k": QueueState("languages_100k", 100_000, languages=True),
}


def _execute(sql: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])


def wipe_statistics() -> None:
    """Put the queue's tables back to 'never analysed', as a fresh database has them (needs a superuser)."""
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT c.oid FROM pg_class c WHERE c.relname = ANY(%s)
               OR c.oid IN (SELECT indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
                            WHERE t.relname = ANY(%s))""", [list(QUEUE_TABLES), list(QUEUE_TABLES)])
        oids = [row[0] for row in cursor.fetchall()]
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = ANY(%s)", [oids])
        cursor.execute("UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid = ANY(%s)", [oids])


def _insert_items(project_id: int, first: int, last: int, n_required: int) -> None:
    # random_key from a hash of the row number, not random(): the fallback's walk length (and so the rows a plan
    # examines) depends on how open items and cluster members interleave in that order, so the bounds must see the
    # same order every run.
    _execute(
        "INSERT INTO labeling_item (project_id, external_id, text, meta, content_hash, is_gold, n_required, n_done,"
        " boost, random_key, created_at, updated_at)"
        " SELECT %s, 'q' || g, 'message ' || g, '{}', md5(g::text), false, %s, 0, 0,"
        " ('x' || substr(md5('key' || g), 1, 8))::bit(32)::bigint / 4294967296.0, now(), now()"
        " FROM generate_series(%s, %s) g", [project_id, n_required, first, last])


def _analyze() -> None:
    for table in QUEUE_TABLES:
        _execute(f"ANALYZE {table}")


def build(state: QueueState, *, project_id: int, reviewer_id: int, others: list[int]) -> dict[str, Any]:
    """Fill ``project_id`` (overlap 2, empty) as ``state`` says; returns the checkout statements' parameters."""
    n_required = 2
    if state.analyze == "before":
        _insert_items(project_id, 1, 2_000, n_required)
        _analyze()
        _insert_items(project_id, 2_001, state.n_items, n_required)
    else:
        _insert_items(project_id, 1, state.n_items, n_required)
    if state.languages:
        _execute("UPDATE labeling_item SET language = (%s::text[])[1 + id %% %s] WHERE project_id = %s",
                 [list(LANGUAGES), len(LANGUAGES), project_id])
    # The ranking: the first `ranked` items by id, its head finished (n_done = n_required).
    _execute(
        "INSERT INTO labeling_rankingentry (project_id, ranking_version, rank, item_id, score, reason,"
        " inclusion_probability, suggested_label, suggested_confidence)"
        " SELECT %s, 1, row_number() OVER (ORDER BY id) - 1, id, 0.5, 'uncertainty', 1.0, '', NULL"
        " FROM (SELECT id FROM labeling_item WHERE project_id = %s ORDER BY id LIMIT %s) ranked",
        [project_id, project_id, state.ranked])
    _execute("UPDATE labeling_item SET n_done = n_required WHERE id IN (SELECT item_id FROM labeling_rankingentry"
             " WHERE project_id = %s AND ranking_version = 1 AND rank < %s)", [project_id, state.finished_ranked])
    _execute("UPDATE labeling_project SET active_ranking_version = 1 WHERE id = %s", [project_id])
    if state.cluster_size:
        _execute(
            "INSERT INTO labeling_clustermember (item_id, project_id, representative_id, kind, similarity, exact_key,"
            " minhash, created_at) SELECT id, project_id, first_value(id) OVER (PARTITION BY (n - 1) / %s ORDER BY id),"
            " CASE WHEN (n - 1) %% %s = 0 THEN 'representative' ELSE 'near' END, 0.9, md5(id::text), '\\x00'::bytea,"
            " now() FROM (SELECT id, project_id, row_number() OVER (ORDER BY id) AS n FROM labeling_item"
            " WHERE project_id = %s) numbered",
            [state.cluster_size, state.cluster_size, project_id])
    if state.analyze == "before_history":
        _analyze()
    if state.history:
        version = _current_version(project_id)
        # One submitted lease and one answer per item by one of `others`, all on items still open (n_done 1 of 2).
        _execute(
            "WITH picked AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM labeling_item"
            " WHERE project_id = %s AND n_done = 0 ORDER BY id LIMIT %s),"
            " leased AS (INSERT INTO labeling_lease (project_id, item_id, reviewer_id, state, created_at, expires_at,"
            " renewals, closed_at, taxonomy_version_id, selection_reason, selection_score, model_version,"
            " inclusion_probability, suggestion, suggestion_hidden)"
            " SELECT %s, p.id, (%s::bigint[])[1 + p.n %% %s], 'submitted', now(), now(), 0, now(), %s,"
            " 'uncertainty', NULL, NULL, NULL, NULL, false FROM picked p RETURNING id, item_id, reviewer_id)"
            " INSERT INTO labeling_annotation (project_id, item_id, reviewer_id, lease_id, taxonomy_version_id, labels,"
            " comment, selection_reason, created_at)"
            " SELECT %s, l.item_id, l.reviewer_id, l.id, %s, '[\"ok\"]', '', 'uncertainty', now() FROM leased l",
            [project_id, state.history, project_id, others, len(others), version, project_id, version])
        _execute("UPDATE labeling_item SET n_done = 1 WHERE project_id = %s AND n_done = 0 AND id IN"
                 " (SELECT item_id FROM labeling_annotation WHERE project_id = %s)", [project_id, project_id])
        # The reviewer checking out has a history too (their own answers, which every candidate is checked
        # against), and other reviewers hold leases right now (which every candidate's "held" count probes).
        _execute(
            "WITH picked AS (SELECT id FROM labeling_item WHERE project_id = %s AND n_done = 1 ORDER BY id DESC"
            " LIMIT %s), leased AS (INSERT INTO labeling_lease (project_id, item_id, reviewer_id, state, created_at,"
            " expires_at, renewals, closed_at, taxonomy_version_id, selection_reason, suggestion_hidden)"
            " SELECT %s, p.id, %s, 'submitted', now(), now(), 0, now(), %s, 'uncertainty', false FROM picked p"
            " RETURNING id, item_id) INSERT INTO labeling_annotation (project_id, item_id, reviewer_id, lease_id,"
            " taxonomy_version_id, labels, comment, selection_reason, created_at) SELECT %s, l.item_id, %s, l.id, %s,"
            " '[\"ok\"]', '', 'uncertainty', now() FROM leased l",
            [project_id, state.history // 10, project_id, reviewer_id, version, project_id, reviewer_id, version])
        _execute("UPDATE labeling_item SET n_done = 2 WHERE project_id = %s AND id IN (SELECT item_id FROM"
                 " labeling_annotation WHERE project_id = %s AND reviewer_id = %s)",
                 [project_id, project_id, reviewer_id])
        _execute(
            "INSERT INTO labeling_lease (project_id, item_id, reviewer_id, state, created_at, expires_at, renewals,"
            " taxonomy_version_id, selection_reason, suggestion_hidden)"
            " SELECT %s, i.id, (%s::bigint[])[1 + i.n %% %s], 'active', now(), now() + interval '5 minutes', 0, %s,"
            " 'uncertainty', false FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM labeling_item"
            " WHERE project_id = %s AND n_done = 0 ORDER BY id DESC LIMIT %s) i",
            [project_id, others, len(others), version, project_id, ACTIVE_LEASES])
    if state.analyze == "after":
        _analyze()
    elif state.analyze == "never":
        wipe_statistics()
    return {"project": project_id, "reviewer": reviewer_id, "now": timezone.now(), "batch": 3, "version": 1,
            "floor": 0}


def _current_version(project_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_taxonomy_version_id FROM labeling_project WHERE id = %s", [project_id])
        return int(cursor.fetchone()[0])


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def rows_examined(plan: dict[str, Any], relation: str) -> int:
    """Rows the plan's scans of ``relation`` produced, over all their loops (a bound on the work done there)."""
    return sum(int(node.get("Actual Rows", 0)) * int(node.get("Actual Loops", 1))
               + int(node.get("Rows Removed by Filter", 0)) * int(node.get("Actual Loops", 1))
               + int(node.get("Rows Removed by Index Recheck", 0))
               for node in nodes(plan) if node.get("Relation Name") == relation)


def sequential_scans(plan: dict[str, Any]) -> list[str]:
    return sorted({node["Relation Name"] for node in nodes(plan) if node["Node Type"] == "Seq Scan"})


def bitmap_scans(plan: dict[str, Any]) -> list[str]:
    return sorted({node.get("Relation Name") or node.get("Index Name", "?") for node in nodes(plan)
                   if node["Node Type"].startswith("Bitmap")})
