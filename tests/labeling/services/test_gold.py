"""labeling/services/gold.py: the mixing rate, never a gold item twice, the disguise, and no leak through the API."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from labeling.models import Annotation, Item, Lease, Project, RankingEntry, RankingRow, SelectionReason
from labeling.services.gold import GoldPick, gold_pick, gold_public_selection
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Submits and decisions ask for a retrain on commit; nothing here needs the broker.
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)


def _project(**settings: Any) -> Project:
    project = ProjectFactory(slug="gold", **settings)
    return project


def _gold(project: Project, n: int, answer: str = "bad") -> list[Item]:
    # Evenly spaced random keys: the pick takes the first key at or after a uniform start, so each item's
    # chance is the gap before it; random keys would make "every gold item is reached" depend on luck.
    return [ItemFactory(project=project, external_id=f"gold-{i}", is_gold=True, gold_labels=[answer],
                        random_key=(i + 0.5) / n)
            for i in range(n)]


def _lease(project: Project, item: Item, reviewer: Any, *, reason: str = SelectionReason.GOLD) -> Lease:
    return Lease.objects.create(project=project, item=item, reviewer=reviewer, state=Lease.State.SUBMITTED,
                                expires_at=timezone.now() + timedelta(minutes=5), selection_reason=reason,
                                taxonomy_version=project.current_taxonomy_version)


def test_no_gold_rate_means_no_gold() -> None:
    project = _project(gold_rate=0.0)
    _gold(project, 3)
    reviewer = member(project, username="rita", role="reviewer")
    rng = random.Random(1)
    assert [gold_pick(project=project, reviewer=reviewer, rng=rng) for _ in range(50)] == [None] * 50


def test_rate_is_honoured() -> None:
    project = _project(gold_rate=0.25)
    gold_ids = {item.pk for item in _gold(project, 4)}
    reviewer = member(project, username="rita", role="reviewer")
    rng = random.Random(7)
    picks = [gold_pick(project=project, reviewer=reviewer, rng=rng) for _ in range(800)]
    served = [p for p in picks if p is not None]
    # One draw decides "gold or not" (< rate); a served pick takes one more for its random start. Replaying the
    # same seeded stream gives the exact count; nothing is leased here, so every "gold" draw is served.
    replay, expected = random.Random(7), 0
    for _ in range(800):
        if replay.random() < 0.25:
            expected += 1
            replay.random()
    assert len(served) == expected == 219
    assert abs(len(served) - 200) <= 3 * 12.25  # Binomial(800, 0.25): mean 200, sd 12.25
    assert {p.item_id for p in served} == gold_ids  # random choice reaches every gold item


def test_never_a_gold_item_the_reviewer_has_seen() -> None:
    project = _project(gold_rate=1.0)
    leased, answered, fresh = _gold(project, 3)
    reviewer = member(project, username="rita", role="reviewer")
    other = member(project, username="otto", role="reviewer")
    _lease(project, leased, reviewer)
    version = project.current_taxonomy_version
    assert version is not None
    Annotation.objects.create(project=project, item=answered, reviewer=reviewer, taxonomy_version=version,
                              labels=["ok"], selection_reason=SelectionReason.GOLD)
    _lease(project, fresh, other)  # someone else's lease does not hide it from rita
    rng = random.Random(3)
    picks = {gold_pick(project=project, reviewer=reviewer, rng=rng).item_id for _ in range(30)}  # type: ignore[union-attr]
    assert picks == {fresh.pk}
    _lease(project, fresh, reviewer)
    assert gold_pick(project=project, reviewer=reviewer, rng=rng) is None


def test_gold_of_another_project_is_never_served() -> None:
    project = _project(gold_rate=1.0)
    other_project = ProjectFactory(slug="elsewhere")
    _gold(other_project, 2)
    reviewer = member(project, username="rita", role="reviewer")
    assert gold_pick(project=project, reviewer=reviewer, rng=random.Random(0)) is None


def test_cover_copies_an_exploration_pick_of_the_active_ranking() -> None:
    project = _project(gold_rate=1.0)
    (gold,) = _gold(project, 1)
    pool = [ItemFactory(project=project) for _ in range(4)]
    rows = [
        RankingRow(pool[0].pk, 0.9, "uncertainty", 1.0, "bad", 0.51),
        RankingRow(pool[1].pk, 0.2, "exploration", 0.125, "ok", 0.93),
        RankingRow(pool[2].pk, 0.8, "uncertainty", 1.0, "ok", 0.55),
        RankingRow(pool[3].pk, 0.1, "exploration", 0.125, "ok", 0.97),
    ]
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=7, start_rank=0, rows=rows)
    RankingEntry.objects.activate(project_id=project.pk, ranking_version=7)
    project.refresh_from_db()
    reviewer = member(project, username="rita", role="reviewer")
    pick = gold_pick(project=project, reviewer=reviewer, rng=random.Random(5))
    assert pick is not None
    assert (pick.item_id, pick.reason, pick.model_version, pick.inclusion_probability) == (gold.pk, "gold", 7, 0.125)
    assert (pick.score, pick.suggested_label, pick.suggested_confidence) in {(0.2, "ok", 0.93), (0.1, "ok", 0.97)}


def test_cover_without_a_ranking_is_the_random_fallback() -> None:
    project = _project(gold_rate=1.0)
    (gold,) = _gold(project, 1)
    reviewer = member(project, username="rita", role="reviewer")
    assert gold_pick(project=project, reviewer=reviewer, rng=random.Random(5)) == GoldPick(item_id=gold.pk)


def test_public_selection_of_a_gold_lease_never_says_gold() -> None:
    project = _project()
    (gold,) = _gold(project, 1)
    reviewer = member(project, username="rita", role="reviewer")
    lease = _lease(project, gold, reviewer)
    assert gold_public_selection(lease) == {"reason": "fallback_random", "score": None, "model_version": None,
                                            "inclusion_probability": None}
    lease.model_version, lease.selection_score, lease.inclusion_probability = 7, 0.2, 0.125
    assert gold_public_selection(lease) == {"reason": "exploration", "score": 0.2, "model_version": 7,
                                            "inclusion_probability": 0.125}
    lease.inclusion_probability = 1.0
    assert gold_public_selection(lease)["reason"] == "uncertainty"


FORBIDDEN_KEYS = {"is_gold", "gold_labels", "gold_correct", "gold"}


def _walk(value: Any, path: str = "$") -> list[str]:
    """Every place in a JSON document that mentions gold: a key, or the string value "gold"."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in FORBIDDEN_KEYS:
                found.append(f"{path}.{key}")
            found += _walk(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _walk(inner, f"{path}[{i}]")
    elif value == "gold":
        found.append(path)
    return found


def test_gold_never_leaks_through_queue_next(api_as: Any) -> None:
    """A reviewer walks the whole queue with gold mixed in; no response may tell gold apart or reveal an answer."""
    project = _project(gold_rate=0.5, overlap=1)
    gold_items = _gold(project, 4, answer="bad")
    # Gold is mixed in at gold_rate per checkout and the walk ends when the ordinary items run out, so with 8 of
    # them the walk missed a gold item 11% of the time (29/256). With 40 the chance is about 1e-9.
    for i in range(40):
        ItemFactory(project=project, external_id=f"pool-{i}")
    reviewer = member(project, username="rita", role="reviewer")
    client = api_as(reviewer)
    served: list[int] = []
    leaks: list[str] = []
    for _ in range(100):
        response = client.post(f"/api/projects/{project.slug}/queue/next")
        if response.status_code == 204:
            break
        assert response.status_code == 200, response.content
        body = response.json()
        leaks += _walk(body)
        assert set(body["selection"]) == {"reason", "score", "model_version", "inclusion_probability"}
        served.append(body["item"]["id"])
        submitted = client.post(f"/api/leases/{body['lease']['id']}/submit", {"labels": ["ok"]}, format="json")
        assert submitted.status_code == 201, submitted.content
        leaks += _walk(submitted.json())
    assert leaks == []
    # The walk did meet every gold item (else it proves nothing), and each exactly once.
    gold_ids = [item.pk for item in gold_items]
    assert sorted(i for i in served if i in gold_ids) == sorted(gold_ids)
    assert len(served) == 44  # every ordinary item and every gold item, each once
