"""labeling/services/import_jobs.py and the import-jobs API: store, claim once, progress, errors CSV, failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling.models import AuditEvent, ImportJob, Item
from labeling.services import import_jobs
from labeling.services.import_jobs import import_job_create, import_job_errors_csv, import_job_run
from labeling.tasks import import_job as import_job_task

pytestmark = pytest.mark.django_db

CSV = b"external_id,text,channel\na,hello there,sms\nb,,sms\nc,=cmd|' /C calc'!A0,email\n"


@pytest.fixture(autouse=True)
def import_root(settings: Any, tmp_path: Path) -> Path:
    settings.IMPORT_ROOT = tmp_path / "imports"
    return Path(settings.IMPORT_ROOT)


def test_a_job_is_stored_pending_and_queued_once_committed(cast: dict[str, Any], import_root: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           django_capture_on_commit_callbacks: Any) -> None:
    sent: list[tuple[str, Any]] = []
    from celery import current_app

    monkeypatch.setattr(current_app, "send_task", lambda name, args: sent.append((name, args)))
    with django_capture_on_commit_callbacks(execute=True):
        job = import_job_create(actor=cast["users"]["admin"], project=cast["project"],
                                upload=SimpleUploadedFile("batch.csv", CSV), gold=False)
    assert (job.status, job.filename, job.size_bytes, job.gold) == ("pending", "batch.csv", len(CSV), False)
    assert (import_root / job.path).read_bytes() == CSV
    assert sent == [("sift.labeling.import_job", [job.pk])]
    assert AuditEvent.objects.filter(action="items.import_job").get().data == {
        "filename": "batch.csv", "gold": False, "size_bytes": len(CSV)}


def test_run_imports_once_and_keeps_the_summary(cast: dict[str, Any], import_root: Path) -> None:
    job = import_job_create(actor=cast["users"]["admin"], project=cast["project"],
                            upload=SimpleUploadedFile("batch.csv", CSV), enqueue=False)
    stored = import_root / job.path
    assert import_job_task(job.pk)["status"] == "done"  # the task, as the worker runs it
    job.refresh_from_db()
    assert (job.status, job.created, job.updated, job.unchanged, job.error_count, job.percent, job.bytes_read) == (
        "done", 2, 0, 0, 1, 100, len(CSV))
    assert job.errors == [{"line": 3, "error": "text: must not be empty"}]
    assert not stored.exists() and job.path == ""
    assert set(Item.objects.filter(project=cast["project"]).values_list("external_id", flat=True)) == {"a", "c"}
    # Called twice, effect once: a redelivered message finds the job done.
    again = import_job_run(job_id=job.pk)
    assert again is not None and (again.status, again.created) == ("done", 2)
    assert AuditEvent.objects.filter(action="items.import").count() == 1
    assert import_job_errors_csv(job) == "line,error\r\n3,text: must not be empty\r\n"


def test_progress_is_written_while_it_runs(cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_jobs, "PROGRESS_EVERY_SECONDS", 0.0)
    monkeypatch.setattr("labeling.services.items_import.store.CHUNK_ROWS", 2)
    seen: list[tuple[str, int, int]] = []
    original = import_jobs._Progress.__call__

    def spy(self: Any, summary: Any) -> None:
        original(self, summary)
        row = ImportJob.objects.get(pk=self._job_id)
        seen.append((row.status, row.created, row.bytes_read))

    monkeypatch.setattr(import_jobs._Progress, "__call__", spy)
    body = b"".join(b'{"external_id": "r%d", "text": "row %d"}\n' % (n, n) for n in range(5))
    job = import_job_create(actor=None, project=cast["project"], upload=SimpleUploadedFile("r.jsonl", body),
                            enqueue=False)
    import_job_run(job_id=job.pk)
    assert [(status, created) for status, created, _ in seen] == [("running", 2), ("running", 4), ("running", 5)]
    assert all(0 < read <= len(body) for _, _, read in seen)


def test_a_failed_run_says_why_and_deletes_the_upload(cast: dict[str, Any], import_root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    job = import_job_create(actor=None, project=cast["project"], upload=SimpleUploadedFile("a.csv", CSV),
                            enqueue=False)

    def boom(**kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(import_jobs, "items_import", boom)
    with pytest.raises(RuntimeError):
        import_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.failure) == ("failed", "the import stopped: RuntimeError: disk on fire")
    assert list((import_root / str(cast["project"].pk)).iterdir()) == []


def test_broker_down_fails_the_job_instead_of_importing_in_the_request(
        cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any) -> None:
    from celery import current_app

    def down(*args: Any, **kwargs: Any) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(current_app, "send_task", down)
    with django_capture_on_commit_callbacks(execute=True):
        job = import_job_create(actor=None, project=cast["project"], upload=SimpleUploadedFile("a.csv", CSV))
    job.refresh_from_db()
    assert job.status == "failed" and job.failure.startswith("could not queue the import (task broker unavailable")
    assert Item.objects.filter(project=cast["project"]).count() == 0


def test_api_upload_status_and_errors(cast: dict[str, Any], api_as: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import current_app

    monkeypatch.setattr(current_app, "send_task", lambda *a, **k: None)
    api = api_as(cast["users"]["ml_engineer"])
    response = api.post("/api/projects/sms/imports/", {"file": SimpleUploadedFile("batch.csv", CSV)},
                        format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["filename"], body["created_by"], body["percent"]) == (
        "pending", "batch.csv", "ml_engineer", 0)
    import_job_run(job_id=body["id"])
    detail = api.get(f"/api/projects/sms/imports/{body['id']}/").json()
    assert {k: detail[k] for k in ("status", "rows_read", "created", "error_count", "percent")} == {
        "status": "done", "rows_read": 3, "created": 2, "error_count": 1, "percent": 100}
    errors = api.get(f"/api/projects/sms/imports/{body['id']}/errors")
    assert (errors["Content-Type"], errors.content) == (
        "text/csv; charset=utf-8", b"line,error\r\n3,text: must not be empty\r\n")
    assert [j["id"] for j in api.get("/api/projects/sms/imports/").json()] == [body["id"]]
    assert api.get("/api/projects/sms/imports/999999/").status_code == 404
