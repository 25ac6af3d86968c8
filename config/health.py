"""``GET /api/health/``: is this deployment able to take labels and learn from them?

Four checks, each cheap and bounded by a short timeout, so a load balancer may poll it every few seconds:

- ``database``: one ``SELECT 1``.
- ``broker``: a PING to Redis (half-second timeouts), or the file-system broker's folder being there.
- ``worker``: the age of the newest worker heartbeat. The beat-scheduled sweep writes it on whichever worker
  runs it (learning/tasks.py), so a fresh one proves beat, broker, worker and database work end to end. Stale
  after ``SIFT_HEALTH_HEARTBEAT_MAX_AGE`` (default three sweep periods). A busy worker is healthy too: one
  busy with a long task cannot run the sweep, so the check also passes while some worker's liveness thread
  (learning/worker.py) reports it alive (within ``SIFT_HEALTH_ALIVE_MAX_AGE``, default four of its beats) and
  running a task that started less than ``SIFT_TASK_TIME_LIMIT_SECONDS`` ago (past it the task is hung: the
  hard limit should have killed it). An idle worker that is alive but has not run a sweep means beat or the
  broker is broken, and fails.
- ``queue``: learning staleness, the age of the oldest label that no active model has learned yet (over all
  projects), and whether a retrain flag has waited longer than ``SIFT_HEALTH_MAX_STALENESS``.

200 when every check passes, 503 naming the failing ones. WHO SEES WHAT: the endpoint is public (a load balancer
has no token), and an anonymous or ordinary caller gets only ``status`` and each check's ``ok``: no counts, ages
or error texts, which would tell an outsider how busy the projects are or how the deployment is built. A staff
user (Django's ``is_staff``, i.e. the operators) also gets the figures and the error messages.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min, OuterRef, Q, Subquery
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger(__name__)

# Projects per staleness query: one OR of (project, id) ranges each; bounded so the statement stays small.
HEALTH_PROJECTS_PER_QUERY = 500


def _seconds_since(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else round(max((now - moment).total_seconds(), 0.0), 1)


def check_database() -> dict[str, Any]:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def check_broker() -> dict[str, Any]:
    if not settings.REDIS_URL:
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", "")
        import os

        return {"ok": bool(folder) and os.path.isdir(folder), "transport": "filesystem"}
    import redis

    started = time.perf_counter()
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        ok = bool(client.ping())
    finally:
        client.close()
    return {"ok": ok, "transport": "redis", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def check_worker(now: datetime) -> dict[str, Any]:
    from learning.models import WorkerHeartbeat

    max_age = float(settings.SIFT_HEALTH_HEARTBEAT_MAX_AGE)
    alive_max_age = float(settings.SIFT_HEALTH_ALIVE_MAX_AGE)
    task_limit = float(settings.SIFT_TASK_TIME_LIMIT_SECONDS)
    figures = WorkerHeartbeat.objects.aggregate(
        newest=Max("beat_at"),
        recent=Count("id", filter=Q(beat_at__gte=now - timedelta(seconds=max_age))),
        busy=Count("id", filter=Q(alive_at__gte=now - timedelta(seconds=alive_max_age), active_tasks__gt=0,
                                  busy_since__gte=now - timedelta(seconds=task_limit))),
    )
    age = _seconds_since(figures["newest"], now)
    swept = age is not None and age <= max_age
    return {"ok": swept or figures["busy"] > 0, "heartbeat_age_seconds": age, "max_age_seconds": max_age,
            "workers_recent": figures["recent"], "workers_busy": figures["busy"]}


def check_queue(now: datetime) -> dict[str, Any]:
    """Labels no active model has learned yet, and the oldest of them.

    Two queries whatever the number of projects (a load balancer polls this): each project's newest learned
    annotation id, then one count and minimum over every project's newer annotations, which the
    (project, id) index serves as one range per project.
    """
    from labeling.models import Annotation, Project
    from learning.models import LearningJob, ModelVersion

    max_stale = float(settings.SIFT_HEALTH_MAX_STALENESS)
    learned = (ModelVersion.objects.filter(project=OuterRef("pk"), status=ModelVersion.Status.ACTIVE)
               .order_by("-version").values("max_annotation_id")[:1])
    projects = list(Project.objects.annotate(learned=Subquery(learned)).values_list("pk", "learned"))
    oldest: datetime | None = None
    unlearned = 0
    for start in range(0, len(projects), HEALTH_PROJECTS_PER_QUERY):
        chunk = projects[start:start + HEALTH_PROJECTS_PER_QUERY]
        newer = reduce(operator.or_, (Q(project_id=pk, id__gt=learned_id or 0) for pk, learned_id in chunk))
        figures = Annotation.objects.filter(newer).aggregate(n=Count("id"), first=Min("created_at"))
        unlearned += int(figures["n"])
        first = figures["first"]
        if first is not None:
            oldest = first if oldest is None or first < oldest else oldest
    dirty_since = (LearningJob.objects.filter(kind=LearningJob.Kind.RETRAIN, dirty=True)
                   .aggregate(oldest=Min("requested_at"))["oldest"])
    oldest_age = _seconds_since(oldest, now)
    dirty_age = _seconds_since(dirty_since, now)
    ok = (oldest_age is None or oldest_age <= max_stale) and (dirty_age is None or dirty_age <= max_stale)
    return {"ok": ok, "labels_not_in_active_model": unlearned, "oldest_unlearned_label_age_seconds": oldest_age,
            "oldest_dirty_retrain_age_seconds": dirty_age, "max_staleness_seconds": max_stale}


def health_report() -> dict[str, dict[str, Any]]:
    """Every check's result; a check that raises is a failed check carrying its error."""
    now = timezone.now()
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "database": check_database, "broker": check_broker, "worker": lambda: check_worker(now),
        "queue": lambda: check_queue(now),
    }
    report: dict[str, dict[str, Any]] = {}
    for name, check in checks.items():
        try:
            report[name] = check()
        except Exception as exc:  # a failing dependency is the answer, not an error of this endpoint
            logger.warning("health check %s failed", name, exc_info=True)
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        if name == "database" and not report[name]["ok"]:
            # Without the database the last two cannot be read; say so instead of timing out twice more.
            for rest in ("worker", "queue"):
                report[rest] = {"ok": False, "error": "database unavailable"}
            report["broker"] = check_broker_safely()
            break
    return report


def check_broker_safely() -> dict[str, Any]:
    try:
        return check_broker()
    except Exception as exc:  # as above
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


class HealthSerializer(serializers.Serializer):  # type: ignore[type-arg]
    status = serializers.ChoiceField(choices=["ok", "failing"])
    failing = serializers.ListField(child=serializers.CharField(), help_text="The checks that failed.")
    checks = serializers.DictField(child=serializers.DictField(),
                                   help_text="database, broker, worker, queue: {ok, ...figures for staff}")


class HealthView(APIView):
    """Liveness and readiness of the deployment: database, broker, worker heartbeat, learning staleness."""

    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    @extend_schema(
        operation_id="health", tags=["health"], summary="Health of the database, broker, workers and learning loop",
        description=(
            "Public. 200 when every check passes, 503 when any fails (`failing` names them). Anonymous and "
            "ordinary callers get `status` and each check's `ok`; staff users also get each check's figures "
            "(latencies, heartbeat age, labels not yet in an active model, the oldest such label's age) and "
            "error messages."),
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(HealthSerializer, description="Some check failed: `failing` names them."),
        },
    )
    def get(self, request: Request) -> Response:
        report = health_report()
        failing = [name for name, result in report.items() if not result["ok"]]
        detailed = bool(getattr(request.user, "is_staff", False))
        checks = report if detailed else {name: {"ok": result["ok"]} for name, result in report.items()}
        body = {"status": "failing" if failing else "ok", "failing": failing, "checks": checks}
        response = Response(body, status=503 if failing else 200)
        response["Cache-Control"] = "no-store"
        return response
