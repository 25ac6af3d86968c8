"""Label propagation with verification: one human decision on a cluster's representative covers its near duplicates.

The policy is per project and label (labeling/models/propagation.py): off, suggest or propagate, with a similarity
threshold and a verification share. The pure rules (coverage, the stable verification pick, how the labels of one
answer combine) are learning/core/propagation.py, shared with bench/campaigns.py.

The invariant
-------------
A representative's propagated answers always equal what its *decision* calls for, where the decision is the lead's
adjudication of the representative if one is decided, else its earliest human answer:

- every member at least ``threshold`` similar to the representative, under a ``propagate`` policy of the
  decision's labels, has one answer with ``source = propagated``, the decision's labels, its similarity and the
  source answer's id, under the source answer's reviewer (so the queue never hands that reviewer the member, and
  the unique (item, reviewer) constraint makes a double propagation impossible);
- no other member of the cluster has one.

``propagation_reevaluate`` restores this from whatever state it finds: it is the whole algorithm for a first
propagation, an undo of the source (its decision moves to the next human answer or disappears: the propagated
answers are relabelled or withdrawn), an adjudication of the source (relabelled) and a policy change (applied at the
representative's next event). So it is idempotent, and it runs in a worker after the commit of the event that
called for it (``propagation_after_answer``, on_commit), never inside a reviewer's submit: a flood cluster has
thousands of members, and a submit's transaction holds the item lock the queue needs.

Counting (n_done)
-----------------
A propagated answer counts towards its item's ``n_done`` like a reviewer's answer, so a covered member leaves the
queue: that is the point of propagating. Except for the verification share: a propagated answer picked for
verification (``verification=True``, a stable hash of the item id, so the same members are picked whatever the
order of events) does *not* count, so its item stays open until a human answers it; that human answer is then
compared with the propagated one for the measured precision (labeling/selectors/propagation.py). The queue's invariant
``n_done + holding <= n_required`` is kept by never propagating onto a member that is held by a lease, already
answered by a human, or finished; such a member gets its human answer instead. Withdrawing a counted propagated
answer lowers ``n_done`` again, which puts the member back in the queue.

Writes take the members' item rows in id order (the queue's lock order, item before lease), in short transactions
of ``BATCH`` members.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F

from labeling.models import (
    Adjudication,
    Annotation,
    AnswerSource,
    ClusterMember,
    Item,
    Label,
    LabelCounter,
    Lease,
    Project,
    PropagationMode,
    PropagationPolicy,
)
from labeling.services.audit import audit_record
from labeling.services.errors import ValidationFailed
from learning import scheduling
from learning.core.propagation import (
    DEFAULT_SIMILARITY_THRESHOLD,
    DEFAULT_VERIFICATION_SHARE,
    answer_policy,
    covered_members,
    verification_pick,
)
from learning.core.vocabulary import Reason

TASK_NAME = "sift.labeling.propagation_reevaluate"
BATCH = 500
logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Policy.


def propagation_policies(*, project: Project) -> list[dict[str, Any]]:
    """Every label of the current taxonomy with its policy (``off`` and the defaults where none was set)."""
    stored = {policy.label: policy for policy in PropagationPolicy.objects.filter(project=project)}
    keys = list(Label.objects.filter(version_id=project.current_taxonomy_version_id).order_by("position", "key")
                .values_list("key", flat=True)) if project.current_taxonomy_version_id else []
    keys += sorted(key for key in stored if key not in keys)
    return [_policy_row(key, stored.get(key)) for key in keys]


def _policy_row(label: str, policy: PropagationPolicy | None) -> dict[str, Any]:
    if policy is None:
        return {"label": label, "mode": PropagationMode.OFF, "threshold": DEFAULT_SIMILARITY_THRESHOLD,
                "verification_share": DEFAULT_VERIFICATION_SHARE}
    return {"label": label, "mode": policy.mode, "threshold": policy.threshold,
            "verification_share": policy.verification_share}


def propagation_policy_set(*, actor: User, project: Project, label: str, mode: str,
                           threshold: float | None = None,
                           verification_share: float | None = None) -> dict[str, Any]:
    """Set one label's policy (audited ``propagation.policy``, with the previous one). The label must be a key of the
    current taxonomy; the threshold and share lie in [0, 1]. It applies from the next event on a representative."""
    if mode not in PropagationMode.values:
        raise ValidationFailed(f"mode: must be one of {', '.join(PropagationMode.values)}", field="mode")
    for name, value in (("threshold", threshold), ("verification_share", verification_share)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValidationFailed(f"{name}: must lie between 0 and 1", field=name)
    if not Label.objects.filter(version_id=project.current_taxonomy_version_id, key=label).exists():
        raise ValidationFailed(f"label: {label!r} is not a label of the current taxonomy", field="label")
    with transaction.atomic():
        policy = PropagationPolicy.objects.select_for_update().filter(project=project, label=label).first()
        previous = _policy_row(label, policy)
        if policy is None:
            policy = PropagationPolicy(project=project, label=label)
        policy.mode = mode
        if threshold is not None:
            policy.threshold = threshold
        if verification_share is not None:
            policy.verification_share = verification_share
        policy.updated_by = actor
        policy.save()
        row = _policy_row(label, policy)
        suggests = PropagationPolicy.objects.filter(project=project, mode=PropagationMode.SUGGEST).exists()
        Project.objects.filter(pk=project.pk).update(propagation_suggests=suggests, propagation_configured=True)
        project.propagation_suggests, project.propagation_configured = suggests, True
        audit_record(actor=actor, action="propagation.policy", obj=policy, project=project,
                     data={**row, "previous": previous})
    return row


def _answer_policy(project_id: int, labels: list[str]) -> tuple[str, float, float]:
    stored = {policy.label: policy for policy in PropagationPolicy.objects.filter(project_id=project_id,
                                                                                  label__in=labels)}
    return answer_policy([(stored[key].mode, stored[key].threshold, stored[key].verification_share)
                          if key in stored else (PropagationMode.OFF, DEFAULT_SIMILARITY_THRESHOLD,
                                                 DEFAULT_VERIFICATION_SHARE) for key in labels])


# ---------------------------------------------------------------------------------------------------------------
# The hook and the worker's re-evaluation.


def propagation_after_answer(*, project: Project, item_id: int) -> None:
    """Call inside the transaction that added, undid or adjudicated an answer on ``item_id``: if the item is a
    cluster representative in a project that has set a propagation policy, re-evaluate its propagation once that
    commits. One index probe; none (not a query) when the project never set a policy."""
    # Any policy, not only a "propagate" one: a label switched back to off may have propagated answers to withdraw.
    if not project.propagation_configured:
        return
    if not ClusterMember.objects.filter(representative_id=item_id).exclude(item_id=item_id).exists():
        return
    transaction.on_commit(lambda: _enqueue(item_id))


def _enqueue(representative_id: int) -> None:
    from celery import current_app

    try:
        current_app.send_task(TASK_NAME, args=[representative_id])
    except Exception:  # kombu, redis and OSError all mean "not sent": the next event on it re-evaluates everything
        logger.exception("could not queue the propagation of representative %s", representative_id)


def propagation_suggestion(*, project_id: int, item_id: int) -> tuple[str, float] | None:
    """(label, similarity) to suggest for ``item_id`` when it is a cluster member whose representative was answered
    with one label on a ``suggest`` policy; else None. One primary-key probe for an unclustered item."""
    row = (ClusterMember.objects.filter(item_id=item_id).exclude(representative_id=item_id)
           .values_list("representative_id", "similarity").first())
    if row is None:
        return None
    representative_id, similarity = row
    decision = (Annotation.objects.filter(item_id=representative_id, source=AnswerSource.HUMAN)
                .order_by("created_at", "id").values_list("labels", flat=True).first())
    if not isinstance(decision, list) or len(decision) != 1:
        return None
    mode, _threshold, _share = _answer_policy(project_id, decision)
    return (str(decision[0]), similarity) if mode == PropagationMode.SUGGEST else None


def _decision(representative: Item) -> tuple[list[str], int, int | None, int] | None:
    """(labels, taxonomy version id, source answer id, reviewer id) the representative's members should carry."""
    first = (Annotation.objects.filter(item_id=representative.pk, source=AnswerSource.HUMAN)
             .order_by("created_at", "id").values_list("id", "labels", "taxonomy_version_id", "reviewer_id").first())
    decided = (Adjudication.objects.filter(item_id=representative.pk, state=Adjudication.State.DECIDED)
               .values_list("labels", "taxonomy_version_id", "decided_by_id").first())
    if decided is not None and decided[0] is not None and decided[1] is not None:
        reviewer_id = first[3] if first is not None else decided[2]
        return list(decided[0]), decided[1], first[0] if first is not None else None, reviewer_id
    if first is None:
        return None
    return list(first[1]), first[2], first[0], first[3]


def propagation_reevaluate(*, representative_id: int) -> dict[str, int]:
    """Make the propagated answers of ``representative_id``'s cluster what its decision calls for (the essay above).
    Idempotent: a second run changes nothing. Returns how many were created, relabelled and withdrawn."""
    counts = {"created": 0, "relabelled": 0, "withdrawn": 0}
    representative = Item.objects.filter(pk=representative_id).select_related("project").first()
    if representative is None:
        return counts
    members = list(ClusterMember.objects.filter(representative_id=representative_id).exclude(item_id=representative_id)
                   .order_by("item_id").values_list("item_id", "similarity"))
    decision = _decision(representative)
    desired: dict[int, float] = {}
    share = 0.0
    if decision is not None:
        mode, threshold, share = _answer_policy(representative.project_id, decision[0])
        if mode == PropagationMode.PROPAGATE:
            similarity = dict(members)
            desired = {item_id: similarity[item_id] for item_id in covered_members(members, threshold=threshold)}
    ids = [item_id for item_id, _similarity in members]
    for start in range(0, len(ids), BATCH):
        _reconcile(representative=representative, ids=ids[start:start + BATCH], desired=desired,
                   decision=decision, share=share, counts=counts)
    return counts


def _reconcile(*, representative: Item, ids: list[int], desired: dict[int, float],
               decision: tuple[list[str], int, int | None, int] | None, share: float,
               counts: dict[str, int]) -> None:
    project = representative.project
    with transaction.atomic():
        locked = Item.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk")
        items = {item.pk: item for item in locked}
        existing = {answer.item_id: answer for answer in Annotation.objects.filter(
            item_id__in=ids, source=AnswerSource.PROPAGATED)}
        humans = set(Annotation.objects.filter(item_id__in=ids, source=AnswerSource.HUMAN)
                     .values_list("item_id", "reviewer_id"))
        answered = {item_id for item_id, _reviewer in humans}
        held = set(Lease.objects.holding().filter(item_id__in=ids).values_list("item_id", flat=True))
        before = dict(counts)
        for item_id in ids:
            item, answer = items.get(item_id), existing.get(item_id)
            if item is None:
                continue
            if item_id not in desired or decision is None:
                if answer is not None:
                    _withdraw(answer, project=project)
                    counts["withdrawn"] += 1
                continue
            _labels, _version_id, _source_id, reviewer_id = decision
            if answer is not None:
                if answer.reviewer_id != reviewer_id and (item_id, reviewer_id) in humans:
                    _withdraw(answer, project=project)  # the new source reviewer answered this member themselves
                    counts["withdrawn"] += 1
                elif (answer.labels, answer.taxonomy_version_id, answer.propagated_from_id, answer.reviewer_id) != (
                        *decision[:3], reviewer_id):
                    # Replaced, not updated: a new id moves the stats cache's fingerprint (labeling/selectors/
                    # quality.py), and the item's count is unchanged (same verification pick, same n_done share).
                    answer.delete()
                    _create(project=project, item_id=item_id, decision=decision, similarity=desired[item_id],
                            verification=answer.verification)
                    counts["relabelled"] += 1
                continue
            if item_id in answered or item_id in held or item.n_done >= item.n_required or item.is_gold:
                continue  # a human answers (or answered) it: propagating would put it in front of one too many
            verification = verification_pick(item_id, share=share, salt=str(project.pk))
            _create(project=project, item_id=item_id, decision=decision, similarity=desired[item_id],
                    verification=verification)
            if not verification:
                Item.objects.filter(pk=item_id).update(n_done=F("n_done") + 1)
            counts["created"] += 1
        changed = {name: counts[name] - before[name] for name in counts}
        if any(changed.values()):
            audit_record(actor=None, action="propagation.reevaluate", obj=representative, project=project,
                         data={"representative_id": representative.pk, **changed,
                               "labels": decision[0] if decision else None,
                               "source_annotation_id": decision[2] if decision else None})
            LabelCounter.objects.bump(project_id=project.pk)  # the last write: see label_counter.py
            scheduling.request_retrain(project_id=project.pk)


def _create(*, project: Project, item_id: int, decision: tuple[list[str], int, int | None, int], similarity: float,
            verification: bool) -> None:
    labels, version_id, source_id, reviewer_id = decision
    Annotation.objects.create(
        project=project, item_id=item_id, reviewer_id=reviewer_id, taxonomy_version_id=version_id, labels=labels,
        source=AnswerSource.PROPAGATED, propagated_from_id=source_id, similarity=similarity,
        verification=verification, selection_reason=Reason.PROPAGATED)


def _withdraw(answer: Annotation, *, project: Project) -> None:
    answer.delete()
    if not answer.verification:
        Item.objects.filter(pk=answer.item_id).update(n_done=F("n_done") - 1)
