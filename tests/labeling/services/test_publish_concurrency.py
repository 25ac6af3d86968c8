"""A taxonomy publish against live reviewers, on real concurrent PostgreSQL transactions.

What labeling/services/taxonomy_migrations.py's essay ("A publish never stalls reviewers") promises:
- while a publish does its slow work, checkouts and submits go on (no lock wait at all);
- in its final moments only submits wait, on the answer lock (an advisory lock), and their answers are mapped;
- publishes, checkouts, submits and undos running together never deadlock, and every answer ends up readable in
  the current version.
Waits are observed in pg_stat_activity, never inferred from sleeps.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.db import connection

from labeling.models import Annotation, Item, Project
from labeling.services import taxonomy_migrations
from labeling.services.annotations import annotation_submit, annotation_undo
from labeling.services.queues import queue_checkout_next
from labeling.services.taxonomy import taxonomy_draft_publish, taxonomy_draft_save
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = [pytest.mark.django_db(transaction=True)]

V1: dict[str, Any] = {"name": "Abuse", "multi_label": False, "labels": [
    {"key": "ok", "name": "OK"}, {"key": "spam", "name": "Spam"}, {"key": "hate", "name": "Hate"}]}
V2: dict[str, Any] = {"name": "Abuse", "multi_label": False, "labels": [
    {"key": "ok", "name": "OK"}, {"key": "spam", "name": "Spam"},
    {"key": "hate/slur", "name": "Slur"}, {"key": "hate/threat", "name": "Threat"}]}
SPLIT = [{"kind": "split", "sources": ["hate"], "targets": ["hate/slur", "hate/threat"], "requeue_priority": 5}]


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def wait_event(pid: int) -> tuple[str | None, str | None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (None, None)


def until(condition: Callable[[], bool], seconds: float = 30) -> bool:
    """Poll ``condition`` until it holds (the proof is what it observes; the pause is only a polling interval)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


class Worker(threading.Thread):
    """Runs ``job`` on its own connection; records its backend pid, result and error."""

    def __init__(self, job: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.job = job
        self.pid = 0
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.pid = backend_pid()
            self.result = self.job()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            connection.close()


def readable_everywhere(project: Project) -> list[int]:
    """Ids of answers NOT readable in the project's current version (given under it, or mapped onto it)."""
    project.refresh_from_db()
    current = project.current_taxonomy_version_id
    return list(Annotation.objects.filter(project=project).exclude(taxonomy_version_id=current)
                .exclude(mapped_taxonomy_version_id=current).values_list("id", flat=True))


@pytest.fixture
def world(postgres_only: None) -> dict[str, Any]:
    project = ProjectFactory(slug="publish-live", taxonomy=V1, overlap=1)
    lead = member(project, username="lead", role="policy_lead")
    reviewers = [member(project, username=f"rev{i}", role="reviewer") for i in range(3)]
    for n in range(40):
        ItemFactory(project=project, external_id=f"i{n:02d}")
    return {"project": project, "lead": lead, "reviewers": reviewers}


def label_one(project: Project, reviewer: Any, labels: list[str]) -> Annotation:
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=labels)
    return annotation


def test_reviewers_label_on_while_a_publish_does_its_slow_work(world: dict[str, Any]) -> None:
    project, lead, (r0, r1, r2) = world["project"], world["lead"], world["reviewers"]
    hateful = label_one(project, r0, ["hate"])
    old_lease = queue_checkout_next(project=project, reviewer=r2)  # taken under v1, submitted during the publish
    assert old_lease is not None
    taxonomy_draft_save(actor=lead, project=project, document=V2, migrations=SPLIT)
    in_part_one, finish_part_one = threading.Event(), threading.Event()
    real_apply = taxonomy_migrations.plan_apply_answers

    def slow_apply(**kwargs: Any) -> None:
        real_apply(**kwargs)
        if not in_part_one.is_set():  # the bulk write, not the catch-up
            in_part_one.set()
            assert finish_part_one.wait(60)

    with mock.patch("labeling.services.taxonomy.plan_apply_answers", side_effect=slow_apply):
        publisher = Worker(lambda: taxonomy_draft_publish(actor=lead, project=project, changelog="split hate"))
        publisher.start()
        assert in_part_one.wait(30)
        # The publish holds the project row and every existing answer's row. A reviewer checks out and submits,
        # and another submits on a lease taken before the publish: neither waits for anything.
        reviewer = Worker(lambda: label_one(project, r1, ["spam"]))
        reviewer.start()
        reviewer.join(30)
        late = Worker(lambda: annotation_submit(lease_id=old_lease.pk, reviewer=r2, labels=["hate"])[0])
        late.start()
        late.join(30)
        assert (reviewer.is_alive(), reviewer.error, late.is_alive(), late.error) == (False, None, False, None)
        finish_part_one.set()
        publisher.join(30)
    assert publisher.error is None

    project.refresh_from_db()
    assert project.current_taxonomy_version.number == 2
    for annotation in (hateful, reviewer.result, late.result):
        annotation.refresh_from_db()
    # Both answers committed during part 1 were caught up by part 3: readable in v2, the split one re-queued.
    assert (hateful.mapped_labels, reviewer.result.mapped_labels, late.result.mapped_labels) == (None, ["spam"], None)
    assert readable_everywhere(project) == []
    requeued = dict(Item.objects.filter(pk__in=[hateful.item_id, late.result.item_id])
                    .values_list("pk", "boost"))
    assert requeued == {hateful.item_id: 5, late.result.item_id: 5}


def test_in_its_final_moments_a_publish_holds_back_only_submits_which_then_map_forward(world: dict[str, Any]) -> None:
    project, lead, (r0, r1, r2) = world["project"], world["lead"], world["reviewers"]
    old_lease = queue_checkout_next(project=project, reviewer=r0)
    assert old_lease is not None
    taxonomy_draft_save(actor=lead, project=project, document=V2, migrations=SPLIT)
    in_part_three, finish = threading.Event(), threading.Event()
    real_requeue = taxonomy_migrations.plan_apply_requeue

    def paused_requeue(**kwargs: Any) -> None:
        in_part_three.set()
        assert finish.wait(60)
        real_requeue(**kwargs)

    with mock.patch("labeling.services.taxonomy.plan_apply_requeue", side_effect=paused_requeue):
        publisher = Worker(lambda: taxonomy_draft_publish(actor=lead, project=project, changelog="split hate"))
        publisher.start()
        assert in_part_three.wait(30)
        checkout = Worker(lambda: queue_checkout_next(project=project, reviewer=r1))
        checkout.start()
        checkout.join(30)
        assert (checkout.is_alive(), checkout.error) == (False, None)  # a checkout never waits for a publish
        submit = Worker(lambda: annotation_submit(lease_id=old_lease.pk, reviewer=r0, labels=["hate"])[0])
        submit.start()
        assert until(lambda: submit.pid != 0 and wait_event(submit.pid) == ("Lock", "advisory"))
        assert submit.is_alive()
        finish.set()
        publisher.join(30)
        submit.join(30)
    assert (publisher.error, submit.error) == (None, None)
    answer = submit.result
    answer.refresh_from_db()
    # It read v2 once the publish committed, and mapped itself forward in its own transaction: hate was split.
    assert (answer.taxonomy_version.number, answer.mapped_labels, answer.mapped_taxonomy_version.number) == (1, None, 2)
    item = Item.objects.get(pk=answer.item_id)
    assert (item.boost, item.n_required, item.n_done) == (5, 2, 1)
    assert r2 is not None


def test_publishes_checkouts_submits_and_undos_together_never_deadlock(world: dict[str, Any]) -> None:
    project, lead, reviewers = world["project"], world["lead"], world["reviewers"]
    stop = threading.Event()
    done: list[int] = []

    def review(reviewer: Any, labels: tuple[list[str], list[str]], undo_every: int) -> None:
        n = 0
        while not stop.is_set():
            lease = queue_checkout_next(project=project, reviewer=reviewer)
            if lease is None:
                return
            version = lease.taxonomy_version.number if lease.taxonomy_version else 1
            annotation, _ = annotation_submit(lease_id=lease.pk, reviewer=reviewer,
                                              labels=labels[0] if version == 1 else labels[1])
            n += 1
            if n % undo_every == 0:
                annotation_undo(lease_id=lease.pk, reviewer=reviewer)
                annotation_submit(lease_id=lease.pk, reviewer=reviewer,
                                  labels=labels[0] if version == 1 else labels[1])
            done.append(annotation.pk)

    def publish_twice() -> None:
        taxonomy_draft_save(actor=lead, project=project, document=V2, migrations=SPLIT)
        taxonomy_draft_publish(actor=lead, project=project, changelog="split hate")
        v3 = {**V2, "labels": [*V2["labels"], {"key": "other", "name": "Other"}]}
        taxonomy_draft_save(actor=lead, project=project, document=v3, migrations=[])
        taxonomy_draft_publish(actor=lead, project=project, changelog="add other")

    answers: list[tuple[list[str], list[str]]] = [(["hate"], ["hate/slur"]), (["spam"], ["spam"]),
                                                  (["ok"], ["hate/threat"])]
    workers = [Worker(functools.partial(review, reviewer, labels, 3))
               for reviewer, labels in zip(reviewers, answers, strict=True)]
    for worker in workers:
        worker.start()
    assert until(lambda: len(done) >= 6)
    publisher = Worker(publish_twice)
    publisher.start()
    publisher.join(60)
    stop.set()
    for worker in workers:
        worker.join(60)

    assert [w.error for w in [publisher, *workers]] == [None, None, None, None]
    project.refresh_from_db()
    assert project.current_taxonomy_version.number == 3
    assert readable_everywhere(project) == []
    # Overlap and counts stayed exact: every item's n_done is its number of answers.
    per_item = {pk: n for pk, n in Item.objects.filter(project=project).values_list("pk", "n_done")}
    for item_id, count in per_item.items():
        assert Annotation.objects.filter(item_id=item_id).count() == count
