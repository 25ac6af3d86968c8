"""Annotations (one per item and reviewer, enforced by the database) and adjudications."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from labeling.models.queue import SelectionReason
from learning.core.vocabulary import REASON_MAX_LENGTH


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

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "reviewer"], name="one_annotation_per_item_reviewer"),
            models.UniqueConstraint(
                fields=["reviewer", "idempotency_key"], condition=Q(idempotency_key__isnull=False),
                name="one_annotation_per_idempotency_key",
            ),
        ]
        indexes = [models.Index(fields=["project", "id"], name="annotation_project_id")]

    def __str__(self) -> str:
        return f"annotation {self.pk}: {self.labels}"


class Adjudication(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DECIDED = "decided", "Decided"

    class Reason(models.TextChoices):
        DISAGREEMENT = "disagreement", "Annotators disagree"
        SEVERE = "severe", "Severe label"
        MANUAL = "manual", "Sent by a lead"

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
