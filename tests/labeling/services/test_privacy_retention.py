"""Retention (labeling/services/privacy.py ``retention_sweep``, the ``sift.labeling.retention_sweep`` beat task)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from labeling import tasks
from labeling.models import Adjudication, AuditEvent, Item, Project
from labeling.services.audit import audit_verify
from labeling.services.privacy import project_privacy_update
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)


def _item(project: Project, name: str, *, age_days: float, done: bool, **fields: Any) -> Item:
    item: Item = ItemFactory(project=project, external_id=name, text=f"text {name}", n_required=1,
                             n_done=1 if done else 0, **fields)
    Item.objects.filter(pk=item.pk).update(created_at=timezone.now() - timedelta(days=age_days))
    return item


def test_sweep_deletes_expired_finished_items_once(cast: dict[str, Any]) -> None:
    project = project_privacy_update(actor=None, project=cast["project"], retention_days=30)
    other = cast["other_project"]  # no retention: nothing of it goes, however old
    _item(project, "old-done", age_days=31, done=True)
    _item(project, "old-done-2", age_days=400, done=True)
    _item(project, "old-open", age_days=31, done=False)  # still needed by the queue
    _item(project, "new-done", age_days=29, done=True)
    _item(project, "old-gold", age_days=31, done=True, is_gold=True)  # curated check: deleted only on request
    disputed = _item(project, "old-disputed", age_days=31, done=True)
    Adjudication.objects.create(project=project, item=disputed, reason=Adjudication.Reason.MANUAL)
    _item(other, "other-old", age_days=999, done=True)

    assert tasks.retention_sweep() == {"sms": 2}
    assert sorted(Item.objects.filter(project=project).values_list("external_id", flat=True)) == [
        "new-done", "old-disputed", "old-gold", "old-open"]
    assert Item.objects.filter(project=other).count() == 1
    tombstone = AuditEvent.objects.get(action="items.delete")
    assert tombstone.actor_id is None
    assert (tombstone.data["trigger"], tombstone.data["reason"]) == ("retention", "retention: older than 30 days")
    assert len(tombstone.data["items"]) == 2

    # Call twice, effect once: the second run finds nothing and writes nothing.
    audit_rows = AuditEvent.objects.count()
    assert tasks.retention_sweep() == {}
    assert Item.objects.filter(project=project).count() == 4
    assert AuditEvent.objects.count() == audit_rows
    assert audit_verify().ok


def test_projects_without_retention_keep_everything(cast: dict[str, Any]) -> None:
    _item(cast["project"], "ancient", age_days=10_000, done=True)
    assert tasks.retention_sweep() == {}
    assert Item.objects.filter(external_id="ancient").exists()


def test_beat_runs_the_sweep() -> None:
    entry: dict[str, Any] = settings.CELERY_BEAT_SCHEDULE["sift-privacy-retention"]
    assert entry["task"] == "sift.labeling.retention_sweep" == tasks.retention_sweep.name
    assert entry["schedule"] > 0
