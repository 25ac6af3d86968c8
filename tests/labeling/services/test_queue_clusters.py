"""The queue serves one item per near-duplicate cluster: members wait while their representative is open."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from labeling.models import ClusterMember, Item
from labeling.services.annotations import annotation_submit
from labeling.services.clusters import cluster_summary, flood_alerts
from labeling.services.privacy import masked_text
from labeling.services.queues import queue_checkout_next
from learning.services.clusters import project_cluster_items
from tests.factories import ProjectFactory, member
from tests.learning.support import add_items

pytestmark = pytest.mark.django_db

SCAM = "URGENT! You have won a 2000 pound prize. Call 09061701461 now to claim, code KL341, valid 12 hours"


def test_members_wait_for_their_representative_then_are_served() -> None:
    project = ProjectFactory(slug="queue-clu", embedder="hashing", overlap=1)
    rep, copy, other = add_items(project, [SCAM, SCAM.replace("09061701461", "08000930705"), "lunch tomorrow?"])
    # The fallback order would serve the copy first; the cluster rule holds it back while the representative is open.
    for item, key in ((copy, 0.1), (rep, 0.2), (other, 0.3)):
        Item.objects.filter(pk=item.pk).update(random_key=key)
    project_cluster_items(project_id=project.pk)
    ana, bob = member(project, username="ana", role="reviewer"), member(project, username="bob", role="reviewer")

    first = queue_checkout_next(project=project, reviewer=ana)
    assert first is not None and first.item_id == rep.pk
    # While ana holds the representative, bob is not handed its copy: he gets the unrelated item.
    second = queue_checkout_next(project=project, reviewer=bob)
    assert second is not None and second.item_id == other.pk
    annotation_submit(lease_id=first.pk, reviewer=ana, labels=["ok"])
    third = queue_checkout_next(project=project, reviewer=ana)
    assert third is not None and third.item_id == copy.pk


def test_queue_next_shows_the_cluster_size_and_a_few_members_masked() -> None:
    project = ProjectFactory(slug="queue-clu-api", embedder="hashing", overlap=1)
    project.mask_pii = True
    project.mask_detectors = ["email"]
    project.save()
    texts = [SCAM, *(SCAM.replace("09061701461", f"0800{n}") + f" mail win{n}@prize.example" for n in range(4))]
    items = add_items(project, texts)
    project_cluster_items(project_id=project.pk)
    ana = member(project, username="ana", role="reviewer")
    client = APIClient()
    client.force_authenticate(ana)
    body = client.post(f"/api/projects/{project.slug}/queue/next").json()
    assert body["item"]["id"] == items[0].pk
    assert body["cluster"] == {
        "size": 5, "representative_id": items[0].pk, "is_representative": True, "kind": "representative",
        "similarity": 1.0,
        # Two words more than the representative ("mail", the address): near duplicates, a fixed MinHash estimate.
        "members": [{"item_id": item.pk, "kind": "near", "similarity": 0.8594, "text": masked_text(project, item.text)}
                    for item in items[1:4]],
    }
    assert all("@" not in m["text"] for m in body["cluster"]["members"])
    # An unclustered item has no cluster block content.
    other = add_items(project, ["a lone message"], prefix="lone")[-1]
    assert cluster_summary(project=project, item_id=other.pk) is None


def test_flood_alert_when_a_cluster_grows_past_the_threshold_within_the_hour() -> None:
    project = ProjectFactory(slug="flood", embedder="hashing")
    items = add_items(project, [SCAM.replace("09061701461", f"0800{n}") for n in range(5)] + ["hello there"])
    project_cluster_items(project_id=project.pk)
    assert flood_alerts(project=project, threshold=5) == [
        {"representative_id": items[0].pk, "external_id": "item-0", "added_last_hour": 5, "size": 5}]
    assert flood_alerts(project=project, threshold=6) == []
    # An hour later the same cluster is no longer growing: no alert.
    assert flood_alerts(project=project, threshold=5, now=timezone.now() + timedelta(hours=1, seconds=1)) == []
    # Older members do not count toward the hour: backdate three, and the growth is two.
    ClusterMember.objects.filter(item_id__in=[i.pk for i in items[:3]]).update(
        created_at=timezone.now() - timedelta(hours=2))
    assert flood_alerts(project=project, threshold=2) == [
        {"representative_id": items[0].pk, "external_id": "item-0", "added_last_hour": 2, "size": 5}]


def test_the_dashboard_shows_the_flood_alert(client: Any, settings: Any) -> None:
    settings.SIFT_FLOOD_THRESHOLD = 4
    project = ProjectFactory(slug="flood-page", embedder="hashing")
    add_items(project, [SCAM.replace("09061701461", f"0800{n}") for n in range(4)])
    project_cluster_items(project_id=project.pk)
    lead = member(project, username="lead", role="policy_lead")
    client.force_login(lead)
    page = client.get("/projects/flood-page/dashboard/").content.decode()
    assert "the cluster of item-0\n    gained 4 items in the last hour (4 in all)" in page
