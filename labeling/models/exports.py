"""Named, immutable export snapshots: the file, the parameters that made it, its checksum, and its progress.

A snapshot is requested (``pending``), claimed by one worker (``running``, compare-and-set), and ends
``done`` (file, checksum and card filled in, never changed again) or ``failed`` (``error`` says why;
a retry sets it back to ``pending``). Only a done snapshot has a file.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ExportSnapshot(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="export_snapshots")
    name = models.SlugField(max_length=100)
    format = models.CharField(max_length=16)
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True, default="", help_text="Why the last attempt failed.")
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    path = models.CharField(max_length=500, blank=True, default="",
                            help_text="Relative to settings.EXPORT_ROOT; written by Sift only.")
    sha256 = models.CharField(max_length=64, blank=True, default="")
    size_bytes = models.BigIntegerField(null=True, blank=True)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    card = models.JSONField(default=dict, help_text="Dataset card (counts, distribution, agreement, ...).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_snapshot_name")]
