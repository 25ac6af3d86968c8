"""LabelCounter (labeling/models/label_counter.py): every submit, undo and decision counts once, as the last write
of its transaction; a refused or replayed one counts nothing; concurrent submits lose no count."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from labeling.models import Annotation, Item, LabelCounter, SelectionReason
from labeling.services.adjudication import adjudication_decide, adjudication_sync_for_item
from labeling.services.annotations import annotation_submit, annotation_undo
from labeling.services.errors import ValidationFailed
from labeling.services.queues import queue_checkout_next
from tests.factories import ItemFactory, ProjectFactory, member


@pytest.fixture(autouse=True)
def retrains(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Stand-in for learning.scheduling.request_retrain that, like the real one, acts only on commit (no broker)."""
    requested: list[int] = []

    def fake(*, project_id: int) -> None:
        transaction.on_commit(lambda: requested.append(project_id))

    monkeypatch.setattr("learning.scheduling.request_retrain", fake)
    return requested


def _value(project: Any) -> int:
    return LabelCounter.objects.value(project_id=project.pk)


@pytest.mark.django_db
def test_submit_and_undo_count_once_each_and_refusals_and_replays_not_at_all() -> None:
    project = ProjectFactory(slug="lc")
    ItemFactory(project=project, external_id="a")
    other = ProjectFactory(slug="lc-other")
    reviewer = member(project, username="rev", role="reviewer")
    assert _value(project) == 0  # no row yet
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    with pytest.raises(ValidationFailed):
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["nope"])
    assert _value(project) == 0
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"], idempotency_key="k1")
    assert _value(project) == 1
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"], idempotency_key="k1")  # a replay
    assert _value(project) == 1
    annotation_undo(lease_id=lease.pk, reviewer=reviewer)
    assert _value(project) == 2
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["bad"])
    assert (_value(project), _value(other)) == (3, 0)
    assert LabelCounter.objects.count() == 1


@pytest.mark.django_db
def test_the_bump_is_the_last_write_of_the_submit_and_of_the_undo() -> None:
    """The counter row is locked from the bump to the commit only (see the module essay)."""
    project = ProjectFactory(slug="lc-last")
    ItemFactory(project=project, external_id="a")
    reviewer = member(project, username="rev", role="reviewer")
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None

    def writes(queries: CaptureQueriesContext) -> list[str]:
        return [q["sql"] for q in queries.captured_queries
                if q["sql"].lstrip().split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}]

    for call in (lambda: annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"]),
                 lambda: annotation_undo(lease_id=lease.pk, reviewer=reviewer)):
        with CaptureQueriesContext(connection) as queries:
            call()
        assert writes(queries)[-1].startswith('INSERT INTO labeling_labelcounter (project_id, value) VALUES')


@pytest.mark.django_db
def test_a_decision_counts_once_and_a_refused_one_not_at_all() -> None:
    project = ProjectFactory(slug="lc-adj", overlap=2)
    lead = member(project, username="lead", role="policy_lead")
    item = ItemFactory(project=project, external_id="x")
    version = project.current_taxonomy_version
    for name, labels in (("ann", ["ok"]), ("bob", ["bad"])):
        Annotation.objects.create(project=project, item=item, reviewer=member(project, username=name, role="reviewer"),
                                  taxonomy_version=version, labels=labels, selection_reason=SelectionReason.UNCERTAINTY)
    Item.objects.filter(pk=item.pk).update(n_done=2)
    adjudication = adjudication_sync_for_item(item_id=item.pk)
    assert adjudication is not None
    with pytest.raises(ValidationFailed):
        adjudication_decide(actor=lead, project=project, adjudication_id=adjudication.pk, labels=["nope"])
    assert _value(project) == 0
    adjudication_decide(actor=lead, project=project, adjudication_id=adjudication.pk, labels=["bad"])
    assert _value(project) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_of_one_project_all_count(postgres_only: None) -> None:
    project = ProjectFactory(slug="lc-race")
    n = 6
    for i in range(n):
        ItemFactory(project=project, external_id=f"i{i}")
    reviewers = [member(project, username=f"r{i}", role="reviewer") for i in range(n)]
    leases = [queue_checkout_next(project=project, reviewer=r) for r in reviewers]
    assert all(lease is not None for lease in leases)
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def submit(reviewer: Any, lease_id: int) -> None:
        try:
            barrier.wait()
            annotation_submit(lease_id=lease_id, reviewer=reviewer, labels=["ok"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(r, lease.pk))  # type: ignore[union-attr]
               for r, lease in zip(reviewers, leases, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Annotation.objects.filter(project=project).count() == n
    assert _value(project) == n
