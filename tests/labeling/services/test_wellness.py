"""Reviewer wellness (labeling/services/wellness.py): what is severe, blur, the stricter-only preference, the daily
exposure budget in the queue, the break reminder and exposure per reviewer per day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from labeling.models import Annotation, AuditEvent, Item, Project, WellnessPolicy
from labeling.services.annotations import annotation_submit
from labeling.services.errors import ValidationFailed
from labeling.services.queues import queue_checkout_next
from labeling.services.wellness import (
    exposure_by_day,
    exposure_today,
    lease_protection,
    severe_avoider,
    severe_keys,
    wellness_policy_update,
    wellness_preference_set,
)
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

TAXONOMY = {"name": "Harm", "labels": [{"key": "ok", "name": "OK"}, {"key": "spam", "name": "Spam", "severity": 2},
                                       {"key": "gore", "name": "Gore", "severity": 3}]}


def _project(**policy: Any) -> Project:
    project = ProjectFactory(slug="well", taxonomy=TAXONOMY, overlap=2)
    if policy:
        wellness_policy_update(actor=None, project=project, **policy)
    return project


def _item(project: Project, name: str, key: float) -> Item:
    return ItemFactory(project=project, external_id=name, text=f"text of {name}", random_key=key)


def _answer(project: Project, reviewer: Any, labels: list[str]) -> int:
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    annotation_submit(lease_id=lease.pk, reviewer=reviewer, labels=labels)
    return int(lease.item_id)


def test_severe_labels_follow_the_policy_threshold() -> None:
    project = _project()
    assert severe_keys(project) == {"gore"}
    wellness_policy_update(actor=None, project=project, severe_from=2)
    assert severe_keys(project) == {"spam", "gore"}
    assert AuditEvent.objects.filter(action="project.wellness_update").count() == 1


def test_blur_for_known_severe_items_and_a_stricter_preference() -> None:
    project = _project(blur="severe")
    x, y = _item(project, "x", 0.1), _item(project, "y", 0.2)
    ana, bob = member(project, username="ana", role="reviewer"), member(project, username="bob", role="reviewer")
    assert _answer(project, bob, ["gore"]) == x.pk
    lease = queue_checkout_next(project=project, reviewer=ana)
    assert lease is not None and lease.item_id == x.pk
    assert lease_protection(project=project, reviewer=ana, lease=lease) == {
        "blur": True, "severe": "known", "exposure_today": 0, "daily_severe_budget": None, "labelling_minutes": 0,
        "break_due": False}
    annotation_submit(lease_id=lease.pk, reviewer=ana, labels=["ok"])
    other = queue_checkout_next(project=project, reviewer=ana)
    assert other is not None and other.item_id == y.pk
    assert lease_protection(project=project, reviewer=ana, lease=other)["blur"] is False
    # A preference can only add protection: "all" blurs y too; going below the project's level is refused.
    wellness_preference_set(project=project, reviewer=ana, blur="all")
    assert lease_protection(project=project, reviewer=ana, lease=other)["blur"] is True
    with pytest.raises(ValidationFailed, match="only be stricter"):
        wellness_preference_set(project=project, reviewer=ana, blur="off")
    with pytest.raises(ValidationFailed, match="blur: one of"):
        wellness_preference_set(project=project, reviewer=ana, blur="sometimes")


def test_the_budget_once_spent_serves_other_work_and_leaves_severe_items_to_others() -> None:
    project = _project(daily_severe_budget=1)
    x, a, b = _item(project, "x", 0.1), _item(project, "a", 0.2), _item(project, "b", 0.3)
    ana, bob = member(project, username="ana", role="reviewer"), member(project, username="bob", role="reviewer")
    assert _answer(project, bob, ["gore"]) == x.pk
    assert severe_avoider(project=project, reviewer=ana) is None  # nothing severe seen yet
    assert _answer(project, ana, ["gore"]) == x.pk  # her first severe item: within the budget
    assert _answer(project, bob, ["gore"]) == a.pk  # a is now known severe
    assert exposure_today(project=project, reviewer=ana, severe=severe_keys(project)).severe == 1
    lease = queue_checkout_next(project=project, reviewer=ana)
    assert lease is not None and lease.item_id == b.pk  # a, first in order, is passed over for her
    assert lease_protection(project=project, reviewer=ana, lease=lease)["exposure_today"] == 1
    assert Item.objects.get(pk=a.pk).n_done == 1  # still open for someone else
    WellnessPolicy.objects.filter(project=project).update(daily_severe_budget=0)
    assert severe_avoider(project=project, reviewer=ana) is None


def test_break_reminder_after_a_stretch_without_a_pause() -> None:
    project = _project(break_after_minutes=10)
    ana = member(project, username="ana", role="reviewer")
    for n in range(6):
        _item(project, f"i{n}", n / 10)
    for _ in range(5):
        _answer(project, ana, ["ok"])
    now = timezone.now()
    # Answers 40 minutes ago (then a 26-minute pause), 14, 10, 6 and 2 minutes ago: the stretch began 14 minutes ago.
    times = [now - timedelta(minutes=m) for m in (40, 14, 10, 6, 2)]
    for annotation, moment in zip(Annotation.objects.filter(reviewer=ana).order_by("id"), times, strict=True):
        Annotation.objects.filter(pk=annotation.pk).update(created_at=moment)
    assert exposure_today(project=project, reviewer=ana, severe=frozenset(), now=now).stretch_seconds == 14 * 60
    # A pause longer than BREAK_GAP (5 minutes) after the last answer ends the stretch.
    assert exposure_today(project=project, reviewer=ana, severe=frozenset(),
                          now=now + timedelta(minutes=3)).stretch_seconds == 17 * 60
    assert exposure_today(project=project, reviewer=ana, severe=frozenset(),
                          now=now + timedelta(minutes=3, seconds=1)).stretch_seconds == 0
    lease = queue_checkout_next(project=project, reviewer=ana)
    assert lease is not None
    protection = lease_protection(project=project, reviewer=ana, lease=lease)
    assert (protection["break_due"], protection["labelling_minutes"]) == (True, 14)
    WellnessPolicy.objects.filter(project=project).update(break_after_minutes=15)
    assert lease_protection(project=project, reviewer=ana, lease=lease)["break_due"] is False


def test_exposure_per_reviewer_per_day() -> None:
    project = _project(daily_severe_budget=2)
    for n in range(3):
        _item(project, f"i{n}", n / 10)
    ana, bob = member(project, username="ana", role="reviewer"), member(project, username="bob", role="reviewer")
    _answer(project, ana, ["gore"])
    _answer(project, ana, ["gore"])
    _answer(project, ana, ["ok"])
    _answer(project, bob, ["spam"])
    today = datetime.now(UTC).date().isoformat()
    assert exposure_by_day(project=project) == [
        {"reviewer": "bob", "day": today, "answers": 1, "severe": 0, "over_budget": False},
        {"reviewer": "ana", "day": today, "answers": 3, "severe": 2, "over_budget": True}]
    with pytest.raises(ValidationFailed, match="daily_severe_budget: a whole number"):
        wellness_policy_update(actor=None, project=project, daily_severe_budget=-1)
