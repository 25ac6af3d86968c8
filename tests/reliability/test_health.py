"""GET /api/health/: each check's pass and fail, and who sees which figures (anonymous: none)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from learning.models import LearningJob, WorkerHeartbeat
from learning.scheduling import worker_heartbeat
from tests.conftest import SMS_TAXONOMY
from tests.factories import ItemFactory, ProjectFactory, UserFactory
from tests.learning.support import annotate


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
    if not settings.REDIS_URL:
        pytest.skip("the file-system broker has no server to lose")
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
