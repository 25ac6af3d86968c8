"""queue_checkout_next: candidate order, overlap, exclusions, expiry, and what a lease records."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db.models import F

from labeling.api.serializers_queue import checkout_payload
from labeling.models import Annotation, AuditEvent, Item, Lease, Project, RankingEntry, RankingRow
from labeling.services import queues
from labeling.services.annotations import annotation_submit, lease_skip
from labeling.services.errors import Conflict, PermissionDenied
from labeling.services.queues import queue_checkout_next, queue_rank_floor_reset
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

FIXED_NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class FixedRng(random.Random):
    """A generator whose every draw is ``value``: makes the suggestion hold-out decision exact."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def make_project(overlap: int = 1, **fields: Any) -> Project:
    project = ProjectFactory(overlap=overlap)
    if fields:
        Project.objects.filter(pk=project.pk).update(**fields)
        project.refresh_from_db()
    return project


def reviewers(project: Project, n: int) -> list[Any]:
    return [member(project, username=f"{project.slug}-r{i}", role="reviewer") for i in range(n)]


def item(project: Project, name: str, **fields: Any) -> Item:
    created: Item = ItemFactory(project=project, external_id=name, **fields)
    return created


def rank(project: Project, items: list[Item], *, version: int = 1, **row: Any) -> None:
    RankingEntry.objects.write_batch(
        project_id=project.pk, ranking_version=version, start_rank=0,
        rows=[RankingRow(item_id=it.pk, score=row.get("score", 1.0 - i / 100), reason=row.get("reason", "uncertainty"),
                         inclusion_probability=row.get("inclusion_probability"),
                         suggested_label=row.get("suggested_label", ""),
                         suggested_confidence=row.get("suggested_confidence"))
              for i, it in enumerate(items)],
    )
    RankingEntry.objects.activate(project_id=project.pk, ranking_version=version)
    project.refresh_from_db()


def next_name(project: Project, reviewer: Any, **kwargs: Any) -> str | None:
    lease = queue_checkout_next(project=project, reviewer=reviewer, **kwargs)
    return None if lease is None else lease.item.external_id


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    # The rank floor lives in the cache, which a database rollback does not undo.
    cache.clear()


def test_fallback_serves_open_items_in_random_key_order() -> None:
    project = make_project()
    for name, key in [("c", 0.9), ("a", 0.1), ("b", 0.5)]:
        item(project, name, random_key=key)
    people = reviewers(project, 4)
    assert [next_name(project, r) for r in people] == ["a", "b", "c", None]
    # Each pick is one uniform draw from the items not yet finished: 3 while none is labelled...
    assert set(Lease.objects.values_list("inclusion_probability", flat=True)) == {1 / 3}
    Lease.objects.all().delete()
    # ...and, as answers finish items, from the 3, 2 and 1 still open.
    for name in ("a", "b", "c"):
        lease = queue_checkout_next(project=project, reviewer=people[0])
        assert lease is not None and lease.item.external_id == name
        annotation_submit(lease_id=lease.pk, reviewer=people[0], labels=["ok"])
    recorded = {lease.item.external_id: (lease.selection_reason, lease.selection_score, lease.model_version,
                                         lease.inclusion_probability, lease.suggestion, lease.suggestion_hidden)
                for lease in Lease.objects.select_related("item")}
    assert recorded == {"a": ("fallback_random", None, None, 1 / 3, None, False),
                        "b": ("fallback_random", None, None, 1 / 2, None, False),
                        "c": ("fallback_random", None, None, 1.0, None, False)}


def test_boosted_items_come_before_gold_checks() -> None:
    """A re-queued item waits for nothing: not for the gold checks mixed in at the gold rate (disguised as
    exploration picks), nor for the ranking."""
    project = make_project(gold_rate=1.0)
    item(project, "gold", is_gold=True, gold_labels=["ok"])
    item(project, "requeued", boost=3)
    explored = item(project, "explored")
    rank(project, [explored], reason="exploration", inclusion_probability=0.5)
    (reviewer,) = reviewers(project, 1)
    served = []
    for _ in range(3):
        lease = queue_checkout_next(project=project, reviewer=reviewer)
        assert lease is not None
        served.append((lease.item.external_id, lease.selection_reason))
        lease_skip(lease_id=lease.pk, reviewer=reviewer)
    assert served == [("requeued", "relabel"), ("gold", "gold"), ("explored", "exploration")]


def test_order_is_boost_then_ranking_then_fallback() -> None:
    project = make_project()
    low_boost = item(project, "boost-2", boost=2, random_key=0.01)
    high_boost = item(project, "boost-5", boost=5, random_key=0.02)
    first, second = item(project, "rank-0", random_key=0.9), item(project, "rank-1", random_key=0.8)
    item(project, "unranked", random_key=0.5)
    rank(project, [first, second, high_boost, low_boost])
    people = reviewers(project, 6)
    assert [next_name(project, r) for r in people] == ["boost-5", "boost-2", "rank-0", "rank-1", "unranked", None]
    reasons = dict(Lease.objects.values_list("item__external_id", "selection_reason"))
    assert reasons == {"boost-5": "relabel", "boost-2": "relabel", "rank-0": "uncertainty",
                       "rank-1": "uncertainty", "unranked": "fallback_random"}


def test_equal_boosts_go_by_id() -> None:
    project = make_project()
    names = ["x", "y", "z"]
    for name in names:
        item(project, name, boost=3)
    assert [next_name(project, r) for r in reviewers(project, 3)] == names


def test_ranking_pick_records_the_entry_and_the_ranking_version() -> None:
    project = make_project(lease_seconds=120)
    target = item(project, "t")
    rank(project, [target], version=7, score=0.42, reason="exploration", inclusion_probability=0.25,
         suggested_label="spam", suggested_confidence=0.8)
    (reviewer,) = reviewers(project, 1)
    lease = queue_checkout_next(project=project, reviewer=reviewer, rng=FixedRng(0.99))
    assert lease is not None
    lease.refresh_from_db()
    assert (lease.selection_reason, lease.selection_score, lease.model_version, lease.inclusion_probability) == (
        "exploration", 0.42, 7, 0.25)
    assert lease.suggestion == {"label": "spam", "confidence": 0.8}
    assert lease.suggestion_hidden is False
    assert lease.taxonomy_version_id == project.current_taxonomy_version_id
    assert lease.state == "active"


def test_lease_expires_after_the_projects_lease_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(lease_seconds=90)
    item(project, "a")
    (reviewer,) = reviewers(project, 1)
    monkeypatch.setattr("labeling.services.queues.timezone.now", lambda: FIXED_NOW)
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    assert Lease.objects.get(pk=lease.pk).expires_at == FIXED_NOW + timedelta(seconds=90)


@pytest.mark.parametrize(
    ("show", "holdout", "draw", "expected", "hidden"),
    [
        (True, 0.0, 0.0, {"label": "spam", "confidence": 0.6}, False),
        (True, 0.5, 0.49, {"label": "spam", "confidence": 0.6}, True),
        (True, 0.5, 0.5, {"label": "spam", "confidence": 0.6}, False),
        (True, 1.0, 0.999, {"label": "spam", "confidence": 0.6}, True),
        (False, 0.5, 0.1, None, False),
    ],
)
def test_suggestion_shown_hidden_or_switched_off(show: bool, holdout: float, draw: float,
                                                 expected: dict[str, Any] | None, hidden: bool) -> None:
    project = make_project(show_suggestions=show, suggestion_holdout_rate=holdout)
    target = item(project, "t")
    rank(project, [target], suggested_label="spam", suggested_confidence=0.6)
    (reviewer,) = reviewers(project, 1)
    lease = queue_checkout_next(project=project, reviewer=reviewer, rng=FixedRng(draw))
    assert lease is not None
    stored = Lease.objects.get(pk=lease.pk)
    # A withheld suggestion is stored (the automation-bias stats compare against it) but never shown.
    assert (stored.suggestion, stored.suggestion_hidden) == (expected, hidden)
    shown = checkout_payload(stored, taxonomy_version=1)["suggestion"]
    assert shown == (None if hidden else expected)


def test_no_suggestion_in_the_entry_means_none_and_not_hidden() -> None:
    project = make_project(suggestion_holdout_rate=1.0)
    target = item(project, "t")
    rank(project, [target])
    (reviewer,) = reviewers(project, 1)
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    assert (lease.suggestion, lease.suggestion_hidden) == (None, False)


def test_page_refresh_returns_the_lease_already_held() -> None:
    project = make_project()
    item(project, "a")
    item(project, "b")
    (reviewer,) = reviewers(project, 1)
    first = queue_checkout_next(project=project, reviewer=reviewer)
    again = queue_checkout_next(project=project, reviewer=reviewer)
    assert first is not None and again is not None
    assert again.pk == first.pk
    assert again.item.external_id == first.item.external_id
    assert Lease.objects.count() == 1


def test_overlap_two_gives_the_item_to_two_reviewers_and_not_a_third() -> None:
    project = make_project(overlap=2)
    item(project, "only")
    first, second, third = reviewers(project, 3)
    assert next_name(project, first) == "only"
    assert next_name(project, second) == "only"
    assert next_name(project, third) is None
    assert sorted(Lease.objects.values_list("reviewer__username", flat=True)) == [first.username, second.username]


def test_a_reviewer_never_gets_an_item_they_submitted() -> None:
    project = make_project(overlap=2)
    item(project, "only")
    (reviewer,) = reviewers(project, 1)
    lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    Lease.objects.filter(pk=lease.pk).update(state=Lease.State.SUBMITTED)
    Item.objects.filter(pk=lease.item_id).update(n_done=1)
    assert queue_checkout_next(project=project, reviewer=reviewer) is None


def test_skipped_item_never_returns_to_that_reviewer_but_goes_to_others() -> None:
    project = make_project()
    item(project, "only")
    skipper, other = reviewers(project, 2)
    lease = queue_checkout_next(project=project, reviewer=skipper)
    assert lease is not None
    Lease.objects.filter(pk=lease.pk).update(state=Lease.State.SKIPPED)
    assert queue_checkout_next(project=project, reviewer=skipper) is None
    assert next_name(project, other) == "only"


def test_an_expired_lease_frees_its_slot() -> None:
    project = make_project()
    item(project, "only")
    slow, fast = reviewers(project, 2)
    lease = queue_checkout_next(project=project, reviewer=slow)
    assert lease is not None
    assert queue_checkout_next(project=project, reviewer=fast) is None
    Lease.objects.filter(pk=lease.pk).update(expires_at=F("created_at") - timedelta(seconds=1))
    taken = queue_checkout_next(project=project, reviewer=fast)
    assert taken is not None and taken.item_id == lease.item_id
    # The slow reviewer's old lease stays as it was (no sweeper); they do not get the item back while it is held.
    assert Lease.objects.get(pk=lease.pk).state == "active"
    assert queue_checkout_next(project=project, reviewer=slow) is None


def test_a_reviewer_whose_lease_expired_can_take_the_item_again() -> None:
    project = make_project()
    item(project, "only")
    (reviewer,) = reviewers(project, 1)
    old = queue_checkout_next(project=project, reviewer=reviewer)
    assert old is not None
    Lease.objects.filter(pk=old.pk).update(expires_at=F("created_at") - timedelta(seconds=1))
    new = queue_checkout_next(project=project, reviewer=reviewer)
    assert new is not None
    assert (new.pk != old.pk, new.item_id) == (True, old.item_id)


def test_finished_items_and_items_the_reviewer_annotated_are_not_served() -> None:
    project = make_project()
    item(project, "done", n_done=1, random_key=0.1)
    annotated = item(project, "annotated", random_key=0.2)
    item(project, "free", random_key=0.3)
    (reviewer,) = reviewers(project, 1)
    version = project.current_taxonomy_version
    assert version is not None
    Annotation.objects.create(project=project, item=annotated, reviewer=reviewer, taxonomy_version=version,
                              labels=["ok"],
                              selection_reason="other")
    assert next_name(project, reviewer) == "free"


def test_ranking_exhausted_for_this_reviewer_falls_back_to_unranked_items() -> None:
    project = make_project()
    ranked, unranked = item(project, "ranked"), item(project, "unranked")
    rank(project, [ranked])
    first, second = reviewers(project, 2)
    assert next_name(project, first) == "ranked"
    assert next_name(project, second) == "unranked"
    assert Lease.objects.get(item=unranked).selection_reason == "fallback_random"


def test_the_walk_starts_at_the_first_open_rank_and_forgets_it_on_reset() -> None:
    project = make_project()
    items = [item(project, f"r{i}", random_key=0.5 + i / 100) for i in range(5)]
    rank(project, items)
    Item.objects.filter(pk__in=[it.pk for it in items[:3]]).update(n_done=1)
    first, second, _third = reviewers(project, 3)
    assert next_name(project, first) == "r3"
    key = queues._floor_key(project, 1)
    assert cache.get(key) == 3
    # An item reopened below the floor (as an undo does): after a reset the walk finds it at its rank again.
    Item.objects.filter(pk=items[1].pk).update(n_done=0)
    queue_rank_floor_reset(project=project)
    assert cache.get(key) is None
    assert next_name(project, second) == "r1"
    assert cache.get(key) == 1


def test_an_item_reopened_below_a_stale_floor_is_still_served_by_the_fallback() -> None:
    project = make_project()
    items = [item(project, f"r{i}", random_key=0.5 + i / 100) for i in range(3)]
    rank(project, items)
    Item.objects.filter(pk=items[0].pk).update(n_done=1)
    first, second, third = reviewers(project, 3)
    assert next_name(project, first) == "r1"
    Item.objects.filter(pk=items[0].pk).update(n_done=0)  # reopened without a reset
    assert next_name(project, second) == "r2"
    assert next_name(project, third) == "r0"
    assert Lease.objects.get(reviewer=third).selection_reason == "fallback_random"


def test_a_fully_finished_ranking_parks_the_floor_past_its_end() -> None:
    project = make_project()
    items = [item(project, f"r{i}", n_done=1) for i in range(3)]
    rank(project, items)
    item(project, "new")
    (reviewer,) = reviewers(project, 1)
    assert next_name(project, reviewer) == "new"
    assert queues._decode_floor(cache.get(queues._floor_key(project, 1))) == (3, True)


def test_between_refreshes_the_walk_starts_at_the_cached_floor_and_skips_newly_finished_items() -> None:
    project = make_project()
    items = [item(project, f"r{i}", random_key=0.5 + i / 100) for i in range(4)]
    rank(project, items)
    first, second = reviewers(project, 2)
    assert next_name(project, first) == "r0"
    key = queues._floor_key(project, 1)
    assert (cache.get(key), cache.get(key + ":fresh")) == (0, 1)
    Item.objects.filter(pk=items[1].pk).update(n_done=1)  # finished since the floor was read
    assert next_name(project, second) == "r2"
    assert cache.get(key) == 0  # not re-read until the fresh marker expires
    cache.delete(key + ":fresh")
    Item.objects.filter(pk=items[0].pk).update(n_done=1)
    third = reviewers(project, 3)[2]
    assert next_name(project, third) == "r3"
    assert cache.get(key) == 2


def test_checkout_writes_no_audit_row_and_runs_a_bounded_number_of_queries(
        django_assert_max_num_queries: Any) -> None:
    project = make_project()
    items = [item(project, f"i{i}") for i in range(20)]
    rank(project, items)
    (reviewer,) = reviewers(project, 1)
    before = AuditEvent.objects.count()
    # first-open rank (at most every 2 s), membership lock, held lease + "any boosted?", ranking scan, re-check
    # (+ item fields), INSERT, plus the savepoint pair the test transaction adds (BEGIN/COMMIT outside tests).
    with django_assert_max_num_queries(8):
        lease = queue_checkout_next(project=project, reviewer=reviewer)
    assert lease is not None
    assert AuditEvent.objects.count() == before


def test_a_non_member_is_refused_and_gets_nothing() -> None:
    project = make_project()
    item(project, "a")
    outsider = member(make_project(), username="outsider", role="reviewer")
    with pytest.raises(PermissionDenied):
        queue_checkout_next(project=project, reviewer=outsider)
    assert Lease.objects.count() == 0


def test_a_project_without_a_published_taxonomy_is_a_conflict() -> None:
    project = Project.objects.create(slug="bare", name="Bare")
    reviewer = member(project, username="bare-r", role="reviewer")
    with pytest.raises(Conflict, match="no published taxonomy"):
        queue_checkout_next(project=project, reviewer=reviewer)
