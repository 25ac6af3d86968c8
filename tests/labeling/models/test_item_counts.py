"""The item-count ledger (labeling/models/counters.py): after every kind of write, the maintained counts equal
the live aggregate over the items, and a rolled-back write leaves them as they were."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F

from labeling.models import Item, ItemCount, ItemCounts, Project
from labeling.models.counters import ItemCountManager
from labeling.services.annotations import annotation_submit, annotation_undo
from labeling.services.items_import import items_import
from labeling.services.queues import queue_checkout_next
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres_only")]


@pytest.fixture(autouse=True)
def no_retrains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)


def live(project: Project) -> ItemCounts:
    return ItemCountManager._live([project.pk], {project.pk: ItemCounts()})[project.pk]


def maintained(project: Project) -> ItemCounts:
    return ItemCount.objects.counts([project.pk])[project.pk]


def jsonl(*rows: str) -> io.BytesIO:
    return io.BytesIO("\n".join(rows).encode() + b"\n")


def test_import_submit_undo_requeue_delete_keep_the_counts_exact() -> None:
    project = ProjectFactory(slug="counts", overlap=2)
    reviewers = [member(project, username=f"c-r{n}", role="reviewer") for n in range(2)]
    # COPY path: 4 items, then 1 gold item.
    summary = items_import(actor=None, project=project, source=jsonl(
        *[f'{{"external_id": "e{n}", "text": "text {n}"}}' for n in range(4)]), filename="a.jsonl")
    assert summary.created == 4
    items_import(actor=None, project=project, source=jsonl('{"external_id": "g1", "text": "gold", "label": "ok"}'),
                 filename="g.jsonl", gold=True)
    assert maintained(project) == live(project) == ItemCounts(items=5, gold=1)
    # The ORM path (factories) fires the same trigger.
    ItemFactory(project=project, external_id="orm", n_required=2)
    assert maintained(project) == ItemCounts(items=6, gold=1)

    # Two reviewers finish one item (overlap 2): labelled at the first answer, finished at the second.
    target = Item.objects.get(project=project, external_id="e0")
    Item.objects.filter(project=project).exclude(pk=target.pk).update(random_key=0.9)
    Item.objects.filter(pk=target.pk).update(random_key=0.0)
    leases = []
    for n, reviewer in enumerate(reviewers):
        lease = queue_checkout_next(project=project, reviewer=reviewer)
        assert lease is not None and lease.item_id == target.pk
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["ok"])
        leases.append(lease)
        assert maintained(project) == live(project) == ItemCounts(items=6, gold=1, finished=n, labelled=1)
    # Undo the second answer: open again, still labelled.
    annotation_undo(lease_id=leases[1].pk, reviewer=reviewers[1])
    assert maintained(project) == live(project) == ItemCounts(items=6, gold=1, finished=0, labelled=1)

    # A taxonomy re-queue style UPDATE (n_required), a gold toggle, and an update that moves no count.
    Item.objects.filter(pk=target.pk).update(n_done=2)
    assert maintained(project).finished == 1
    Item.objects.filter(pk=target.pk).update(n_required=F("n_done") + 1)
    Item.objects.filter(external_id="e1", project=project).update(is_gold=True)
    Item.objects.filter(project=project).update(meta={"touched": True})
    assert maintained(project) == live(project) == ItemCounts(items=6, gold=2, finished=0, labelled=1)

    # Deleting items (projects themselves are never deleted: their taxonomy versions protect them).
    Item.objects.filter(project=project, external_id__in=["e2", "e3"]).delete()
    assert maintained(project) == live(project) == ItemCounts(items=4, gold=2, finished=0, labelled=1)


def test_a_rolled_back_write_leaves_the_counts_unchanged() -> None:
    project = ProjectFactory(slug="rollback")
    ItemFactory.create_batch(3, project=project)
    before = maintained(project)
    summary = items_import(actor=None, project=project, source=jsonl(
        '{"external_id": "x1", "text": "fine"}', '{"external_id": "x2"}'), filename="b.jsonl", atomic=True)
    assert summary.created == 0 and len(summary.errors) == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        Item.objects.filter(project=project).update(n_done=1)
        raise RuntimeError("roll back")
    assert maintained(project) == before == live(project) == ItemCounts(items=3)


def test_compaction_folds_the_ledger_without_changing_the_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    project = ProjectFactory(slug="compact")
    other = ProjectFactory(slug="compact-other")
    for n in range(12):  # one delta row per statement
        ItemFactory(project=project, external_id=f"i{n}", n_done=n % 2)
    ItemFactory(project=other, external_id="o")
    rows: Any = ItemCount.objects.filter(project=project)
    assert rows.count() == 12
    monkeypatch.setattr("labeling.models.counters.COMPACT_AFTER", 10)
    assert maintained(project) == ItemCounts(items=12, finished=6, labelled=6)  # read, then compacted
    assert rows.count() == 1
    assert maintained(project) == live(project) == ItemCounts(items=12, finished=6, labelled=6)
    assert ItemCount.objects.counts([other.pk]) == {other.pk: ItemCounts(items=1)}


def test_counts_for_projects_without_items_are_zero() -> None:
    project = ProjectFactory(slug="empty")
    assert ItemCount.objects.counts([project.pk, 999_999]) == {project.pk: ItemCounts(), 999_999: ItemCounts()}
    assert ItemCount.objects.counts([]) == {}
    assert connection.vendor == "postgresql"
