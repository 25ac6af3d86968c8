"""Imports run by a worker, for the import page: ``import_job_create``, ``import_job_run``, ``import_job_errors_csv``.

The page uploads a file; ``import_job_create`` stores it under ``settings.IMPORT_ROOT`` (streamed to disk, never
held in memory), records a pending ``ImportJob`` and, once that commits, sends ``sift.labeling.import_job`` by name.
The worker's ``import_job_run`` claims the job with a compare-and-set UPDATE (pending -> running; a second
delivery of the message finds it running or done and does nothing), runs the one import service
(``items_import``: the same parsing, validation and per-line errors as the API and the command line), and writes
the counts and the bytes read after every chunk, at most every ``PROGRESS_EVERY_SECONDS``, so a reloaded page
shows where it is. The job ends ``done`` with the summary (its errors downloadable as CSV), or ``failed`` with the
reason; the chunks committed before a failure stay imported (the import is idempotent: uploading the file again
completes it). The stored upload is deleted when the job ends either way.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labeling.models import ImportJob, Project
from labeling.services.audit import Actor, acting_user, audit_record
from labeling.services.errors import ValidationFailed
from labeling.services.exports import CSV_FORMULA_TRIGGERS
from labeling.services.images import items_import_zip, upload_is_zip
from labeling.services.items_import import ImportSummary, items_import

logger = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 0.5
TASK_NAME = "sift.labeling.import_job"


def import_job_create(*, actor: Actor, project: Project, upload: Any, gold: bool = False,
                      enqueue: bool = True) -> ImportJob:
    """Store ``upload`` (a Django UploadedFile) and queue its import; returns the pending job."""
    name = Path(str(getattr(upload, "name", "") or "")).name[:255]
    if not name:
        raise ValidationFailed("file: choose a file to import", field="file")
    root = Path(settings.IMPORT_ROOT)
    stored = f"{project.pk}/{uuid.uuid4().hex}"
    target = root / stored
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with target.open("wb") as out:
        for chunk in upload.chunks():
            size += len(chunk)
            out.write(chunk)
    if size > settings.SIFT_MAX_UPLOAD_BYTES:
        target.unlink(missing_ok=True)
        raise ValidationFailed(f"file: larger than the limit of {settings.SIFT_MAX_UPLOAD_BYTES:,} bytes",
                               field="file")
    with transaction.atomic():
        job = ImportJob.objects.create(project=project, filename=name, path=stored, gold=gold, size_bytes=size,
                                       created_by=acting_user(actor))
        audit_record(actor=actor, action="items.import_job", obj=job, project=project,
                     data={"filename": name, "gold": gold, "size_bytes": size})
        if enqueue:
            job_id = job.pk
            transaction.on_commit(lambda: _enqueue(job_id))
    return job


def _enqueue(job_id: int) -> None:
    """Send the task by name; a broker failure fails the job (never run a large import in the request instead)."""
    from celery import current_app

    try:
        current_app.send_task(TASK_NAME, args=[job_id])
    except Exception as exc:  # kombu, redis and OSError all mean "not sent"
        logger.exception("could not queue import job %s", job_id)
        _finish(job_id, status=ImportJob.Status.FAILED, from_status=ImportJob.Status.PENDING,
                failure=f"could not queue the import (task broker unavailable: {type(exc).__name__}); upload it "
                        "again")


def import_job_run(*, job_id: int) -> ImportJob | None:
    """Import a pending job's file; idempotent (a job not pending is left alone). Returns the job as it stands."""
    now = timezone.now()
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.PENDING).update(
        status=ImportJob.Status.RUNNING, started_at=now)
    job = ImportJob.objects.select_related("project", "created_by").filter(pk=job_id).first()
    if not claimed or job is None:
        return job
    path = Path(settings.IMPORT_ROOT) / job.path
    try:
        with path.open("rb") as handle:
            if upload_is_zip(handle):
                summary = items_import_zip(actor=job.created_by, project=job.project, source=handle, gold=job.gold,
                                           progress=_Progress(job.pk, handle))
            else:
                summary = items_import(actor=job.created_by, project=job.project, source=handle,
                                       filename=job.filename, gold=job.gold, progress=_Progress(job.pk, handle))
    except Exception as exc:
        logger.exception("import job %s failed", job_id)
        _finish(job.pk, status=ImportJob.Status.FAILED, failure=f"the import stopped: {type(exc).__name__}: {exc}")
        raise
    finally:
        path.unlink(missing_ok=True)
    _finish(job.pk, status=ImportJob.Status.DONE, summary=summary, bytes_read=job.size_bytes)
    return ImportJob.objects.filter(pk=job_id).first()


class _Progress:
    """Writes the counts so far and the file position to the job row, at most every PROGRESS_EVERY_SECONDS."""

    def __init__(self, job_id: int, handle: Any) -> None:
        self._job_id = job_id
        self._handle = handle
        self._last = 0.0

    def __call__(self, summary: ImportSummary) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        try:
            position = int(self._handle.tell())  # the reader thread's place in the file (compressed bytes for gzip)
        except (OSError, ValueError):
            position = 0
        ImportJob.objects.filter(pk=self._job_id, status=ImportJob.Status.RUNNING).update(
            created=summary.created, updated=summary.updated, unchanged=summary.unchanged,
            error_count=summary.error_count, bytes_read=position)


def _finish(job_id: int, *, status: str, from_status: str = ImportJob.Status.RUNNING,
            summary: ImportSummary | None = None, failure: str = "", bytes_read: int | None = None) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "path": "", "failure": failure}
    if summary is not None:
        values.update(created=summary.created, updated=summary.updated, unchanged=summary.unchanged,
                      error_count=summary.error_count, errors=summary.as_dict()["errors"])
    if bytes_read is not None:
        values["bytes_read"] = bytes_read
    ImportJob.objects.filter(pk=job_id, status=from_status).update(**values)


def import_job_errors_csv(job: ImportJob) -> str:
    """The job's per-line errors as CSV (``line,error``), for the page's download: escaped for spreadsheets as
    exports' CSV is by default (an error may quote the file's own text)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["line", "error"])
    for error in job.errors:
        message = str(error["error"])
        writer.writerow([error["line"], "'" + message if message.startswith(CSV_FORMULA_TRIGGERS) else message])
    return out.getvalue()
