"""Celery tasks: thin, named, ids in, one service call each.

Names are stable (``sift.learning.*``): messages already in the broker must still find their task after a
deploy. Arguments are ids in JSON; unknown keyword arguments from a newer or older producer are accepted and
ignored. Only transient database errors are retried, with exponential backoff; any other error fails the task
(the service has already recorded it on the model version and released the job's claim). Every task is
idempotent: the embed task skips hashes that already have a vector, the retrain task is keyed by its
fingerprint, and both coalesce through learning/scheduling.py.
"""

from __future__ import annotations

from typing import Any

import psycopg
from celery import shared_task
from django.db import InterfaceError, OperationalError

from learning import scheduling
from learning.services import model_version_train, project_embed_items

# Connection drops, failovers, lock timeouts: worth another try. IntegrityError and friends are not.
# (psycopg's own class too: the binary COPY paths use the raw driver cursor, which Django does not wrap.)
TRANSIENT = (OperationalError, InterfaceError, psycopg.OperationalError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": 2, "retry_backoff_max": 120, "retry_jitter": True,
         "max_retries": 5}


@shared_task(name="sift.learning.embed_project", **RETRY)  # type: ignore[untyped-decorator]
def embed_project(project_id: int, **_ignored: Any) -> dict[str, Any]:
    result = project_embed_items(project_id=int(project_id))
    return {"skipped": result.skipped, "embedded": result.embedded, "batches": result.batches}


@shared_task(name="sift.learning.retrain_project", **RETRY)  # type: ignore[untyped-decorator]
def retrain_project(project_id: int, **_ignored: Any) -> dict[str, Any]:
    result = model_version_train(project_id=int(project_id))
    return {"outcome": result.outcome, "version": result.version, "n_ranked": result.n_ranked}


@shared_task(name="sift.learning.sweep", **RETRY)  # type: ignore[untyped-decorator]
def sweep(**_ignored: Any) -> dict[str, int]:
    return scheduling.sweep()
