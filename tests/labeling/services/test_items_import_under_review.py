"""A re-import never changes the text under a reviewer: not while anyone holds a lease on the item, not once it has
an answer; checked under the item's row lock (labeling/services/items_import/store.py)."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from labeling.models import Item, Lease, Project
from labeling.services.annotations import annotation_submit
from labeling.services.items_import import items_import
from labeling.services.queues import queue_checkout_next
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory, member


def run(project: Project, *rows: dict[str, Any]) -> dict[str, Any]:
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return items_import(actor=None, project=project, source=io.BytesIO(data), filename="items.jsonl").as_dict()


def text_of(project: Project, external_id: str) -> str:
    return Item.objects.get(project=project, external_id=external_id).text


@pytest.fixture
def world(db: Any) -> dict[str, Any]:
    project = ProjectFactory(slug="reimport", taxonomy=SMS_TAXONOMY, overlap=1)
    reviewer = member(project, username="rev", role="reviewer")
    run(project, {"external_id": "a", "text": "what the reviewer reads"})
    return {"project": project, "reviewer": reviewer}


def held_until(lease: Lease) -> str:
    return f"{lease.expires_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def test_text_under_an_unexpired_lease_is_refused_and_the_submit_labels_what_was_seen(world: dict[str, Any]) -> None:
    project, reviewer = world["project"], world["reviewer"]
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None and lease.item.text == "what the reviewer reads"

    summary = run(project, {"external_id": "a", "text": "something else entirely"})

    assert summary == {"created": 0, "updated": 0, "unchanged": 0, "errors": [{
        "line": 1, "error": f"external_id 'a' is being labelled (a reviewer holds it until {held_until(lease)}); its "
                            "text cannot change under them: import it again after that, or under a new external_id"}]}
    assert text_of(project, "a") == "what the reviewer reads"
    annotation, created = annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["spam"])
    assert created and annotation.item.text == "what the reviewer reads"


def test_meta_may_change_under_a_lease_and_an_identical_row_is_unchanged(world: dict[str, Any]) -> None:
    project, reviewer = world["project"], world["reviewer"]
    assert queue_checkout_next(project=project, reviewer=reviewer) is not None
    assert run(project, {"external_id": "a", "text": "what the reviewer reads"},
               {"external_id": "a", "text": "what the reviewer reads", "meta": {"source": "x"}}) == {
        "created": 0, "updated": 1, "unchanged": 1, "errors": []}
    assert Item.objects.get(project=project, external_id="a").meta == {"source": "x"}


def test_an_expired_lease_no_longer_holds_the_text(world: dict[str, Any]) -> None:
    project, reviewer = world["project"], world["reviewer"]
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert run(project, {"external_id": "a", "text": "corrected text"}) == {
        "created": 0, "updated": 1, "unchanged": 0, "errors": []}
    assert text_of(project, "a") == "corrected text"
    # The reviewer who read the old text cannot label the new one: their lease has expired.
    from labeling.services.errors import Conflict

    with pytest.raises(Conflict, match="lease expired"):
        annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=["spam"])


def test_a_submitted_or_skipped_lease_does_not_hold_but_an_answer_does(world: dict[str, Any]) -> None:
    project, reviewer = world["project"], world["reviewer"]
    run(project, {"external_id": "b", "text": "skipped one"})
    first = queue_checkout_next(project=project, reviewer=reviewer)
    assert first is not None
    from labeling.services.annotations import lease_skip

    lease_skip(lease_id=first.pk, reviewer=reviewer)
    second = queue_checkout_next(project=project, reviewer=reviewer)
    assert second is not None and second.item_id != first.item_id
    annotation_submit(lease_id=second.pk, reviewer=reviewer, labels=["ham"])
    answered = Item.objects.get(pk=second.item_id).external_id
    skipped = Item.objects.get(pk=first.item_id).external_id

    summary = run(project, {"external_id": answered, "text": "new words"}, {"external_id": skipped, "text": "new too"})

    assert summary["updated"] == 1
    assert summary["errors"] == [{"line": 1, "error": f"external_id {answered!r} already has 1 annotation(s); its text "
                                                      "cannot change (import the new text under a new external_id)"}]
    assert text_of(project, skipped) == "new too"


@pytest.mark.django_db(transaction=True)
def test_an_import_racing_a_checkout_waits_for_its_lock_and_then_refuses(postgres_only: None) -> None:
    """Real concurrent transactions: a checkout has locked the item and inserted its lease but not committed; the
    import must wait on the item's row lock (seen in pg_stat_activity) and, once the lease commits, refuse."""
    project = ProjectFactory(slug="reimport-race", taxonomy=SMS_TAXONOMY, overlap=1)
    reviewer = member(project, username="racer", role="reviewer")
    run(project, {"external_id": "a", "text": "original"})
    leased, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def checkout() -> None:
        try:
            with transaction.atomic():
                outcome["lease"] = queue_checkout_next(project=project, reviewer=reviewer)
                leased.set()
                assert release.wait(30)
        finally:
            connection.close()

    def reimport() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                outcome["pid"] = cursor.fetchone()[0]
            outcome["summary"] = run(project, {"external_id": "a", "text": "replaced"})
        finally:
            connection.close()

    holder = threading.Thread(target=checkout)
    holder.start()
    assert leased.wait(30)
    importer = threading.Thread(target=reimport)
    importer.start()
    deadline = time.monotonic() + 30
    waited = False
    while time.monotonic() < deadline and not waited:
        if "pid" in outcome:
            with connection.cursor() as cursor:
                cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [outcome["pid"]])
                row = cursor.fetchone()
                waited = row is not None and row[0] == "Lock"
        time.sleep(0.01)  # polling interval only; the proof is the observed lock wait
    release.set()
    holder.join(30)
    importer.join(30)

    assert waited, "the import never waited on the checkout's row lock"
    lease = outcome["lease"]
    assert lease is not None
    assert outcome["summary"]["updated"] == 0
    assert [e["error"] for e in outcome["summary"]["errors"]] == [
        f"external_id 'a' is being labelled (a reviewer holds it until {held_until(lease)}); its text cannot change "
        "under them: import it again after that, or under a new external_id"]
    assert text_of(project, "a") == "original"
