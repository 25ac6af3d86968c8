"""Named, immutable export snapshots: the file, the parameters that made it, and its checksum."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ExportSnapshot(models.Model):
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="export_snapshots")
    name = models.SlugField(max_length=100)
    format = models.CharField(max_length=16)
    params = models.JSONField(default=dict)
    path = models.CharField(max_length=500, help_text="Relative to settings.EXPORT_ROOT; written by Sift only.")
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    row_count = models.PositiveIntegerField()
    card = models.JSONField(default=dict, help_text="Dataset card (counts, distribution, agreement, ...).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_snapshot_name")]
