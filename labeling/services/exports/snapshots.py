"""Export files and snapshots: the atomic file write, and a snapshot's request, run, retry and ensure.

A file is streamed into a temporary file beside its target and renamed, so a failed export leaves nothing. A
snapshot is recorded as pending and exported by a worker once the request commits; its row's ``status`` says
how it went, and a failed or stale one can be retried under the same name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from labeling.models import ExportSnapshot, Project
from labeling.services.audit import Actor, acting_user, audit_record
from labeling.services.errors import Conflict, NotFound, ServiceError, ValidationFailed
from labeling.services.exports.params import (
    _ERROR_MAX,
    _SNAPSHOT_NAME_MAX,
    EXTENSIONS,
    SNAPSHOT_STALE_AFTER,
    ExportParams,
    export_params_parse,
)
from labeling.services.exports.read import PreparedExport, _bind
from labeling.services.exports.stream import export_card, export_prepare, export_stream

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- files and snapshots

@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    sha256: str
    size_bytes: int
    card: dict[str, Any]


def _write_atomically(prepared: PreparedExport, directory: Path, final_name: Any) -> ExportResult:
    """Stream into a temporary file beside the target, then rename: a failed export leaves nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".export-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in export_stream(prepared):
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        sha = digest.hexdigest()
        path = directory / final_name(sha)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(path=path, rows=prepared.stats.rows, sha256=sha, size_bytes=size,
                        card=export_card(prepared, sha256=sha, size_bytes=size))


def export_write_file(*, project: Project, params: ExportParams, actor: Actor, path: Path) -> ExportResult:
    """The ``export`` command: write the export to ``path`` (replaced atomically, never half-written)."""
    prepared = export_prepare(project=project, params=params, actor=actor)
    target = Path(path)
    return _write_atomically(prepared, target.parent, lambda _sha: target.name)


def _snapshot_dir(project: Project) -> Path:
    return Path(settings.EXPORT_ROOT) / f"project-{project.pk}"


def _snapshot_name_check(name: str) -> None:
    try:
        validate_slug(name)
    except DjangoValidationError as exc:
        raise ValidationFailed("name: use letters, digits, hyphens and underscores", field="name") from exc
    if len(name) > _SNAPSHOT_NAME_MAX:
        raise ValidationFailed(f"name: at most {_SNAPSHOT_NAME_MAX} characters", field="name")


def _params_from_stored(stored_params: Mapping[str, Any]) -> ExportParams:
    """Parameters in their stored form (``ExportParams.as_dict``) or the API's, parsed again."""
    stored = dict(stored_params)
    # The stored form's list-valued keys have the API's singular names.
    for plural, singular in (("reviewers", "reviewer"), ("labels", "label"), ("languages", "language")):
        if plural in stored:
            stored[singular] = stored.pop(plural)
    if isinstance(stored.get("split"), list):
        stored["split"] = ",".join(str(x) for x in stored["split"])
    return export_params_parse(stored)


def export_snapshot_request(*, project: Project, actor: Actor, name: str, params: ExportParams,
                            enqueue: bool = True) -> ExportSnapshot:
    """Record snapshot ``name`` as pending and, once committed, queue its export; a taken name is a 409.

    Everything that can be checked without exporting is checked here (name, parameters against the
    project), so a bad request fails at once and nothing is queued. The export itself runs in a
    worker (``export_snapshot_run``); the row's ``status`` says how it went.
    """
    _snapshot_name_check(name)
    _bind(project=project, params=params)
    try:
        with transaction.atomic():
            snapshot = ExportSnapshot.objects.create(
                project=project, name=name, format=params.format, params=params.as_dict(),
                status=ExportSnapshot.Status.PENDING, created_by=acting_user(actor))
            audit_record(actor=actor, action="export.snapshot_request", obj=snapshot, project=project,
                         data={"name": name, "params": params.as_dict()})
            if enqueue:
                snapshot_id = snapshot.pk
                transaction.on_commit(lambda: _snapshot_enqueue(snapshot_id))
    except IntegrityError as exc:
        raise Conflict(f"a snapshot named {name!r} already exists", field="name") from exc
    return snapshot


def _snapshot_enqueue(snapshot_id: int) -> None:
    """Send the task by name (the web process need not import the tasks); a broker failure fails the snapshot.

    Never run the export here instead: a download-sized job in a web request is what the queue is for.
    The snapshot says why it failed, and a retry queues it again.
    """
    from celery import current_app

    snapshot = ExportSnapshot.objects.filter(pk=snapshot_id).first()
    if snapshot is None:
        return
    try:
        current_app.send_task("sift.labeling.export_snapshot",
                              args=[snapshot.project_id, snapshot.name, snapshot.params, snapshot.created_by_id])
    except Exception as exc:  # kombu, redis and OSError all mean "not sent"
        logger.exception("could not queue snapshot %s", snapshot_id)
        ExportSnapshot.objects.filter(pk=snapshot_id, status=ExportSnapshot.Status.PENDING).update(
            status=ExportSnapshot.Status.FAILED, finished_at=timezone.now(),
            error=f"could not queue the export (task broker unavailable: {type(exc).__name__}); retry it")


def export_snapshot_run(*, snapshot_id: int, raise_errors: bool = False) -> ExportSnapshot | None:
    """Export a pending snapshot: claim it, write its file, mark it done, or failed with the reason.

    Idempotent: the claim is a compare-and-set from ``pending`` (or from a ``running`` claim older
    than ``SNAPSHOT_STALE_AFTER``, whose worker died), so a second call, or a redelivered task, finds
    the snapshot running or done and does nothing. A transient database error puts the snapshot back
    to pending and re-raises, for the task's retry; any other error fails it (``error`` says why) and
    is re-raised only with ``raise_errors``. Returns the snapshot as it now stands (None if deleted).
    """
    status = ExportSnapshot.Status
    claimed_at = timezone.now()
    claimed = ExportSnapshot.objects.filter(pk=snapshot_id).filter(
        Q(status=status.PENDING) | Q(status=status.RUNNING, started_at__lt=claimed_at - SNAPSHOT_STALE_AFTER),
    ).update(status=status.RUNNING, started_at=claimed_at, finished_at=None, attempts=F("attempts") + 1)
    snapshot = ExportSnapshot.objects.select_related("project", "created_by").filter(pk=snapshot_id).first()
    if not claimed or snapshot is None:
        return snapshot
    mine = ExportSnapshot.objects.filter(pk=snapshot_id, status=status.RUNNING, started_at=claimed_at)
    project, name = snapshot.project, snapshot.name
    result: ExportResult | None = None
    try:
        params = _params_from_stored(snapshot.params)
        prepared = export_prepare(project=project, params=params, actor=snapshot.created_by, audit=False)
        extension = EXTENSIONS[params.format]
        # The file name carries the checksum: a new snapshot can never overwrite an older file.
        result = _write_atomically(prepared, _snapshot_dir(project), lambda sha: f"{name}-{sha[:16]}.{extension}")
        result.path.chmod(0o444)
        card = export_card(prepared, sha256=result.sha256, size_bytes=result.size_bytes, name=name)
        relative = str(result.path.relative_to(Path(settings.EXPORT_ROOT)))
        with transaction.atomic():
            if not mine.update(status=status.DONE, path=relative, sha256=result.sha256, size_bytes=result.size_bytes,
                               row_count=result.rows, card=card, error="", finished_at=timezone.now()):
                # Taken over as stale meanwhile: the other attempt's outcome stands.
                if not ExportSnapshot.objects.filter(path=relative).exists():
                    result.path.unlink(missing_ok=True)
                return ExportSnapshot.objects.filter(pk=snapshot_id).first()
            audit_record(actor=snapshot.created_by, action="export.snapshot", obj=snapshot, project=project,
                         data={"name": name, "sha256": result.sha256, "rows": result.rows,
                               "size_bytes": result.size_bytes, "params": params.as_dict()})
    except Exception as exc:
        if result is not None and not ExportSnapshot.objects.filter(path=str(
                result.path.relative_to(Path(settings.EXPORT_ROOT))), status=status.DONE).exists():
            result.path.unlink(missing_ok=True)
        message = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
        transient = isinstance(exc, OperationalError | InterfaceError)
        try:
            mine.update(status=status.PENDING if transient else status.FAILED, error=message[:_ERROR_MAX],
                        finished_at=None if transient else timezone.now())
        except (OperationalError, InterfaceError):
            logger.exception("could not record the failure of snapshot %s", snapshot_id)
        if transient or raise_errors:
            raise
        logger.warning("snapshot %s failed: %s", snapshot_id, message)
    return ExportSnapshot.objects.filter(pk=snapshot_id).first()


def export_snapshot_create(*, project: Project, actor: Actor, name: str, params: ExportParams) -> ExportSnapshot:
    """Request and run snapshot ``name`` here and now (the ``export --snapshot`` command, fixtures).

    A failure is raised, and the snapshot stays recorded as failed with the reason (it can be retried).
    """
    snapshot = export_snapshot_request(project=project, actor=actor, name=name, params=params, enqueue=False)
    done = export_snapshot_run(snapshot_id=snapshot.pk, raise_errors=True)
    assert done is not None
    return done


def export_snapshot_retry(*, project: Project, actor: Actor, name: str) -> ExportSnapshot:
    """Queue a failed snapshot again (or one whose worker died mid-run); anything else is a 409."""
    snapshot = ExportSnapshot.objects.filter(project=project, name=name).first()
    if snapshot is None:
        raise NotFound(f"no snapshot named {name!r}")
    status = ExportSnapshot.Status
    now = timezone.now()
    with transaction.atomic():
        reset = ExportSnapshot.objects.filter(pk=snapshot.pk).filter(
            Q(status=status.FAILED) | Q(status=status.RUNNING, started_at__lt=now - SNAPSHOT_STALE_AFTER),
        ).update(status=status.PENDING, finished_at=None)
        if not reset:
            raise Conflict(f"snapshot {name!r} is {snapshot.status}: only a failed snapshot can be retried",
                           field="status")
        audit_record(actor=actor, action="export.snapshot_retry", obj=snapshot, project=project,
                     data={"name": name, "error": snapshot.error})
        snapshot_id = snapshot.pk
        transaction.on_commit(lambda: _snapshot_enqueue(snapshot_id))
    snapshot.refresh_from_db()
    return snapshot


def export_snapshot_path(snapshot: ExportSnapshot) -> Path:
    """The snapshot's file; 409 until it is done; refuses any stored path that would leave EXPORT_ROOT."""
    if snapshot.status != ExportSnapshot.Status.DONE:
        raise Conflict(f"snapshot {snapshot.name!r} is {snapshot.status}: its file is not ready", field="status")
    root = Path(settings.EXPORT_ROOT).resolve()
    path = (root / snapshot.path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"the file of snapshot {snapshot.name!r} is missing")
    return path


def export_snapshot_ensure(*, project_id: int, name: str, params: Mapping[str, Any],
                           actor_id: int | None = None) -> ExportSnapshot | None:
    """The idempotent body of the ``export_snapshot`` task: run snapshot ``name``, requesting it if need be.

    The API records the snapshot (pending) before it queues the task; a message from an older
    producer may name a snapshot nobody recorded, which is requested here first. Returns the
    snapshot as it stands (done, failed, or running elsewhere), or None when the project is gone.
    Parameters are the stored form (``ExportParams.as_dict``) or the API's; a bad one raises ValidationFailed.
    """
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return None
    snapshot = ExportSnapshot.objects.filter(project=project, name=name).first()
    if snapshot is None:
        actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id is not None else None
        try:
            snapshot = export_snapshot_request(project=project, actor=actor, name=name,
                                               params=_params_from_stored(params), enqueue=False)
        except Conflict:
            # Another run won the race for the name: its snapshot is the one.
            snapshot = ExportSnapshot.objects.filter(project=project, name=name).first()
            if snapshot is None:
                return None
    return export_snapshot_run(snapshot_id=snapshot.pk)
