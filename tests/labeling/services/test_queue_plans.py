"""Every statement of the checkout and submit paths keeps its intended plan in every database state users meet.

What the planner believes about a project's tables is often wrong: a new database has no statistics, a bulk import
outruns autovacuum, the lease table was analysed while it was empty. On such beliefs a checkout once scanned every
open item of the project per ranked row (11.7 s per checkout at 2,000 items without statistics, 3.8 s at 100k
after ANALYZE) and probed the leases with a sequential scan per candidate. So these tests build each state
(tests/labeling/services/queue_states.py), EXPLAIN ANALYZE each statement the way the service runs it (inside a
checkout or submit transaction, whose first statement sets the planner up), and assert the shape:

- no sequential scan and no bitmap scan, of any table;
- the rows examined are bounded by the walk itself: the ranking's finished head plus a batch, never the pool;
- the availability probes (held, mine, done) touch only each candidate's own few leases and answers, however
  many the project has.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from labeling.services import adjudication, queues
from labeling.services.annotations import _lock_sql
from labeling.services.queues import render_sql
from labeling.services.reviewer_languages import MEMBERSHIP_LANGUAGES_LOCK_SQL, RANKED_LANGUAGE_WINDOW
from labeling.services.taxonomy_migrations import _ANSWER_LOCK_FOR_LEASE_SQL, ANSWER_LOCK_CLASS
from tests.factories import ProjectFactory, member
from tests.labeling.services import queue_states

pytestmark = [pytest.mark.postgres]

PROBES = ("labeling_lease", "labeling_annotation", "labeling_clustermember")
# Checkout statements whose walk steps over the ranking's finished head: they may examine that many rows.
WALKS = {"FIRST_OPEN_RANK_SQL", "RANKING_SCAN_SQL"}
CHECKOUT = ("HELD_AND_BOOSTED_SQL", "BOOST_SCAN_SQL", "FIRST_OPEN_RANK_SQL", "RANKING_SCAN_SQL", "FALLBACK_SCAN_SQL",
            "CLAIM_SQL", "AVAILABLE_NOW_SQL", "EARLIEST_HELD_ELSEWHERE_SQL")
STATES = [pytest.param(name, marks=[pytest.mark.slow] if name == "analyzed_1m" else [])
          for name in queue_states.STATES]


def _explain(setup: str, setup_params: Any, sql: str, params: Any) -> dict[str, Any]:
    """EXPLAIN ANALYZE ``sql`` after ``setup`` (the transaction's first statement) in the test's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(setup, setup_params)
        cursor.fetchall()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        plan: dict[str, Any] = cursor.fetchone()[0][0]["Plan"]
    return plan


def _shape(plan: dict[str, Any]) -> dict[str, Any]:
    return {"plan": [f"{node['Node Type']} {node.get('Index Name', node.get('Relation Name', ''))} "
                     f"{node.get('Index Cond', '')} rows={node.get('Actual Rows')}x{node.get('Actual Loops')}"
                     f"-{node.get('Rows Removed by Filter', 0)}"
                     for node in queue_states.nodes(plan)],
            "seq": queue_states.sequential_scans(plan), "bitmap": queue_states.bitmap_scans(plan),
            **{table: queue_states.rows_examined(plan, table) for table in
               ("labeling_item", "labeling_rankingentry", *PROBES)}}


@pytest.mark.parametrize("state_name", STATES)
def test_checkout_and_submit_statements_keep_their_plans(state_name: str, postgres_only: None, db: None) -> None:
    state = queue_states.STATES[state_name]
    project = ProjectFactory(slug=f"plans-{state_name.replace('_', '-')}", overlap=2)
    reviewer = member(project, username="planner", role="reviewer")
    others = [member(project, username=f"other{i}", role="reviewer").pk for i in range(4)]
    params = queue_states.build(state, project_id=project.pk, reviewer_id=reviewer.pk, others=others)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM labeling_item WHERE project_id = %s AND n_done < n_required ORDER BY id "
                       "LIMIT 1", [project.pk])
        open_item = cursor.fetchone()[0]
    claim = {**params, "item": open_item, "expires": params["now"], "reason": "uncertainty", "score": None,
             "taxonomy_version": project.current_taxonomy_version_id, "model_version": None, "inclusion": None,
             "suggestion": None, "hidden": False}
    membership_lock, _ = render_sql(queues.MEMBERSHIP_LOCK_SQL)
    # In a clustered pool a candidate may be a member waiting for its representative: the walk steps over up to
    # cluster_size - 1 of them per candidate, and probes each one's representative (one more item row).
    spread = max(1, state.cluster_size)
    walk = state.finished_ranked + spread * (params["batch"] + 2)
    shapes: dict[str, dict[str, Any]] = {}
    for name in CHECKOUT:
        sql, _ = render_sql(getattr(queues, name))
        plan = _explain(membership_lock, params, sql, claim if name == "CLAIM_SQL" else params)
        shapes[name] = _shape(plan)
        bound = walk if name in WALKS else spread * (params["batch"] + 2)
        assert shapes[name]["seq"] == [] and shapes[name]["bitmap"] == [], (name, shapes[name])
        assert shapes[name]["labeling_item"] <= bound * (2 if state.cluster_size else 1), (name, shapes[name])
        assert shapes[name]["labeling_rankingentry"] <= (walk if name in WALKS else 0), (name, shapes[name])
        for table in PROBES:
            # Each candidate's probes find that item's own leases or answers (at most a few: n_required is 2).
            assert shapes[name][table] <= 2 * bound, (name, table, shapes[name])

    if state.languages:
        _assert_language_pass_plans(state, params, walk)

    # The submit: its first statement takes the answer lock and sets the planner up; then the item and lease locks
    # by primary key, and (for a submit that finishes its item) the adjudication probe over the item's answers.
    lease_id = _a_lease(project.pk, reviewer.pk, open_item, project.current_taxonomy_version_id)
    first = _ANSWER_LOCK_FOR_LEASE_SQL.format(also=", " + queues.queue_planner_settings())
    item_sql, lease_sql = _lock_sql()
    for name, sql, args in (("item lock", item_sql, [lease_id]), ("lease lock", lease_sql, [lease_id]),
                            ("adjudication probe", adjudication._ANSWERS_SQL, [open_item])):
        shape = _shape(_explain(first, [ANSWER_LOCK_CLASS, lease_id], sql, args))
        assert shape["seq"] == [] and shape["bitmap"] == [], (name, shape)
        assert shape["labeling_item"] <= 1 and shape["labeling_rankingentry"] == 0, (name, shape)
        assert all(shape[table] <= 2 for table in PROBES), (name, shape)
    if state.cluster_size:
        # The clause did its job: every candidate the fallback scan offers is a representative or has a finished one.
        sql, _ = render_sql(queues.FALLBACK_SCAN_SQL)
        with connection.cursor() as cursor:
            cursor.execute(membership_lock, params)
            cursor.execute(sql, params)
            offered = [row[0] for row in cursor.fetchall()]
            cursor.execute("SELECT count(*) FROM labeling_clustermember c JOIN labeling_item r"
                           " ON r.id = c.representative_id WHERE c.item_id = ANY(%s) AND c.item_id <> r.id"
                           " AND r.n_done < r.n_required", [offered])
            assert len(offered) == 3 and cursor.fetchone()[0] == 0


def _a_lease(project_id: int, reviewer_id: int, item_id: int, version_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO labeling_lease (project_id, item_id, reviewer_id, state, created_at, expires_at, renewals,"
            " taxonomy_version_id, selection_reason, suggestion_hidden) VALUES (%s, %s, %s, 'active', now(),"
            " now() + interval '5 minutes', 0, %s, 'uncertainty', false) RETURNING id",
            [project_id, item_id, reviewer_id, version_id])
        return int(cursor.fetchone()[0])


# A pass limited to a Hindi reviewer's languages (reviewer_languages.py): the same shapes, bounded by one in ten items
# being theirs (LANGUAGES) plus the undetermined tenth: the filtered walks step over about four rows per candidate.
LANGUAGE_PASS = ("BOOST_SCAN_SQL", "RANKING_SCAN_SQL", "FALLBACK_LANGUAGE_SCAN_SQL", "AVAILABLE_NOW_SQL",
                 "EARLIEST_HELD_ELSEWHERE_SQL")


def _assert_language_pass_plans(state: queue_states.QueueState, params: dict[str, Any], walk: int) -> None:
    languages = ("hi", "")
    membership_lock, _ = render_sql(MEMBERSHIP_LANGUAGES_LOCK_SQL)
    share = 2 / len(queue_states.LANGUAGES)
    for name in LANGUAGE_PASS:
        sql, names = render_sql(getattr(queues, name), languages=languages)
        plan = _explain(membership_lock, params, sql, {**params, **names, "window": RANKED_LANGUAGE_WINDOW})
        shape = _shape(plan)
        assert shape["seq"] == [] and shape["bitmap"] == [], (name, shape)
        # Ranked: the finished head plus the rows of other languages between the batch's candidates; elsewhere one
        # batch per language walked (fallback) or the candidates a filter steps over (boost, the empty path).
        bound = (walk + int((params["batch"] + 2) / share)) if name == "RANKING_SCAN_SQL" else \
            len(languages) * int((params["batch"] + 2) / share)
        assert shape["labeling_item"] <= bound, (name, bound, shape)
        assert shape["labeling_rankingentry"] <= (bound if name == "RANKING_SCAN_SQL" else 0), (name, shape)
        for table in PROBES:
            assert shape[table] <= 2 * bound, (name, table, shape)
        if name == "FALLBACK_LANGUAGE_SCAN_SQL":
            # One walk of the per-language index for each language, never the project's whole open pool.
            used = {node.get("Index Name") for node in queue_states.nodes(plan)}
            assert "item_open_language_random" in used, shape
