"""The reviewer queue's tables: rankings keyed by model version, and leases.

Rankings are written by the learning workers in batches under a *new*
``ranking_version`` and made live by one small UPDATE of
``Project.active_ranking_version`` (RankingEntry.objects.activate). Readers only
ever follow the pointer, so nobody sees a half-written ranking. See
labeling/services/queues.md for how checkout walks these tables.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from labeling.querysets import LeaseQuerySet, RankingEntryManager
from learning.core.vocabulary import REASON_LABELS, REASON_MAX_LENGTH, Reason

# The reasons' one home is learning/core/vocabulary.py (the ranking emits most of them; the ground floor may
# import that module and nothing else of learning, see pyproject.toml). Built from it, so a reason the ranking
# starts to emit is a valid choice, in the API's enum and labelled on the labelling page without a second edit.
SelectionReason = models.TextChoices(  # type: ignore[call-overload]  # the functional API: stubs lack it
    "SelectionReason", [(reason.name, (reason.value, REASON_LABELS[reason])) for reason in Reason],
)


class RankingEntry(models.Model):
    # No database-level foreign keys (db_constraint=False): rankings are derived rows, rewritten by every retrain
    # (up to 200k per version) and always read joined to their item. PostgreSQL checks each inserted row's two
    # foreign keys at commit, which measured ~70% of a 100k-row ranking write (bench/retrain_loop.py). The ORM
    # still cascades deletes; a stray row can only point at a deleted item, which the queue's join drops and
    # the next prune removes.
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    ranking_version = models.PositiveIntegerField()
    rank = models.PositiveIntegerField()
    item = models.ForeignKey("labeling.Item", on_delete=models.CASCADE, related_name="+", db_index=False,
                             db_constraint=False)
    score = models.FloatField(null=True)
    reason = models.CharField(max_length=REASON_MAX_LENGTH, choices=SelectionReason.choices)
    inclusion_probability = models.FloatField(null=True)
    suggested_label = models.CharField(max_length=100, blank=True, default="")
    suggested_confidence = models.FloatField(null=True)

    objects = RankingEntryManager()

    class Meta:
        # The one index the checkout needs; more indexes would slow the bulk writes.
        constraints = [
            models.UniqueConstraint(fields=["project", "ranking_version", "rank"], name="unique_ranking_position"),
        ]


class Lease(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        RELEASED = "released", "Released"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="leases")
    item = models.ForeignKey("labeling.Item", on_delete=models.CASCADE, related_name="leases", db_index=False)
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases",
                                 db_index=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    # An ACTIVE lease past expires_at no longer holds its item (checked at checkout): no cron needed.
    expires_at = models.DateTimeField()
    renewals = models.PositiveIntegerField(default=0)
    closed_at = models.DateTimeField(null=True, blank=True)

    taxonomy_version = models.ForeignKey("labeling.TaxonomyVersion", null=True, on_delete=models.PROTECT,
                                         related_name="+")
    selection_reason = models.CharField(max_length=REASON_MAX_LENGTH, choices=SelectionReason.choices)
    selection_score = models.FloatField(null=True)
    model_version = models.PositiveIntegerField(null=True)
    inclusion_probability = models.FloatField(null=True)
    # {"label": key, "confidence": float} as shown to the reviewer, or None.
    suggestion = models.JSONField(null=True, blank=True)
    suggestion_hidden = models.BooleanField(default=False, help_text="Suggestion withheld to measure automation bias.")
    # The idempotency keys of submits on this lease that were undone: a replay of one must not answer again
    # (labeling/services/annotations.py). None until the first undo; the checkout's INSERT never names it.
    undone_idempotency_keys = models.JSONField(null=True, blank=True)

    objects = LeaseQuerySet.as_manager()

    class Meta:
        # The two partial indexes on active leases each name their key column in their predicate as well. A partial
        # index can be read whole (no index condition at all) by any query whose WHERE implies its predicate, and
        # with "state = 'active'" alone both were candidates for every active-lease question: a planner misled by
        # statistics (a lease table analysed while it was empty) read all of a project's active leases where one
        # item's were wanted. "item_id IS NOT NULL" is implied only by a query that constrains item_id, and
        # "project_id IS NOT NULL" only by one that constrains project_id (tests/labeling/test_queue_plans.py).
        indexes = [
            models.Index(fields=["item"], name="lease_item_active",
                         condition=Q(state="active", item__isnull=False)),
            models.Index(fields=["reviewer", "item"], name="lease_reviewer_item"),
            models.Index(fields=["project", "expires_at"], name="lease_active_expiry",
                         condition=Q(state="active", project__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} ({self.state})"
