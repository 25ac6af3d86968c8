"""Label propagation with a real Celery worker, Redis and PostgreSQL: the submit's commit sends
``sift.labeling.propagation_reevaluate`` through the broker and the worker writes the propagated answers."""

from __future__ import annotations

from typing import Any

import pytest

from labeling.models import Annotation, AnswerSource, ClusterKind, ClusterMember, Item
from labeling.services.annotations import annotation_submit
from labeling.services.propagation import propagation_policy_set
from labeling.services.queues import queue_checkout_next
from tests.conftest import REDIS_NEEDED, require_service
from tests.factories import ProjectFactory, member
from tests.learning.support import add_items
from tests.learning.worker_harness import Worker, purge_broker, redis_available, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.slow]

TAXONOMY: dict[str, Any] = {"name": "T", "labels": [{"key": "ok", "name": "OK"}, {"key": "spam", "name": "Spam"}]}


@pytest.fixture
def worker(postgres_only: None, transactional_db: Any) -> Any:
    require_service("Redis", redis_available(), REDIS_NEEDED)
    purge_broker()
    started = Worker()
    yield started
    started.stop()
    purge_broker()


def test_a_real_worker_propagates_after_the_submit_commits(worker: Worker) -> None:
    project = ProjectFactory(slug="prop-worker", taxonomy=TAXONOMY, overlap=1)
    items = add_items(project, [f"text {n}" for n in range(4)])
    Item.objects.filter(pk=items[0].pk).update(random_key=0.0)
    ClusterMember.objects.bulk_create([
        ClusterMember(item=item, project=project, representative=items[0],
                      kind=ClusterKind.REPRESENTATIVE if n == 0 else ClusterKind.NEAR,
                      similarity=[1.0, 0.95, 0.9, 0.5][n], exact_key="0" * 32, minhash=b"")
        for n, item in enumerate(items)])
    lead, ana = member(project, username="lead", role="policy_lead"), member(project, username="ana", role="reviewer")
    propagation_policy_set(actor=lead, project=project, label="spam", mode="propagate", threshold=0.85,
                           verification_share=0.0)
    lease = queue_checkout_next(project=project, reviewer=ana)
    assert lease is not None and lease.item_id == items[0].pk
    source, _ = annotation_submit(lease_id=lease.pk, reviewer=ana, labels=["spam"])

    def propagated() -> dict[int, tuple[Any, ...]] | None:
        rows = dict((item_id, (labels, similarity, source_id)) for item_id, labels, similarity, source_id in
                    Annotation.objects.filter(project=project, source=AnswerSource.PROPAGATED)
                    .values_list("item_id", "labels", "similarity", "propagated_from_id"))
        return rows if len(rows) == 2 else None

    rows = wait_until(propagated, timeout=120, what="the propagated answers", worker=worker)
    assert rows == {items[1].pk: (["spam"], 0.95, source.pk), items[2].pk: (["spam"], 0.9, source.pk)}
    assert dict(Item.objects.filter(project=project).values_list("id", "n_done")) == {
        items[0].pk: 1, items[1].pk: 1, items[2].pk: 1, items[3].pk: 0}
