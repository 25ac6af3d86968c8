"""Taxonomies: one per project, as a chain of versions.

Invariant: a *published* ``TaxonomyVersion`` and its ``Label`` rows never change.
Edits go into the project's single *draft* version; publishing flips the draft to
published in one transaction (labeling/services/taxonomy.py). Annotations point at
the version they were made under, so a label keeps the meaning it had when given.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class ImmutableVersionError(Exception):
    """Raised on any attempt to modify a published taxonomy version or its labels."""


class TaxonomyVersion(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="taxonomy_versions")
    # 1, 2, 3... for published versions; None while a draft.
    number = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    name = models.CharField(max_length=200)
    multi_label = models.BooleanField(default=False)
    # Whether annotations may carry non-leaf keys (e.g. "hate" instead of "hate/slur").
    allow_non_leaf = models.BooleanField(default=False)
    changelog = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    based_on = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="unique_taxonomy_version_number"),
            models.UniqueConstraint(
                fields=["project"], condition=models.Q(status="draft"), name="one_draft_taxonomy_per_project"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id} v{self.number or 'draft'}"

    @property
    def is_published(self) -> bool:
        return self.status == self.Status.PUBLISHED

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            stored = TaxonomyVersion.objects.filter(pk=self.pk).values_list("status", flat=True).first()
            if stored == self.Status.PUBLISHED:
                raise ImmutableVersionError(f"taxonomy version {self.number} is published and cannot change")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_published:
            raise ImmutableVersionError("published taxonomy versions cannot be deleted")
        return super().delete(*args, **kwargs)


class Label(models.Model):
    version = models.ForeignKey(TaxonomyVersion, on_delete=models.CASCADE, related_name="labels")
    key = models.CharField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="", help_text="Guideline text (Markdown).")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    position = models.PositiveIntegerField(default=0)
    severity = models.PositiveSmallIntegerField(default=0, help_text="0 = none; higher is more severe.")
    action = models.CharField(max_length=32, blank=True, default="", help_text="e.g. remove, age_restrict, allow")
    positive_examples = models.JSONField(default=list, blank=True)
    negative_examples = models.JSONField(default=list, blank=True)
    deprecated = models.BooleanField(default=False)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["version", "key"], name="unique_label_key_per_version")]

    def __str__(self) -> str:
        return self.key

    def _guard(self) -> None:
        status = TaxonomyVersion.objects.filter(pk=self.version_id).values_list("status", flat=True).first()
        if status == TaxonomyVersion.Status.PUBLISHED:
            raise ImmutableVersionError(f"label {self.key!r} belongs to a published version")

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._guard()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        self._guard()
        return super().delete(*args, **kwargs)


class LabelMigration(models.Model):
    """How the labels of ``from_version`` map onto ``to_version``; declared in the draft, fixed at publish."""

    class Kind(models.TextChoices):
        RENAME = "rename", "Rename (A -> B)"
        MERGE = "merge", "Merge (A + B -> C)"
        SPLIT = "split", "Split (A -> B | C)"
        DEPRECATE = "deprecate", "Deprecate (A -> nothing)"

    to_version = models.ForeignKey(TaxonomyVersion, on_delete=models.CASCADE, related_name="migrations_in")
    from_version = models.ForeignKey(TaxonomyVersion, on_delete=models.PROTECT, related_name="migrations_out")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    sources = models.JSONField(help_text="Label keys in from_version.")
    targets = models.JSONField(default=list, blank=True, help_text="Label keys in to_version.")
    # Queue boost for items re-queued because their labels are no longer determinable.
    requeue_priority = models.IntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind}: {self.sources} -> {self.targets}"
