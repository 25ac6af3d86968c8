"""What the labelling page and the API say about an item's near-duplicate cluster (read-only).

The clusters themselves are decided by the worker (learning/services/clusters.py) and stored as ClusterMember
rows (labeling/models/clusters.py); the queue's rule that serves one item per cluster lives in queues.py. Here:
the summary a reviewer sees next to the item, its size and a few other members, masked like the item itself; and
the flood alert: a cluster that gained at least ``SIFT_FLOOD_THRESHOLD`` (100) items within the last hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from labeling.models import ClusterMember, Item, Project
from labeling.services.privacy import masker_for

CLUSTER_MEMBERS_SHOWN = 3
FLOOD_WINDOW = timedelta(hours=1)


def cluster_summary(*, project: Project, item_id: int, shown: int = CLUSTER_MEMBERS_SHOWN) -> dict[str, Any] | None:
    """The item's cluster as the page shows it, or None when the item is alone (or not clustered yet).

    ``size`` counts every item of the cluster, the representative included; ``members`` are up to ``shown`` other
    items of it (the representative first), their text masked as the project asks. Two index walks on
    cluster_representative (representative, item): the count and the first few rows.
    """
    row = ClusterMember.objects.filter(item_id=item_id).values("representative_id", "kind", "similarity").first()
    if row is None:
        return None
    representative_id = row["representative_id"]
    size = ClusterMember.objects.filter(representative_id=representative_id).count()
    if size < 2:
        return None
    others = list(ClusterMember.objects.filter(representative_id=representative_id).exclude(item_id=item_id)
                  .order_by("item_id").values_list("item_id", "kind", "similarity")[:shown])
    texts = dict(Item.objects.filter(pk__in=[o[0] for o in others]).values_list("pk", "text"))
    masker = masker_for(project)
    return {
        "size": size,
        "representative_id": representative_id,
        "is_representative": representative_id == item_id,
        "kind": row["kind"],
        "similarity": row["similarity"],
        "members": [{"item_id": other_id, "kind": kind, "similarity": similarity,
                     "text": texts.get(other_id, "") if masker is None else masker.text(texts.get(other_id, ""))}
                    for other_id, kind, similarity in others],
    }


def flood_alerts(*, project: Project, threshold: int | None = None,
                 now: datetime | None = None) -> list[dict[str, Any]]:
    """Clusters that gained at least ``threshold`` items in the last hour, largest growth first.

    "Gained" counts items clustered into it in the window (the worker clusters items within moments of their
    import), the representative included when the cluster is new. Walks the index cluster_project_recent over
    the last hour's rows only.
    """
    limit = threshold if threshold is not None else int(settings.SIFT_FLOOD_THRESHOLD)
    since = (now or timezone.now()) - FLOOD_WINDOW
    grown = list(ClusterMember.objects.filter(project_id=project.pk, created_at__gte=since)
                 .values("representative_id").annotate(added=Count("item_id")).filter(added__gte=limit)
                 .order_by("-added", "representative_id").values_list("representative_id", "added"))
    names = dict(Item.objects.filter(pk__in=[r for r, _ in grown]).values_list("pk", "external_id"))
    return [{"representative_id": rep, "external_id": names.get(rep, ""), "added_last_hour": added,
             "size": ClusterMember.objects.filter(representative_id=rep).count()} for rep, added in grown]
