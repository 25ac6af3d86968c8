"""Queue staleness on the pages (issue 4): the home page's project card and the dashboard show the active
model's version, the labels since it and its age, the same figures ``/api/projects/{slug}/models/`` gives."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from frontend.views import age_text
from learning.models import ModelVersion
from tests.factories import ItemFactory
from tests.learning.support import annotate

pytestmark = pytest.mark.django_db


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(html: bytes) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html.decode())).strip()


def model_seeing_two_of_five(project: Any, reviewer: Any) -> None:
    """v4 active learnt from the first 2 of 5 labels, trained 2 h 5 min 30 s ago; v3 superseded, older."""
    ids = [annotate(ItemFactory(project=project), reviewer, ["spam"]).pk for _ in range(5)]
    for version, status, seen in ((3, "superseded", ids[0]), (4, "active", ids[1])):
        ModelVersion.objects.create(project=project, version=version, status=status, fingerprint=f"fp{version}",
                                    max_annotation_id=seen, embedder="hashing-v1-384", strategy="margin_exploit")
    ModelVersion.objects.filter(project=project, version=4).update(
        created_at=timezone.now() - timedelta(hours=2, minutes=5, seconds=30))


def test_home_card_shows_labels_since_and_age(cast: dict[str, Any], api_as: Any) -> None:
    model_seeing_two_of_five(cast["project"], cast["users"]["reviewer"])
    page = text(logged_in(cast["users"]["reviewer"]).get("/").content)
    assert "Model v4 · 3 labels since · trained 2 h 5 min ago" in page
    active = [m for m in api_as(cast["users"]["reviewer"]).get("/api/projects/sms/models/").json() if m["active"]]
    assert [(m["version"], m["labels_since"]) for m in active] == [(4, 3)]
    # The other project (the outsider's) has no model.
    assert "No model yet" in text(logged_in(cast["users"]["outsider"]).get("/").content)


def test_dashboard_shows_labels_since_and_age(cast: dict[str, Any]) -> None:
    project = cast["project"]
    lead = logged_in(cast["users"]["policy_lead"])
    assert "No model yet: the queue is in its cold start." in text(lead.get("/projects/sms/dashboard/").content)
    model_seeing_two_of_five(project, cast["users"]["reviewer"])
    annotate(ItemFactory(project=project), cast["users"]["reviewer"], ["ham"])
    page = text(lead.get("/projects/sms/dashboard/").content)
    assert "The queue is ordered by model v4: 4 labels since it was trained, 2 h 5 min ago." in page


@pytest.mark.parametrize("seconds, shown", [
    (0, "0 s"), (59.9, "59 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h"), (7530, "2 h 5 min"),
    (86_400, "1 d"), (90_000, "1 d 1 h"), (-5, "0 s"),
])
def test_age_text(seconds: float, shown: str) -> None:
    assert age_text(seconds) == shown
