"""Suspected label errors as leads see them: counts by state and the candidates, most recent first, with the
route taken and the outcome (the dashboard's label-error panel and ``GET /api/projects/{slug}/label-errors/``).

The item's text goes through the project's masker (labeling/services/privacy.py), as in the adjudication queue.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Case, Count, IntegerField, Value, When

from labeling.models import OPEN_STATES, Adjudication, Project, SuspectedError, SuspicionState
from labeling.services.privacy import mask_item, masker_for


def label_errors_page(project: Project, *, state: str | None = None, limit: int = 50,
                      offset: int = 0) -> dict[str, Any]:
    """{"counts": per state (every state, zeros included), "count", "limit", "offset", "results"}: open
    suspicions first, then by model version (newest first) and the detector's rank."""
    by_state = dict(SuspectedError.objects.filter(project=project).values_list("state").annotate(n=Count("id"))
                    .values_list("state", "n"))
    counts = {value: int(by_state.get(value, 0)) for value in SuspicionState.values}
    scope = SuspectedError.objects.filter(project=project)
    if state:
        scope = scope.filter(state=state)
    # Open suspicions first (what leads can act on), then the newest model's, most suspect first.
    still_open = Case(When(state__in=OPEN_STATES, then=Value(0)), default=Value(1), output_field=IntegerField())
    rows = list(scope.select_related("item").annotate(still_open=still_open)
                .order_by("still_open", "-model_version", "rank", "id")
                [offset:offset + limit])
    adjudications = dict(Adjudication.objects.filter(item_id__in=[r.item_id for r in rows])
                         .values_list("item_id", "id"))
    masker = masker_for(project)
    results = []
    for row in rows:
        item = row.item
        results.append({
            "id": row.pk,
            "item": mask_item(masker, {"id": item.pk, "external_id": item.external_id, "text": item.text,
                                       "meta": item.meta}),
            "given_label": row.given_label, "suggested_label": row.suggested_label,
            "self_confidence": round(row.self_confidence, 4), "rank": row.rank,
            "model_version": row.model_version, "state": row.state, "open": row.is_open,
            "route_reason": row.route_reason, "adjudication_id": adjudications.get(row.item_id),
            "resolved_labels": row.resolved_labels,
            "created_at": row.created_at, "routed_at": row.routed_at, "resolved_at": row.resolved_at,
        })
    return {"counts": counts, "count": scope.count(), "limit": limit, "offset": offset, "results": results}
