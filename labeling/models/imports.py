"""Import jobs: an uploaded items file imported by a worker, with its progress and its per-line errors.

A job is created ``pending`` with the upload stored under ``settings.IMPORT_ROOT``, claimed by one worker
(``running``, compare-and-set from pending), and ends ``done`` (counts and errors final, the stored file deleted)
or ``failed`` (``failure`` says why; the counts say how far it got, and the chunks committed before stay). While it
runs, the worker writes the counts and the bytes read so far every fraction of a second, so a page reloaded at any
time shows where it is.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ImportJob(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="import_jobs")
    filename = models.CharField(max_length=255, help_text="The uploaded file's name, as the uploader gave it.")
    path = models.CharField(max_length=500, blank=True, default="",
                            help_text="The stored upload, relative to settings.IMPORT_ROOT; emptied once read.")
    gold = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    size_bytes = models.BigIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text='The summary\'s [{"line", "error"}] once done.')
    failure = models.TextField(blank=True, default="", help_text="Why the job failed (not a row error).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["project", "-id"], name="importjob_project_newest")]

    def __str__(self) -> str:
        return f"import {self.pk} of {self.filename} ({self.status})"

    @property
    def rows_read(self) -> int:
        return self.created + self.updated + self.unchanged + self.error_count

    @property
    def percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return min(99, int(100 * self.bytes_read / self.size_bytes)) if self.size_bytes else 0
