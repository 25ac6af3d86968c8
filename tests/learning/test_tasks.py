"""The Celery tasks (learning/tasks.py): stable names, ids in, call twice -> effect once, transient-only retries."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, OperationalError

from config.celery import app
from labeling.models import RankingEntry
from learning import tasks
from learning.models import Embedding, LearningJob, ModelVersion
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory, UserFactory
from tests.learning.support import add_items, annotate, embed_items


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_o: calls.append(name))
    return calls


@pytest.fixture
def project(db: Any) -> Any:
    return ProjectFactory(slug="tasks", taxonomy=SMS_TAXONOMY, embedder="hashing")


def test_task_names_and_routes_are_stable() -> None:
    assert tasks.embed_project.name == "sift.learning.embed_project"
    assert tasks.retrain_project.name == "sift.learning.retrain_project"
    assert tasks.sweep.name == "sift.learning.sweep"
    router = app.amqp.router
    assert router.route({}, "sift.learning.embed_project")["queue"].name == "embedding"
    assert router.route({}, "sift.learning.retrain_project")["queue"].name == "training"
    assert router.route({}, "sift.learning.sweep")["queue"].name == "default"


def test_only_transient_errors_are_retried() -> None:
    for task in (tasks.embed_project, tasks.retrain_project, tasks.sweep):
        assert Exception not in task.autoretry_for
        assert OperationalError in task.autoretry_for
        assert IntegrityError not in task.autoretry_for
        assert task.max_retries == 5


def test_embed_twice_embeds_once(project: Any, sent: list[str]) -> None:
    add_items(project, ["one", "two", "three"])
    first = tasks.embed_project.apply(args=[project.pk]).get()
    second = tasks.embed_project.apply(args=[project.pk]).get()
    assert first == {"skipped": False, "embedded": 3, "batches": 1}
    assert second == {"skipped": False, "embedded": 0, "batches": 0}
    assert Embedding.objects.count() == 3
    assert sent == ["sift.learning.retrain_project"]  # one ranking request, from the pass that embedded
    assert LearningJob.objects.get(project=project, kind=LearningJob.Kind.EMBED).generation == 1


def test_retrain_twice_trains_once(project: Any, sent: list[str]) -> None:
    items = add_items(project, [f"free prize {i}" for i in range(6)] + [f"hello friend {i}" for i in range(6)])
    embed_items(items)
    reviewer = UserFactory(username="oracle")
    for item in items[:3] + items[6:9]:
        annotate(item, reviewer, ["spam" if "prize" in item.text else "ham"])
    first = tasks.retrain_project.apply(args=[project.pk]).get()
    second = tasks.retrain_project.apply(args=[project.pk], kwargs={"reason": "from a newer producer"}).get()
    assert first == {"outcome": "activated", "version": 1, "n_ranked": 6}
    assert second == {"outcome": "noop", "version": 1, "n_ranked": 0}
    assert ModelVersion.objects.count() == 1
    assert RankingEntry.objects.count() == 6


def test_sweep_twice_enqueues_once(project: Any, sent: list[str]) -> None:
    item = add_items(project, ["lost signal"])[0]
    annotate(item, UserFactory(username="oracle"), ["spam"])
    assert tasks.sweep.apply().get() == {"flagged": 1, "enqueued": 1}
    assert tasks.sweep.apply().get() == {"flagged": 0, "enqueued": 0}
    assert sent == ["sift.learning.retrain_project"]


def test_a_transient_database_error_is_retried_and_a_bug_is_not(project: Any, monkeypatch: pytest.MonkeyPatch,
                                                                sent: list[str]) -> None:
    calls = {"n": 0}
    owners: list[str] = []

    def flaky(*, project_id: int, owner: str) -> Any:
        calls["n"] += 1
        owners.append(owner)
        if calls["n"] < 3:
            raise OperationalError("server closed the connection unexpectedly")
        from learning.services.retrain import RetrainResult

        return RetrainResult(outcome="noop", version=None)

    monkeypatch.setattr(tasks, "model_version_train", flaky)
    result = tasks.retrain_project.apply(args=[project.pk])
    assert result.get()["outcome"] == "noop"
    assert calls["n"] == 3
    # Every attempt names the same task id as the claim's owner: a retry may take over a claim its failed
    # attempt could not release (learning/jobs.py).
    assert owners == [result.id] * 3

    calls["n"] = 0

    def buggy(*, project_id: int, owner: str) -> Any:
        calls["n"] += 1
        raise KeyError("a bug")

    monkeypatch.setattr(tasks, "model_version_train", buggy)
    result = tasks.retrain_project.apply(args=[project.pk])
    assert result.failed()
    assert calls["n"] == 1
