"""Suspected label errors with a real Celery worker, Redis and PostgreSQL: a retrain requested the way a submit
requests it runs in the worker, records the suspicions and sends ``sift.labeling.label_errors_sync`` by name,
which the worker runs too: the wrong answers end up routed with nobody calling a service in-process."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from labeling.models import Adjudication, Item, SuspectedError
from learning import scheduling
from tests.conftest import REDIS_NEEDED, require_service
from tests.labeling.services.label_errors_support import noisy_project
from tests.learning.worker_harness import Worker, purge_broker, redis_available, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def worker(postgres_only: None, transactional_db: Any) -> Any:
    require_service("Redis", redis_available(), REDIS_NEEDED)
    purge_broker()
    started = Worker()
    yield started
    started.stop()
    purge_broker()


def test_a_real_worker_detects_and_routes_the_wrong_answers(worker: Worker) -> None:
    world = noisy_project("noisy-worker")
    project, items = world["project"], world["items"]
    with transaction.atomic():
        scheduling.request_retrain(project_id=project.pk)

    def routed() -> list[tuple[str, str]] | None:
        rows = list(SuspectedError.objects.filter(project=project).order_by("item__external_id")
                    .values_list("item__external_id", "state"))
        return rows if rows and all(state != "new" for _id, state in rows) else None

    assert wait_until(routed, timeout=240, what="the suspicions to be routed", worker=worker) == [
        ("item-0", "recheck"), ("item-2", "recheck"), ("item-7", "adjudication")]
    assert list(Item.objects.filter(pk__in=[items[0].pk, items[2].pk]).values_list("n_required", "boost")) == [
        (2, 1), (2, 1)]
    assert Adjudication.objects.get(item=items[7]).reason == "suspected_error"
