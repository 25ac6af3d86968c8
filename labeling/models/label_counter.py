"""A per-project counter of changes to the labels a model trains on: the retrain's fingerprint reads it.

Why a counter
-------------
The retrain skips a run whose inputs it has seen (learning/services/retrain.py). Summarising the labels by
(newest annotation id, annotation count) can miss a change: ids are handed out at INSERT, not at commit, so a
submit that commits after a later id (an out-of-order commit) followed by an undo of another answer restores the
same pair over a different set of labels, and the retrain would call the new set "seen". A number that every
change raises can never come back to an earlier value, whatever the order of commits.

``LabelCounter.objects.bump`` is called by each write that changes a training label: a submit, an undo and an
adjudication decision (labeling/services/annotations.py, adjudication.py). It commits or rolls back with the
change, so a committed change is always counted.

Why its own row, and why the bump is the LAST write of its transaction
----------------------------------------------------------------------
The row is per project, so it is hot: every submit of the project updates it, and an UPDATE holds the row lock
until its transaction ends. Two rules keep that harmless (compare labeling/models/counters.py, whose ledger
avoids the lock altogether because an import holds item locks while it counts):

- It is not a column of ``Project``: a publish holds the project row (FOR NO KEY UPDATE, the mode an UPDATE
  takes) for its whole transaction and a deletion holds it FOR UPDATE, so a per-submit UPDATE there would queue
  every submit behind them (or deadlock with them).
- The bump is one statement (INSERT ... ON CONFLICT DO UPDATE) and the transaction's last write, so the lock is
  held only from the bump to the commit, and the holder waits for no other lock in between. A deadlock needs a
  cycle of waits; a transaction waiting for the counter waits for one that waits for nothing, so no cycle can
  pass through it. (The only work between the bump and the commit is PostgreSQL's deferred foreign-key
  checks, which take KEY SHARE locks. Those conflict only with FOR UPDATE or a DELETE of the referenced row,
  and no transaction that bumps the counter holds such a lock on a row a submit references: submits and undos
  lock items, leases and memberships FOR NO KEY UPDATE, and a decision locks its adjudication, which no submit
  references.) Submits of one project queue on the counter only for the length of a commit. What would break
  this: a bump in a transaction that holds the project row FOR UPDATE (a deletion). A submit that
  has bumped checks its annotation's foreign key to the project at commit and would wait for that holder, which
  would wait for the counter. Such writes leave the counter alone; the fingerprint still sees them through the
  annotation count and newest id it keeps.

A project whose labels never changed has no row: its value is 0.
"""

from __future__ import annotations

from django.db import connection, models


class LabelCounterManager(models.Manager["LabelCounter"]):
    def bump(self, *, project_id: int) -> None:
        """Count one change to the project's training labels. Call it as the LAST write of the transaction that
        makes the change (see the module essay: the row lock is then held only until the commit)."""
        table = self.model._meta.db_table
        with connection.cursor() as cursor:
            # One statement for the first change of a project (INSERT) and every later one (UPDATE); PostgreSQL
            # and SQLite share this syntax.
            cursor.execute(
                f"INSERT INTO {table} (project_id, value) VALUES (%s, 1) "  # noqa: S608 (our own table name)
                f"ON CONFLICT (project_id) DO UPDATE SET value = {table}.value + 1",
                [project_id],
            )

    def value(self, *, project_id: int) -> int:
        """The project's count of label changes so far (0 before the first)."""
        return int(self.filter(project_id=project_id).values_list("value", flat=True).first() or 0)


class LabelCounter(models.Model):
    """How many label changes (submits, undos, decisions) the project has committed; see the module essay."""

    project = models.OneToOneField("labeling.Project", on_delete=models.CASCADE, primary_key=True,
                                   related_name="+")
    value = models.BigIntegerField(default=0)

    objects = LabelCounterManager()

    def __str__(self) -> str:
        return f"project {self.project_id}: {self.value} label changes"
