"""Deconfirm against a matching pass, on real concurrent PostgreSQL transactions (labeling/services/banks.py's
invariant): a pass that read an entry as confirmed waits on the entry's row lock while a deconfirm holds it, and
then writes no match for it; and confirm/deconfirm schedule the pass only once they commit. Waits are observed in
pg_stat_activity, never inferred from sleeps."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from config.celery import app
from labeling.models import BankEntry, BankMatch, Item
from labeling.services.banks import bank_confirm, bank_create, bank_entry_deconfirm
from learning.services.clusters import project_cluster_items
from tests.factories import ProjectFactory, member
from tests.labeling.services.test_banks import OTHER, SCAM, SCAM_NEW_NUMBER
from tests.labeling.services.test_publish_concurrency import Worker, until, wait_event
from tests.learning.support import add_items

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_a_pass_waits_for_a_deconfirm_and_then_writes_no_match(postgres_only: None) -> None:
    project = ProjectFactory(slug="bank-race", embedder="hashing", overlap=1)
    lead = member(project, username="lead", role="policy_lead")
    scam = add_items(project, [SCAM, OTHER])[0]
    project_cluster_items(project_id=project.pk)
    bank = bank_create(actor=lead, project=project, name="Scams", label_key="bad")
    entry_id = bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])["entries"][0]
    project_cluster_items(project_id=project.pk)
    assert BankMatch.objects.filter(withdrawn_at__isnull=True).count() == 1
    copy = add_items(project, [SCAM_NEW_NUMBER], prefix="new")[-1]

    worker = Worker(lambda: project_cluster_items(project_id=project.pk))
    with transaction.atomic():
        BankEntry.objects.select_for_update().get(pk=entry_id)  # the deconfirm's first step, held open
        worker.start()
        assert until(lambda: worker.pid != 0 and wait_event(worker.pid)[0] == "Lock"), "the pass never waited"
        result = bank_entry_deconfirm(actor=lead, bank=bank, entry_id=entry_id)
    worker.join(30)
    assert worker.error is None and not worker.is_alive()
    assert result == {"entry": entry_id, "withdrawn": 1, "items": [scam.pk]}
    # The copy was clustered by the pass, but its match with the deconfirmed entry was never written.
    assert BankMatch.objects.filter(item=copy).count() == 0
    assert list(Item.objects.order_by("id").values_list("boost", flat=True)) == [0, 0, 0]


def test_confirm_schedules_the_pass_only_on_commit_and_only_when_something_changed(
        postgres_only: None, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, Any]] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_options: sent.append((name, args)))
    project = ProjectFactory(slug="bank-commit", embedder="hashing", overlap=1)
    lead = member(project, username="lead", role="policy_lead")
    scam = add_items(project, [SCAM])[0]
    project_cluster_items(project_id=project.pk)
    bank = bank_create(actor=lead, project=project, name="Scams", label_key="bad")
    with transaction.atomic():
        bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])
        assert sent == []  # nothing is enqueued inside the open transaction
    assert [name for name, _ in sent] == ["sift.learning.cluster_project"]
    bank_confirm(actor=lead, bank=bank, item_ids=[scam.pk])  # nothing new: nothing to schedule
    assert len(sent) == 1
