"""Celery tasks of the human side: thin, named, ids in, one service call each.

Names are stable (``sift.labeling.*``) so queued messages survive a deploy; unknown keyword arguments
are accepted and ignored. Only transient database errors are retried.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from labeling.services import privacy, queues
from labeling.services.exports import export_snapshot_ensure
from labeling.services.import_jobs import import_job_run
from labeling.services.label_errors import label_errors_sync as label_errors_sync_service
from labeling.services.propagation import propagation_reevaluate

TRANSIENT = (OperationalError, InterfaceError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": 2, "retry_backoff_max": 120, "retry_jitter": True,
         "max_retries": 3}


# Late ack safe: idempotent by (project, name); the file is written under a temporary name and renamed, and the row
# is created after it, so a run killed half-way leaves no snapshot and the redelivered run writes it whole.
@shared_task(name="sift.labeling.export_snapshot", acks_late=True, reject_on_worker_lost=True, time_limit=3600,
             **RETRY)  # type: ignore[untyped-decorator]
def export_snapshot(project_id: int, name: str, params: dict[str, Any], actor_id: int | None = None,
                    **_ignored: Any) -> dict[str, Any] | None:
    """Write snapshot ``name`` of the project; idempotent by (project, name): a second run is a no-op."""
    snapshot = export_snapshot_ensure(project_id=int(project_id), name=str(name), params=params,
                                      actor_id=int(actor_id) if actor_id is not None else None)
    if snapshot is None:
        return None
    return {"name": snapshot.name, "sha256": snapshot.sha256, "rows": snapshot.row_count}


@shared_task(name="sift.labeling.retention_sweep", **RETRY)  # type: ignore[untyped-decorator]
def retention_sweep(**_ignored: Any) -> dict[str, int]:
    """Hard-delete items past their project's retention (beat, hourly); a second run deletes nothing more."""
    return privacy.retention_sweep()


@shared_task(name="sift.labeling.lease_release_expired", **RETRY)  # type: ignore[untyped-decorator]
def lease_release_expired(**_ignored: Any) -> dict[str, int]:
    """Close leases long past their expiry (beat, every few minutes); a second run closes nothing more."""
    return {"released": queues.lease_release_expired()}


# Idempotent by the job's compare-and-set claim (pending -> running): a redelivered message finds it running or done.
# Not acks_late: a worker killed mid-import leaves the job running; uploading the file again completes it (the
# import is idempotent on external ids).
@shared_task(name="sift.labeling.import_job", time_limit=6 * 3600)  # type: ignore[untyped-decorator]
def import_job(job_id: int, **_ignored: Any) -> dict[str, Any] | None:
    """Import the uploaded file of job ``job_id`` (labeling/services/import_jobs.py)."""
    job = import_job_run(job_id=int(job_id))
    if job is None:
        return None
    return {"status": job.status, "created": job.created, "updated": job.updated, "errors": job.error_count}


# Idempotent: the re-evaluation makes the cluster's propagated answers what the representative's decision calls for,
# so a redelivered or repeated message changes nothing more.
@shared_task(name="sift.labeling.propagation_reevaluate", acks_late=True, reject_on_worker_lost=True,
             **RETRY)  # type: ignore[untyped-decorator]
def propagation_reevaluate_task(representative_id: int, **_ignored: Any) -> dict[str, int]:
    """Create, relabel or withdraw the propagated answers of one representative's cluster."""
    return propagation_reevaluate(representative_id=int(representative_id))


# Sent by name from the learning side after each retrain (learning/services/label_errors.py). Idempotent: every
# suspicion moves only from the state a step expects, under its row lock, so a redelivery changes nothing twice.
@shared_task(name="sift.labeling.label_errors_sync", **RETRY)  # type: ignore[untyped-decorator]
def label_errors_sync(project_id: int, **_ignored: Any) -> dict[str, Any]:
    """Route the project's new suspected label errors and settle those whose re-check is done."""
    result = label_errors_sync_service(project_id=int(project_id))
    return {"routed": result.routed, "resolved": result.resolved}
