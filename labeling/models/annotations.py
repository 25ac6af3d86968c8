"""Annotations (one per item and reviewer, enforced by the database) and adjudications, and the one rule for
reading an answer in a taxonomy version.

An answer is read in version V as: its ``labels`` if it was given in V, else its ``mapped_labels`` if a label
migration mapped it onto V (and could determine it), else it is unreadable in V. ``answer_read_in`` is that rule
over plain values (the hot readers fetch tuples, not instances), ``Annotation.labels_in_version`` is it on one
instance, and ``answer_read_in_sql`` is it as a SQL expression. Exports, quality figures, training labels,
adjudication and item history all read answers through one of the three.
"""

from __future__ import annotations

from typing import TypeVar

from django.conf import settings
from django.db import models
from django.db.models import Q

from labeling.models.propagation import AnswerSource
from labeling.models.queue import SelectionReason
from learning.core.vocabulary import REASON_MAX_LENGTH

# What ``answer_read_in`` says about an answer's source in the version asked about.
GIVEN, MAPPED, UNREADABLE = "L", "M", "U"
LabelsT = TypeVar("LabelsT")


def answer_read_in(version_id: int | None, *, given_version_id: int | None, labels: LabelsT,
                   mapped_version_id: int | None, mapped_labels: LabelsT | None) -> tuple[str, LabelsT | None]:
    """(source, labels) of one answer read in ``version_id``: (GIVEN, labels), (MAPPED, mapped_labels) or
    (UNREADABLE, None). The labels pass through untouched, so a caller may hand in JSON text or lists."""
    if given_version_id == version_id:
        return GIVEN, labels
    if mapped_version_id == version_id and mapped_labels is not None:
        return MAPPED, mapped_labels
    return UNREADABLE, None


def answer_read_in_sql(*, alias: str = "") -> str:
    """``answer_read_in`` as a PostgreSQL expression: the source letter followed by the labels' JSON text ('L[..]',
    'M[..]' or 'U'). It takes the version id as a query parameter twice; ``alias`` qualifies the columns."""
    a = f"{alias}." if alias else ""
    return (f"CASE WHEN {a}taxonomy_version_id = %s THEN '{GIVEN}' || {a}labels::text "
            f"WHEN {a}mapped_taxonomy_version_id = %s AND {a}mapped_labels IS NOT NULL "
            f"THEN '{MAPPED}' || {a}mapped_labels::text ELSE '{UNREADABLE}' END")


class Annotation(models.Model):
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="annotations")
    item = models.ForeignKey("labeling.Item", on_delete=models.CASCADE, related_name="annotations")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations")
    lease = models.OneToOneField("labeling.Lease", null=True, on_delete=models.SET_NULL, related_name="annotation")
    # The labels as given, under the version they were given in. Never rewritten.
    taxonomy_version = models.ForeignKey("labeling.TaxonomyVersion", on_delete=models.PROTECT, related_name="+")
    labels = models.JSONField(help_text="Label keys of taxonomy_version.")
    # The same answer mapped onto a later version by a label migration, where determinable.
    mapped_labels = models.JSONField(null=True, blank=True)
    mapped_taxonomy_version = models.ForeignKey("labeling.TaxonomyVersion", null=True, blank=True,
                                                on_delete=models.PROTECT, related_name="+")
    comment = models.TextField(blank=True, default="")
    lead_time_ms = models.PositiveIntegerField(null=True, blank=True)

    # Why the item was in front of the reviewer, copied from the lease.
    selection_reason = models.CharField(max_length=REASON_MAX_LENGTH, choices=SelectionReason.choices)
    selection_score = models.FloatField(null=True)
    inclusion_probability = models.FloatField(null=True)
    model_version = models.PositiveIntegerField(null=True)
    suggestion_shown = models.JSONField(null=True, blank=True)

    # Scored against Item.gold_labels at submit time, for gold items.
    gold_correct = models.BooleanField(null=True)

    idempotency_key = models.CharField(max_length=128, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # What this answer's own re-queue changed on its item (a submit on a lease older than a split or deprecation:
    # taxonomy_migrations.annotation_map_forward), {"n_required": [before, after], "boost": [before, after]}, so an
    # undo can put the item back exactly. None: it re-queued nothing.
    requeued_item = models.JSONField(null=True, blank=True)

    # Label propagation (labeling/services/propagation.py). A propagated answer is the source answer's labels applied
    # to a member of the source item's cluster, under the source's reviewer; ``verification``: it is one of the fixed
    # share a human still reviews, so it does not count towards the item's n_done (the item stays in the queue).
    source = models.CharField(max_length=16, choices=AnswerSource.choices, default=AnswerSource.HUMAN,
                              db_default=AnswerSource.HUMAN)
    propagated_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    similarity = models.FloatField(null=True, blank=True, help_text="Of a propagated answer's item to the source's.")
    verification = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "reviewer"], name="one_annotation_per_item_reviewer"),
            models.UniqueConstraint(
                fields=["reviewer", "idempotency_key"], condition=Q(idempotency_key__isnull=False),
                name="one_annotation_per_idempotency_key",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "id"], name="annotation_project_id"),
            # Propagation's precision figures and exports read a project's propagated answers without its others.
            models.Index(fields=["project", "item"], name="annotation_propagated",
                         condition=Q(source=AnswerSource.PROPAGATED)),
        ]

    def __str__(self) -> str:
        return f"annotation {self.pk}: {self.labels}"

    def labels_in_version(self, version_id: int | None) -> list[str] | None:
        """This answer's label keys in ``version_id``'s terms, or None where it is unreadable there."""
        _source, keys = answer_read_in(version_id, given_version_id=self.taxonomy_version_id, labels=self.labels,
                                       mapped_version_id=self.mapped_taxonomy_version_id,
                                       mapped_labels=self.mapped_labels)
        return None if keys is None else list(keys)


class Adjudication(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DECIDED = "decided", "Decided"

    class Reason(models.TextChoices):
        DISAGREEMENT = "disagreement", "Annotators disagree"
        SEVERE = "severe", "Severe label"
        MANUAL = "manual", "Sent by a lead"
        SUSPECTED_ERROR = "suspected_error", "The model suspects a label error"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="adjudications")
    item = models.OneToOneField("labeling.Item", on_delete=models.CASCADE, related_name="adjudication")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    # The final answer: exports use it over any aggregate.
    labels = models.JSONField(null=True, blank=True)
    taxonomy_version = models.ForeignKey("labeling.TaxonomyVersion", null=True, blank=True, on_delete=models.PROTECT,
                                         related_name="+")
    note = models.TextField(blank=True, default="")
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["project", "state"], name="adjudication_project_state")]
