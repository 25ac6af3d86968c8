"""Worker liveness: a thread in each worker's main process that says "alive, running N tasks since T".

Why: the health endpoint's end-to-end proof is the sweep's heartbeat (beat -> broker -> worker -> database,
learning/tasks.py). A worker busy with a long task (embedding a large import, a retrain of a million items)
cannot run the sweep, and with one worker (the demo, a small deployment) nothing else runs it: the sweep's
heartbeat goes stale while everything is fine. So this thread writes ``alive_at``, ``active_tasks`` and
``busy_since`` on the worker's ``WorkerHeartbeat`` row every ``SIFT_WORKER_HEARTBEAT_SECONDS``, whatever the tasks
are doing, and config/health.py counts a worker that is alive and busy as healthy. It runs in the main process,
which tracks every running task of the worker (``celery.worker.state.active_requests``) for the solo, thread and
prefork pools alike; a frozen or killed worker stops writing, so its row goes stale as it should.

Started by the ``worker_ready`` signal and stopped by ``worker_shutdown`` (config/celery.py).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections
from django.utils import timezone

from learning.models import WorkerHeartbeat

logger = logging.getLogger(__name__)

_stop = threading.Event()
_thread: threading.Thread | None = None


def worker_alive(*, worker: str, active_tasks: int, busy_since: datetime | None) -> None:
    """Record that ``worker`` is alive now and runs ``active_tasks`` tasks, the oldest since ``busy_since``."""
    WorkerHeartbeat.objects.update_or_create(
        worker=worker[:255],
        defaults={"alive_at": timezone.now(), "active_tasks": active_tasks, "busy_since": busy_since},
    )


class _Busy:
    """When each running task was first seen: the oldest gives ``busy_since`` (to within one beat)."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}

    def look(self) -> tuple[int, datetime | None]:
        from celery.worker import state

        now = time.time()
        running = {str(request.id) for request in list(state.active_requests)}
        self.first_seen = {task_id: self.first_seen.get(task_id, now) for task_id in running}
        if not self.first_seen:
            return 0, None
        oldest = min(self.first_seen.values())
        return len(running), timezone.now() - timedelta(seconds=now - oldest)


def _beat(worker: str, interval: float) -> None:
    busy = _Busy()
    try:
        while True:
            try:
                active, since = busy.look()
                worker_alive(worker=worker, active_tasks=active, busy_since=since)
            except Exception:  # the database may be away for a while; the row going stale is then the truth
                logger.warning("worker liveness heartbeat of %s failed", worker, exc_info=True)
                connections.close_all()  # reconnect at the next beat
            if _stop.wait(interval):
                return
    finally:
        connections.close_all()  # this thread's own connections only


def liveness_start(*, worker: str) -> None:
    """Start the liveness thread of this worker process (once)."""
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    interval = float(settings.SIFT_WORKER_HEARTBEAT_SECONDS)
    _thread = threading.Thread(target=_beat, args=(worker, interval), daemon=True, name="sift-worker-liveness")
    _thread.start()


def liveness_stop() -> None:
    """Stop the thread (a warm shutdown). Its row is left to go stale: the worker is gone."""
    global _thread
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=10)
    _thread = None
