"""Intention-revealing filters and the ranking tables' write API.

A reusable filter lives here; a rule about one object lives on its model; a
workflow across models lives in labeling/services.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import models, transaction
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

    def activate(self, *, project_id: int, ranking_version: int) -> None:
        project_model: Any = self.model._meta.get_field("project").related_model
        with transaction.atomic():
            project_model.objects.filter(pk=project_id).update(active_ranking_version=ranking_version)

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
