"""Model instances from the queue's plain-SQL rows, without ``Model.objects.raw``'s set-up on every query.

The reviewer hot path (queue/next, submit) reads its project, lease, item and taxonomy-version rows in plain SQL
(see labeling/services/queues.py for why). ``RawQuerySet`` would turn those rows into instances, but it
re-resolves the column-to-field mapping and every field's database converters on each query: in a profile of the
two-call cycle that was about a quarter of the web process's CPU. ``first_instance`` works out that plan once per
(model, column list, database) and then only applies it.

The instance is what the ORM would build: every concrete field set from its column through the same converters
(JSON decoded, SQLite's text dates parsed), ``_state`` marked as loaded from the database, and columns that are
not fields (a join's extra ``caller_role``, say) set as plain attributes, as ``raw()`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import connections, models
from django.db.models.base import DEFERRED

ModelT = TypeVar("ModelT", bound=models.Model)
Converter = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True, slots=True)
class _Plan:
    field_names: list[str]  # every concrete field's attname, in the model's order (what Model.from_db expects)
    sources: list[int | None]  # the row position each field comes from (None: not selected, left deferred)
    converters: list[list[tuple[Converter, Any]]]  # per field: (converter, the expression it is called with)
    extras: list[tuple[str, int]]  # columns that are not fields: (attribute name, row position)


_plans: dict[tuple[type[models.Model], tuple[str, ...], str], _Plan] = {}


def _plan(model: type[models.Model], columns: tuple[str, ...], alias: str) -> _Plan:
    key = (model, columns, alias)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    connection = connections[alias]
    position = {name: i for i, name in enumerate(columns)}
    fields = list(model._meta.concrete_fields)
    converters: list[list[tuple[Converter, Any]]] = []
    for field in fields:
        column = field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        converters.append([(converter, column) for converter in found])
    taken = {field.column for field in fields} | {field.attname for field in fields}
    plan = _Plan(
        field_names=[field.attname for field in fields],
        sources=[position.get(field.column) if field.column else None for field in fields],
        converters=converters,
        extras=[(name, i) for i, name in enumerate(columns) if name not in taken],
    )
    _plans[key] = plan  # a handful of keys: one per (model, statement shape)
    return plan


def instance_from_row(model: type[ModelT], columns: Sequence[str], row: Sequence[Any], *,
                      alias: str = "default") -> ModelT:
    """``model`` built from ``row`` (whose column names are ``columns``), as the ORM would load it."""
    plan = _plan(model, tuple(columns), alias)
    connection = connections[alias]
    values: list[Any] = []
    for source, converters in zip(plan.sources, plan.converters, strict=True):
        if source is None:
            values.append(DEFERRED)
            continue
        value = row[source]
        for converter, expression in converters:
            value = converter(value, expression, connection)
        values.append(value)
    instance: ModelT = model.from_db(alias, plan.field_names, values)
    for name, source in plan.extras:
        setattr(instance, name, row[source])
    return instance


def first_instance(model: type[ModelT], sql: str, params: Sequence[Any] | dict[str, Any], *,
                   alias: str = "default") -> ModelT | None:
    """The first row of ``sql`` as a ``model`` instance, or None when it returns no row."""
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            return None
        columns = [column[0] for column in cursor.description]
    return instance_from_row(model, columns, row, alias=alias)
