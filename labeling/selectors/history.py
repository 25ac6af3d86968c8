"""An item's history for policy leads: every answer in order, with its comment, and the adjudication state.

Comments used to be saved and then shown nowhere but a pending adjudication's card. This is the one read behind
the item history API (``GET /api/projects/{slug}/items/{id}/history/``) and page
(``/projects/{slug}/items/{id}/history/``). Who may read it is the caller's business (Capability.ADJUDICATE:
one reviewer must never see another's answers); this module only ever reads inside ``project``, so an item id
of another project is "not found", never its history.

Everything here is data, never markup: item text, meta and comments are user text, and the page escapes them.
With the project's PII masking on they are masked as on the adjudication page (labeling/services/privacy.py).
"""

from __future__ import annotations

from typing import Any

from labeling.models import Adjudication, Annotation, Item, Project, SelectionReason
from labeling.services.privacy import mask_item, masker_for

_REASON_LABELS = dict(SelectionReason.choices)


def item_find(project: Project, *, item_id: int | None = None, external_id: str | None = None) -> Item | None:
    """The item of ``project`` with this id or external id, or None (another project's id is None too)."""
    items = Item.objects.filter(project=project)
    if item_id is not None:
        return items.filter(pk=item_id).first()
    if external_id:
        return items.filter(external_id=external_id).first()
    return None


def item_history(project: Project, item: Item) -> dict[str, Any]:
    """Every answer to ``item`` (oldest first), each also read in the current taxonomy version, plus the
    adjudication. ``item`` must belong to ``project`` (item_find)."""
    if item.project_id != project.pk:
        raise ValueError("item_history: the item belongs to another project")
    current = project.current_taxonomy_version
    current_id = current.pk if current is not None else None
    masker = masker_for(project)
    answers = []
    for annotation in (Annotation.objects.filter(item=item).select_related("reviewer", "taxonomy_version", "lease")
                       .order_by("created_at", "id")):
        in_current = annotation.labels_in_version(current_id) if current_id is not None else None
        answers.append({
            "id": annotation.pk,
            "reviewer": annotation.reviewer.get_username(),
            "labels": list(annotation.labels),
            "taxonomy_version": annotation.taxonomy_version.number,
            # The one rule (labels given in the current version, else a migration's mapping to it); null when the
            # answer cannot be read in the current version (exports count it as not agreeing).
            "labels_in_current_version": in_current,
            "created_at": annotation.created_at,
            "lead_time_ms": annotation.lead_time_ms,
            "comment": masker.text(annotation.comment) if masker is not None else annotation.comment,
            "selection_reason": annotation.selection_reason,
            "selection_reason_label": _REASON_LABELS.get(annotation.selection_reason,
                                                         _REASON_LABELS[SelectionReason.OTHER]),
            "model_version": annotation.model_version,
            "inclusion_probability": annotation.inclusion_probability,
            "suggestion_shown": annotation.suggestion_shown,
            # Withheld on purpose (the project's suggestion hold-out, to measure automation bias), as opposed to no
            # suggestion at all (no model yet, or the item not scored).
            "suggestion_withheld": bool(annotation.lease is not None and annotation.lease.suggestion_hidden),
            "gold_correct": annotation.gold_correct,
        })
    shown: dict[str, Any] = {"masked": False, **mask_item(masker, {
        "id": item.pk, "external_id": item.external_id, "text": item.text, "meta": item.meta}),
        "is_gold": item.is_gold, "n_done": item.n_done, "n_required": item.n_required}
    adjudication = (Adjudication.objects.filter(item=item, project=project)
                    .select_related("decided_by", "taxonomy_version").first())
    return {
        "item": shown,
        "taxonomy_version": current.number if current is not None else None,
        "answers": answers,
        "adjudication": None if adjudication is None else {
            "id": adjudication.pk, "state": adjudication.state, "reason": adjudication.reason,
            "labels": adjudication.labels,
            "taxonomy_version": adjudication.taxonomy_version.number if adjudication.taxonomy_version else None,
            "note": adjudication.note,
            "decided_by": adjudication.decided_by.get_username() if adjudication.decided_by else None,
            "created_at": adjudication.created_at, "decided_at": adjudication.decided_at,
        },
    }
