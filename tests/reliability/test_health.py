"""GET /api/health/: each check's pass and fail, and who sees which figures (anonymous: none)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from learning import jobs
from learning.jobs import worker_heartbeat
from learning.models import LearningJob, ModelVersion, WorkerHeartbeat
from learning.worker import worker_alive
from tests.conftest import REDIS_NEEDED, SMS_TAXONOMY, require_service
from tests.factories import ItemFactory, ProjectFactory, UserFactory
from tests.learning.support import add_items, annotate, embed_items, sms_rows
from tests.learning.worker_harness import Worker, purge_broker, redis_available, wait_until


@pytest.fixture
def project(db: Any) -> Any:
    return ProjectFactory(slug="health", taxonomy=SMS_TAXONOMY, embedder="hashing")


def _staff() -> APIClient:
    client = APIClient()
    client.force_authenticate(UserFactory(username="ops", is_staff=True))
    return client


def test_healthy_is_200_and_anonymous_sees_only_booleans(project: Any) -> None:
    worker_heartbeat(worker="w1@host")
    response = APIClient().get("/api/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "failing": [], "checks": {
        "database": {"ok": True}, "broker": {"ok": True}, "worker": {"ok": True}, "queue": {"ok": True}}}
    assert response["Cache-Control"] == "no-store"


def test_no_heartbeat_is_503_naming_the_worker(project: Any) -> None:
    response = APIClient().get("/api/health/")
    assert response.status_code == 503
    assert response.json()["failing"] == ["worker"]
    WorkerHeartbeat.objects.create(worker="old@host", beat_at=timezone.now() - timedelta(hours=1))
    assert APIClient().get("/api/health/").json()["failing"] == ["worker"]


def test_staff_see_figures_and_stale_learning_fails(project: Any, settings: Any) -> None:
    settings.SIFT_HEALTH_MAX_STALENESS = 60
    worker_heartbeat(worker="w1@host")
    reviewer = UserFactory(username="rev")
    items = [ItemFactory(project=project) for _ in range(3)]
    for item in items:
        annotate(item, reviewer, ["spam"])
    body = _staff().get("/api/health/").json()
    assert body["status"] == "ok"
    assert body["checks"]["queue"]["labels_not_in_active_model"] == 3
    assert body["checks"]["queue"]["oldest_unlearned_label_age_seconds"] < 60
    assert body["checks"]["worker"]["workers_recent"] == 1
    assert body["checks"]["broker"]["ok"] is True
    # The labels wait too long: learning is stale. An old dirty flag fails the same check.
    from labeling.models import Annotation

    Annotation.objects.filter(project=project).update(created_at=timezone.now() - timedelta(seconds=120))
    response = _staff().get("/api/health/")
    assert response.status_code == 503
    assert response.json()["failing"] == ["queue"]
    assert response.json()["checks"]["queue"]["oldest_unlearned_label_age_seconds"] >= 120
    # Anonymous callers learn only that it fails, not how many labels wait.
    assert APIClient().get("/api/health/").json()["checks"]["queue"] == {"ok": False}
    Annotation.objects.filter(project=project).update(created_at=timezone.now())
    LearningJob.objects.create(project=project, kind=LearningJob.Kind.RETRAIN, dirty=True,
                               requested_at=timezone.now() - timedelta(seconds=300))
    assert _staff().get("/api/health/").json()["checks"]["queue"]["oldest_dirty_retrain_age_seconds"] >= 300


def test_broker_down_is_503_naming_the_broker(project: Any, settings: Any) -> None:
    require_service("Redis", bool(settings.REDIS_URL), f"{REDIS_NEEDED} (the file-system broker has no server to lose)")
    worker_heartbeat(worker="w1@host")
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = _staff().get("/api/health/")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker"]
    assert "Connection" in response.json()["checks"]["broker"]["error"]


def test_learning_staleness_over_many_projects_costs_the_same_few_queries(
        project: Any, django_assert_max_num_queries: Any) -> None:
    """Each project counts only the labels newer than its active model; the check's queries do not grow with
    the number of projects (it used to run two per project)."""
    from learning.models import ModelVersion

    worker_heartbeat(worker="w1@host")
    reviewer = UserFactory(username="rev")
    old = timezone.now() - timedelta(seconds=30)
    expected = 0
    for n in range(12):
        other = ProjectFactory(slug=f"many-{n}", taxonomy=SMS_TAXONOMY, embedder="hashing")
        annotations = [annotate(ItemFactory(project=other), reviewer, ["spam"]) for _ in range(n % 3 + 1)]
        if n % 2:  # a model learned the first of them: only the later ones are waiting
            ModelVersion.objects.create(project=other, version=1, fingerprint=f"fp{n}", status="active",
                                        embedder="hashing-v1-64", strategy="margin",
                                        max_annotation_id=annotations[0].pk)
            expected += len(annotations) - 1
        else:
            expected += len(annotations)
    from labeling.models import Annotation

    Annotation.objects.filter(project__slug="many-4").update(created_at=old)
    client = _staff()
    client.get("/api/health/")  # warm the auth and session path
    with django_assert_max_num_queries(8):
        body = client.get("/api/health/").json()
    assert body["checks"]["queue"]["labels_not_in_active_model"] == expected
    assert 30 <= body["checks"]["queue"]["oldest_unlearned_label_age_seconds"] < 60


def test_a_busy_worker_is_healthy_though_it_cannot_run_the_sweep(project: Any, settings: Any) -> None:
    """Issue 14: the only worker has been embedding for 19 minutes, so the sweep's heartbeat is 20 minutes old;
    its liveness thread says it is alive and busy, and that is healthy. Alive but idle, silent, or busy past the
    hard time limit (a hung task) is not."""
    settings.SIFT_HEALTH_HEARTBEAT_MAX_AGE = 180
    settings.SIFT_WORKER_HEARTBEAT_SECONDS = 15  # alive within 60 s
    settings.SIFT_TASK_TIME_LIMIT_SECONDS = 3600
    now = timezone.now()
    WorkerHeartbeat.objects.create(worker="w1@host", beat_at=now - timedelta(minutes=20),
                                   alive_at=now - timedelta(seconds=5), active_tasks=1,
                                   busy_since=now - timedelta(minutes=19))
    response = _staff().get("/api/health/")
    assert response.status_code == 200
    worker = response.json()["checks"]["worker"]
    assert worker["heartbeat_age_seconds"] >= 1200
    assert {k: v for k, v in worker.items() if k != "heartbeat_age_seconds"} == {
        "ok": True, "max_age_seconds": 180.0, "workers_recent": 0, "workers_busy": 1}
    assert APIClient().get("/api/health/").json()["checks"]["worker"] == {"ok": True}

    failing: list[dict[str, Any]] = [
        {"active_tasks": 0, "busy_since": None},  # alive and idle, yet no sweep: beat or the broker is broken
        {"alive_at": now - timedelta(seconds=61)},  # its liveness stopped: killed or frozen
        {"busy_since": now - timedelta(seconds=3601)},  # running past the hard time limit: hung
    ]
    for change in failing:
        WorkerHeartbeat.objects.filter(worker="w1@host").update(**change)
        body = _staff().get("/api/health/").json()
        assert (body["failing"], body["checks"]["worker"]["workers_busy"]) == (["worker"], 0), change
        WorkerHeartbeat.objects.filter(worker="w1@host").update(
            alive_at=now - timedelta(seconds=5), active_tasks=1, busy_since=now - timedelta(minutes=19))


def test_a_worker_liveness_row_does_not_disturb_the_sweep_heartbeat(project: Any) -> None:
    worker_alive(worker="w1@host", active_tasks=0, busy_since=None)
    row = WorkerHeartbeat.objects.get(worker="w1@host")
    assert (row.beat_at, row.active_tasks, row.busy_since) == (None, 0, None)
    assert APIClient().get("/api/health/").json()["failing"] == ["worker"]
    worker_heartbeat(worker="w1@host")
    row.refresh_from_db()
    assert row.beat_at is not None and row.alive_at is not None
    assert APIClient().get("/api/health/").status_code == 200


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_busy_with_a_long_task_is_reported_healthy(postgres_only: None, settings: Any) -> None:
    """A real solo worker (so nothing else can run the sweep) runs a retrain slowed down to many seconds; no beat
    runs at all. While the task runs the worker check passes on the liveness thread alone; once it is idle again,
    with no sweep ever run, it fails."""
    require_service("Redis", redis_available(), REDIS_NEEDED)
    purge_broker()
    settings.SIFT_WORKER_HEARTBEAT_SECONDS = 1
    project = ProjectFactory(slug="busy", taxonomy=SMS_TAXONOMY, embedder="hashing")
    items = add_items(project, [r["text"] for r in sms_rows(300)])
    embed_items(items)
    worker = Worker(SIFT_WORKER_HEARTBEAT_SECONDS="1", SIFT_RANKING_WRITE_BATCH="20",
                    SIFT_COLD_START_DEPTH="300", write_pause=1.0)
    try:
        assert WorkerHeartbeat.objects.filter(beat_at__isnull=False).count() == 0
        assert jobs.signal(kind=LearningJob.Kind.RETRAIN, project_id=project.pk) is True
        row = wait_until(lambda: WorkerHeartbeat.objects.filter(active_tasks=1).first(), timeout=120,
                         what="the liveness thread to report the running retrain", worker=worker)
        assert row.busy_since is not None and row.beat_at is None
        busy = _staff().get("/api/health/").json()["checks"]["worker"]
        assert (busy["ok"], busy["heartbeat_age_seconds"], busy["workers_busy"]) == (True, None, 1)
        # The retrain ends; the worker is idle and no sweep has ever run: beat (absent here) is what is missing.
        wait_until(lambda: WorkerHeartbeat.objects.filter(active_tasks=0, alive_at__isnull=False).exists()
                   and ModelVersion.objects.filter(project=project, status="active").exists(),
                   timeout=120, what="the retrain to finish", worker=worker)
        idle = _staff().get("/api/health/").json()["checks"]["worker"]
        assert (idle["ok"], idle["workers_busy"]) == (False, 0)
    finally:
        worker.stop()
        purge_broker()
