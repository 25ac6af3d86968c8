"""What a reviewer does with a lease: submit labels, skip, renew, and undo a submit.

Each function re-reads and locks the rows it changes (item, then lease: the lock order of
labeling/services/queues.py, whose essay states the invariant these keep: n_done + holding <= n_required).
Every error is raised before anything is written, so a refused request changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from labeling.models import (
    Adjudication,
    Annotation,
    Item,
    LabelCounter,
    Lease,
    Membership,
    Project,
)
from labeling.services.adjudication import adjudication_sync_for_item
from labeling.services.audit import audit_record
from labeling.services.errors import Conflict, KeyReused, NotFound, PermissionDenied
from labeling.services.labels import labels_validate
from labeling.services.propagation import propagation_after_answer
from labeling.services.queues import queue_planner_settings, queue_rank_floor_reset
from labeling.services.submit_rows import answer_write, item_lock, lease_lock, lock_statements
from labeling.services.taxonomy_migrations import (
    annotation_map_forward,
    answer_lock_shared_for_lease,
    project_share_lock,
)
from learning import scheduling


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M:%S %Z")


# ---------------------------------------------------------------------------------------------------------------
# Lease access.


def _lease_of(*, lease_id: int, reviewer: AbstractBaseUser) -> Lease:
    """The lease, if it is ``reviewer``'s (the API has already hidden leases of projects they are not in)."""
    lease: Lease | None = Lease.objects.select_related("taxonomy_version", "project").filter(pk=lease_id).first()
    if lease is None:
        raise NotFound(f"no lease {lease_id}")
    if lease.reviewer_id != reviewer.pk:
        raise PermissionDenied(f"lease {lease_id} belongs to another reviewer")
    return lease


def _lock_sql() -> tuple[str, str]:
    # Plain SQL: these run on every submit, renew and undo, and the ORM would compile them each time
    # (labeling/services/submit_rows.py spells them; the plan test EXPLAINs them through this name).
    return lock_statements()


def _lock(*, lease_id: int, reviewer: AbstractBaseUser, project: Project | None = None) -> tuple[Item, Lease]:
    """Lock the lease's item row, then the lease row (the queue's lock order); fresh copies of both.

    Inside the caller's transaction. The item is found through the lease in the same statement (a lease's item
    never changes), so the locks are two round trips. 404 / 403 before anything is written. The lease comes with
    its taxonomy version (read in the lease lock's statement) and its project (``project`` when the caller has it
    loaded already). ``item.pinned_current_version_id`` is the project's current taxonomy version, read after the
    answer lock was granted, so it cannot move before the caller commits (submit_rows.py says why).
    """
    # First, before any row lock: the project's answer lock, shared (a publish's final moments wait out the submits
    # in flight and hold back later ones; the lock order is taxonomy_migrations.py's essay).
    # The same statement sets the planner up as a checkout does (queues.py, MEMBERSHIP_LOCK_SQL): every look-up
    # of a submit is an index probe whatever the statistics believe (the adjudication probe's answers by item).
    answer_lock_shared_for_lease(lease_id=lease_id, also_select=queue_planner_settings())
    locked = item_lock(lease_id)
    if locked is None:
        raise NotFound(f"no lease {lease_id}")
    item, current_version_id = locked
    item.pinned_current_version_id = current_version_id  # type: ignore[attr-defined]
    lease = lease_lock(lease_id)
    assert lease is not None  # its item was just found through it, and that item is now locked
    if lease.reviewer_id != reviewer.pk:
        raise PermissionDenied(f"lease {lease_id} belongs to another reviewer")
    lease.project = (project if project is not None and project.pk == lease.project_id
                     else Project.objects.get(pk=lease.project_id))
    return item, lease


def _refuse_unless_holding(lease: Lease, now: datetime) -> None:
    if lease.state != Lease.State.ACTIVE:
        raise Conflict(f"lease {lease.pk} was already {lease.state}; take the next item", state=lease.state)
    if lease.expires_at <= now:
        raise Conflict(f"lease expired at {_when(lease.expires_at)}; take the next item", state="expired")


def _gold_correct(item: Item, labels: list[str]) -> bool | None:
    if not item.is_gold or item.gold_labels is None:
        return None
    expected = item.gold_labels if isinstance(item.gold_labels, list) else [item.gold_labels]
    return set(labels) == {str(key) for key in expected}


# ---------------------------------------------------------------------------------------------------------------
# Submit.


def _replay(*, reviewer: AbstractBaseUser, lease_id: int, idempotency_key: str, labels: Any,
            comment: str) -> Annotation | None:
    """The annotation an earlier request with this key created, or None.

    A key reused on another lease is 409; the same key with other labels or another comment is 422 (answering 200
    with the first submit's labels would tell the page that what it just sent was saved).
    """
    earlier = (Annotation.objects.select_related("taxonomy_version")
               .filter(reviewer_id=reviewer.pk, idempotency_key=idempotency_key).first())
    if earlier is None:
        return None
    if earlier.lease_id != lease_id:
        raise Conflict(
            f"idempotency_key {idempotency_key!r} was already used for annotation {earlier.pk} on another lease; "
            "use a new key for each submit", annotation_id=earlier.pk,
        )
    sent = list(dict.fromkeys(labels)) if isinstance(labels, list) else labels
    # A replay that leaves the comment out is still the same submit; one that sends another comment is not.
    if sent != earlier.labels or (comment and comment != earlier.comment):
        raise KeyReused(
            f"idempotency_key {idempotency_key!r} was already used for annotation {earlier.pk} with labels "
            f"{earlier.labels}{' and another comment' if sent == earlier.labels else ''}; a replay must send the "
            "same body, and a new answer needs a new key", annotation_id=earlier.pk,
        )
    return earlier


def _refuse_undone_key(lease: Lease, idempotency_key: str | None) -> None:
    """A replay of a submit that was undone must not create the answer again: undo is what the reviewer did last."""
    if idempotency_key and idempotency_key in (lease.undone_idempotency_keys or []):
        raise Conflict(
            f"the submit with idempotency_key {idempotency_key!r} was undone; submit again with a new key",
            state="undone",
        )


def annotation_submit(*, lease_id: int, reviewer: AbstractBaseUser, labels: Any, idempotency_key: str | None = None,
                      lead_time_ms: int | None = None, comment: str = "",
                      project: Project | None = None) -> tuple[Annotation, bool]:
    """Record ``reviewer``'s labels for the item of ``lease_id``; returns (annotation, created).

    A replay with the same ``idempotency_key`` returns the first answer with created=False. The labels are
    validated against the lease's taxonomy version (the one the reviewer saw), even if a newer one was published
    since; the API reports that as ``taxonomy_changed``. Requests a retrain once the submit commits.

    Idempotency is decided under the lease lock rather than by a look-up first (one round trip less on the
    hottest write): a replay finds its lease already submitted and gets the annotation that submit made; a key
    reused on another lease trips the (reviewer, idempotency_key) constraint and becomes a 409.
    ``project``, when the caller has loaded the lease's project already, saves reading it again.
    """
    lease: Lease | None = None
    try:
        with transaction.atomic():
            item, lease = _lock(lease_id=lease_id, reviewer=reviewer, project=project)
            if lease.state == Lease.State.SUBMITTED:
                if idempotency_key:
                    # A replay (or a concurrent twin that held the lock first and has committed): same answer.
                    earlier = _replay(reviewer=reviewer, lease_id=lease_id, idempotency_key=idempotency_key,
                                      labels=labels, comment=comment)
                    if earlier is not None:
                        return earlier, False
                done = Annotation.objects.filter(lease_id=lease.pk).values_list("id", flat=True).first()
                raise Conflict("lease already submitted", annotation_id=done, state=lease.state)
            _refuse_undone_key(lease, idempotency_key)
            now = timezone.now()
            _refuse_unless_holding(lease, now)
            if lease.taxonomy_version is None:
                raise Conflict("this lease has no taxonomy version; take the next item")
            # The version is published and immutable: validating under the lock costs no extra query.
            cleaned = labels_validate(version=lease.taxonomy_version, labels=labels)
            annotation = Annotation(
                project_id=lease.project_id, item=item, reviewer_id=reviewer.pk, lease=lease,
                taxonomy_version=lease.taxonomy_version, labels=cleaned, comment=comment,
                lead_time_ms=lead_time_ms, selection_reason=lease.selection_reason,
                selection_score=lease.selection_score, inclusion_probability=lease.inclusion_probability,
                model_version=lease.model_version,
                suggestion_shown=None if lease.suggestion_hidden else lease.suggestion,
                gold_correct=_gold_correct(item, cleaned), idempotency_key=idempotency_key or None,
            )
            # The INSERT, lease -> submitted and item.n_done + 1: one round trip on PostgreSQL (submit_rows.py).
            answer_write(annotation, now=now)
            # A lease taken before a publish: map the answer onto the current version now (or re-queue the
            # item when a split/deprecation makes it ambiguous), so it is never left for the next publish. The
            # current version came with the item lock, after the answer lock was granted.
            annotation_map_forward(annotation=annotation,
                                   current_version_id=item.pinned_current_version_id)  # type: ignore[attr-defined]
            # Disagreement or a severe label sends a finished item to the leads' adjudication queue. Only a
            # submit that finishes the item can call for one (item was read under its lock, before n_done + 1);
            # the others skip the look-ups, which is half of all submits at overlap 2.
            if not item.is_gold and item.n_done + 1 >= item.n_required:
                adjudication_sync_for_item(item_id=item.pk, locked_item=item, project=lease.project)
            audit_record(actor=reviewer, action="annotation.submit", obj=annotation, project=lease.project,  # type: ignore[arg-type]
                         data={"lease_id": lease.pk, "item_id": item.pk, "labels": cleaned,
                               "taxonomy_version": lease.taxonomy_version.number})
            propagation_after_answer(project=lease.project, item_id=item.pk)  # on_commit: a worker's job
            LabelCounter.objects.bump(project_id=lease.project_id)  # the last write: see label_counter.py
            # on_commit inside: a rolled-back submit never triggers a retrain.
            scheduling.request_retrain(project_id=lease.project_id)
    except IntegrityError as exc:
        # The unique constraints caught a race the locks did not cover (e.g. the same key on two leases at once).
        assert lease is not None  # the INSERT comes after the lease was read
        return _after_integrity_error(exc, reviewer=reviewer, lease=lease, idempotency_key=idempotency_key,
                                      labels=labels, comment=comment)
    return annotation, True


def _after_integrity_error(exc: IntegrityError, *, reviewer: AbstractBaseUser, lease: Lease,
                           idempotency_key: str | None, labels: Any, comment: str) -> tuple[Annotation, bool]:
    if idempotency_key:
        earlier = _replay(reviewer=reviewer, lease_id=lease.pk, idempotency_key=idempotency_key, labels=labels,
                          comment=comment)
        if earlier is not None:
            return earlier, False
    existing = Annotation.objects.filter(item_id=lease.item_id, reviewer_id=reviewer.pk).values_list(
        "id", flat=True).first()
    if existing is not None:
        raise Conflict("you have already labelled this item; take the next item", annotation_id=existing) from exc
    raise Conflict("this submit collided with a concurrent change; retry it") from exc


# ---------------------------------------------------------------------------------------------------------------
# Skip, renew, undo.


def lease_skip(*, lease_id: int, reviewer: AbstractBaseUser) -> Lease:
    """Give the item back; this reviewer never gets it again, and the skip does not count toward n_done.

    An ACTIVE lease that has already expired may still be skipped: it holds nothing either way, and the skip
    records the reviewer's wish not to see the item again.
    """
    with transaction.atomic():
        # Lowering ``holding`` cannot break the invariant, so the lease row lock is enough here.
        lease: Lease | None = (Lease.objects.select_for_update(no_key=True, of=("self",)).select_related("project")
                               .filter(pk=lease_id).first())
        if lease is None:
            raise NotFound(f"no lease {lease_id}")
        if lease.reviewer_id != reviewer.pk:
            raise PermissionDenied(f"lease {lease_id} belongs to another reviewer")
        if lease.state != Lease.State.ACTIVE:
            raise Conflict(f"lease {lease.pk} was already {lease.state}; nothing to skip", state=lease.state)
        now = timezone.now()
        Lease.objects.filter(pk=lease.pk).update(state=Lease.State.SKIPPED, closed_at=now)
        lease.state, lease.closed_at = Lease.State.SKIPPED, now
        audit_record(actor=reviewer, action="lease.skip", obj=lease, project=lease.project,  # type: ignore[arg-type]
                     data={"item_id": lease.item_id})
    return lease


def lease_renew(*, lease_id: int, reviewer: AbstractBaseUser) -> Lease:
    """Keep holding the item: the lease runs for another ``project.lease_seconds`` from now.

    Restarting the period (rather than adding to the old expiry) means repeated renewals cannot stockpile time.
    Takes the item lock: a renewal racing a lease's expiry must not revive it after another reviewer was given
    the slot it freed. Not audited: it is a heartbeat, and ``renewals`` counts it on the lease.
    """
    with transaction.atomic():
        _item, lease = _lock(lease_id=lease_id, reviewer=reviewer)
        now = timezone.now()
        _refuse_unless_holding(lease, now)
        expires_at = now + timedelta(seconds=lease.project.lease_seconds)
        Lease.objects.filter(pk=lease.pk).update(expires_at=expires_at, renewals=F("renewals") + 1)
        lease.expires_at, lease.renewals = expires_at, lease.renewals + 1
    return lease


def _requeue_undone(item: Item, annotation: Annotation) -> dict[str, int]:
    """The item fields to put back because the undone answer had re-queued it (``Annotation.requeued_item``).

    Each goes back only if it still holds the value that answer set: a publish or another answer that moved it
    since had its own reason, which the undo does not take away.
    """
    changed = annotation.requeued_item or {}
    current = {"n_required": item.n_required, "boost": item.boost}
    return {name: before for name, (before, after) in changed.items() if current.get(name) == after}


def _adjudication_withdraw(*, item: Item, actor: AbstractBaseUser, project: Project) -> None:
    """An undo re-opens a finished item, so the adjudication its answers opened no longer has a complete set of
    answers to judge: a pending one goes (audited), and the next finish decides again. A lead's own (manual) or
    decided adjudication stays."""
    withdrawn = list(Adjudication.objects.filter(item_id=item.pk, state=Adjudication.State.PENDING).exclude(
        reason=Adjudication.Reason.MANUAL).values_list("id", "reason"))
    for adjudication_id, reason in withdrawn:
        Adjudication.objects.filter(pk=adjudication_id).delete()
        audit_record(actor=actor, action="adjudication.withdraw", obj=item, project=project,  # type: ignore[arg-type]
                     data={"adjudication_id": adjudication_id, "item_id": item.pk, "reason": reason,
                           "why": "an answer was undone"})


def annotation_undo(*, lease_id: int, reviewer: AbstractBaseUser) -> Lease:
    """Take back a submit within ``settings.SIFT_UNDO_SECONDS``: the annotation is deleted (its labels kept in the
    audit log), ``n_done`` drops by one and the SAME lease is active again, with a fresh expiry, so the page can
    show the item again. Any other lease the reviewer holds in the project is released (one lease per reviewer).

    The slot count is unchanged: the lease moves from ``n_done`` back to ``holding``, so no one else can have
    taken its place in the meantime.
    """
    lease = _lease_of(lease_id=lease_id, reviewer=reviewer)
    window = int(settings.SIFT_UNDO_SECONDS)
    with transaction.atomic():
        # An undo deletes an answer that a running publish may have locked already: wait that publish out first,
        # holding nothing (taxonomy_migrations.py's essay, "A publish never stalls reviewers").
        project_share_lock(project_id=lease.project_id)
        # Lock order membership -> item -> lease, as in checkout: undo also changes which lease the reviewer holds.
        Membership.objects.select_for_update(no_key=True).filter(
            project_id=lease.project_id, user_id=reviewer.pk).exists()
        item, lease = _lock(lease_id=lease_id, reviewer=reviewer)
        if lease.state != Lease.State.SUBMITTED:
            raise Conflict(f"only a submitted lease can be undone; lease {lease.pk} is {lease.state}",
                           state=lease.state)
        annotation = Annotation.objects.filter(lease=lease, reviewer_id=reviewer.pk).first()
        if annotation is None:
            raise Conflict(f"lease {lease.pk} has no annotation to undo")
        now = timezone.now()
        deadline = annotation.created_at + timedelta(seconds=window)
        if now > deadline:
            raise Conflict(f"the {window} s undo window closed at {_when(deadline)}", state=lease.state)
        audit_record(actor=reviewer, action="annotation.undo", obj=annotation, project=lease.project,  # type: ignore[arg-type]
                     data={"lease_id": lease.pk, "item_id": item.pk, "labels": annotation.labels,
                           "taxonomy_version": lease.taxonomy_version.number if lease.taxonomy_version else None,
                           "submitted_at": annotation.created_at.isoformat()})
        annotation.delete()
        Item.objects.filter(pk=item.pk).update(n_done=F("n_done") - 1, **_requeue_undone(item, annotation))
        _adjudication_withdraw(item=item, actor=reviewer, project=lease.project)
        propagation_after_answer(project=lease.project, item_id=item.pk)  # re-evaluate what it propagated
        Lease.objects.filter(project_id=lease.project_id, reviewer_id=reviewer.pk, state=Lease.State.ACTIVE).update(
            state=Lease.State.RELEASED, closed_at=now)
        expires_at = now + timedelta(seconds=lease.project.lease_seconds)
        # The undone submit's key stays consumed: a late replay of that request must not answer again.
        undone_keys = [*(lease.undone_idempotency_keys or []), *([annotation.idempotency_key]
                                                                  if annotation.idempotency_key else [])]
        Lease.objects.filter(pk=lease.pk).update(state=Lease.State.ACTIVE, expires_at=expires_at, closed_at=None,
                                                 undone_idempotency_keys=undone_keys or None)
        lease.state, lease.expires_at, lease.closed_at = Lease.State.ACTIVE, expires_at, None
        lease.undone_idempotency_keys = undone_keys or None
        LabelCounter.objects.bump(project_id=lease.project_id)  # the last write: see label_counter.py
        scheduling.request_retrain(project_id=lease.project_id)
        project: Project = lease.project
        transaction.on_commit(lambda: queue_rank_floor_reset(project=project))
    lease.item = Item.objects.only("id", "project_id", "external_id", "text", "meta").get(pk=lease.item_id)
    return lease
