"""The periodic close of long-expired leases: ``sift.labeling.lease_release_expired``, call twice, effect once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from labeling.models import Item, Lease, Project
from labeling.services import queues
from labeling.services.queues import queue_checkout_next
from labeling.tasks import lease_release_expired
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


def lease(project: Project, reviewer: Any, name: str, *, state: str, expired_ago: timedelta) -> Lease:
    item: Item = ItemFactory(project=project, external_id=name)
    created: Lease = Lease.objects.create(
        project=project, item=item, reviewer=reviewer, state=state, expires_at=timezone.now() - expired_ago,
        taxonomy_version_id=project.current_taxonomy_version_id, selection_reason="fallback_random")
    return created


def test_call_twice_effect_once() -> None:
    project = ProjectFactory(overlap=1)
    alice = member(project, username="alice", role="reviewer")
    bob = member(project, username="bob", role="reviewer")
    hour = timedelta(seconds=queues.RELEASE_AFTER_SECONDS)
    stale = lease(project, alice, "stale", state="active", expired_ago=hour + timedelta(minutes=5))
    stale_too = lease(project, bob, "stale-too", state="active", expired_ago=hour * 3)
    recent = lease(project, alice, "recent", state="active", expired_ago=timedelta(minutes=5))
    held = lease(project, bob, "held", state="active", expired_ago=-timedelta(minutes=5))
    submitted = lease(project, alice, "submitted", state="submitted", expired_ago=hour * 2)
    skipped = lease(project, bob, "skipped", state="skipped", expired_ago=hour * 2)
    before = {row.pk: (row.state, row.expires_at, row.closed_at) for row in Lease.objects.all()}

    first = lease_release_expired.apply().get()
    second = lease_release_expired.apply(kwargs={"from_a_newer_producer": True}).get()

    assert (first, second) == ({"released": 2}, {"released": 0})
    assert lease_release_expired.name == "sift.labeling.lease_release_expired"
    after = {row.pk: (row.state, row.expires_at, row.closed_at) for row in Lease.objects.all()}
    for closed in (stale, stale_too):
        state, expires_at, closed_at = after[closed.pk]
        assert (state, expires_at) == ("released", before[closed.pk][1]) and closed_at is not None
    for untouched in (recent, held, submitted, skipped):
        assert after[untouched.pk] == before[untouched.pk]


def test_batches_until_nothing_is_left() -> None:
    project = ProjectFactory(overlap=1)
    reviewers = [member(project, username=f"r{n}", role="reviewer") for n in range(5)]
    for n, reviewer in enumerate(reviewers):
        lease(project, reviewer, f"m{n}", state="active", expired_ago=timedelta(hours=2))
    assert queues.lease_release_expired(batch_size=2) == 5
    assert set(Lease.objects.values_list("state", flat=True)) == {"released"}


def test_a_released_item_is_served_again_and_the_submit_names_the_state(api_as: Any) -> None:
    """Closing an expired lease changes nothing a checkout sees: the item goes to the next reviewer, and the old
    holder's late submit is a 409 that says what happened to the lease."""
    project = ProjectFactory(overlap=1)
    alice = member(project, username="alice", role="reviewer")
    bob = member(project, username="bob", role="reviewer")
    old = lease(project, alice, "only", state="active", expired_ago=timedelta(hours=2))
    assert queues.lease_release_expired() == 1
    late = api_as(alice).post(f"/api/leases/{old.pk}/submit", {"labels": ["ham"]}, format="json")
    assert late.status_code == 409 and "released" in late.json()["detail"]
    taken = queue_checkout_next(project=project, reviewer=bob)
    assert taken is not None and taken.item_id == old.item_id
    assert list(Lease.objects.order_by("id").values_list("state", flat=True)) == ["released", "active"]
