"""Items to label, with the denormalised counters the queue's hot path reads.

``n_required`` and ``n_done`` live on the row so that "does this item still need a
reviewer?" is a column comparison the candidate scan can filter on, at 1M items,
without counting annotations. Both change only under the item's row lock
(labeling/services/queues.py), which is what keeps them exact.
"""

from __future__ import annotations

import random

from django.db import models
from django.db.models import F, Q

from labeling.querysets import ItemQuerySet


def new_random_key() -> float:
    # A fresh, independent uniform key per item: the fallback queue order is a
    # random permutation, so early labels are an unbiased sample of the pool.
    return random.SystemRandom().random()


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VALIDATION = "validation", "Validation"
    TEST = "test", "Test"


class Item(models.Model):
    # No index of its own: the unique (project, external_id) index leads with project. A separate one let the
    # planner, fooled by statistics calling a project being imported empty, probe it and filter a whole
    # project per external id in the import's stored-rows look-up (36x slower imports).
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="items",
                                db_index=False)
    external_id = models.CharField(max_length=255)
    text = models.TextField()
    meta = models.JSONField(default=dict, blank=True)
    # sha256 hex of the UTF-8 text (learning.core.embedders.content_hash): the key of the vector cache.
    content_hash = models.CharField(max_length=64)

    is_gold = models.BooleanField(default=False)
    gold_labels = models.JSONField(null=True, blank=True, help_text="Expected answer (label keys) for gold items.")

    n_required = models.PositiveSmallIntegerField(default=1, help_text="Distinct reviewers this item needs.")
    n_done = models.PositiveSmallIntegerField(default=0, help_text="Annotations received.")
    # Served before the ranking when > 0 (e.g. re-queued after a taxonomy split).
    boost = models.IntegerField(default=0)
    random_key = models.FloatField(default=new_random_key)
    # Assigned once by the export's split service and never changed afterwards.
    split = models.CharField(max_length=16, choices=Split.choices, null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ItemQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="unique_item_external_id"),
        ]
        indexes = [
            models.Index(fields=["project", "content_hash"], name="item_project_hash"),
            # Fallback order and uniform exploration over items that still need reviewers.
            models.Index(
                fields=["project", "random_key"], name="item_open_random",
                condition=Q(n_done__lt=F("n_required")),
            ),
            models.Index(
                fields=["project", "-boost", "id"], name="item_open_boosted",
                condition=Q(boost__gt=0) & Q(n_done__lt=F("n_required")),
            ),
            # Gold mixing (labeling/services/gold.py) draws a random gold item without scanning the pool.
            models.Index(fields=["project", "random_key"], name="item_gold_random", condition=Q(is_gold=True)),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.external_id}"

    @property
    def is_open(self) -> bool:
        return self.n_done < self.n_required
