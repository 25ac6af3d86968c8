"""Delivery guarantees without a broker: per-task acknowledgement, stale claims swept, the broker back-off."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerDown

from config.celery import app
from learning import jobs
from learning.models import LearningJob
from tests.conftest import REDIS_NEEDED, SMS_TAXONOMY, require_service
from tests.factories import ProjectFactory

RETRAIN = LearningJob.Kind.RETRAIN

# Every task, and whether it is acknowledged late (after it ran) and requeued when its pool child dies.
AT_LEAST_ONCE = {
    "sift.learning.embed_project": True,
    "sift.learning.retrain_project": True,
    "sift.labeling.export_snapshot": True,
    "sift.learning.sweep": False,
}


def test_acks_late_only_on_the_tasks_that_are_safe_to_run_twice() -> None:
    app.loader.import_default_modules()
    assert django_settings.CELERY_TASK_ACKS_LATE is False  # opt-in per task, never by default
    for name, late in AT_LEAST_ONCE.items():
        task = app.tasks[name]
        assert (bool(task.acks_late), bool(task.reject_on_worker_lost)) == (late, late), name
        # Every task is bounded well inside the broker's redelivery delay.
        limit = task.time_limit or django_settings.CELERY_TASK_TIME_LIMIT
        assert limit < django_settings.SIFT_TASK_VISIBILITY_SECONDS, name


@pytest.fixture
def project(db: Any) -> Any:
    return ProjectFactory(slug="delivery", taxonomy=SMS_TAXONOMY, embedder="hashing")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_o: calls.append(name))
    return calls


def test_sweep_redoes_the_work_of_a_killed_run_without_a_new_request(project: Any, sent: list[str],
                                                                     settings: Any) -> None:
    settings.SIFT_LEARNING_STALE_SECONDS = 30
    dead = jobs.claim(kind=RETRAIN, project_id=project.pk)  # a run that will be SIGKILLed
    assert dead is not None
    assert jobs.sweep() == {"flagged": 0, "enqueued": 0}  # alive: left alone
    LearningJob.objects.filter(project=project).update(running_since=timezone.now() - timedelta(seconds=31))
    assert jobs.sweep() == {"flagged": 1, "enqueued": 1}
    assert sent == ["sift.learning.retrain_project"]
    assert jobs.sweep() == {"flagged": 0, "enqueued": 0}  # queued once, not again
    taken = jobs.claim(kind=RETRAIN, project_id=project.pk)
    assert taken is not None and taken.requested is True


def test_a_broker_failure_backs_off_sends_but_loses_no_request(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    def down(name: str, *_a: Any, **_k: Any) -> None:
        attempts.append(name)
        raise BrokerDown("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    monkeypatch.setattr(app, "send_task", down)
    for _ in range(20):  # a burst of submits while Redis is down
        jobs.signal(kind=RETRAIN, project_id=project.pk)
    assert attempts == ["sift.learning.retrain_project"]  # one connection attempt, not twenty
    job = LearningJob.objects.get(project=project, kind=RETRAIN)
    assert (job.dirty, job.queued_at) == (True, None)
    # The broker is back: the sweep ignores the back-off and sends it.
    sent: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_o: sent.append(name))
    assert jobs.sweep() == {"flagged": 0, "enqueued": 1}
    assert sent == ["sift.learning.retrain_project"]


def test_a_redis_restart_re_sends_what_was_queued_before_it(project: Any, sent: list[str]) -> None:
    require_service("Redis", bool(django_settings.REDIS_URL), f"{REDIS_NEEDED} (only Redis has a run_id to watch)")
    jobs.sweep()  # the sweep's first look notes Redis's run_id
    jobs.signal(kind=RETRAIN, project_id=project.pk)
    assert sent == ["sift.learning.retrain_project"]  # "queued" from now on
    assert jobs.sweep()["enqueued"] == 0  # same Redis: the message is presumed there
    jobs._broker_run_id = "a-redis-that-has-since-restarted"
    assert jobs.sweep()["enqueued"] == 1  # a new run_id: what was queued is re-sent at once
    assert sent == ["sift.learning.retrain_project"] * 2
