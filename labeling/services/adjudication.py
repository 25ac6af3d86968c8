"""Adjudication: items whose reviewers disagree, or whose answer is severe, go to a policy lead, whose decision
is final (exports and training use it over any aggregate of the reviewers' answers).

Flow:
- ``adjudication_sync_for_item`` runs inside the submit transaction once an item has all the answers it
  needs (``n_done >= n_required``). It opens a pending adjudication when the answers differ, or when any
  answer carries a label whose ``severity`` is at least ``settings.SIFT_ADJUDICATION_SEVERITY`` (default
  4). It is idempotent: the one-to-one ``Adjudication.item`` makes a second opening impossible, even
  under a race, and a call for an item that needs nothing does nothing.
- ``adjudication_open`` lets a lead send any item to adjudication by hand.
- ``adjudication_decide`` records the lead's labels (validated against the project's current taxonomy
  version, so exports can read them), who decided and when. Deciding twice needs ``revise=True``; the
  previous answer is kept in the audit log. Every opening and decision writes an audit event.

The audit log is append-only and outlives a deletion request (labeling/services/privacy.py), so its rows keep
no content: an item's external id and a lead's note (which can quote the text) go in as sha256 digests. The
note itself lives on the adjudication row, which a deletion removes with the item.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from labeling.models import (
    Adjudication,
    Annotation,
    Capability,
    Item,
    Label,
    LabelCounter,
    Membership,
    Project,
    role_allows,
)
from labeling.models.annotations import UNREADABLE, answer_read_in
from labeling.services.audit import Actor, acting_user, audit_record
from labeling.services.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from labeling.services.labels import labels_validate
from labeling.services.privacy import external_id_digest
from labeling.services.propagation import propagation_after_answer
from learning import scheduling

MAX_NOTE_CHARS = 10_000


def severity_threshold() -> int:
    """Labels at or above this severity send their items to a lead (0 = none, so the floor is 1)."""
    return max(1, settings.SIFT_ADJUDICATION_SEVERITY)


def adjudication_reason(*, answers: list[tuple[int, tuple[str, ...]]],
                        severity: dict[tuple[int, str], int], threshold: int) -> str | None:
    """Why an item with these answers needs a lead, or None. Pure: the rule in one place.

    ``answers`` are (taxonomy version id, label keys) per annotation; ``severity`` maps (version id, key)
    to the label's severity. Disagreement wins over severity as the recorded reason (it says more).
    """
    distinct = {(version, frozenset(keys)) for version, keys in answers}
    if len(distinct) > 1:
        return Adjudication.Reason.DISAGREEMENT.value
    if any(severity.get((version, key), 0) >= threshold for version, keys in answers for key in keys):
        return Adjudication.Reason.SEVERE.value
    return None


def _read_in_current(row: tuple[Any, ...], current_id: int | None) -> tuple[int, tuple[str, ...]]:
    """An answer in the current taxonomy version where it is readable there (``answer_read_in``), else as given."""
    labels, version_id, mapped, mapped_version_id = row
    source, keys = answer_read_in(current_id, given_version_id=version_id, labels=labels,
                                  mapped_version_id=mapped_version_id, mapped_labels=mapped)
    if source == UNREADABLE or keys is None or current_id is None:
        return version_id, tuple(sorted(labels))
    return current_id, tuple(sorted(keys))


def _create(*, item: Item, reason: str, actor: Actor, note: str, answers: list[dict[str, Any]]) -> Adjudication:
    try:
        # A savepoint: losing the race to a concurrent opener must not poison the caller's transaction.
        with transaction.atomic():
            adjudication = Adjudication.objects.create(project_id=item.project_id, item=item, reason=reason,
                                                       note=note)
    except IntegrityError:
        return Adjudication.objects.get(item_id=item.pk)
    audit_record(actor=actor, action="adjudication.open", obj=adjudication, project=item.project,
                 data={"item_id": item.pk, "external_id_sha256": external_id_digest(item.project, item.external_id),
                       "reason": reason, "answers": answers})
    return adjudication


def adjudication_open_for_item(*, item: Item, reason: str, actor: Actor = None) -> Adjudication:
    """Open a pending adjudication for ``item`` on the system's behalf (a suspected label error whose answers
    already disagree: labeling/services/label_errors.py). Idempotent: an existing one is returned as is."""
    existing = _existing(item.pk)
    if existing is not None:
        return existing
    answers = [{"reviewer_id": reviewer_id, "labels": labels} for reviewer_id, labels in
               Annotation.objects.filter(item=item).order_by("id").values_list("reviewer_id", "labels")]
    return _create(item=item, reason=reason, actor=actor, note="", answers=answers)


def adjudication_sync_for_item(*, item_id: int, actor: Actor = None, locked_item: Item | None = None,
                               project: Project | None = None) -> Adjudication | None:
    """Open a pending adjudication for ``item_id`` if its complete set of answers calls for one.

    Call it after a submit has raised ``n_done``, in the same transaction (annotation_submit). Returns the
    item's adjudication (new or existing), or None when it needs none. Gold items never go to a lead:
    their answer is known.

    ``locked_item`` and ``project``: the submit's own copy of the item (read under its lock, before its
    ``n_done`` was raised, and found complete by the caller) and its project. With them the item is not read
    again, and the probe is plain SQL, since with overlap 1 it runs on every submit.
    """
    # No savepoint of its own (two round trips on every finishing submit): nothing here catches an error to carry
    # on, so one escaping this block fails the caller's transaction (the submit's) as it would anyway. The race
    # a savepoint must survive, a concurrent opener, has its own in _create.
    with transaction.atomic(savepoint=False):
        if locked_item is None:
            item = Item.objects.select_related("project").filter(pk=item_id).first()
            if item is None:
                raise NotFound(f"no item {item_id}")
            if item.is_gold or item.n_done < item.n_required:
                return _existing(item_id)
            project = item.project
        else:
            item = locked_item
            if item.is_gold:
                return _existing(item_id)
        assert project is not None
        existing_id, rows = _answers(item_id)
        if existing_id is not None:
            return Adjudication.objects.get(pk=existing_id)
        if not rows:
            return None
        current_id = project.current_taxonomy_version_id
        answers = [_read_in_current(row[:4], current_id) for row in rows]
        threshold = severity_threshold()
        # Disagreement decides without the severities, so they are read only when every answer agrees.
        reason = adjudication_reason(answers=answers, severity={}, threshold=threshold)
        if reason is None:
            severity = _severities({version for version, _keys in answers})
            reason = adjudication_reason(answers=answers, severity=severity, threshold=threshold)
        if reason is None:
            return None
        item.project = project
        summary = [{"reviewer_id": row[4], "labels": list(keys)} for row, (_v, keys) in zip(rows, answers, strict=True)]
        return _create(item=item, reason=reason, actor=actor, note="", answers=summary)


def _existing(item_id: int) -> Adjudication | None:
    return Adjudication.objects.filter(item_id=item_id).first()


# The item's adjudication (if any) and its answers in one round trip; the one-row subquery keeps the
# adjudication's id when the item has no answers. Plain SQL for both vendors.
_ANSWERS_SQL = f"""
SELECT j.id, a.labels, a.taxonomy_version_id, a.mapped_labels, a.mapped_taxonomy_version_id, a.reviewer_id
FROM (SELECT %s AS item_id) q
LEFT JOIN {Adjudication._meta.db_table} j ON j.item_id = q.item_id
LEFT JOIN {Annotation._meta.db_table} a ON a.item_id = q.item_id
ORDER BY a.id + 0
"""  # noqa: S608
# ``a.id + 0``: the answers of one item are a handful, found through the (item_id, reviewer_id) index and sorted.
# Ordered by ``a.id`` itself, the planner may instead walk the whole primary key in order, filtering for the item,
# whenever it believes the annotation table small (analysed while empty): one pass over every answer of the
# database per finishing submit (tests/labeling/services/test_queue_plans.py, state stale_history_100k).


def _json(value: Any) -> Any:
    # psycopg decodes jsonb; SQLite hands back the stored text.
    return json.loads(value) if isinstance(value, str) else value


def _answers(item_id: int) -> tuple[int | None, list[tuple[Any, ...]]]:
    """(the item's adjudication id or None, its answers as (labels, version, mapped, mapped version, reviewer))."""
    with connection.cursor() as cursor:
        cursor.execute(_ANSWERS_SQL, [item_id])
        fetched = cursor.fetchall()
    existing_id = fetched[0][0] if fetched else None
    rows = [(_json(labels), version, _json(mapped), mapped_version, reviewer)
            for _j, labels, version, mapped, mapped_version, reviewer in fetched if version is not None]
    return existing_id, rows


def _severities(version_ids: set[int]) -> dict[tuple[int, str], int]:
    return {(version_id, key): level for version_id, key, level in Label.objects.filter(
        version_id__in=version_ids, severity__gt=0).values_list("version_id", "key", "severity")}


def _require_lead(*, actor: User, project: Project) -> None:
    # The API has checked already; services check again so a command or a future caller cannot skip it.
    role = Membership.objects.filter(project=project, user_id=actor.pk).values_list("role", flat=True).first()
    if role is None or not role_allows(role, Capability.ADJUDICATE):
        raise PermissionDenied("only policy leads and admins may adjudicate in this project")


def _note_digest(note: str) -> str:
    """What the audit log keeps of a lead's note: its sha256, or "" for no note (see the module docstring)."""
    return hashlib.sha256(note.encode()).hexdigest() if note else ""


def _clean_note(note: Any) -> str:
    if not isinstance(note, str):
        raise ValidationFailed("note: must be a string", field="note")
    if len(note) > MAX_NOTE_CHARS:
        raise ValidationFailed(f"note: longer than {MAX_NOTE_CHARS} characters", field="note")
    return note


def adjudication_open(*, actor: User, project: Project, external_id: str,
                      note: str = "") -> tuple[Adjudication, bool]:
    """Send an item to adjudication by hand; returns (adjudication, created). An existing one is returned as is."""
    _require_lead(actor=actor, project=project)
    note = _clean_note(note)
    item = Item.objects.select_related("project").filter(project=project, external_id=external_id).first()
    if item is None:
        raise NotFound(f"no item {external_id!r} in project {project.slug!r}", field="external_id")
    if item.is_gold:
        raise ValidationFailed(f"item {external_id!r} is a gold item: its answer is already known", field="external_id")
    with transaction.atomic():
        existing = Adjudication.objects.filter(item=item).first()
        if existing is not None:
            return existing, False
        answers = [{"reviewer_id": reviewer_id, "labels": labels} for reviewer_id, labels in
                   Annotation.objects.filter(item=item).order_by("id").values_list("reviewer_id", "labels")]
        adjudication = _create(item=item, reason=Adjudication.Reason.MANUAL.value, actor=actor, note=note,
                               answers=answers)
    return adjudication, True


def adjudication_decide(*, actor: User, project: Project, adjudication_id: int, labels: Any,
                        note: str = "", revise: bool = False) -> Adjudication:
    """Record the lead's final answer for one adjudication of ``project``."""
    _require_lead(actor=actor, project=project)
    note = _clean_note(note)
    version = project.current_taxonomy_version
    if version is None:
        raise Conflict("this project has no published taxonomy to decide against")
    cleaned = labels_validate(version=version, labels=labels)
    with transaction.atomic():
        adjudication = (Adjudication.objects.select_for_update().select_related("item")
                        .filter(pk=adjudication_id, project=project).first())
        if adjudication is None:
            # Another project's adjudication is reported exactly like a missing one (no IDOR).
            raise NotFound(f"no adjudication {adjudication_id} in project {project.slug!r}")
        previous = {"state": adjudication.state, "labels": adjudication.labels,
                    "note_sha256": _note_digest(adjudication.note), "decided_by": adjudication.decided_by_id}
        if adjudication.state == Adjudication.State.DECIDED and not revise:
            raise Conflict(
                f"adjudication {adjudication.pk} was already decided ({', '.join(adjudication.labels or [])}); "
                "send revise=true to change the decision", state=adjudication.state,
            )
        now = timezone.now()
        adjudication.state = Adjudication.State.DECIDED
        adjudication.labels = cleaned
        adjudication.taxonomy_version = version
        adjudication.note = note
        adjudication.decided_by = acting_user(actor)
        adjudication.decided_at = now
        adjudication.save(update_fields=["state", "labels", "taxonomy_version", "note", "decided_by", "decided_at"])
        audit_record(actor=actor, action="adjudication.revise" if previous["state"] == "decided"
                     else "adjudication.decide", obj=adjudication, project=project,
                     data={"item_id": adjudication.item_id,
                           "external_id_sha256": external_id_digest(project, adjudication.item.external_id),
                           "labels": cleaned, "taxonomy_version": version.number, "reason": adjudication.reason,
                           "note_sha256": _note_digest(note), "previous": previous})
        # A decided representative: what it propagated follows the decision (labeling/services/propagation.py).
        propagation_after_answer(project=project, item_id=adjudication.item_id)
        # The decision is a training label: counted (the last write: see label_counter.py) for the fingerprint.
        LabelCounter.objects.bump(project_id=project.pk)
        scheduling.request_retrain(project_id=project.pk)
    return adjudication
