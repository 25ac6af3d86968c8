"""The adjudication queue as leads read it: the list, one adjudication, and every answer and comment on its item.

Only reads inside ``project`` (another project's adjudication id is "not found"); with the project's PII masking
on, the item and the reviewers' comments are masked (labeling/services/privacy.py). Nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from labeling.models import (
    Adjudication,
    Annotation,
    Project,
)
from labeling.services.privacy import Masker, mask_item, masker_for

# ---------------------------------------------------------------------------------------------------------------
# The adjudication queue.


def adjudication_list(project: Project, *, state: str | None = None, limit: int = 50,
                      offset: int = 0) -> dict[str, Any]:
    """Adjudications with the item, every answer and comment ("pending" sorts after "decided", so -state puts
    pending first)."""
    qs = Adjudication.objects.filter(project=project)
    if state is not None:
        qs = qs.filter(state=state)
    total = qs.count()
    # Pending first, oldest first (the queue); a decided-only list shows the latest decisions first.
    order = ("-decided_at", "-id") if state == Adjudication.State.DECIDED else ("-state", "created_at", "id")
    page = list(qs.select_related("item", "decided_by", "taxonomy_version").order_by(*order)[offset:offset + limit])
    answers = adjudication_answers([a.item_id for a in page])
    masker = masker_for(project)
    results = [adjudication_detail(a, answers=answers.get(a.item_id, []), masker=masker) for a in page]
    return {"count": total, "limit": limit, "offset": offset, "results": results}


def adjudication_answers(item_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Every answer and comment on these items, by item, oldest first."""
    answers: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in (Annotation.objects.filter(item_id__in=list(item_ids)).order_by("id")
                .values("item_id", "reviewer__username", "labels", "comment", "lead_time_ms", "created_at",
                        "taxonomy_version__number", "mapped_labels")):
        answers[row["item_id"]].append({
            "reviewer": row["reviewer__username"], "labels": row["labels"], "mapped_labels": row["mapped_labels"],
            "comment": row["comment"], "lead_time_ms": row["lead_time_ms"], "created_at": row["created_at"],
            "taxonomy_version": row["taxonomy_version__number"],
        })
    return answers


def adjudication_one(project: Project, adjudication_id: int) -> dict[str, Any] | None:
    """One adjudication of ``project`` with its answers, or None (also for another project's: no IDOR)."""
    adjudication = (Adjudication.objects.select_related("item", "decided_by", "taxonomy_version")
                    .filter(pk=adjudication_id, project=project).first())
    if adjudication is None:
        return None
    return adjudication_detail(adjudication, answers=adjudication_answers([adjudication.item_id]).get(
        adjudication.item_id, []), masker=masker_for(project))


def adjudication_detail(adjudication: Adjudication, *, answers: Sequence[dict[str, Any]],
                        masker: Masker | None) -> dict[str, Any]:
    """One adjudication as leads see it; with the project's masker, PII in the item and in the reviewers'
    comments is masked (labeling/services/privacy.py)."""
    item = adjudication.item
    shown = mask_item(masker, {"id": item.pk, "external_id": item.external_id, "text": item.text, "meta": item.meta})
    if masker is not None:
        answers = [{**answer, "comment": masker.text(answer["comment"])} for answer in answers]
    return {
        "id": adjudication.pk, "state": adjudication.state, "reason": adjudication.reason,
        "item": shown,
        "answers": list(answers),
        "labels": adjudication.labels,
        "taxonomy_version": adjudication.taxonomy_version.number if adjudication.taxonomy_version else None,
        "note": adjudication.note,
        "decided_by": adjudication.decided_by.get_username() if adjudication.decided_by else None,
        "created_at": adjudication.created_at, "decided_at": adjudication.decided_at,
    }
