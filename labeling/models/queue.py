"""The reviewer queue's tables: rankings keyed by model version (with their one writer), and leases.

Rankings are written by the learning workers in batches under a *new*
``ranking_version`` and made live by one small UPDATE of
``Project.active_ranking_version`` (RankingEntry.objects.activate). Readers only
ever follow the pointer, so nobody sees a half-written ranking. See
labeling/services/queues.md for how checkout walks these tables.

``RankingEntryManager`` is the only code that writes rankings (``write_batch``/``write_columns``: COPY on
PostgreSQL, text rows or a binary stream built by numpy; ``activate``; ``prune``); the learning side calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections, models, transaction
from django.db.models import Q

from labeling.querysets import LeaseQuerySet
from learning.core.vocabulary import REASON_LABELS, REASON_MAX_LENGTH, Reason

# The reasons' one home is learning/core/vocabulary.py (the ranking emits most of them; the ground floor may
# import that module and nothing else of learning, see pyproject.toml). Built from it, so a reason the ranking
# starts to emit is a valid choice, in the API's enum and labelled on the labelling page without a second edit.
SelectionReason = models.TextChoices(  # type: ignore[call-overload]  # the functional API: stubs lack it
    "SelectionReason", [(reason.name, (reason.value, REASON_LABELS[reason])) for reason in Reason],
)


@dataclass(frozen=True, slots=True)
class RankingRow:
    """One queue position, as the learning side hands it over."""

    item_id: int
    score: float | None
    reason: str
    inclusion_probability: float | None = None
    suggested_label: str = ""
    suggested_confidence: float | None = None


class RankingEntryManager(models.Manager):  # type: ignore[type-arg]
    """The only way rankings are written: the learning side calls these, nothing else writes the table.

    Protocol (one retrain):
      1. ``write_batch`` repeatedly under a fresh ``ranking_version`` (invisible to readers);
      2. ``activate`` flips ``Project.active_ranking_version`` in one small UPDATE;
      3. ``prune`` deletes superseded versions in bounded batches.
    A crash before step 2 leaves only an orphan, inactive version, which the next prune removes.
    """

    def write_batch(self, *, project_id: int, ranking_version: int, start_rank: int,
                    rows: Sequence[RankingRow]) -> int:
        connection = connections[self.db]
        if connection.vendor == "postgresql":
            return self._copy_batch(connection, project_id, ranking_version, start_rank, rows)
        entries = [
            self.model(
                project_id=project_id, ranking_version=ranking_version, rank=start_rank + offset,
                item_id=row.item_id, score=row.score, reason=row.reason,
                inclusion_probability=row.inclusion_probability, suggested_label=row.suggested_label,
                suggested_confidence=row.suggested_confidence,
            )
            for offset, row in enumerate(rows)
        ]
        self.bulk_create(entries, batch_size=5000)
        return len(entries)

    # PostgreSQL fast path: COPY moves a 10k-row batch several times faster than a multi-row INSERT
    # (bench/retrain_loop.py prints both), which is most of a retrain's write phase at 100k+ items.
    _COPY_COLUMNS = ("project_id", "ranking_version", "rank", "item_id", "score", "reason",
                     "inclusion_probability", "suggested_label", "suggested_confidence")

    @contextmanager
    def _copy(self, connection: Any, options: str = "") -> Iterator[Any]:
        """A COPY ... FROM STDIN of ``_COPY_COLUMNS`` into the ranking table, in its own transaction."""
        table = connection.ops.quote_name(self.model._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in self._COPY_COLUMNS)
        with (
            transaction.atomic(using=self.db),
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN{options}") as copy,
        ):
            yield copy

    def _copy_batch(self, connection: Any, project_id: int, ranking_version: int, start_rank: int,
                    rows: Sequence[RankingRow]) -> int:
        with self._copy(connection) as copy:
            for offset, row in enumerate(rows):
                copy.write_row((project_id, ranking_version, start_rank + offset, row.item_id, row.score,
                                row.reason, row.inclusion_probability, row.suggested_label,
                                row.suggested_confidence))
        return len(rows)

    def write_columns(self, *, project_id: int, ranking_version: int, start_rank: int, item_ids: Any,
                      scores: Any, reasons: Any, inclusion_probabilities: Any, suggested_labels: Any = None,
                      suggested_confidences: Any = None) -> int:
        """``write_batch`` for parallel arrays (numpy or sequences), without a Python object per row.

        NaN in ``scores``, ``inclusion_probabilities`` or ``suggested_confidences`` means NULL; labels default
        to "" and confidences to NULL. On PostgreSQL the binary COPY stream is built by numpy: rows are grouped
        by their variable-width values (reason, label) and their NULL pattern, so that each group is one
        fixed-width structured array (rows may arrive in any order; ``rank`` orders them). Elsewhere this
        falls back to ``write_batch``.
        """
        import numpy as np

        ids = np.asarray(item_ids, dtype=np.int64)
        n = int(ids.shape[0])
        if n == 0:
            return 0
        score = np.asarray(scores, dtype=np.float64)
        inclusion = np.asarray(inclusion_probabilities, dtype=np.float64)
        reason = np.asarray(reasons).astype(str)
        label = np.full(n, "") if suggested_labels is None else np.asarray(suggested_labels).astype(str)
        confidence = (np.full(n, np.nan) if suggested_confidences is None
                      else np.asarray(suggested_confidences, dtype=np.float64))
        connection = connections[self.db]
        if connection.vendor != "postgresql":
            def value(x: float) -> float | None:
                return None if np.isnan(x) else float(x)

            return self.write_batch(project_id=project_id, ranking_version=ranking_version, start_rank=start_rank,
                                    rows=[RankingRow(item_id=int(ids[i]), score=value(score[i]), reason=str(reason[i]),
                                                     inclusion_probability=value(inclusion[i]),
                                                     suggested_label=str(label[i]),
                                                     suggested_confidence=value(confidence[i])) for i in range(n)])
        _, reason_code = np.unique(reason, return_inverse=True)
        labels_u, label_code = np.unique(label, return_inverse=True)
        nulls = np.isnan(score) * 4 + np.isnan(inclusion) * 2 + np.isnan(confidence)
        code = (reason_code.astype(np.int64) * len(labels_u) + label_code) * 8 + nulls
        order = np.argsort(code, kind="stable")
        starts = np.r_[0, np.flatnonzero(np.diff(code[order])) + 1]
        chunks = [b"PGCOPY\n\xff\r\n\x00" + bytes(8)]
        for lo, hi in zip(starts, np.r_[starts[1:], n], strict=True):
            rows = order[lo:hi]
            first = int(rows[0])
            text_r = str(reason[first]).encode()
            text_l = str(label[first]).encode()
            null_s, null_i, null_c = bool(nulls[first] & 4), bool(nulls[first] & 2), bool(nulls[first] & 1)
            fields: list[tuple[str, Any, Any]] = [("n", ">i2", 9), ("l0", ">i4", 8), ("project", ">i8", project_id),
                                                   ("l1", ">i4", 4), ("version", ">i4", ranking_version),
                                                   ("l2", ">i4", 4), ("rank", ">i4", start_rank + rows),
                                                   ("l3", ">i4", 8), ("item", ">i8", ids[rows])]
            fields += [("l4", ">i4", -1)] if null_s else [("l4", ">i4", 8), ("score", ">f8", score[rows])]
            fields += [("l5", ">i4", len(text_r))] + ([("reason", f"S{len(text_r)}", text_r)] if text_r else [])
            fields += [("l6", ">i4", -1)] if null_i else [("l6", ">i4", 8), ("incl", ">f8", inclusion[rows])]
            fields += [("l7", ">i4", len(text_l))] + ([("label", f"S{len(text_l)}", text_l)] if text_l else [])
            fields += [("l8", ">i4", -1)] if null_c else [("l8", ">i4", 8), ("conf", ">f8", confidence[rows])]
            block = np.empty(rows.shape[0], dtype=np.dtype([(name, kind) for name, kind, _ in fields]))
            for name, _, values in fields:
                block[name] = values
            chunks.append(block.tobytes())
        chunks.append(b"\xff\xff")
        with self._copy(connection, " (FORMAT BINARY)") as copy:
            copy.write(b"".join(chunks))
        return n

    def activate(self, *, project_id: int, ranking_version: int, only_if_newer: bool = False) -> bool:
        """Point the queue at ``ranking_version``. With ``only_if_newer`` the pointer never moves backwards
        (a slow, superseded retrain cannot overwrite a newer one). Returns whether the pointer moved."""
        project_model: Any = self.model._meta.get_field("project").related_model
        target = project_model.objects.filter(pk=project_id)
        if only_if_newer:
            target = target.filter(
                models.Q(active_ranking_version__isnull=True) | models.Q(active_ranking_version__lt=ranking_version)
            )
        with transaction.atomic():
            return bool(target.update(active_ranking_version=ranking_version))

    def prune(self, *, project_id: int, keep_versions: Iterable[int], batch_size: int = 20_000) -> int:
        """Delete entries of every version not in ``keep_versions``, ``batch_size`` rows per statement."""
        keep = list(keep_versions)
        deleted_total = 0
        while True:
            ids = list(
                self.filter(project_id=project_id).exclude(ranking_version__in=keep)
                .values_list("id", flat=True)[:batch_size]
            )
            if not ids:
                return deleted_total
            deleted, _ = self.filter(id__in=ids).delete()
            deleted_total += deleted


class RankingEntry(models.Model):
    # No database-level foreign keys (db_constraint=False): rankings are derived rows, rewritten by every retrain
    # (up to 200k per version) and always read joined to their item. PostgreSQL checks each inserted row's two
    # foreign keys at commit, which measured ~70% of a 100k-row ranking write (bench/retrain_loop.py). The ORM
    # still cascades deletes; a stray row can only point at a deleted item, which the queue's join drops and
    # the next prune removes.
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    ranking_version = models.PositiveIntegerField()
    rank = models.PositiveIntegerField()
    item = models.ForeignKey("labeling.Item", on_delete=models.CASCADE, related_name="+", db_index=False,
                             db_constraint=False)
    score = models.FloatField(null=True)
    reason = models.CharField(max_length=REASON_MAX_LENGTH, choices=SelectionReason.choices)
    inclusion_probability = models.FloatField(null=True)
    suggested_label = models.CharField(max_length=100, blank=True, default="")
    suggested_confidence = models.FloatField(null=True)

    objects = RankingEntryManager()

    class Meta:
        # The one index the checkout needs; more indexes would slow the bulk writes.
        constraints = [
            models.UniqueConstraint(fields=["project", "ranking_version", "rank"], name="unique_ranking_position"),
        ]


class Lease(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        RELEASED = "released", "Released"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="leases")
    item = models.ForeignKey("labeling.Item", on_delete=models.CASCADE, related_name="leases", db_index=False)
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases",
                                 db_index=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    # An ACTIVE lease past expires_at no longer holds its item (checked at checkout): no cron needed.
    expires_at = models.DateTimeField()
    renewals = models.PositiveIntegerField(default=0)
    closed_at = models.DateTimeField(null=True, blank=True)

    taxonomy_version = models.ForeignKey("labeling.TaxonomyVersion", null=True, on_delete=models.PROTECT,
                                         related_name="+")
    selection_reason = models.CharField(max_length=REASON_MAX_LENGTH, choices=SelectionReason.choices)
    selection_score = models.FloatField(null=True)
    model_version = models.PositiveIntegerField(null=True)
    inclusion_probability = models.FloatField(null=True)
    # {"label": key, "confidence": float} as shown to the reviewer, or None.
    suggestion = models.JSONField(null=True, blank=True)
    suggestion_hidden = models.BooleanField(default=False, help_text="Suggestion withheld to measure automation bias.")
    # The idempotency keys of submits on this lease that were undone: a replay of one must not answer again
    # (labeling/services/annotations.py). None until the first undo; the checkout's INSERT never names it.
    undone_idempotency_keys = models.JSONField(null=True, blank=True)

    objects = LeaseQuerySet.as_manager()

    class Meta:
        # The two partial indexes on active leases each name their key column in their predicate as well. A partial
        # index can be read whole (no index condition at all) by any query whose WHERE implies its predicate, and
        # with "state = 'active'" alone both were candidates for every active-lease question: a planner misled by
        # statistics (a lease table analysed while it was empty) read all of a project's active leases where one
        # item's were wanted. "item_id IS NOT NULL" is implied only by a query that constrains item_id, and
        # "project_id IS NOT NULL" only by one that constrains project_id (tests/labeling/services/test_queue_plans.py).
        indexes = [
            models.Index(fields=["item"], name="lease_item_active",
                         condition=Q(state="active", item__isnull=False)),
            models.Index(fields=["reviewer", "item"], name="lease_reviewer_item"),
            models.Index(fields=["project", "expires_at"], name="lease_active_expiry",
                         condition=Q(state="active", project__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} ({self.state})"
