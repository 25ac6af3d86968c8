"""Suspected label errors, the human side: route each suspicion to a re-check, settle it from the outcome.

The learning side records suspicions at retrain (learning/services/label_errors.py, through
labeling/models/label_errors.py) and then sends ``sift.labeling.label_errors_sync``, which runs
``label_errors_sync`` here. Every retrain follows a submit or a lead's decision, so a re-check's outcome is settled
within one retrain of arriving.

ROUTING (one decision per suspicion, audited as ``label_error.route``):
- a lead has already decided the item, or it is gold: ``skipped`` (a decision is final; gold answers are known);
- the item already waits for a lead (a pending adjudication): ``adjudication``, nothing new is opened;
- its answers already disagree: ``adjudication``, opened with reason ``suspected_error`` (the existing flow);
- otherwise: ``recheck``. The item needs one more answer (``n_required = max(n_required, n_done + 1)``) and is
  boosted, so the queue's first stage serves it to a reviewer who has not answered it (one answer per item and
  reviewer is a database constraint; the same re-queue a taxonomy split uses).

SETTLING (audited as ``label_error.resolve``):
- the item's adjudication is decided: ``confirmed`` when the lead's labels differ from the suspected answer (the
  decision is the corrected label: training and exports read it over any vote), else ``cleared``;
- a re-check whose answers are all in and agree: ``cleared`` (another reviewer gave the same answer). A re-check
  that disagrees opens a disagreement adjudication in the submit itself (adjudication.py), and the suspicion
  moves to ``adjudication`` until the lead decides.

Idempotent: each suspicion is read FOR UPDATE and moved only from the state the step expects, so a redelivered
task, or two concurrent ones, change nothing twice. Locks follow the house order: item, then the suspicion row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from labeling.models import Adjudication, Annotation, Item, Project, SuspectedError, SuspicionState
from labeling.services.adjudication import adjudication_open_for_item
from labeling.services.audit import audit_record
from labeling.services.privacy import external_id_digest


@dataclass
class SyncResult:
    """How many suspicions one sync moved, by the state it moved them to."""

    routed: dict[str, int]
    resolved: dict[str, int]


def label_errors_sync(*, project_id: int) -> SyncResult:
    """Route the project's new suspicions and settle the routed ones whose re-check is done (module docstring)."""
    result = SyncResult(routed={}, resolved={})
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return result
    for suspicion_id in (SuspectedError.objects.filter(project_id=project_id, state=SuspicionState.NEW)
                         .order_by("rank", "id").values_list("id", flat=True)):
        state = _route(project, suspicion_id)
        if state:
            result.routed[state] = result.routed.get(state, 0) + 1
    for suspicion_id in (SuspectedError.objects.filter(
            project_id=project_id, state__in=[SuspicionState.RECHECK, SuspicionState.ADJUDICATION])
            .order_by("id").values_list("id", flat=True)):
        state = _settle(project, suspicion_id)
        if state:
            result.resolved[state] = result.resolved.get(state, 0) + 1
    return result


def _answers(item: Item, version_id: int | None) -> list[tuple[str, ...]]:
    """The item's answers read in the current version (unreadable ones left out), in answer order."""
    out = []
    for annotation in Annotation.objects.filter(item=item).order_by("id"):
        keys = annotation.labels_in_version(version_id)
        if keys is not None:
            out.append(tuple(sorted(keys)))
    return out


def _locked(project: Project, suspicion_id: int, states: tuple[str, ...]) -> tuple[SuspectedError, Item] | None:
    """The suspicion and its item, both locked (item first), or None when it has left ``states`` meanwhile."""
    item_id = SuspectedError.objects.filter(pk=suspicion_id).values_list("item_id", flat=True).first()
    if item_id is None:
        return None
    item = Item.objects.select_for_update().filter(pk=item_id, project=project).first()
    suspicion = SuspectedError.objects.select_for_update().filter(pk=suspicion_id, state__in=states).first()
    if item is None or suspicion is None:
        return None
    return suspicion, item


def _audit(project: Project, suspicion: SuspectedError, item: Item, action: str, **data: Any) -> None:
    audit_record(actor=None, action=action, obj=suspicion, project=project, data={
        "item_id": item.pk, "external_id_sha256": external_id_digest(project, item.external_id),
        "given_label": suspicion.given_label, "suggested_label": suspicion.suggested_label,
        "self_confidence": round(suspicion.self_confidence, 6), "model_version": suspicion.model_version, **data})


def _route(project: Project, suspicion_id: int) -> str:
    with transaction.atomic():
        locked = _locked(project, suspicion_id, (SuspicionState.NEW,))
        if locked is None:
            return ""
        suspicion, item = locked
        adjudication = Adjudication.objects.filter(item=item).first()
        answers = _answers(item, project.current_taxonomy_version_id)
        requeued: dict[str, list[int]] | None = None
        if adjudication is not None and adjudication.state == Adjudication.State.DECIDED:
            state, reason = SuspicionState.SKIPPED, "a policy lead had already decided this item"
        elif item.is_gold:
            state, reason = SuspicionState.SKIPPED, "a gold item: its answer is known"
        elif adjudication is not None:
            state, reason = SuspicionState.ADJUDICATION, f"already waiting for a policy lead ({adjudication.reason})"
        elif len(set(answers)) > 1:
            adjudication_open_for_item(item=item, reason=Adjudication.Reason.SUSPECTED_ERROR.value)
            state, reason = SuspicionState.ADJUDICATION, "the answers already disagree: sent to a policy lead"
        else:
            before = (item.n_required, item.boost)
            # One statement, evaluated under the row lock: a racing submit cannot leave the item one answer short.
            Item.objects.filter(pk=item.pk).update(
                n_required=Greatest(F("n_required"), F("n_done") + 1),
                boost=Greatest(F("boost"), Value(settings.SIFT_LABEL_ERRORS_RECHECK_PRIORITY)))
            item.refresh_from_db(fields=["n_required", "boost"])
            state = SuspicionState.RECHECK
            reason = "sent to another reviewer for one more answer"
            requeued = {"n_required": [before[0], item.n_required], "boost": [before[1], item.boost]}
        suspicion.state, suspicion.route_reason, suspicion.routed_at = state, reason, timezone.now()
        suspicion.save(update_fields=["state", "route_reason", "routed_at"])
        _audit(project, suspicion, item, "label_error.route", route=str(state), reason=reason,
               answers=[list(a) for a in answers], requeued=requeued)
        return str(state)


def _settle(project: Project, suspicion_id: int) -> str:
    with transaction.atomic():
        locked = _locked(project, suspicion_id, (SuspicionState.RECHECK, SuspicionState.ADJUDICATION))
        if locked is None:
            return ""
        suspicion, item = locked
        adjudication = Adjudication.objects.filter(item=item).first()
        labels: list[str] | None = None
        if adjudication is not None and adjudication.state == Adjudication.State.DECIDED:
            labels = sorted(str(k) for k in (adjudication.labels or []))
            how = "decided by a policy lead"
        elif adjudication is not None:
            if suspicion.state == SuspicionState.RECHECK:
                # The re-check disagreed: the submit opened a disagreement adjudication; wait for the lead.
                suspicion.state = SuspicionState.ADJUDICATION
                suspicion.route_reason = "the re-check disagreed: sent to a policy lead"
                suspicion.save(update_fields=["state", "route_reason"])
                _audit(project, suspicion, item, "label_error.route", route="adjudication",
                       reason=suspicion.route_reason)
                return ""
            return ""
        elif suspicion.state == SuspicionState.RECHECK and item.n_done >= item.n_required:
            answers = _answers(item, project.current_taxonomy_version_id)
            if len(set(answers)) != 1:
                return ""  # not settled by the answers alone (none readable, or a disagreement awaiting its lead)
            labels = list(answers[0])
            how = "the re-check agreed with the answer" if labels == [suspicion.given_label] else "re-check"
        else:
            return ""
        state = SuspicionState.CLEARED if labels == [suspicion.given_label] else SuspicionState.CONFIRMED
        suspicion.state, suspicion.resolved_labels, suspicion.resolved_at = state, labels, timezone.now()
        suspicion.save(update_fields=["state", "resolved_labels", "resolved_at"])
        _audit(project, suspicion, item, "label_error.resolve", outcome=str(state), labels=labels, how=how)
        return str(state)
