"""Progress counts: a reviewer's queue progress and the project's item and answer counts. Nothing here writes.

Item counts come from the maintained ledger (labeling/models/counters.py), never from a scan of the pool; answer
counts read the annotation indexes, which grow with the labels, not the pool. Callers have already authorised the
project (``Project.objects.get_for``); selectors only scope by it.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import TypedDict

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q
from django.utils import timezone

from labeling.models import Annotation, ItemCount, Project


class QueueProgress(TypedDict):
    total: int
    finished: int
    open: int
    mine_today: int
    mine_total: int


def queue_progress(*, project: Project, reviewer: AbstractBaseUser, now: datetime | None = None) -> QueueProgress:
    """Item counts for the project and the reviewer's own annotation counts (today is the server's day).

    The item counts come from the maintained ledger (labeling/models/counters.py), never from a scan of the
    pool; the reviewer counts use the annotation reviewer index.
    """
    now = now or timezone.now()
    items = ItemCount.objects.counts([project.pk])[project.pk]
    day_start = timezone.make_aware(datetime.combine(timezone.localdate(now), time.min))
    mine = Annotation.objects.filter(project=project, reviewer_id=reviewer.pk).aggregate(
        total=Count("id"), today=Count("id", filter=Q(created_at__gte=day_start)))
    total, finished = items.items, items.finished
    return {
        "total": total,
        "finished": finished,
        "open": total - finished,
        "mine_today": int(mine["today"]),
        "mine_total": int(mine["total"]),
    }


def progress(project: Project) -> dict[str, int]:
    """Item counts from the maintained ledger (labeling/models/counters.py: no scan of the pool), plus answer
    counts from annotations (they grow with the labels, not the pool)."""
    items = ItemCount.objects.counts([project.pk])[project.pk]
    annotations = Annotation.objects.filter(project=project).aggregate(
        n=Count("id"), reviewers=Count("reviewer_id", distinct=True))
    return {
        "items": items.pool, "gold_items": items.gold, "finished": items.pool_finished,
        "open": items.pool - items.pool_finished, "labelled": items.labelled,
        "annotations": annotations["n"], "reviewers": annotations["reviewers"],
    }
