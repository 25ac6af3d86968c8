"""Celery tasks: thin, named, ids in, one service call each.

Names are stable (``sift.learning.*``): messages already in the broker must still find their task after a
deploy. Arguments are ids in JSON; unknown keyword arguments from a newer or older producer are accepted and
ignored. Only transient database errors are retried, with exponential backoff; any other error fails the task
(the service has already recorded it on the model version and released the job's claim). Every task is
idempotent: the embed task skips hashes that already have a vector, the retrain task is keyed by its
fingerprint, and both coalesce through learning/jobs.py (behind the learning/scheduling.py door).

Delivery: at-least-once where it is proven safe, per task (the default in config/settings.py is to acknowledge on
receipt). ``acks_late`` keeps the message in the broker until the task returns, ``reject_on_worker_lost`` puts it
back when the pool child running it dies. Both need a task that may run twice, or run again after dying half-way,
with one effect; the reason each task qualifies is next to it. ``time_limit`` bounds each task well inside the
broker's visibility timeout, so the broker never redelivers a task that is still running.
"""

from __future__ import annotations

from typing import Any

import psycopg
from celery import shared_task
from django.db import InterfaceError, OperationalError

from learning import jobs
from learning.services import model_version_train, project_embed_items
from learning.services.embedding import items_embed_chunk

# Connection drops, failovers, lock timeouts: worth another try. IntegrityError and friends are not.
# (psycopg's own class too: the binary COPY paths use the raw driver cursor, which Django does not wrap.)
TRANSIENT = (OperationalError, InterfaceError, psycopg.OperationalError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": 2, "retry_backoff_max": 120, "retry_jitter": True,
         "max_retries": 5}


# Late ack safe: batches commit on their own and only look for hashes without a vector, so a rerun after a kill
# continues where the dead run stopped; a redelivery during a live run finds its claim and does nothing.
@shared_task(name="sift.learning.embed_project", bind=True, acks_late=True, reject_on_worker_lost=True,
             **RETRY)  # type: ignore[untyped-decorator]
def embed_project(self: Any, project_id: int, **_ignored: Any) -> dict[str, Any]:
    result = project_embed_items(project_id=int(project_id), owner=str(self.request.id or ""))
    return {"skipped": result.skipped, "embedded": result.embedded, "batches": result.batches}


# Late ack safe: a chunk embeds only its items still without a vector (call twice, effect once); a rerun after a
# kill re-embeds at most the one uncommitted batch. Sent by embed_project when a backlog is larger than one chunk.
@shared_task(name="sift.learning.embed_items", acks_late=True, reject_on_worker_lost=True, time_limit=3600,
             **RETRY)  # type: ignore[untyped-decorator]
def embed_items(project_id: int, item_ids: list[int], **_ignored: Any) -> dict[str, Any]:
    result = items_embed_chunk(project_id=int(project_id), item_ids=[int(i) for i in item_ids])
    return {"embedded": result.embedded, "batches": result.batches, "retrain_requested": result.retrain_requested}


# Late ack safe: keyed by its fingerprint (a second run is a no-op) and claimed in the database; a half-written
# ranking of a dead run is never activated (learning/services/retrain.py), the next run writes a new version.
# The task id names the claim's owner: the redelivery of a message whose run was killed takes the claim over at
# once instead of finding it "busy" (learning/jobs.py).
@shared_task(name="sift.learning.retrain_project", bind=True, acks_late=True, reject_on_worker_lost=True,
             time_limit=3600, **RETRY)  # type: ignore[untyped-decorator]
def retrain_project(self: Any, project_id: int, **_ignored: Any) -> dict[str, Any]:
    result = model_version_train(project_id=int(project_id), owner=str(self.request.id or ""))
    return {"outcome": result.outcome, "version": result.version, "n_ranked": result.n_ranked}


# Early ack on purpose: beat sends a fresh sweep every SIFT_LEARNING_SWEEP_SECONDS, so a lost one costs one tick,
# while a redelivered old one (hours later, after a visibility timeout) would only be noise.
@shared_task(name="sift.learning.sweep", bind=True, acks_late=False, time_limit=300,
             **RETRY)  # type: ignore[untyped-decorator]
def sweep(self: Any, **_ignored: Any) -> dict[str, int]:
    # The heartbeat the health endpoint reads: beat scheduled this, the broker carried it, a worker ran it.
    jobs.worker_heartbeat(worker=str(self.request.hostname or "unknown"))
    return jobs.sweep()
