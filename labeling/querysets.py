"""Intention-revealing filters and the ranking tables' write API.

A reusable filter lives here; a rule about one object lives on its model; a
workflow across models lives in labeling/services.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import connections, models, transaction
from django.db.models import F
from django.http import Http404
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


class ProjectQuerySet(models.QuerySet):  # type: ignore[type-arg]
    def for_user(self, user: AbstractBaseUser | AnonymousUser) -> ProjectQuerySet:
        """Only the projects ``user`` is a member of: every API lookup starts here (no IDOR)."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user)

    def get_for(self, user: AbstractBaseUser | AnonymousUser, slug: str, capability: str) -> Any:
        """The project ``slug`` if ``user`` may ``capability`` it.

        A non-member gets 404 (the project's existence is not leaked); a member whose
        role lacks the capability gets 403.
        """
        from labeling.models.projects import role_allows

        if not user.is_authenticated:
            raise Http404
        row = (
            self.filter(slug=slug, memberships__user=user)
            .annotate(caller_role=F("memberships__role"))
            .first()
        )
        if row is None:
            raise Http404
        if not role_allows(row.caller_role, capability):
            raise PermissionDenied(f"your role ({row.caller_role}) may not {capability.replace('_', ' ')} here")
        return row

    def with_role(self, user: AbstractBaseUser | AnonymousUser, roles: Iterable[str]) -> ProjectQuerySet:
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user, memberships__role__in=list(roles))


class ItemQuerySet(models.QuerySet):  # type: ignore[type-arg]
    def open(self) -> ItemQuerySet:
        """Items that still need at least one more annotation."""
        return self.filter(n_done__lt=F("n_required"))

    def finished(self) -> ItemQuerySet:
        return self.filter(n_done__gte=F("n_required"))

    def unlabelled(self) -> ItemQuerySet:
        return self.filter(n_done=0)

    def gold(self) -> ItemQuerySet:
        return self.filter(is_gold=True)


class LeaseQuerySet(models.QuerySet):  # type: ignore[type-arg]
    def holding(self) -> LeaseQuerySet:
        """Leases that still hold their item right now (active and not yet expired)."""
        return self.filter(state="active", expires_at__gt=timezone.now())

    def expired_unclosed(self) -> LeaseQuerySet:
        return self.filter(state="active", expires_at__lte=timezone.now())


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

    def _copy_batch(self, connection: Any, project_id: int, ranking_version: int, start_rank: int,
                    rows: Sequence[RankingRow]) -> int:
        table = connection.ops.quote_name(self.model._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in self._COPY_COLUMNS)
        with (
            transaction.atomic(using=self.db),
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
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
        table = connection.ops.quote_name(self.model._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in self._COPY_COLUMNS)
        with (
            transaction.atomic(using=self.db),
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
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
