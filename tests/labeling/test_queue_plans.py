"""The checkout scans keep their intended plans on tables PostgreSQL has no statistics for.

A new project, a bulk load or a test database has no statistics until ANALYZE (autovacuum may be off, as it is
on this machine, or simply not have run yet). The planner then guesses every table is tiny, and a plan that is
fine on guesses for one statement can be a disaster for another: the ranking scan once fetched its items through
the partial index item_open_random, scanning all of a project's open items for every ranked row (11.7 s per
checkout at 2,000 items, while holding row locks; CI's 32-reviewer test timed out on it). These tests wipe the
statistics and read the plans PostgreSQL actually runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from labeling.models import Item, RankingEntry
from labeling.querysets import RankingRow
from labeling.services import queues
from labeling.services.queues import render_sql
from tests.factories import ProjectFactory, member

pytestmark = [pytest.mark.postgres]

N_ITEMS = 2000
N_FINISHED_RANKED = 600  # finished items at the top of the ranking: the walk steps over all of them


def _wipe_statistics() -> None:
    """Put the queue's tables back to 'never analysed', as a fresh database has them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone()[0], "these tests rewrite pg_statistic: run them as a superuser (make test does)"
        cursor.execute("""
            SELECT c.oid FROM pg_class c
            WHERE c.relname IN ('labeling_item', 'labeling_rankingentry', 'labeling_lease', 'labeling_annotation')
               OR c.oid IN (SELECT indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
                            WHERE t.relname IN ('labeling_item', 'labeling_rankingentry', 'labeling_lease',
                                                'labeling_annotation'))""")
        oids = [row[0] for row in cursor.fetchall()]
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = ANY(%s)", [oids])
        cursor.execute("UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid = ANY(%s)", [oids])


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _explain(template: str, params: dict[str, Any]) -> dict[str, Any]:
    """The plan ``template`` runs with inside a checkout: after the membership lock, which sets the planner up."""
    sql, _ = render_sql(template)
    lock, _ = render_sql(queues.MEMBERSHIP_LOCK_SQL)
    with connection.cursor() as cursor:
        cursor.execute(lock, params)
        assert cursor.fetchall(), "the reviewer is a member"
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        plan: dict[str, Any] = cursor.fetchone()[0][0]
    return plan


@pytest.fixture
def unanalysed_queue(postgres_only: None, db: None) -> dict[str, Any]:
    project = ProjectFactory(slug="plans", overlap=1)
    Item.objects.bulk_create([
        Item(project=project, external_id=f"p{i}", text=f"message {i}", n_required=1, content_hash=f"{i:064x}")
        for i in range(N_ITEMS)], batch_size=1000)
    ids = list(Item.objects.filter(project=project).order_by("id").values_list("id", flat=True))
    ranked = ids[::2]
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=1, start_rank=0, rows=[
        RankingRow(item_id=item_id, score=1.0, reason="uncertainty") for item_id in ranked])
    Item.objects.filter(pk__in=ranked[:N_FINISHED_RANKED]).update(n_done=1)
    reviewer = member(project, username="planner", role="reviewer")
    _wipe_statistics()
    return {"project": project.pk, "reviewer": reviewer.pk, "now": timezone.now(), "batch": queues.CLAIM_BATCH,
            "version": 1, "floor": 0}


def _item_access(plan: dict[str, Any]) -> set[str]:
    return {node.get("Index Name", node["Node Type"]) for node in _nodes(plan["Plan"])
            if node.get("Relation Name") == "labeling_item"}


def test_the_ranking_scan_fetches_items_by_primary_key_without_statistics(unanalysed_queue: dict[str, Any]) -> None:
    plan = _explain(queues.RANKING_SCAN_SQL, unanalysed_queue)
    assert _item_access(plan) == {"labeling_item_pkey"}
    assert plan["Plan"]["Actual Rows"] == queues.CLAIM_BATCH
    # About four buffers per ranked row walked (the ranking, the item, the lease probes); the bad plan hit 1.46M.
    assert plan["Plan"]["Shared Hit Blocks"] < 10 * (N_FINISHED_RANKED + queues.CLAIM_BATCH)


def test_the_other_stages_walk_their_indexes_in_order_without_statistics(unanalysed_queue: dict[str, Any]) -> None:
    first = _explain(queues.FIRST_OPEN_RANK_SQL, unanalysed_queue)
    assert first["Plan"]["Actual Rows"] == 1
    assert _item_access(first) == {"labeling_item_pkey"}
    boost = _explain(queues.BOOST_SCAN_SQL, unanalysed_queue)
    assert boost["Plan"]["Actual Rows"] == 0  # nothing is boosted
    fallback = _explain(queues.FALLBACK_SCAN_SQL, unanalysed_queue)
    assert fallback["Plan"]["Actual Rows"] == queues.CLAIM_BATCH
    # In random_key order straight off the partial index, stopping at the first three it may take: no Sort of
    # every open item (what a plan on guesses could otherwise pick, and what 1M items could not afford).
    assert _item_access(fallback) == {"item_open_random"}
    assert [node for node in _nodes(fallback["Plan"]) if node["Node Type"] == "Sort"] == []
