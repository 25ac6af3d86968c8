"""The job state machine behind the door: request, signal, enqueue, claim, heartbeat, release, sweep.

learning/scheduling.py is the door the labeling side calls (``request_retrain``, ``request_embedding``); this
module is what the door and the workers share: one ``LearningJob`` row per (project, job kind), moved by
compare-and-set UPDATEs. The runs (learning/services/embedding.py, learning/services/retrain.py) claim, beat
and release through it; the beat-scheduled sweep (learning/tasks.py) repairs what a crash or a lost message
left behind.

THE COALESCING INVARIANT
========================
Reviewers submit in bursts: fifty submits in a minute must not become fifty retrains. Per (project, job kind)
one ``LearningJob`` row carries three things:

- ``dirty``: something happened that no run has started after. Every request sets it (after its commit).
- ``queued_at``: a message for this job is in the broker. Set by whoever wins the enqueue compare-and-set,
  cleared by the run that consumes the message.
- ``running_token``/``running_since``/``running_owner``: the running claim, its heartbeat and the Celery task id
  of the delivery that holds it.

The transitions, each one UPDATE with a WHERE clause, so that racing processes cannot both win:

1. request:  ``dirty := true``; then *try to enqueue*. When the row already says dirty with a fresh
   ``queued_at``, both steps would change nothing (the compare-and-set below cannot match), so a read-only
   check skips them: a burst of submits writes the job row once, not twice per submit.
2. try to enqueue: ``UPDATE ... SET queued_at = now WHERE dirty AND queued_at IS NULL AND (running_token IS
   NULL OR running_since < stale)``. Only the process whose UPDATE matched a row sends the message.
3. run start (claim): ``UPDATE ... SET running_token = T, running_owner = task id, dirty := false, queued_at :=
   NULL WHERE running_token IS NULL OR running_since < stale OR running_owner = this task id``. No row matched:
   another run is live; this delivery does nothing (the live run will see the flag, below). The run reads the
   database only AFTER its claim.
   A delivery that finds a live claim (3b) still consumed the message: it clears ``queued_at`` and then
   *tries to enqueue* (which matches only when the live run has released meanwhile).
4. run end (release): ``running_token := NULL WHERE running_token = T``; then *try to enqueue* again.

THE NO-LOST-SIGNAL INVARIANT: while ``dirty`` is true, something is on its way to act on it promptly: a live
claim (its release (4) tries to enqueue), or a message in the broker (``queued_at`` set; its delivery either
claims (3) or, finding a live claim, clears ``queued_at`` and tries to enqueue (3b)), or a failed send (the sweep
retries). Every transition that ends a claim or consumes a message is followed by a *try to enqueue* in the same
process, so none of them can leave the flag with neither a live claim nor a pending message behind it.

Why no label is ever left unlearned: a label's request sets ``dirty`` after the label committed. If that
happens before a run's claim (3), the run reads after the claim and sees the label. If it happens after the
claim, ``dirty`` is true again when the run ends, and (4) enqueues the follow-up. Why at most one run plus one
follow-up: (2) needs ``queued_at IS NULL`` and no live claim, so while a run is live every request only sets
the flag, and at most one message waits in the broker at any time (a busy delivery (3b) clears ``queued_at``
only for the message it consumed; in the rare case that a duplicate of it is still queued, e.g. re-sent after
a broker restart, that duplicate finds the fingerprint seen and does nothing).

What can still go wrong, and what catches it:

- the broker is down: the send fails, we log it, put ``queued_at`` back to NULL and leave ``dirty`` set.
  Nothing ever falls back to running synchronously inside a web request. The periodic ``sift.learning.sweep``
  (and the next request) retries the enqueue.
- a worker dies mid-run (SIGKILL, OOM): when its message comes back (``reject_on_worker_lost`` requeues it at
  once when a pool child dies), the redelivery carries the same task id as the claim's owner and takes the claim
  over at once: one message is never run twice at the same time (every task's hard time limit is shorter than the
  broker's visibility timeout, and a retry is sent only after the failed run released), so a claim owned by
  the task id being delivered belongs to a run that is gone. Without a redelivery the claim goes stale after
  ``SIFT_LEARNING_STALE_SECONDS`` (30 s) without a heartbeat; the next request or the sweep enqueues again, and
  the next run takes the claim over. The stale time can be that short because a running claim is refreshed
  every ``SIFT_LEARNING_HEARTBEAT_SECONDS`` (5 s) by a background thread of the run (``heartbeating``), not
  only between its phases: a claim goes stale only when its process stopped (killed, frozen), never because a
  phase (a fit, a ranking of a million items) is long. The dead run's half-written ranking was never activated
  (learning/services/retrain.py).
- a process dies between the commit and the on_commit callback: the label is committed but nobody set the
  flag. The sweep compares each project's newest annotation with the newest model attempt's and sets the flag.
- a message is lost in the broker: ``queued_at`` goes stale after ``SIFT_LEARNING_QUEUED_STALE_SECONDS``.
  The common way to lose them all, a Redis restart without persistence, is caught sooner: the sweep notes
  Redis's ``run_id`` and, when it changed, re-sends every job still marked queued (a duplicate is harmless).
- a worker is killed mid-run and no new request comes: the sweep sets the flag of every job whose claim went
  stale, so the work is redone without waiting for the broker to redeliver (its visibility timeout is hours).
- Redis is down during a burst of submits: every submit still commits and answers; the first failed send makes
  this process skip further sends for ``BROKER_BACKOFF_SECONDS`` (the flag stays set, so nothing is lost), so an
  outage costs one failed connection attempt per process per few seconds, not one per submit. The sweep ignores
  the back-off: it is the retry, and it runs on a worker, which can only run it once the broker is back.

A duplicate delivery (broker redelivery, a retry, a sweep racing a request) is harmless: either it finds a
live claim and stops, or it runs and the retrain's fingerprint makes it a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from labeling.models import Project
from learning.models import LearningJob, WorkerHeartbeat

logger = logging.getLogger(__name__)

TASK_NAMES: dict[str, str] = {
    LearningJob.Kind.EMBED: "sift.learning.embed_project",
    LearningJob.Kind.RETRAIN: "sift.learning.retrain_project",
}


def request(*, kind: str, project_id: int) -> None:
    """Set the job's flag and try to enqueue (``signal``) once the current transaction commits.

    The doors (learning/scheduling.py) and the learning side's own follow-ups (an embed run that stored vectors)
    ask through here. robust: the caller's data is already committed when this runs; a failure here must be
    logged, not turned into an error response for a submit that succeeded.
    """
    transaction.on_commit(partial(signal, kind=kind, project_id=project_id), robust=True)


def stale_after() -> timedelta:
    return timedelta(seconds=settings.SIFT_LEARNING_STALE_SECONDS)


def heartbeat_seconds() -> float:
    return float(settings.SIFT_LEARNING_HEARTBEAT_SECONDS)


def queued_stale_after() -> timedelta:
    return timedelta(seconds=settings.SIFT_LEARNING_QUEUED_STALE_SECONDS)


def _job(kind: str, project_id: int) -> Q:
    return Q(project_id=project_id, kind=kind)


def _free(now: object) -> Q:
    return Q(running_token__isnull=True) | Q(running_since__lt=now - stale_after())  # type: ignore[operator]


# Plain SQL: it runs after every committed submit. Read-only, so it takes no lock on the job row.
_ALREADY_PENDING_SQL = (f"SELECT 1 FROM {LearningJob._meta.db_table} "  # noqa: S608
                        "WHERE project_id = %s AND kind = %s AND dirty AND queued_at >= %s")


def _already_pending(*, kind: str, project_id: int) -> bool:
    """The job is dirty and a message for it is in the broker (and not yet stale): nothing to write or send.

    Why skipping is safe: the caller's data committed before this read. If the read sees dirty with a fresh
    queued_at, the run that consumes the message has not claimed yet (its claim clears both, in an autocommitted
    UPDATE), so it claims later and loads the labels after that, seeing the caller's. This keeps two UPDATEs of
    the project's job row (a per-project hot row) off every submit while a retrain is pending.
    """
    fresh_since = timezone.now() - queued_stale_after()
    with connection.cursor() as cursor:
        cursor.execute(_ALREADY_PENDING_SQL, [project_id, kind, connection.ops.adapt_datetimefield_value(fresh_since)])
        return cursor.fetchone() is not None


def signal(*, kind: str, project_id: int) -> bool:
    """Transition 1: set the dirty flag, then try to enqueue. True when this call sent the message."""
    if _already_pending(kind=kind, project_id=project_id):
        return False
    if not _set_dirty(kind=kind, project_id=project_id):
        logger.warning("learning request for unknown project %s ignored", project_id)
        return False
    return try_enqueue(kind=kind, project_id=project_id)


def _set_dirty(*, kind: str, project_id: int) -> bool:
    now = timezone.now()
    if LearningJob.objects.filter(_job(kind, project_id)).update(dirty=True, requested_at=now):
        return True
    # Foreign keys are checked at commit on PostgreSQL (deferred), so an unknown id must be caught here.
    if not Project.objects.filter(pk=project_id).exists():
        return False
    try:
        with transaction.atomic():
            LearningJob.objects.create(project_id=project_id, kind=kind, dirty=True, requested_at=now)
        return True
    except IntegrityError:
        # Either a concurrent request created the row first (set the flag on it), or the project is gone.
        return bool(LearningJob.objects.filter(_job(kind, project_id)).update(dirty=True, requested_at=now))


# After a failed send, this process skips sends for this long (the flags stay set; the sweep retries).
BROKER_BACKOFF_SECONDS = 5.0
_broker_down_until = 0.0


def try_enqueue(*, kind: str, project_id: int, force: bool = False) -> bool:
    """Transition 2: the compare-and-set that lets exactly one process send the message.

    Skipped (False, the flag left set) while this process is backing off a broker failure, unless ``force``.
    """
    global _broker_down_until
    if not force and time.monotonic() < _broker_down_until:
        return False
    now = timezone.now()
    won = LearningJob.objects.filter(
        _job(kind, project_id),
        Q(dirty=True),
        Q(queued_at__isnull=True) | Q(queued_at__lt=now - queued_stale_after()),
        _free(now),
    ).update(queued_at=now)
    if not won:
        return False
    try:
        send(kind=kind, project_id=project_id)
    except Exception:  # the broker's errors are many (kombu, redis, OSError); each means "not sent"
        # Never run it here instead: leave the flag set for the next request or the sweep.
        logger.exception("could not enqueue %s for project %s; left dirty for the sweep", kind, project_id)
        LearningJob.objects.filter(_job(kind, project_id), queued_at=now).update(queued_at=None)
        _broker_down_until = time.monotonic() + BROKER_BACKOFF_SECONDS
        return False
    return True


def send(*, kind: str, project_id: int) -> None:
    """Publish the task by name: the web process never imports the tasks (numpy, torch) to enqueue them."""
    from celery import current_app

    current_app.send_task(
        TASK_NAMES[kind],
        args=[project_id],
        # A down broker should fail fast (a submit is waiting on this callback), not retry for seconds.
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
    )


@dataclass(frozen=True)
class Claim:
    kind: str
    project_id: int
    token: str
    # The flag as the claim found it: this run was requested (not a bare redelivery or a manual call).
    requested: bool


def claim(*, kind: str, project_id: int, owner: str = "") -> Claim | None:
    """Transition 3: take the running claim and clear the flag.

    ``owner`` is the Celery task id of the delivery (empty outside Celery): a claim held by the same task id is
    taken over even while fresh, since its holder died (see the module essay). None when another run holds a
    live claim, or the project does not exist (nothing to do either way).
    """
    token = uuid.uuid4().hex
    now = timezone.now()
    owner = owner[:255]
    fields = {
        "running_token": token, "running_since": now, "running_owner": owner, "run_requested": F("dirty"),
        "dirty": False, "queued_at": None, "last_started_at": now, "runs": F("runs") + 1,
    }
    takeable = (_free(now) | Q(running_owner=owner)) if owner else _free(now)
    # run_requested = dirty reads the old value: SET expressions see the row as it was before the UPDATE.
    if not LearningJob.objects.filter(_job(kind, project_id), takeable).update(**fields):
        if LearningJob.objects.filter(_job(kind, project_id)).exists():
            consumed_while_busy(kind=kind, project_id=project_id)
            return None
        if not Project.objects.filter(pk=project_id).exists():
            return None
        try:
            with transaction.atomic():
                LearningJob.objects.create(
                    project_id=project_id, kind=kind, running_token=token, running_since=now,
                    running_owner=owner, last_started_at=now, runs=1,
                )
        except IntegrityError:
            return None  # a concurrent first run created the row and holds the claim
        return Claim(kind=kind, project_id=project_id, token=token, requested=False)
    requested = LearningJob.objects.filter(_job(kind, project_id)).values_list("run_requested", flat=True).first()
    return Claim(kind=kind, project_id=project_id, token=token, requested=bool(requested))


def consumed_while_busy(*, kind: str, project_id: int) -> bool:
    """Transition 3b: this delivery found a live claim. It consumed the message ``queued_at`` stands for, so
    clear it, then try to enqueue. True when this call sent the follow-up.

    Why both steps: left set, ``queued_at`` would make the live run's release (4) fail its compare-and-set and
    the follow-up would wait for the queued cutoff (15 minutes). That happens when a run stalls past the stale
    cutoff, a request enqueues on the strength of it, and the run resumes (its heartbeat refreshes the claim)
    before the message arrives. Cleared first, the release's enqueue matches. And the enqueue here covers the
    other order: the run released between this delivery's failed claim and the clear (its enqueue saw
    ``queued_at`` still set), so no live claim is left and this call sends the follow-up itself.
    """
    LearningJob.objects.filter(_job(kind, project_id), queued_at__isnull=False).update(queued_at=None)
    return try_enqueue(kind=kind, project_id=project_id, force=True)


def heartbeat(claim_: Claim) -> bool:
    """Refresh the claim's timestamp. False when the claim was lost (taken over as stale): stop working."""
    return bool(
        LearningJob.objects.filter(_job(claim_.kind, claim_.project_id), running_token=claim_.token)
        .update(running_since=timezone.now())
    )


@contextmanager
def heartbeating(claim_: Claim) -> Iterator[None]:
    """Keep ``claim_`` fresh from a background thread while the body runs (every ``heartbeat_seconds()``).

    The thread stops at the end of the body, or by itself once a beat finds the claim lost (the run notices at
    its next ``heartbeat``). It beats while the run's own thread is inside one long call (a fit, a COPY), so
    only a stopped process lets the claim go stale, and the stale time can be a few heartbeats long.
    """
    stop = threading.Event()
    beater = threading.Thread(target=_beat_until, args=(claim_, stop, heartbeat_seconds()), daemon=True,
                              name=f"sift-claim-{claim_.kind}-{claim_.project_id}")
    beater.start()
    try:
        yield
    finally:
        stop.set()
        # A beat in flight is one short UPDATE; a late one cannot revive the claim (it matches the token only).
        beater.join(timeout=10)


def _beat_until(claim_: Claim, stop: threading.Event, interval: float) -> None:
    try:
        while not stop.wait(interval):
            try:
                if not heartbeat(claim_):
                    return
            except Exception:  # a database blip: try again next beat; a long outage lets the claim go stale
                logger.warning("heartbeat of %s claim of project %s failed", claim_.kind, claim_.project_id,
                               exc_info=True)
    finally:
        connections.close_all()  # this thread's own connections only


def release(claim_: Claim, *, error: str = "", completed: bool = False) -> bool:
    """Transition 4: drop the claim, then enqueue the follow-up if requests arrived during the run.

    ``completed`` counts a finished pass in ``generation``. Returns True when a follow-up was sent.
    """
    fields: dict[str, object] = {
        "running_token": None, "running_since": None, "running_owner": "", "last_finished_at": timezone.now(),
        "last_error": error[:4000],
    }
    if completed:
        fields["generation"] = F("generation") + 1
    LearningJob.objects.filter(_job(claim_.kind, claim_.project_id), running_token=claim_.token).update(**fields)
    return try_enqueue(kind=claim_.kind, project_id=claim_.project_id)


def sweep() -> dict[str, int]:
    """The safety net run by beat: re-flag lost signals and retry enqueues that failed or were lost.

    Returns counts: {"flagged": projects whose labels are newer than their newest model attempt and that had
    no flag and no live run, "enqueued": messages sent}.
    """
    from django.db.models import OuterRef, Subquery
    from django.db.models.functions import Coalesce

    from labeling.models import Annotation
    from learning.models import ModelVersion

    # Both subqueries walk an index backwards and stop at one row: (project, id) and (project, version).
    newest_label = Annotation.objects.filter(project=OuterRef("pk")).order_by("-id").values("id")[:1]
    newest_seen = (
        ModelVersion.objects.filter(project=OuterRef("pk")).order_by("-version").values("max_annotation_id")[:1]
    )
    lagging = list(
        Project.objects.annotate(newest_label=Subquery(newest_label), newest_seen=Coalesce(Subquery(newest_seen), 0))
        .filter(newest_label__gt=F("newest_seen"))
        .values_list("pk", flat=True)
    )
    now = timezone.now()
    if _broker_restarted():
        # Messages sent before the restart may be gone; unclaimed "queued" jobs are re-sent below.
        lost = LearningJob.objects.filter(dirty=True, queued_at__isnull=False).update(queued_at=None)
        logger.warning("the broker restarted; re-sending %d queued learning job(s)", lost)
    # Claims of runs that died (SIGKILL, OOM) and had no request since: flag them so the work is redone now.
    flagged = LearningJob.objects.filter(
        dirty=False, running_token__isnull=False, running_since__lt=now - stale_after(),
    ).update(dirty=True, requested_at=now)
    # A flagged project is handled below; a live run will learn the labels or flag its own follow-up.
    busy = set(
        LearningJob.objects.filter(kind=LearningJob.Kind.RETRAIN, project_id__in=lagging)
        .filter(Q(dirty=True) | Q(running_token__isnull=False, running_since__gte=now - stale_after()))
        .values_list("project_id", flat=True)
    )
    for project_id in lagging:
        if project_id not in busy and _set_dirty(kind=LearningJob.Kind.RETRAIN, project_id=project_id):
            flagged += 1
    enqueued = 0
    for kind, project_id in LearningJob.objects.filter(dirty=True).values_list("kind", "project_id"):
        enqueued += int(try_enqueue(kind=kind, project_id=project_id, force=True))
    return {"flagged": flagged, "enqueued": enqueued}


_broker_run_id: str | None = None


def _broker_restarted() -> bool:
    """True when Redis restarted since this process last looked (its ``run_id`` changed): queued messages may be
    lost. False for other brokers, on the first look, and when Redis cannot be asked (the sweep retries later)."""
    global _broker_run_id
    url = str(settings.CELERY_BROKER_URL or "")
    if not url.startswith(("redis://", "rediss://")):
        return False
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            run_id = str(client.info("server")["run_id"])
        finally:
            client.close()
    except (redis.RedisError, OSError, KeyError):
        return False
    previous, _broker_run_id = _broker_run_id, run_id
    return previous is not None and previous != run_id


def worker_heartbeat(*, worker: str) -> None:
    """Record that ``worker`` ran the beat-scheduled sweep now (read by the health endpoint, config/health.py)."""
    WorkerHeartbeat.objects.update_or_create(worker=worker[:255], defaults={"beat_at": timezone.now()})
