"""Per-project item counts that pages read without counting the pool: an append-only ledger of deltas.

Why a ledger and not one counter row per project
------------------------------------------------
The pages and the stats API show, per project, how many items there are, how many are gold, finished
(``n_done >= n_required``) and labelled (``n_done > 0``). Counting them is a scan of the project's items:
0.5-1 s at 1M items, on every request. So PostgreSQL keeps the counts itself, with triggers on
``labeling_item`` (migration 0004) that insert one *delta* row per change:

- INSERT (including COPY, which the importer uses): one statement-level row per project, summed over the
  statement's transition table;
- UPDATE of ``n_done``, ``n_required``, ``is_gold`` or ``project_id`` that changes a count: one row per item
  (a submit, an undo, a taxonomy re-queue, an import turning an item into gold);
- DELETE: one statement-level row per project, negative.

Invariant: for every project, ``SUM(delta columns) == the live aggregate over its items``, in every
snapshot, because each delta commits or rolls back with the write that caused it. Nothing in Python has to
remember to maintain it: factories, raw SQL in the queue and COPY all fire the same triggers.

A single counter row would be the same invariant with a hot lock: every submit of a project would queue on
one row until its transaction commits, and an import UPDATE chunk that holds item locks while waiting for
the counter row deadlocks against a submit that holds the counter and waits for one of those items.
Inserting deltas takes no shared lock. ``compact`` folds a project's deltas into one row now and then
(readers call it when a project has more than ``COMPACT_AFTER`` rows): a DELETE ... RETURNING feeding an
INSERT of the sum, so rows committed concurrently (invisible to the DELETE) survive and two concurrent
compactions cannot double count (the second one finds the first one's rows gone and sums nothing).

On SQLite (the demo without a database server) there are no triggers: ``counts`` falls back to the live
aggregate, which is what a demo-sized pool wants anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection, models
from django.db.models import Count, F, Q

COMPACT_AFTER = 1000


@dataclass(frozen=True)
class ItemCounts:
    items: int = 0  # every item, gold included
    gold: int = 0
    finished: int = 0  # n_done >= n_required, gold included
    gold_finished: int = 0
    labelled: int = 0  # n_done > 0, gold excluded

    @property
    def pool(self) -> int:
        """Non-gold items."""
        return self.items - self.gold

    @property
    def pool_finished(self) -> int:
        return self.finished - self.gold_finished


_FIELDS = ("items", "gold", "finished", "gold_finished", "labelled")
COMPACT_SQL = """
WITH gone AS (DELETE FROM labeling_itemcount WHERE project_id = %s RETURNING *)
INSERT INTO labeling_itemcount (project_id, items, gold, finished, gold_finished, labelled)
SELECT project_id, SUM(items), SUM(gold), SUM(finished), SUM(gold_finished), SUM(labelled) FROM gone GROUP BY project_id
"""


class ItemCountManager(models.Manager["ItemCount"]):
    def counts(self, project_ids: Iterable[int]) -> dict[int, ItemCounts]:
        """Counts per project (every id asked for is in the answer; a project without items has zeros)."""
        ids = sorted(set(project_ids))
        out = {pk: ItemCounts() for pk in ids}
        if not ids:
            return out
        if connection.vendor != "postgresql":
            return self._live(ids, out)
        sums: dict[str, Any] = {f: models.Sum(f) for f in _FIELDS}
        rows: Any = self.filter(project_id__in=ids).values("project_id").annotate(n=Count("id"), **sums)
        for row in rows:
            out[row["project_id"]] = ItemCounts(**{f: int(row[f] or 0) for f in _FIELDS})
            if row["n"] > COMPACT_AFTER:
                self.compact(row["project_id"])
        return out

    def compact(self, project_id: int) -> None:
        """Fold the project's deltas into one row (safe under concurrent writers and compactions)."""
        with connection.cursor() as cursor:
            cursor.execute(COMPACT_SQL, [project_id])

    @staticmethod
    def _live(ids: list[int], out: dict[int, ItemCounts]) -> dict[int, ItemCounts]:
        from labeling.models.items import Item

        done = Q(n_done__gte=F("n_required"))
        rows = (Item.objects.filter(project_id__in=ids).values("project_id").annotate(
            items=Count("id"), gold=Count("id", filter=Q(is_gold=True)), finished=Count("id", filter=done),
            gold_finished=Count("id", filter=done & Q(is_gold=True)),
            labelled=Count("id", filter=Q(n_done__gt=0, is_gold=False))))
        for row in rows:
            out[row["project_id"]] = ItemCounts(**{f: int(row[f]) for f in _FIELDS})
        return out


class ItemCount(models.Model):
    """One delta of a project's item counts (see the module essay); read through ``ItemCount.objects.counts``."""

    # The database-level foreign key is ON DELETE CASCADE (migration 0004), so deleting a project removes its
    # ledger after the item-delete trigger has written to it; Django's collector leaves these rows alone.
    project = models.ForeignKey("labeling.Project", on_delete=models.DO_NOTHING, db_constraint=False,
                                related_name="+")
    items = models.BigIntegerField(default=0)
    gold = models.BigIntegerField(default=0)
    finished = models.BigIntegerField(default=0)
    gold_finished = models.BigIntegerField(default=0)
    labelled = models.BigIntegerField(default=0)

    objects = ItemCountManager()

    def __str__(self) -> str:
        return f"{self.project_id}: {self.items:+d} items"
