"""The submit's row locks and writes, in as few round trips as each database allows.

annotation_submit (labeling/services/annotations.py) decides; this module only spells its statements. A submit
is one of the two requests per labelled item, and on the queue's hot path each statement costs a round trip of
web CPU (the driver, the ORM) and PostgreSQL CPU (parse, plan, execute); bench/queue_cost.py counts them. What
is folded together here, and why it is the same as the separate statements it replaces:

- **The item lock also reads the project's current taxonomy version.** It is the submit's second statement, so
  its snapshot is taken after the first one was granted the project's answer lock, SHARED: every publish that
  switched the version before then is seen, and none can switch it before this transaction ends (the argument of
  ``taxonomy_migrations.current_version_pinned``, whose separate look-up this replaces).
- **The lease lock also reads the lease's taxonomy version** (a LEFT JOIN; only the lease row is locked). The
  lease's version is the one its labels are checked against.
- **The annotation INSERT, the lease's close and the item's ``n_done + 1`` are one statement** on PostgreSQL (a
  data-modifying CTE: each part runs exactly once, to completion, whether or not the outer SELECT reads it, and a
  unique violation in the INSERT fails the whole statement, so nothing is half-written). SQLite has no
  data-modifying CTEs: there they stay three statements, inside the same transaction.

The statements are built once per database vendor from the models' metadata (no ORM compile per request); the
values go through each field's own ``pre_save`` and ``get_db_prep_save``, as ``Model.save`` would.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django.db import connection

from labeling.models import Annotation, Item, Lease, Project, TaxonomyVersion
from labeling.rows import instance_from_row


def _quoted(model: type[Any], alias: str) -> list[str]:
    return [f"{alias}.{connection.ops.quote_name(field.column)}" for field in model._meta.concrete_fields]


@functools.cache
def _lock_statements(vendor: str) -> tuple[str, str]:
    lock = "FOR NO KEY UPDATE" if vendor == "postgresql" else ""
    item, lease = Item._meta.db_table, Lease._meta.db_table
    project, version = Project._meta.db_table, TaxonomyVersion._meta.db_table
    item_sql = (f"SELECT {', '.join(_quoted(Item, 'i'))}, p.current_taxonomy_version_id "  # noqa: S608
                f"FROM {item} i JOIN {project} p ON p.id = i.project_id "
                f"WHERE i.id = (SELECT item_id FROM {lease} WHERE id = %s) {lock + ' OF i' if lock else ''}")
    # The version by a LATERAL subquery that is not flattened (OFFSET 0): the lease must be found by its primary key
    # and the version by its own. As a plain join, a planner that believed the lease table small drove the other way
    # round, walking every lease of the version through their taxonomy_version index (the plan test's
    # stale_history_100k state). SQLite has no LATERAL, and its planner starts from the primary key anyway.
    # Only model metadata goes into these texts; the ids are bound parameters.
    lateral = f"LEFT JOIN LATERAL (SELECT * FROM {version} v WHERE v.id = l.taxonomy_version_id OFFSET 0) v ON true"  # noqa: S608
    version_join = lateral if vendor == "postgresql" else f"LEFT JOIN {version} v ON v.id = l.taxonomy_version_id"
    selected = f"{', '.join(_quoted(Lease, 'l'))}, {', '.join(_quoted(TaxonomyVersion, 'v'))}"
    lease_sql = f"SELECT {selected} FROM {lease} l {version_join} WHERE l.id = %s {lock + ' OF l' if lock else ''}"  # noqa: S608
    return item_sql, lease_sql


def lock_statements() -> tuple[str, str]:
    """The item lock's and the lease lock's SQL for this database (the plan test EXPLAINs them)."""
    return _lock_statements(connection.vendor)


def item_lock(lease_id: int) -> tuple[Item, int | None] | None:
    """Lock the lease's item row; the item and the project's current taxonomy version id (None: no such lease).

    Call it after the answer lock (see the module docstring), inside the caller's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(lock_statements()[0], [lease_id])
        row = cursor.fetchone()
        if row is None:
            return None
        columns = [column[0] for column in cursor.description]
    return instance_from_row(Item, columns[:-1], row[:-1]), row[-1]


def lease_lock(lease_id: int) -> Lease | None:
    """Lock the lease row; the lease with its ``taxonomy_version`` loaded (None when it has none)."""
    with connection.cursor() as cursor:
        cursor.execute(lock_statements()[1], [lease_id])
        row = cursor.fetchone()
        if row is None:
            return None
        columns = [column[0] for column in cursor.description]
    split = len(Lease._meta.concrete_fields)
    lease = instance_from_row(Lease, columns[:split], row[:split])
    version = (instance_from_row(TaxonomyVersion, columns[split:], row[split:])
               if lease.taxonomy_version_id is not None else None)
    lease.taxonomy_version = version
    return lease


@functools.cache
def _insert_statement(vendor: str) -> tuple[str, list[Any]]:
    fields = [field for field in Annotation._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    values = ", ".join(["%s"] * len(fields))
    insert = f"INSERT INTO {Annotation._meta.db_table} ({columns}) VALUES ({values}) RETURNING id"  # noqa: S608
    if vendor == "postgresql":
        insert = (f"WITH answer AS ({insert}), "  # noqa: S608
                  f"closed AS (UPDATE {Lease._meta.db_table} SET state = %s, closed_at = %s WHERE id = %s), "
                  f"counted AS (UPDATE {Item._meta.db_table} SET n_done = n_done + 1 WHERE id = %s) "
                  "SELECT id FROM answer")
    return insert, fields


def answer_write(annotation: Annotation, *, now: datetime) -> None:
    """INSERT ``annotation`` (built, not saved), close its lease as submitted at ``now`` and count the answer on
    its item (``n_done + 1``). Sets the annotation's id and ``created_at`` as ``save()`` would. Raises
    IntegrityError, having written nothing, when a unique constraint refuses the answer."""
    sql, fields = _insert_statement(connection.vendor)
    params = [field.get_db_prep_save(field.pre_save(annotation, True), connection) for field in fields]
    closed_at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(sql, [*params, Lease.State.SUBMITTED, closed_at, annotation.lease_id, annotation.item_id])
            annotation.pk = cursor.fetchone()[0]
        else:
            cursor.execute(sql, params)
            annotation.pk = cursor.fetchone()[0]
            cursor.execute(f"UPDATE {Lease._meta.db_table} SET state = %s, closed_at = %s "  # noqa: S608
                           "WHERE id = %s", [Lease.State.SUBMITTED, closed_at, annotation.lease_id])
            cursor.execute(f"UPDATE {Item._meta.db_table} SET n_done = n_done + 1 WHERE id = %s",  # noqa: S608
                           [annotation.item_id])
    annotation._state.adding = False
    annotation._state.db = connection.alias
